"""The SQLite log on its own: durable writes, labels, the change log, the process lock, identity."""

from __future__ import annotations

import numpy as np
import pytest

from service.index_store import IndexLocked, IndexMismatch, NewItem
from service.index_store.item_log import ItemLog
from service.index_store.items import model_key
from tests.service.index_store.conftest import DIM, unit


def test_writes_get_fresh_labels_and_the_log_records_what_they_retired(tmp_path):
    rng = np.random.default_rng(0)
    log = ItemLog(tmp_path, 1, DIM)
    log.open()
    first = log.write_upserts([NewItem("a", unit(rng, 1)), NewItem("b", unit(rng, 1))], {}, "m")
    assert [label for label, _, _ in first] == [1, 2]
    again = log.write_upserts([NewItem("a", unit(rng, 1))], {"a": (1, first[0][1])}, "m")
    assert again[0][0] == 3 and again[0][1] == first[0][1]  # created is kept
    assert log.write_delete("b", 2) == 4
    assert log.changes_after(1) == [(2, "upsert", "b", None), (3, "upsert", "a", 1), (4, "delete", "b", 2)]
    assert log.ids_after(None, 10) == ["a"] and log.vectors(3).shape == (1, DIM) and log.vectors(1) is None
    log.trim(3)
    assert log.oldest_change() == 4 and log.last_seq() == 4  # the sequence survives trimming
    log.close()


def test_one_process_at_a_time_and_one_shape(tmp_path):
    log = ItemLog(tmp_path, 1, DIM)
    log.open()
    first, second = model_key({"name": "first"}), model_key({"name": "second"})
    assert log.check_identity({"dim": DIM, "spaces": ["overall"]}, first) == first
    assert log.check_identity({"dim": DIM, "spaces": ["overall"]}, second) == first
    with pytest.raises(IndexMismatch, match="32-d"):
        log.check_identity({"dim": 32, "spaces": ["overall"]}, first)
    other = ItemLog(tmp_path, 1, DIM)
    with pytest.raises(IndexLocked):  # flock is per open file description: a second open is refused
        other.open()
    log.close()
    other.open()
    other.close()
