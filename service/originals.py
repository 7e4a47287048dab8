"""The image bytes each item was added with, kept so that another model can embed them again
(``likeness index migrate``): content-addressed files, and which item has which.

On both backends they live in ``LIKENESS_DATA_DIR/originals/``: ``ab/abcdef...`` (SHA-256 of the
bytes; two items added with the same bytes share one file) and ``refs.sqlite3`` (item id -> digest,
SQLite in WAL mode with ``synchronous=FULL``). A Milvus deployment whose workers run on several
machines gives them that folder on shared storage.

Order of a write: the file (fsynced, renamed into place, its folder fsynced), then the item in the
index, then its reference. A crash between the last two leaves an item without a reference, which
``migrate`` names as one it could not re-read; never a reference to content the index does not hold.
Files no reference names any more are removed by :meth:`Originals.prune` (``likeness index prune``).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.index_store import IndexStore, NewItem

FOLDER = "originals"
SCHEMA = """
CREATE TABLE IF NOT EXISTS refs (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,    -- SHA-256 of the bytes, the file's name
    bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS refs_by_digest ON refs (digest);
"""


class Originals:
    """Thread-safe: one connection, one lock (the work under it is a file write or one row)."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = Path(data_dir) / FOLDER
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.directory / "refs.sqlite3", check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        self._db = db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # writes ----------------------------------------------------------------------------------
    def put(self, data: bytes) -> str:
        """Store ``data`` durably under its digest (nothing to do when it is there); return the digest."""
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if path.is_file():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{digest}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        return digest

    def assign(self, refs: list[tuple[str, str, int]]) -> None:
        """Record (id, digest, size) for items just written (replacing what they had), durably."""
        with self._lock:
            db = self._require()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO refs VALUES (?, ?, ?)", refs)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def forget(self, item_id: str) -> None:
        with self._lock:
            self._require().execute("DELETE FROM refs WHERE id = ?", (item_id,))

    def prune(self) -> tuple[int, int]:
        """Remove the files no item refers to; returns (files, bytes) removed."""
        with self._lock:
            referenced = {row[0] for row in self._require().execute("SELECT DISTINCT digest FROM refs")}
        files = size = 0
        for path in self.directory.glob("??/*"):
            if path.name not in referenced and not path.name.startswith("."):
                size += path.stat().st_size
                path.unlink()
                files += 1
        return files, size

    # reads -----------------------------------------------------------------------------------
    def digest(self, item_id: str) -> str | None:
        with self._lock:
            row = self._require().execute("SELECT digest FROM refs WHERE id = ?", (item_id,)).fetchone()
        return row[0] if row else None

    def read(self, item_id: str) -> bytes | None:
        """The bytes item ``item_id`` was added with, or None when they were not kept."""
        digest = self.digest(item_id)
        if digest is None:
            return None
        try:
            return self._path(digest).read_bytes()
        except FileNotFoundError:
            return None

    def stats(self, items: int) -> dict[str, Any]:
        """What keeping the originals costs: files, bytes on disk, bytes per item of the index."""
        with self._lock:
            kept = self._require().execute("SELECT COUNT(*) FROM refs").fetchone()[0]
            size, files = self._require().execute(
                "SELECT COALESCE(SUM(bytes), 0), COUNT(*) FROM (SELECT digest, MAX(bytes) AS bytes FROM refs "
                "GROUP BY digest)").fetchone()
        return {"items_with_original": int(kept), "files": int(files), "bytes": int(size),
                "bytes_per_item": round(size / items, 1) if items else 0.0}

    def _path(self, digest: str) -> Path:
        return self.directory / digest[:2] / digest

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the originals store is closed")
        return self._db


def write_items(store: IndexStore, originals: Originals | None, items: list[NewItem],
                files: list[bytes] | None = None) -> list[str]:
    """The one write path (API, gallery, add-folder): the files first, durably, then the items, then
    which item has which file (service/originals.py says why in that order)."""
    digests = [originals.put(data) for data in files] if originals is not None and files is not None else None
    stored = store.upsert(items)
    if digests is not None:
        originals.assign([(item.id, digest, len(data)) for item, digest, data in zip(items, digests, files)])
    elif originals is not None:
        for item in items:  # replaced without its bytes: an older version's must not stand for it
            originals.forget(item.id)
    return stored
