"""What only the milvus backend has to say: its limits and its refusals, on Milvus Lite."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import numpy as np
import pytest

from bench.server import free_port
from service.index_store import IndexUnavailable, NewItem
from service.index_store.milvus import MAX_THUMBNAIL_CHARS, MilvusStore
from tests.service.index_store.conftest import DIM, MODEL, unit


def test_a_model_with_more_aspects_than_vector_fields_is_refused_naming_the_limit(tmp_path):
    store = MilvusStore(str(tmp_path / "m.db"), "likeness", DIM, ["a", "b", "c", "d"], MODEL)
    with pytest.raises(IndexUnavailable, match="maxVectorFieldNum"):
        store.open()


def test_a_file_another_process_has_open_is_refused_saying_what_to_do(tmp_path):
    path = tmp_path / "held.db"
    holder = subprocess.Popen([sys.executable, "-c", "from pymilvus import MilvusClient; import time; "
                               f"MilvusClient({str(path)!r}); print('open', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(IndexUnavailable, match="opens in one process only.*milvus_lite_server"):
            MilvusStore(str(path), "likeness", DIM, [], MODEL).open()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow  # over 5 s on 2 cores
def test_a_server_that_does_not_answer_is_refused_within_seconds():
    started = time.monotonic()
    with pytest.raises(IndexUnavailable, match="is Milvus running there"):
        MilvusStore(f"http://127.0.0.1:{free_port()}", "likeness", DIM, [], MODEL).open()
    assert time.monotonic() - started < 20


def test_a_thumbnail_too_large_for_a_varchar_is_dropped_and_the_item_kept(tmp_path, caplog):
    store = MilvusStore(str(tmp_path / "m.db"), "likeness", DIM, [], MODEL)
    store.open()
    vector = unit(np.random.default_rng(0), 1)
    caplog.set_level(logging.WARNING)
    store.upsert([NewItem("big", vector, {}, b"x" * MAX_THUMBNAIL_CHARS), NewItem("small", vector, {}, b"png")])
    assert store.thumbnail("big") is None and store.thumbnail("small") == b"png"
    assert "stored without one" in caplog.text and store.count() == 2
    store.close()


def test_a_milvus_lite_file_opens_without_home(tmp_path):
    """Milvus Lite's engine cannot start without HOME (some service managers and containers leave it
    unset); the store gives it the temp folder rather than reporting the file as held elsewhere."""
    import os

    script = ("from service.index_store.milvus import MilvusStore\n"
              "from tests.service.index_store.conftest import DIM, MODEL\n"
              f"store = MilvusStore({str(tmp_path / 'nohome.db')!r}, 'likeness', DIM, [], MODEL)\n"
              "store.open(); print('items', store.count(), flush=True); store.close()\n")
    env = {k: v for k, v in os.environ.items() if k != "HOME"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[3]))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "items 0" in done.stdout
