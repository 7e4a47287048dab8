"""The index store: SQLite is the source of truth, FAISS a derived index rebuilt from it.

Every write commits to SQLite (WAL, ``synchronous=FULL``) before it is applied to FAISS and
acknowledged, so an acknowledged item survives a crash; on start the FAISS indexes are rebuilt
from the table. Items get a stable int64 ``label`` (the FAISS id); string ids map to labels.

One FAISS index per *space*: the overall embedding and, for conditional models, one per aspect,
all kept in step under one write lock. Searches share a read lock, so they run in parallel and
never see a half-applied upsert.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import faiss
import numpy as np

log = logging.getLogger("likeness.index")

OVERALL = "overall"
SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    label INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    vectors BLOB NOT NULL,          -- float32 [1 + aspects, dim]: overall, then each aspect
    metadata TEXT NOT NULL,         -- JSON object
    thumbnail BLOB,                 -- PNG of the prepared image, for the web page
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class IndexMismatch(RuntimeError):
    """The index on disk was built by a model whose embeddings are not comparable with this one."""


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
    metadata: dict[str, Any]
    created: float
    updated: float


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    metadata: dict[str, Any]


class ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers so writes are not starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
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


class IndexStore:
    def __init__(self, directory: str | Path, dim: int, aspects: list[str], model_identity: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.dim = dim
        self.spaces = [OVERALL, *aspects]
        self.model_identity = model_identity
        self._lock = ReadWriteLock()
        self._items: dict[str, StoredItem] = {}
        self._ids_by_label: dict[int, str] = {}
        self._indexes: dict[str, faiss.Index] = {}
        self._db: sqlite3.Connection | None = None

    # lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        db = sqlite3.connect(self.directory / "index.sqlite3", check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        self._db = db
        self._check_identity()
        self._indexes = {space: self._new_index() for space in self.spaces}
        rows = db.execute("SELECT label, id, vectors, metadata, created, updated FROM items ORDER BY label").fetchall()
        if rows:
            labels = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            stacked = np.stack([self._decode_vectors(r[2]) for r in rows])  # [N, spaces, dim]
            for s, space in enumerate(self.spaces):
                self._indexes[space].add_with_ids(np.ascontiguousarray(stacked[:, s]), labels)
        for label, item_id, _, metadata, created, updated in rows:
            self._remember(StoredItem(item_id, label, json.loads(metadata), created, updated))
        self.load_seconds = time.perf_counter() - started
        log.info("index %s: %d items in %d space(s), loaded in %.2fs", self.directory, len(rows),
                 len(self.spaces), self.load_seconds)

    def close(self) -> None:
        with self._lock.write():
            if self._db is not None:
                self._db.close()
                self._db = None

    def _check_identity(self) -> None:
        """Refuse an index whose vectors came from an incompatible model (other dim or aspects)."""
        assert self._db is not None
        identity = {"dim": self.dim, "spaces": self.spaces}
        row = self._db.execute("SELECT value FROM store_meta WHERE key = 'identity'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO store_meta VALUES ('identity', ?)", (json.dumps(identity),))
            self._db.execute("INSERT OR REPLACE INTO store_meta VALUES ('model', ?)", (json.dumps(self.model_identity),))
            return
        stored = json.loads(row[0])
        if stored != identity:
            raise IndexMismatch(
                f"index in {self.directory} holds {stored['dim']}-d vectors for spaces {stored['spaces']}, "
                f"but the model gives {self.dim}-d vectors for {self.spaces}; use another LIKENESS_DATA_DIR "
                "or re-index your images")
        model_row = self._db.execute("SELECT value FROM store_meta WHERE key = 'model'").fetchone()
        if model_row and json.loads(model_row[0]) != self.model_identity:
            log.warning("index %s was built with model %s; serving %s: scores mix two models until re-indexed",
                        self.directory, model_row[0], json.dumps(self.model_identity))

    def _new_index(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    # writes ----------------------------------------------------------------------------------
    def upsert(self, items: list[NewItem]) -> list[str]:
        """Insert or replace items; returns their ids once they are durable on disk and searchable."""
        if not items:
            return []
        for item in items:
            if item.vectors.shape != (len(self.spaces), self.dim):
                raise ValueError(f"item {item.id!r}: vectors {item.vectors.shape}, "
                                 f"expected {(len(self.spaces), self.dim)}")
        now = time.time()
        with self._lock.write():
            db = self._require_db()
            db.execute("BEGIN IMMEDIATE")
            try:
                stored: list[tuple[StoredItem, np.ndarray, int | None]] = []
                for item in items:
                    previous = self._items.get(item.id)
                    metadata = json.dumps(item.metadata, sort_keys=True)
                    blob = np.ascontiguousarray(item.vectors, dtype=np.float32).tobytes()
                    if previous is None:
                        cursor = db.execute(
                            "INSERT INTO items (id, vectors, metadata, thumbnail, created, updated) VALUES (?,?,?,?,?,?)",
                            (item.id, blob, metadata, item.thumbnail, now, now))
                        entry = StoredItem(item.id, int(cursor.lastrowid), item.metadata, now, now)
                    else:
                        db.execute("UPDATE items SET vectors=?, metadata=?, thumbnail=?, updated=? WHERE id=?",
                                   (blob, metadata, item.thumbnail, now, item.id))
                        entry = StoredItem(item.id, previous.label, item.metadata, previous.created, now)
                    stored.append((entry, item.vectors, previous.label if previous else None))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            # Durable now; apply to the derived indexes under the same lock.
            replaced = np.array([old for _, _, old in stored if old is not None], dtype=np.int64)
            labels = np.array([entry.label for entry, _, _ in stored], dtype=np.int64)
            vectors = np.stack([v for _, v, _ in stored]).astype(np.float32)
            for s, space in enumerate(self.spaces):
                index = self._indexes[space]
                if len(replaced):
                    index.remove_ids(replaced)
                index.add_with_ids(np.ascontiguousarray(vectors[:, s]), labels)
            for entry, _, _ in stored:
                self._remember(entry)
        return [item.id for item in items]

    def delete(self, item_id: str) -> bool:
        with self._lock.write():
            previous = self._items.get(item_id)
            if previous is None:
                return False
            self._require_db().execute("DELETE FROM items WHERE id = ?", (item_id,))
            for index in self._indexes.values():
                index.remove_ids(np.array([previous.label], dtype=np.int64))
            del self._items[item_id]
            del self._ids_by_label[previous.label]
            return True

    # reads -----------------------------------------------------------------------------------
    def get(self, item_id: str) -> StoredItem | None:
        with self._lock.read():
            return self._items.get(item_id)

    def thumbnail(self, item_id: str) -> bytes | None:
        with self._lock.read():
            if item_id not in self._items:
                return None
            row = self._require_db().execute("SELECT thumbnail FROM items WHERE id = ?", (item_id,)).fetchone()
        return row[0] if row else None

    def search(self, query: np.ndarray, k: int, space: str = OVERALL) -> list[Hit]:
        """The k nearest items by cosine (inner product of normalised vectors), best first."""
        if space not in self._indexes:
            raise KeyError(space)
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        with self._lock.read():
            index = self._indexes[space]
            k = min(k, index.ntotal)
            if k == 0:
                return []
            scores, labels = index.search(query, k)
            hits = []
            for score, label in zip(scores[0], labels[0]):
                item_id = self._ids_by_label.get(int(label))
                if label >= 0 and item_id is not None:
                    hits.append(Hit(item_id, float(score), self._items[item_id].metadata))
            return hits

    def __len__(self) -> int:
        with self._lock.read():
            return len(self._items)

    def stats(self) -> dict[str, Any]:
        with self._lock.read():
            return {"items": len(self._items), "type": "flat", "dim": self.dim,
                    "spaces": {space: int(index.ntotal) for space, index in self._indexes.items()}}

    # helpers ---------------------------------------------------------------------------------
    def _remember(self, item: StoredItem) -> None:
        self._items[item.id] = item
        self._ids_by_label[item.label] = item.id

    def _decode_vectors(self, blob: bytes) -> np.ndarray:
        return np.frombuffer(blob, dtype=np.float32).reshape(len(self.spaces), self.dim)

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("index store is closed")
        return self._db
