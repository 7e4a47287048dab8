"""Recovery: snapshot + replay of the log after it, or a rebuild from the table."""

from __future__ import annotations

import numpy as np

from service.index_store import NewItem, StoredItem
from service.index_store.faiss_index import IndexOptions
from service.index_store.item_log import ItemLog
from service.index_store.payload_index import PayloadIndex
from service.index_store.recovery import recover
from service.index_store.vector_spaces import VectorSpaces
from tests.service.index_store.conftest import DIM, unit


def _payload(log: ItemLog) -> PayloadIndex:
    payload = PayloadIndex()
    for item_id, label, _, created, updated, _ in log.rows("m"):
        payload.remember(StoredItem(item_id, label, {}, created, updated))
    return payload


def test_replay_after_the_snapshot_and_rebuild_without_one(tmp_path):
    rng = np.random.default_rng(0)
    vectors = unit(rng, 20)
    log = ItemLog(tmp_path, 1, DIM)
    log.open()
    log.write_upserts([NewItem(f"i{n}", v[None]) for n, v in enumerate(vectors[:10])], {}, "m")
    snapshot = VectorSpaces(["overall"], DIM, IndexOptions())
    snapshot.add(np.arange(1, 11), vectors[:10, None])
    (tmp_path / "snap.npz").write_bytes(snapshot.serialize(seq=10))
    log.write_upserts([NewItem(f"i{n}", v[None]) for n, v in enumerate(vectors[10:], 10)], {}, "m")
    log.write_delete("i0", 1)
    spaces = VectorSpaces(["overall"], DIM, IndexOptions())
    assert recover(tmp_path / "snap.npz", log, _payload(log), spaces) == (10, 11)
    assert spaces.stats()["spaces"]["overall"] == 19
    rebuilt = VectorSpaces(["overall"], DIM, IndexOptions())
    assert recover(tmp_path / "none.npz", log, _payload(log), rebuilt) == (0, 0)
    assert rebuilt.stats()["spaces"]["overall"] == 19
    log.close()
