"""The index store: SQLite is the source of truth and the log; FAISS indexes are derived from it.

Durability. Every write is one SQLite transaction (WAL journal, ``synchronous=FULL``: fsynced
before COMMIT returns) that updates ``items`` and appends to ``changes``, the store's append-only
log. Only then is it applied to FAISS and acknowledged. SQLite detects a torn WAL frame by its
checksum and drops it on open, so a crash at any moment leaves either the whole transaction or
none of it. FAISS is snapshotted now and then into one file (written to a temp file, fsynced,
renamed over the old one, directory fsynced) that records the last change it includes; on start
the snapshot is loaded, verified (SHA-256), and the log after it is replayed. A snapshot that is
missing, torn or stale is reported in one log line and the indexes are rebuilt from the table.

Labels. An item's FAISS label is the sequence number of the change that wrote it, so every
upsert gets a fresh label: an HNSW tombstone of the old version can never hide the new one, and a
search can never return a replaced vector.

Spaces. One vector index per space: the overall embedding and, for conditional models, one per
aspect, all written under one write lock. Searches share a read lock: they run in parallel and
never see half an upsert.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.item_fields import text_problem, value_problem
from service.vector_index import IndexOptions, VectorIndex

log = logging.getLogger("likeness.index")

OVERALL = "overall"
SNAPSHOT = "snapshot.npz"
SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    label INTEGER NOT NULL UNIQUE,  -- seq of the change that wrote this version
    vectors BLOB NOT NULL,          -- float32 [1 + aspects, dim]: overall, then each aspect
    metadata TEXT NOT NULL,         -- JSON object
    thumbnail BLOB,                 -- PNG thumbnail of the image as uploaded
    created REAL NOT NULL,
    updated REAL NOT NULL,
    model TEXT                      -- JSON name and version of the model that embedded it (NULL: the index's first)
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    id TEXT NOT NULL,
    old_label INTEGER               -- the label this change retired, if any
);
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class IndexMismatch(RuntimeError):
    """The index on disk was built by a model whose embeddings are not comparable with this one."""


class IndexLocked(RuntimeError):
    """Another process has this index open; two writers would each keep their own FAISS copy."""


class FilterError(ValueError):
    """A metadata filter that is not a flat JSON object of scalar values."""


@dataclass
class NewItem:
    id: str
    vectors: np.ndarray  # float32 [1 + aspects, dim]
    metadata: dict[str, Any] = field(default_factory=dict)
    thumbnail: bytes | None = None


@dataclass(frozen=True)
class StoredItem:
    id: str
    label: int
    metadata: dict[str, Any] | None  # None when ``problem`` is set
    created: float
    updated: float
    # Why this row cannot be returned as stored (an older version accepted metadata the rules in
    # service/item_fields.py now refuse): reads show the row with this error, not fail the page.
    problem: str | None = None


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    metadata: dict[str, Any] | None
    error: str | None = None


@dataclass(frozen=True)
class StoreOptions:
    index: IndexOptions = IndexOptions()
    snapshot_every: int = 5_000  # changes between automatic snapshots (0 = only on close)
    # A filter matching at most this many items (or this fraction) is searched exactly.
    exact_filter_max: int = 20_000
    exact_filter_fraction: float = 0.1


class LockBusy(RuntimeError):
    """A non-blocking read found a writer holding or waiting for the lock."""


class ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers so writes are not starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self, blocking: bool = True) -> Iterator[None]:
        """Hold the lock for reading; with ``blocking=False``, raise LockBusy instead of waiting."""
        with self._cond:
            if not blocking and (self._writer or self._writers_waiting):
                raise LockBusy()
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _filter_key(value: Any) -> str:
    """Filters match on the JSON text of a scalar, so {"label": 3} and {"label": "3"} differ as in JSON."""
    return json.dumps(value, sort_keys=True)


class IndexStore:
    def __init__(self, directory: str | Path, dim: int, aspects: list[str], model_identity: dict[str, Any],
                 options: StoreOptions | None = None) -> None:
        self.directory = Path(directory)
        self.dim = dim
        self.spaces = [OVERALL, *aspects]
        self._model_key = json.dumps(model_identity, sort_keys=True)  # what each upserted item records
        self.options = options or StoreOptions()
        self._lock = ReadWriteLock()
        self._items: dict[str, StoredItem] = {}
        self._ids_by_label: dict[int, str] = {}
        self._postings: dict[tuple[str, str], set[int]] = defaultdict(set)  # (field, json value) -> labels
        self._indexes: dict[str, VectorIndex] = {}
        self._db: sqlite3.Connection | None = None
        self._applied_seq = 0
        self._snapshot_seq = 0
        self._snapshot_lock = threading.Lock()
        self._maintenance: threading.Thread | None = None
        self._maintenance_guard = threading.Lock()
        self.load_seconds = 0.0
        self.replayed_changes = 0

    # lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.directory / "index.lock", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise IndexLocked(f"another process (a running service?) has the index in {self.directory} open; "
                              "stop it, or load images through its API (python -m service.index load --url ...)") from None
        started = time.perf_counter()
        db = sqlite3.connect(self.directory / "index.sqlite3", check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        if "model" not in {row[1] for row in db.execute("PRAGMA table_info(items)")}:
            db.execute("ALTER TABLE items ADD COLUMN model TEXT")  # an index from before per-item models
        self._db = db
        first_model = self._check_identity()
        by_other_models: Counter[str] = Counter()
        unreadable = 0
        for row in db.execute("SELECT id, label, metadata, created, updated, COALESCE(model, ?) FROM items",
                              (first_model,)):
            item = _stored_item(*row[:5])
            unreadable += item.problem is not None
            self._remember(item)
            if row[5] != self._model_key:
                by_other_models[row[5]] += 1
        if unreadable:
            log.warning("index %s: %d item(s) hold metadata that cannot be returned as stored (written by an older "
                        "version); reads show them with an error: delete or re-add them", self.directory, unreadable)
        if by_other_models:
            # Same shape, so the vectors load, but their scores are not comparable with this model's.
            log.warning("index %s: %d of %d items were embedded by another model (%s); serving %s: scores mix "
                        "two models until those items are re-indexed (added again)", self.directory,
                        by_other_models.total(), len(self._items),
                        "; ".join(f"{count} by {model}" for model, count in by_other_models.items()), self._model_key)
        # The last sequence number ever handed out, even if the log before it has been trimmed.
        last = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        self._applied_seq = int(last[0]) if last else 0
        self._indexes = {space: VectorIndex(self.dim, self.options.index) for space in self.spaces}
        if not self._load_snapshot():
            self._rebuild_from_table()
        self.load_seconds = time.perf_counter() - started
        log.info("index %s: %d items, %s index, %d space(s), %d change(s) replayed, loaded in %.2fs",
                 self.directory, len(self._items), self.options.index.type, len(self.spaces),
                 self.replayed_changes, self.load_seconds)

    def close(self) -> None:
        """Snapshot (so the next start replays nothing) and close."""
        if self._db is None:
            return
        self.wait_for_maintenance()
        try:
            self.snapshot()
        finally:
            with self._lock.write():
                if self._db is not None:
                    self._db.close()
                    self._db = None
                    self._lock_file.close()  # releases the flock

    def _check_identity(self) -> str:
        """Refuse an index whose vectors came from an incompatible model (other dim or aspects);
        return the model that created the index (what items from before per-item models were
        embedded by), as a sorted JSON key."""
        db = self._require_db()
        identity = {"dim": self.dim, "spaces": self.spaces}
        row = db.execute("SELECT value FROM store_meta WHERE key = 'identity'").fetchone()
        if row is None:
            db.execute("INSERT INTO store_meta VALUES ('identity', ?)", (json.dumps(identity),))
            db.execute("INSERT OR REPLACE INTO store_meta VALUES ('model', ?)", (self._model_key,))
            return self._model_key
        stored = json.loads(row[0])
        if stored != identity:
            raise IndexMismatch(
                f"index in {self.directory} holds {stored['dim']}-d vectors for spaces {stored['spaces']}, "
                f"but the model gives {self.dim}-d vectors for {self.spaces}; use another LIKENESS_DATA_DIR "
                "or re-index your images")
        first = db.execute("SELECT value FROM store_meta WHERE key = 'model'").fetchone()
        return json.dumps(json.loads(first[0]), sort_keys=True) if first else self._model_key

    # snapshots and recovery ------------------------------------------------------------------
    def _snapshot_identity(self) -> dict[str, Any]:
        return {"dim": self.dim, "spaces": self.spaces, "index": self.options.index.type}

    def snapshot(self) -> bool:
        """Write all FAISS indexes atomically with the sequence number they include; trim the log."""
        with self._snapshot_lock:
            with self._lock.read():
                if self._db is None or self._applied_seq == self._snapshot_seq:
                    return False
                seq = self._applied_seq
                arrays = {}
                for s, space in enumerate(self.spaces):
                    index = self._indexes[space]
                    arrays[f"index_{s}"] = index.serialize()
                    arrays[f"dead_{s}"] = np.fromiter(index.dead, dtype=np.int64, count=len(index.dead))
            manifest = {**self._snapshot_identity(), "seq": seq,
                        "sha256": {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in arrays.items()}}
            buffer = io.BytesIO()
            np.savez(buffer, manifest=np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8), **arrays)
            _atomic_write(self.directory / SNAPSHOT, buffer.getvalue())
            with self._lock.write():
                if self._db is not None:
                    # The log before the snapshot is no longer needed for recovery.
                    self._db.execute("DELETE FROM changes WHERE seq <= ?", (seq,))
                self._snapshot_seq = seq
            log.info("index snapshot at change %d (%d bytes)", seq, buffer.tell())
            return True

    def _load_snapshot(self) -> bool:
        path = self.directory / SNAPSHOT
        if not path.is_file():
            return False
        try:
            with np.load(path) as archive:
                manifest = json.loads(archive["manifest"].tobytes())
                if {k: manifest.get(k) for k in ("dim", "spaces", "index")} != self._snapshot_identity():
                    log.warning("index snapshot %s is for another configuration; rebuilding from the table", path)
                    return False
                arrays = {k: archive[k] for k in manifest["sha256"]}
        except Exception as exc:  # noqa: BLE001 - any unreadable snapshot means the same: rebuild
            log.warning("index snapshot %s is torn or unreadable (%s); dropped, rebuilding from the table", path, exc)
            return False
        for name, array in arrays.items():
            if hashlib.sha256(array.tobytes()).hexdigest() != manifest["sha256"][name]:
                log.warning("index snapshot %s fails its checksum (%s); dropped, rebuilding from the table", path, name)
                return False
        seq = int(manifest["seq"])
        db = self._require_db()
        oldest = db.execute("SELECT MIN(seq) FROM changes").fetchone()[0]
        if seq > self._applied_seq or (oldest is not None and oldest > seq + 1):
            log.warning("index snapshot %s (change %d) does not line up with the log; rebuilding from the table",
                        path, seq)
            return False
        for s, space in enumerate(self.spaces):
            self._indexes[space].restore(arrays[f"index_{s}"], arrays[f"dead_{s}"])
        self.replayed_changes = self._replay_after(seq)
        self._snapshot_seq = seq
        return True

    def _replay_after(self, seq: int, indexes: dict[str, VectorIndex] | None = None) -> int:
        """Apply the log after ``seq`` to ``indexes`` (default: the live ones): retire old labels, add
        current versions. Returns how many log records it read."""
        indexes = self._indexes if indexes is None else indexes
        db = self._require_db()
        changes = db.execute("SELECT seq, op, id, old_label FROM changes WHERE seq > ? ORDER BY seq", (seq,)).fetchall()
        added: set[int] = set()
        for change_seq, op, item_id, old_label in changes:
            # A label up to ``seq`` is in the indexes; a later one only if this replay added it. An
            # id upserted twice after ``seq`` retires a version that was never added: tombstoning it
            # would count a vector that is not there (HNSW's count is stored minus tombstones).
            if old_label is not None and (old_label <= seq or old_label in added):
                for index in indexes.values():
                    index.remove(np.array([old_label], dtype=np.int64))
            current = self._items.get(item_id)
            if op == "upsert" and current is not None and current.label == change_seq:
                row = db.execute("SELECT vectors FROM items WHERE label = ?", (change_seq,)).fetchone()
                vectors = self._decode_vectors(row[0])
                for s, space in enumerate(self.spaces):
                    indexes[space].add(np.array([change_seq], dtype=np.int64), vectors[s][None])
                added.add(change_seq)
        return len(changes)

    def _rebuild_from_table(self, progress: Callable[[int], None] | None = None, chunk: int = 50_000) -> None:
        db = self._require_db()
        batch_labels, batch_vectors = [], []
        for label, blob in db.execute("SELECT label, vectors FROM items ORDER BY label"):
            batch_labels.append(label)
            batch_vectors.append(self._decode_vectors(blob))
            if len(batch_labels) == chunk:
                self._add_to_indexes(np.array(batch_labels, dtype=np.int64), np.stack(batch_vectors))
                if progress:
                    progress(len(batch_labels))
                batch_labels, batch_vectors = [], []
        if batch_labels:
            self._add_to_indexes(np.array(batch_labels, dtype=np.int64), np.stack(batch_vectors))
            if progress:
                progress(len(batch_labels))
        self._snapshot_seq = 0

    def rebuild(self, progress: Callable[[int], None] | None = None) -> None:
        """Throw the FAISS indexes away, rebuild them from the table, and snapshot them."""
        with self._lock.write():
            self._indexes = {space: VectorIndex(self.dim, self.options.index) for space in self.spaces}
            self._rebuild_from_table(progress, chunk=5_000)
            self._snapshot_seq = -1  # whatever is on disk is older than this
        self.snapshot()

    # writes ----------------------------------------------------------------------------------
    def upsert(self, items: list[NewItem]) -> list[str]:
        """Insert or replace items; returns their ids once they are durable on disk and searchable."""
        if not items:
            return []
        if len({item.id for item in items}) != len(items):
            raise ValueError("the same id appears twice in one upsert")
        for item in items:
            if item.vectors.shape != (len(self.spaces), self.dim):
                raise ValueError(f"item {item.id!r}: vectors {item.vectors.shape}, "
                                 f"expected {(len(self.spaces), self.dim)}")
            # The API checks these first; this keeps every other writer (ingest) from storing
            # what no read could return.
            problem = text_problem(item.id) or value_problem(item.metadata)
            if problem is None and not isinstance(item.metadata, dict):
                problem = "metadata is not an object"
            if problem:
                raise ValueError(f"item {item.id!r}: {problem}")
        now = time.time()
        with self._lock.write():
            db = self._require_db()
            written: list[tuple[StoredItem, StoredItem | None]] = []
            db.execute("BEGIN IMMEDIATE")
            try:
                for item in items:
                    previous = self._items.get(item.id)
                    seq = db.execute("INSERT INTO changes (op, id, old_label) VALUES ('upsert', ?, ?)",
                                     (item.id, previous.label if previous else None)).lastrowid
                    created = previous.created if previous else now
                    db.execute("INSERT OR REPLACE INTO items (id, label, vectors, metadata, thumbnail, created, updated, "
                               "model) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (item.id, seq, np.ascontiguousarray(item.vectors, dtype=np.float32).tobytes(),
                                json.dumps(item.metadata, sort_keys=True), item.thumbnail, created, now,
                                self._model_key))
                    written.append((StoredItem(item.id, int(seq), item.metadata, created, now), previous))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            # Durable now; apply to the derived indexes under the same lock.
            retired = np.array([prev.label for _, prev in written if prev is not None], dtype=np.int64)
            for index in self._indexes.values():
                index.remove(retired)
            self._add_to_indexes(np.array([entry.label for entry, _ in written], dtype=np.int64),
                                 np.stack([item.vectors for item in items]))
            for entry, previous in written:
                if previous is not None:
                    self._forget(previous)
                self._remember(entry)
            self._applied_seq = max(entry.label for entry, _ in written)
        self._maybe_maintain()
        return [item.id for item in items]

    def delete(self, item_id: str) -> bool:
        with self._lock.write():
            previous = self._items.get(item_id)
            if previous is None:
                return False
            db = self._require_db()
            db.execute("BEGIN IMMEDIATE")
            try:
                seq = db.execute("INSERT INTO changes (op, id, old_label) VALUES ('delete', ?, ?)",
                                 (item_id, previous.label)).lastrowid
                db.execute("DELETE FROM items WHERE id = ?", (item_id,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            for index in self._indexes.values():
                index.remove(np.array([previous.label], dtype=np.int64))
            self._forget(previous)
            self._applied_seq = int(seq)
        self._maybe_maintain()
        return True

    def _maybe_maintain(self) -> None:
        """Compact HNSW tombstones and snapshot when due; cheap to call after every write. Both run
        on a background thread, so the write that crossed the threshold is not held up."""
        due_compaction = any(index.needs_compaction() for index in self._indexes.values())
        every = self.options.snapshot_every
        due_snapshot = every and self._applied_seq - self._snapshot_seq >= every
        if not (due_compaction or due_snapshot):
            return
        with self._maintenance_guard:  # concurrent writers must not start two maintainers
            if self._maintenance is None or not self._maintenance.is_alive():
                self._maintenance = threading.Thread(target=self._maintain, args=(due_compaction,),
                                                     name="likeness-index-maintenance", daemon=True)
                self._maintenance.start()

    def _maintain(self, compaction: bool) -> None:
        try:
            if compaction:
                self.compact()
            self.snapshot()
        except Exception:  # noqa: BLE001 - a failed snapshot loses nothing: the log still has it all
            log.exception("index maintenance failed; the next write retries it")

    def wait_for_maintenance(self, timeout: float | None = None) -> None:
        """Block until background compaction or snapshotting has finished (tests, shutdown)."""
        thread = self._maintenance
        if thread is not None:
            thread.join(timeout)

    def compact(self) -> int:
        """Rebuild the indexes that hold tombstones from the live items, without stopping searches:
        the rebuild reads a consistent view under the read lock, builds outside any lock, then
        replays the writes that came meanwhile and swaps under the write lock. Returns how many
        spaces were rebuilt."""
        with self._snapshot_lock:  # a snapshot would trim the log this replays
            with self._lock.read():
                stale = [space for space, index in self._indexes.items() if index.dead]
                if not stale or self._db is None:
                    return 0
                start_seq = self._applied_seq
                rows = self._db.execute("SELECT label, vectors FROM items ORDER BY label").fetchall()
            labels = np.array([r[0] for r in rows], dtype=np.int64)
            vectors = np.stack([self._decode_vectors(r[1]) for r in rows]) if rows else \
                np.zeros((0, len(self.spaces), self.dim), np.float32)
            fresh = {}
            for space in stale:
                fresh[space] = VectorIndex(self.dim, self.options.index)
                fresh[space].add(labels, vectors[:, self.spaces.index(space)])
            with self._lock.write():
                self._replay_after(start_seq, fresh)
                self._indexes.update(fresh)
            log.info("compacted %d index space(s): %d live items", len(stale), len(labels))
            return len(stale)

    # reads -----------------------------------------------------------------------------------
    def get(self, item_id: str) -> StoredItem | None:
        with self._lock.read():
            return self._items.get(item_id)

    def thumbnail(self, item_id: str) -> bytes | None:
        """The item's PNG thumbnail; KeyError if there is no such item, None if it has no thumbnail."""
        with self._lock.read():
            if item_id not in self._items:
                raise KeyError(item_id)
            row = self._require_db().execute("SELECT thumbnail FROM items WHERE id = ?", (item_id,)).fetchone()
        return row[0] if row else None

    def vector(self, item_id: str, space: str = OVERALL) -> np.ndarray | None:
        """The stored float32 [dim] vector of an item in one space (as embedded when it was
        added: L2-normalised), or None if there is no such item."""
        if space not in self.spaces:
            raise KeyError(space)
        with self._lock.read():
            item = self._items.get(item_id)
            if item is None:
                return None
            row = self._require_db().execute("SELECT vectors FROM items WHERE label = ?", (item.label,)).fetchone()
        return self._decode_vectors(row[0])[self.spaces.index(space)].copy()

    def list(self, after: str | None, limit: int) -> list[StoredItem]:
        """Items in id order, starting after the cursor ``after``, at most ``limit`` (the id index pages)."""
        with self._lock.read():
            rows = self._require_db().execute("SELECT id FROM items WHERE id > ? ORDER BY id LIMIT ?",
                                              (after or "", limit)).fetchall()
            return [self._items[row[0]] for row in rows]

    @property
    def size_hint(self) -> int:
        """How many items, read without the lock (it may be a write behind): for choosing how to
        search, never for answering."""
        return len(self._ids_by_label)

    def search(self, query: np.ndarray, k: int, space: str = OVERALL,
               where: dict[str, Any] | None = None, blocking: bool = True) -> list[Hit]:
        """The k nearest live items by cosine, best first, optionally only those whose metadata
        equals every field of ``where``. Selective filters are searched exactly. With
        ``blocking=False`` it raises LockBusy rather than wait for a write (an event loop's call)."""
        if space not in self.spaces:
            raise KeyError(space)
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(self.dim)
        with self._lock.read(blocking):
            index = self._indexes[space]
            allowed = None
            if where:
                allowed = self._matching(where)
                if len(allowed) == 0:
                    return []
            exact = allowed is not None and index.options.type != "flat" and (
                len(allowed) <= self.options.exact_filter_max
                or len(allowed) <= self.options.exact_filter_fraction * max(1, index.ntotal))
            if not exact:
                scores, labels = index.search(query, k, allowed)
                # An approximate index can come back short (an HNSW graph walk that does not reach
                # enough items, IVF lists that hold fewer than k): then answer exactly.
                eligible = len(self._ids_by_label) if allowed is None else len(allowed)
                exact = len(labels) < min(k, eligible)
                if exact and allowed is None:
                    allowed = np.fromiter(self._ids_by_label, dtype=np.int64, count=len(self._ids_by_label))
            if exact:
                vectors = index.reconstruct(allowed)
                scores = vectors @ query
                top = np.argsort(-scores, kind="stable")[:k]
                scores, labels = scores[top], allowed[top]
            hits = []
            for score, label in zip(scores, labels):
                item_id = self._ids_by_label.get(int(label))
                if item_id is not None:  # a live label: replaced and deleted versions have none
                    item = self._items[item_id]
                    hits.append(Hit(item_id, float(score), item.metadata, item.problem))
            return hits[:k]

    def _matching(self, where: dict[str, Any]) -> np.ndarray:
        sets = []
        for key, value in where.items():
            if isinstance(value, (dict, list)):
                raise FilterError(f"filter field {key!r}: only equality on scalar values is supported")
            sets.append(self._postings.get((key, _filter_key(value)), set()))
        sets.sort(key=len)
        result = set(sets[0])
        for other in sets[1:]:
            result &= other
        return np.array(sorted(result), dtype=np.int64)

    def __len__(self) -> int:
        with self._lock.read():
            return len(self._items)

    def stats(self) -> dict[str, Any]:
        with self._lock.read():
            return {
                "items": len(self._items),
                "type": self.options.index.type,
                "dim": self.dim,
                "spaces": {space: index.ntotal for space, index in self._indexes.items()},
                "kind": {space: index.kind for space, index in self._indexes.items()},
                "tombstones": sum(len(index.dead) for index in self._indexes.values()),
                "applied_change": self._applied_seq,
                "snapshot_change": self._snapshot_seq,
            }

    # helpers ---------------------------------------------------------------------------------
    def _add_to_indexes(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        for s, space in enumerate(self.spaces):
            self._indexes[space].add(labels, np.ascontiguousarray(vectors[:, s]))

    def _remember(self, item: StoredItem) -> None:
        self._items[item.id] = item
        self._ids_by_label[item.label] = item.id
        for key, value in (item.metadata or {}).items():
            if not isinstance(value, (dict, list)):
                self._postings[(key, _filter_key(value))].add(item.label)

    def _forget(self, item: StoredItem) -> None:
        self._items.pop(item.id, None)
        self._ids_by_label.pop(item.label, None)
        for key, value in (item.metadata or {}).items():
            if not isinstance(value, (dict, list)):
                postings = self._postings.get((key, _filter_key(value)))
                if postings is not None:
                    postings.discard(item.label)
                    if not postings:
                        del self._postings[(key, _filter_key(value))]

    def _decode_vectors(self, blob: bytes) -> np.ndarray:
        return np.frombuffer(blob, dtype=np.float32).reshape(len(self.spaces), self.dim)

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("index store is closed")
        return self._db


def _stored_item(item_id: str, label: int, metadata: str, created: float, updated: float) -> StoredItem:
    """A row of the items table; metadata that breaks the rules of service/item_fields.py (written by
    an older version, or edited by hand) is kept as a problem rather than failing every read. (Ids
    need no such care: SQLite refuses text that is not UTF-8, so none was ever stored.)"""
    try:
        value = json.loads(metadata)
    except (ValueError, RecursionError) as exc:
        problem = f"the stored metadata is not readable JSON ({exc})"
    else:
        problem = value_problem(value) or (None if isinstance(value, dict) else "the stored metadata is not an object")
    if problem:
        return StoredItem(item_id, label, None, created, updated,
                          f"this item cannot be returned as stored: {problem}; delete it or add it again")
    return StoredItem(item_id, label, value, created, updated)


def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename over the target, fsync the directory: all of it or none of it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
