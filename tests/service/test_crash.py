"""kill -9 while clients are adding items: every acknowledged item survives and is searchable."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.server import ServerProcess
from tests.conftest import png_bytes

# Trains, starts processes or a browser: `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

ROUNDS = 5
WRITERS = 4


def _writer(url: str, name: str, acked: dict[str, bytes], attempted: set[str], stop: threading.Event) -> None:
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    n = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            ids = [f"{name}-{n}-{j}" for j in range(int(rng.integers(1, 4)))]
            n += 1
            images = {i: png_bytes(rng.integers(0, 256, (28, 28), dtype=np.uint8)) for i in ids}
            attempted.update(ids)
            try:
                response = client.post("/items", files=[("image", (f"{i}.png", images[i])) for i in ids],
                                       data={"id": ids})
            except httpx.HTTPError:
                return  # the server died mid-request: this request was never acknowledged
            if response.status_code == 201:
                for item_id in response.json()["ids"]:
                    acked[item_id] = images[item_id]


def run_rounds(server: ServerProcess, kill) -> tuple[dict[str, bytes], set[str]]:
    """ROUNDS times: start the server, let WRITERS clients add items, ``kill()`` at a random
    moment. Returns the acknowledged items and every id attempted."""
    rng = random.Random(1234)
    acked: dict[str, bytes] = {}
    attempted: set[str] = set()
    for round_ in range(ROUNDS):
        server.start(timeout=120)
        stop = threading.Event()
        writers = [threading.Thread(target=_writer, args=(server.url, f"r{round_}w{w}", acked, attempted, stop))
                   for w in range(WRITERS)]
        for thread in writers:
            thread.start()
        time.sleep(rng.uniform(0.5, 2.5))  # a random moment
        kill()
        stop.set()
        for thread in writers:
            thread.join()
    return acked, attempted


def check_after_restart(server: ServerProcess, acked: dict[str, bytes], attempted: set[str]) -> None:
    server.start(timeout=120)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            present = {i for i in attempted if client.get(f"/items/{i}").status_code == 200}
            missing = set(acked) - present
            assert not missing, f"lost {len(missing)} of {len(acked)} acknowledged items"
            # At most the requests in flight at each kill can be committed without their 201.
            assert len(present - set(acked)) <= WRITERS * 3 * ROUNDS
            stats = client.get("/index").json()
            assert stats["items"] == len(present) and stats["spaces"]["overall"] == len(present)
            assert len(acked) >= 20 * ROUNDS
            print(f"{ROUNDS} kills: {len(acked)} acknowledged, all present; {len(present - set(acked))} more "
                  "committed without their 201")
            for item_id, image in acked.items():
                hit = client.post("/search", files={"image": ("q.png", image)}, data={"k": "1"}).json()["results"][0]
                assert hit["id"] == item_id
    finally:
        server.stop()


def test_kill_9_loses_no_acknowledged_item(tmp_path):
    # HNSW and a small snapshot interval, so kills also land during and between snapshots and the
    # restart has both a snapshot to load and a log to replay.
    server = ServerProcess(tmp_path / "data", LIKENESS_SEED_GALLERY="0", LIKENESS_SNAPSHOT_EVERY="40",
                           LIKENESS_INDEX_TYPE="hnsw")
    acked, attempted = run_rounds(server, server.kill)
    check_after_restart(server, acked, attempted)


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux: /proc/PID/task/*/children)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def test_kill_9_on_milvus_lite_loses_no_acknowledged_item(tmp_path):
    """The milvus backend on a Milvus Lite file: the service and the Milvus Lite engine it started
    (a child process) are killed together with SIGKILL, so Milvus gets no chance to flush either."""
    server = ServerProcess(tmp_path / "data", LIKENESS_SEED_GALLERY="0", LIKENESS_INDEX_BACKEND="milvus",
                           LIKENESS_MILVUS_URI=str(tmp_path / "milvus.db"))

    def kill_both() -> None:
        engine = _children(server.process.pid)
        assert engine, "Milvus Lite runs as a child process of the service"
        for pid in [server.process.pid, *engine]:
            os.kill(pid, signal.SIGKILL)
        server.process.wait()
        for pid in engine:
            while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]:
                time.sleep(0.05)

    acked, attempted = run_rounds(server, kill_both)
    check_after_restart(server, acked, attempted)
