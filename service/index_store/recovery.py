"""Bringing the embedded store's vector spaces up to date with its log: load the snapshot and
replay the changes after it, or rebuild every space from the items table."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from service.index_store.faiss_index import VectorIndex
from service.index_store.item_log import ItemLog
from service.index_store.payload_index import PayloadIndex
from service.index_store.vector_spaces import VectorSpaces

log = logging.getLogger("likeness.index")


def replay_after(seq: int, item_log: ItemLog, payload: PayloadIndex, spaces: VectorSpaces,
                 indexes: dict[str, VectorIndex] | None = None) -> int:
    """Apply the log after ``seq`` to ``indexes`` (default: the live ones): retire old labels, add
    current versions (as ``payload`` knows them). Returns how many log records it read."""
    added: set[int] = set()
    changes = item_log.changes_after(seq)
    for change_seq, op, item_id, old_label in changes:
        # A label up to ``seq`` is in the indexes; a later one only if this replay added it. An id
        # upserted twice after ``seq`` retires a version that was never added: tombstoning it would
        # count a vector that is not there (HNSW's count is stored minus tombstones).
        if old_label is not None and (old_label <= seq or old_label in added):
            spaces.remove(np.array([old_label], dtype=np.int64), indexes)
        current = payload.get(item_id)
        if op == "upsert" and current is not None and current.label == change_seq:
            spaces.add(np.array([change_seq], dtype=np.int64), item_log.vectors(change_seq)[None], indexes)
            added.add(change_seq)
    return len(changes)


def rebuild(item_log: ItemLog, spaces: VectorSpaces, indexes: dict[str, VectorIndex] | None = None,
            progress: Callable[[int], None] | None = None, chunk: int = 50_000) -> int:
    """Add every item in the table to ``indexes`` (default: the live ones, assumed empty). Returns how many."""
    total = 0
    for labels, vectors in item_log.all_vectors(chunk):
        spaces.add(labels, vectors, indexes)
        total += len(labels)
        if progress:
            progress(len(labels))
    return total


def recover(snapshot: Path, item_log: ItemLog, payload: PayloadIndex, spaces: VectorSpaces) -> tuple[int, int]:
    """Fill ``spaces`` (fresh and empty) up to the log's last change: from the snapshot and the log
    after it when they line up, else from the table. Returns (the snapshot's change or 0, changes replayed)."""
    restored = spaces.restore(snapshot)
    if restored is not None:
        seq, arrays = restored
        oldest = item_log.oldest_change()
        if seq > item_log.last_seq() or (oldest is not None and oldest > seq + 1):
            log.warning("index snapshot %s (change %d) does not line up with the log; rebuilding from the table",
                        snapshot, seq)
        else:
            spaces.apply(arrays)
            return seq, replay_after(seq, item_log, payload, spaces)
    rebuild(item_log, spaces)
    return 0, 0
