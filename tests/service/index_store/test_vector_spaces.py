"""The FAISS spaces, kept in step, and their snapshot: written, restored, and refused when torn."""

from __future__ import annotations

import numpy as np

from service.index_store.faiss_index import IndexOptions
from service.index_store.vector_spaces import VectorSpaces, atomic_write
from tests.service.index_store.conftest import DIM, unit


def test_snapshot_round_trip_and_a_torn_one_is_refused(tmp_path, caplog):
    rng = np.random.default_rng(0)
    spaces = VectorSpaces(["overall", "colour"], DIM, IndexOptions(type="hnsw"))
    vectors = np.stack([unit(rng, 50), unit(rng, 50)], axis=1)
    spaces.add(np.arange(50), vectors)
    spaces.remove(np.array([3]))
    path = tmp_path / "snapshot.npz"
    atomic_write(path, spaces.serialize(seq=50))
    restored = VectorSpaces(["overall", "colour"], DIM, IndexOptions(type="hnsw"))
    seq, arrays = restored.restore(path)
    restored.apply(arrays)
    assert seq == 50 and restored.stats() == spaces.stats()
    assert restored.indexes["colour"].search(vectors[7, 1], 1)[1].tolist() == [7]
    assert VectorSpaces(["overall"], DIM, IndexOptions(type="hnsw")).restore(path) is None  # other spaces
    path.write_bytes(path.read_bytes()[:-100])  # torn: the end never reached the disk
    assert restored.restore(path) is None and "snapshot" in caplog.text
    assert restored.restore(tmp_path / "missing.npz") is None
