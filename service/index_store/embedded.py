"""The embedded backend: SQLite is the source of truth and the log; FAISS indexes are derived from it.

Parts, one job each: :class:`~service.index_store.item_log.ItemLog` (the durable items and change
log), :class:`~service.index_store.payload_index.PayloadIndex` (items by id and label, filter
postings), :class:`~service.index_store.vector_spaces.VectorSpaces` (FAISS per space, snapshot and
restore), :mod:`~service.index_store.recovery` (snapshot + replay, or rebuild) and
:class:`~service.index_store.maintenance.Maintenance` (compaction and snapshots in the background).

This facade alone takes the locks, always in this order: ``_snapshot_lock`` (one snapshot or
compaction at a time: either would trim or replay the log the other reads), then ``_lock`` (read:
searches and reads, in parallel; write: a change to the log and every part it touches). No part
takes a lock of its own, so no other order can arise.

Durability: a 201 rests on SQLite's fsync of the write-ahead log (``synchronous=FULL``) before
COMMIT returns; only then are the in-memory parts updated and the call returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.index_store import recovery
from service.index_store.base import IndexStore
from service.index_store.faiss_index import IndexOptions
from service.index_store.item_log import DATABASE, ItemLog
from service.index_store.items import (
    OVERALL,
    Dismissal,
    Hit,
    NewItem,
    StoredItem,
    check_new_items,
    model_key,
    stored_item,
)
from service.index_store.locks import ReadWriteLock
from service.index_store.maintenance import Maintenance
from service.index_store.payload_index import PayloadIndex
from service.index_store.search import search_space
from service.index_store.vector_spaces import VectorSpaces, atomic_write

log = logging.getLogger("likeness.index")

SNAPSHOT = "snapshot.npz"


@dataclass(frozen=True)
class StoreOptions:
    index: IndexOptions = IndexOptions()
    snapshot_every: int = 5_000  # changes between automatic snapshots (0 = only on close)
    # A filter matching at most this many items (or this fraction) is searched exactly.
    exact_filter_max: int = 20_000
    exact_filter_fraction: float = 0.1


class EmbeddedStore(IndexStore):
    backend = "embedded"
    durability = "SQLite WAL with synchronous=FULL: fsynced on this machine's disk before COMMIT returns"

    def __init__(self, directory: str | Path, dim: int, aspects: list[str], model_identity: dict[str, Any],
                 options: StoreOptions | None = None) -> None:
        self.directory = Path(directory)
        self.dim = dim
        self.spaces = [OVERALL, *aspects]
        self.options = options or StoreOptions()
        self._model_key = model_key(model_identity)  # what each upserted item records
        self._log = ItemLog(self.directory, len(self.spaces), dim)
        self._payload = PayloadIndex()
        self._vectors = VectorSpaces(self.spaces, dim, self.options.index)
        self._maintenance = Maintenance()
        self._lock = ReadWriteLock()
        self._snapshot_lock = threading.Lock()
        self._applied_seq = 0
        self._snapshot_seq = 0
        self._dismissals_written = 0
        self.load_seconds = 0.0
        self.replayed_changes = 0

    # lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        started = time.perf_counter()
        self._log.open()
        try:
            first_model = self._log.check_identity({"dim": self.dim, "spaces": self.spaces}, self._model_key)
        except BaseException:
            self._log.close()
            raise
        by_other_models: Counter[str] = Counter()
        unreadable = 0
        for row in self._log.rows(first_model):
            item = stored_item(*row[:5])
            unreadable += item.problem is not None
            self._payload.remember(item)
            if row[5] != self._model_key:
                by_other_models[row[5]] += 1
        if unreadable:
            log.warning("index %s: %d item(s) hold metadata that cannot be returned as stored (written by an older "
                        "version); reads show them with an error: delete or re-add them", self.directory, unreadable)
        if by_other_models:
            # Same shape, so the vectors load, but their scores are not comparable with this model's.
            log.warning("index %s: %d of %d items were embedded by another model (%s); serving %s: scores mix "
                        "two models until those items are re-indexed (added again)", self.directory,
                        by_other_models.total(), len(self._payload),
                        "; ".join(f"{count} by {model}" for model, count in by_other_models.items()), self._model_key)
        self.other_models = sorted(by_other_models)
        self._applied_seq = self._log.last_seq()
        self._snapshot_seq, self.replayed_changes = recovery.recover(
            self.directory / SNAPSHOT, self._log, self._payload, self._vectors)
        self.load_seconds = time.perf_counter() - started
        log.info("index %s: %d items, %s index, %d space(s), %d change(s) replayed, loaded in %.2fs",
                 self.directory, len(self._payload), self.options.index.type, len(self.spaces),
                 self.replayed_changes, self.load_seconds)

    def close(self) -> None:
        """Snapshot (so the next start replays nothing) and close."""
        if not self._log.is_open:
            return
        self.wait_for_maintenance()
        try:
            self.snapshot()
        finally:
            with self._lock.write():
                self._log.close()

    def drop(self) -> None:
        """Close without a snapshot, and delete the index's own files (not the folder's other ones)."""
        if self._log.is_open:
            self.wait_for_maintenance()
            with self._lock.write():
                self._log.close()
        for name in (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", SNAPSHOT, "index.lock"):
            (self.directory / name).unlink(missing_ok=True)

    # writes ----------------------------------------------------------------------------------
    def upsert(self, items: list[NewItem]) -> list[str]:
        if not items:
            return []
        check_new_items(items, (len(self.spaces), self.dim))
        with self._lock.write():
            previous = {item.id: old for item in items if (old := self._payload.get(item.id)) is not None}
            written = self._log.write_upserts(items, {i: (old.label, old.created) for i, old in previous.items()},
                                              self._model_key)
            # Durable now; apply to the derived parts under the same lock.
            self._vectors.remove(np.array([old.label for old in previous.values()], dtype=np.int64))
            labels = np.array([label for label, _, _ in written], dtype=np.int64)
            self._vectors.add(labels, np.stack([item.vectors for item in items]))
            for item, (label, created, updated) in zip(items, written):
                if item.id in previous:
                    self._payload.forget(previous[item.id])
                self._payload.remember(StoredItem(item.id, label, item.metadata, created, updated))
            self._applied_seq = int(labels.max())
        self._maybe_maintain()
        return [item.id for item in items]

    def delete(self, item_id: str) -> bool:
        with self._lock.write():
            previous = self._payload.get(item_id)
            if previous is None:
                return False
            seq = self._log.write_delete(item_id, previous.label)
            self._vectors.remove(np.array([previous.label], dtype=np.int64))
            self._payload.forget(previous)
            self._applied_seq = seq
        self._maybe_maintain()
        return True

    def dismiss(self, dismissal: Dismissal) -> None:
        with self._lock.write():
            self._log.write_dismissal(dismissal.key, dismissal.to_json())
            self._dismissals_written += 1

    def version(self) -> tuple:
        return self._applied_seq, self._dismissals_written

    def dismissals(self) -> list[Dismissal]:
        with self._lock.read():
            return [Dismissal.from_json(value) for value in self._log.dismissals()]

    # maintenance -----------------------------------------------------------------------------
    def _maybe_maintain(self) -> None:
        """Compact HNSW tombstones and snapshot when due; cheap to call after every write."""
        due_compaction = self._vectors.needs_compaction()
        every = self.options.snapshot_every
        if due_compaction or (every and self._applied_seq - self._snapshot_seq >= every):
            self._maintenance.start_if_idle(self._maintain, due_compaction)

    def _maintain(self, compaction: bool) -> None:
        if compaction:
            self.compact()
        self.snapshot()

    def wait_for_maintenance(self, timeout: float | None = None) -> None:
        self._maintenance.wait(timeout)

    def snapshot(self) -> bool:
        """Write all FAISS indexes atomically with the sequence number they include; trim the log."""
        with self._snapshot_lock:
            with self._lock.read():
                if not self._log.is_open or self._applied_seq == self._snapshot_seq:
                    return False
                seq = self._applied_seq
                data = self._vectors.serialize(seq)
            atomic_write(self.directory / SNAPSHOT, data)
            with self._lock.write():
                if self._log.is_open:
                    self._log.trim(seq)  # the log up to the snapshot is no longer needed for recovery
                self._snapshot_seq = seq
            log.info("index snapshot at change %d (%d bytes)", seq, len(data))
            return True

    def compact(self) -> int:
        """Rebuild the spaces that hold tombstones from the live items, without stopping searches:
        read a consistent view under the read lock, build outside any lock, then replay the writes
        that came meanwhile and swap under the write lock. Returns how many spaces were rebuilt."""
        with self._snapshot_lock:  # a snapshot would trim the log this replays
            with self._lock.read():
                stale = self._vectors.with_tombstones()
                if not stale or not self._log.is_open:
                    return 0
                start_seq = self._applied_seq
                chunks = list(self._log.all_vectors())
            fresh = self._vectors.empty_copy(stale)
            for labels, vectors in chunks:
                self._vectors.add(labels, vectors, fresh)
            with self._lock.write():
                recovery.replay_after(start_seq, self._log, self._payload, self._vectors, fresh)
                self._vectors.indexes.update(fresh)
            log.info("compacted %d index space(s): %d live items", len(stale), sum(len(c[0]) for c in chunks))
            return len(stale)

    def rebuild(self, progress: Callable[[int], None] | None = None) -> None:
        """Throw the FAISS indexes away, rebuild them from the table, and snapshot them."""
        with self._lock.write():
            self._vectors.indexes = self._vectors.empty_copy()
            recovery.rebuild(self._log, self._vectors, progress=progress, chunk=5_000)
            self._snapshot_seq = -1  # whatever is on disk is older than this
        self.snapshot()

    # reads -----------------------------------------------------------------------------------
    def get(self, item_id: str) -> StoredItem | None:
        with self._lock.read():
            return self._payload.get(item_id)

    def thumbnail(self, item_id: str) -> bytes | None:
        with self._lock.read():
            if self._payload.get(item_id) is None:
                raise KeyError(item_id)
            return self._log.thumbnail(item_id)

    def vector(self, item_id: str, space: str = OVERALL) -> np.ndarray | None:
        if space not in self.spaces:
            raise KeyError(space)
        with self._lock.read():
            item = self._payload.get(item_id)
            if item is None:
                return None
            return self._log.vectors(item.label)[self.spaces.index(space)].copy()

    def list(self, after: str | None, limit: int) -> list[StoredItem]:
        with self._lock.read():
            return [self._payload.get(item_id) for item_id in self._log.ids_after(after, limit)]

    def count(self) -> int:
        return len(self._payload)  # a dict's len needs no lock

    def search(self, query: np.ndarray, k: int, space: str = OVERALL,
               where: dict[str, Any] | None = None, with_vectors: bool = False) -> list[Hit]:
        """Selective filters are searched exactly, and so is an approximate index that comes back short."""
        if space not in self.spaces:
            raise KeyError(space)
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(self.dim)
        with self._lock.read():
            return search_space(self._vectors.indexes[space], self._payload, query, k, where, self.options,
                                with_vectors)

    def stats(self) -> dict[str, Any]:
        with self._lock.read():
            return {"backend": self.backend, "items": len(self._payload), "type": self.options.index.type,
                    "dim": self.dim, **self._vectors.stats(),
                    "applied_change": self._applied_seq, "snapshot_change": self._snapshot_seq}
