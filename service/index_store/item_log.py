"""The embedded store's source of truth: one SQLite file holding the items and the change log.

Every write is one SQLite transaction (WAL journal, ``synchronous=FULL``: fsynced before COMMIT
returns) that updates ``items`` and appends to ``changes``. SQLite detects a torn WAL frame by its
checksum and drops it on open, so a crash at any moment leaves either the whole transaction or
none of it. An item's label is the sequence number of the change that wrote it, so every upsert
gets a fresh label.

Not thread-safe by itself: the store's facade serialises writers and lets readers share.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from service.index_store.items import IndexLocked, IndexMismatch, NewItem

DATABASE = "index.sqlite3"
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
CREATE TABLE IF NOT EXISTS dismissed (
    pair TEXT PRIMARY KEY,          -- Dismissal.key of the two ids
    value TEXT NOT NULL             -- Dismissal.to_json(): the ids and their vectors when dismissed
);
"""


class ItemLog:
    """The items table and the append-only change log, in one SQLite file under ``directory``,
    held by one process at a time (an flock on ``index.lock``)."""

    def __init__(self, directory: Path, spaces: int, dim: int) -> None:
        self.directory = directory
        self.shape = (spaces, dim)
        self._db: sqlite3.Connection | None = None
        self._lock_file: IO[str] | None = None

    # lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_file = open(self.directory / "index.lock", "a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise IndexLocked(f"another process (a running service?) has the index in {self.directory} open; "
                              "stop it, or load images through its API (python -m service.jobs load --url ...)") from None
        self._lock_file = lock_file
        db = sqlite3.connect(self.directory / DATABASE, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        if "model" not in {row[1] for row in db.execute("PRAGMA table_info(items)")}:
            db.execute("ALTER TABLE items ADD COLUMN model TEXT")  # an index from before per-item models
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def check_identity(self, identity: dict[str, Any], model_key: str) -> str:
        """Refuse an index whose vectors came from an incompatible model (``identity``: dim and
        spaces); record ``model_key`` as the first model of a new index. Returns the index's first
        model (what items from before per-item models were embedded by)."""
        db = self._require_db()
        row = db.execute("SELECT value FROM store_meta WHERE key = 'identity'").fetchone()
        if row is None:
            db.execute("INSERT INTO store_meta VALUES ('identity', ?)", (json.dumps(identity),))
            db.execute("INSERT OR REPLACE INTO store_meta VALUES ('model', ?)", (model_key,))
            return model_key
        stored = json.loads(row[0])
        if stored != identity:
            raise IndexMismatch(
                f"index in {self.directory} holds {stored['dim']}-d vectors for spaces {stored['spaces']}, "
                f"but the model gives {identity['dim']}-d vectors for {identity['spaces']}; use another "
                "LIKENESS_DATA_DIR or re-index your images")
        first = db.execute("SELECT value FROM store_meta WHERE key = 'model'").fetchone()
        return json.dumps(json.loads(first[0]), sort_keys=True) if first else model_key

    # writes ----------------------------------------------------------------------------------
    def write_upserts(self, items: list[NewItem], previous: dict[str, tuple[int, float]], model_key: str
                      ) -> list[tuple[int, float, float]]:
        """One durable transaction: each item replaces its previous version (``previous``: id ->
        (label, created)) and gets a fresh label. Returns (label, created, updated) per item."""
        db = self._require_db()
        now = time.time()
        written = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for item in items:
                old_label, created = previous.get(item.id, (None, now))
                seq = db.execute("INSERT INTO changes (op, id, old_label) VALUES ('upsert', ?, ?)",
                                 (item.id, old_label)).lastrowid
                db.execute("INSERT OR REPLACE INTO items (id, label, vectors, metadata, thumbnail, created, updated, "
                           "model) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (item.id, seq, np.ascontiguousarray(item.vectors, dtype=np.float32).tobytes(),
                            json.dumps(item.metadata, sort_keys=True), item.thumbnail, created, now, model_key))
                written.append((int(seq), created, now))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return written

    def write_delete(self, item_id: str, old_label: int) -> int:
        """One durable transaction removing the item; returns the change's sequence number."""
        db = self._require_db()
        db.execute("BEGIN IMMEDIATE")
        try:
            seq = db.execute("INSERT INTO changes (op, id, old_label) VALUES ('delete', ?, ?)",
                             (item_id, old_label)).lastrowid
            db.execute("DELETE FROM items WHERE id = ?", (item_id,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return int(seq)

    def write_dismissal(self, key: str, value: str) -> None:
        """One durable transaction recording a verdict (replacing an earlier one on the same pair)."""
        self._require_db().execute("INSERT OR REPLACE INTO dismissed VALUES (?, ?)", (key, value))

    def dismissals(self) -> list[str]:
        return [row[0] for row in self._require_db().execute("SELECT value FROM dismissed")]

    def trim(self, seq: int) -> None:
        """Drop the log up to ``seq`` (a snapshot holds it now)."""
        self._require_db().execute("DELETE FROM changes WHERE seq <= ?", (seq,))

    # reads -----------------------------------------------------------------------------------
    def rows(self, first_model: str) -> Iterator[tuple[str, int, str, float, float, str]]:
        """Every item as (id, label, metadata JSON, created, updated, model key)."""
        return self._require_db().execute(
            "SELECT id, label, metadata, created, updated, COALESCE(model, ?) FROM items", (first_model,))

    def last_seq(self) -> int:
        """The last sequence number ever handed out, even if the log before it has been trimmed."""
        row = self._require_db().execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return int(row[0]) if row else 0

    def oldest_change(self) -> int | None:
        return self._require_db().execute("SELECT MIN(seq) FROM changes").fetchone()[0]

    def changes_after(self, seq: int) -> list[tuple[int, str, str, int | None]]:
        """(seq, op, id, old_label) after ``seq``, in order."""
        return self._require_db().execute(
            "SELECT seq, op, id, old_label FROM changes WHERE seq > ? ORDER BY seq", (seq,)).fetchall()

    def vectors(self, label: int) -> np.ndarray | None:
        """float32 [spaces, dim] of the version with this label."""
        row = self._require_db().execute("SELECT vectors FROM items WHERE label = ?", (label,)).fetchone()
        return None if row is None else self._decode(row[0])

    def all_vectors(self, chunk: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every item's (labels [n], vectors [n, spaces, dim]) in label order, ``chunk`` at a time."""
        labels, vectors = [], []
        for label, blob in self._require_db().execute("SELECT label, vectors FROM items ORDER BY label"):
            labels.append(label)
            vectors.append(self._decode(blob))
            if len(labels) == chunk:
                yield np.array(labels, dtype=np.int64), np.stack(vectors)
                labels, vectors = [], []
        if labels:
            yield np.array(labels, dtype=np.int64), np.stack(vectors)

    def thumbnail(self, item_id: str) -> bytes | None:
        row = self._require_db().execute("SELECT thumbnail FROM items WHERE id = ?", (item_id,)).fetchone()
        return row[0] if row else None

    def ids_after(self, after: str | None, limit: int) -> list[str]:
        return [row[0] for row in self._require_db().execute(
            "SELECT id FROM items WHERE id > ? ORDER BY id LIMIT ?", (after or "", limit))]

    def _decode(self, blob: bytes) -> np.ndarray:
        return np.frombuffer(blob, dtype=np.float32).reshape(self.shape)

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("index store is closed")
        return self._db
