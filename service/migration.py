"""A new generation of the index, embedded by another model, built beside the live one.

The work is split so that the serving process never embeds a whole catalogue, and the process that
does can be killed at any moment:

- the service holds the new generation (:class:`Migration`: the new model and its index) and, while
  it exists, writes every add and delete to both generations; it also applies the embeddings a
  migrating client sends, each only if the live item is still the version that client read;
- the client (``likeness index migrate``, service/jobs.py) asks which live items the new
  generation lacks or holds in an older version (:meth:`Migration.pending`), fetches their kept
  originals, embeds them with the new model, and sends the vectors back. Killed, it loses the batch
  in its hands; run again, it asks again and goes on from there;
- :meth:`Migration.finish` checks that the generation holds every live item in its live version
  (and nothing else), and marks it complete; then one step switches the service to it.

A progress table in the generation (``migration.sqlite3``: item id -> the live version it was built
from, the item's ``updated`` time) is what "in its live version" means, and survives restarts.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract import ImageError, decode_image, prepare_image
from service.generations import Generation
from service.index_store import IndexStore, NewItem
from service.inference import make_thumbnail
from service.ingest import item_vectors
from service.model_runner import ModelRunner
from service.originals import Originals

log = logging.getLogger("likeness.migration")


class MigrationError(RuntimeError):
    """The generation cannot be completed (yet); the message says what is missing."""


@dataclass
class PendingItem:
    id: str
    version: float  # the live item's ``updated``: what an embedding sent back must match
    metadata: dict[str, Any] | None


class Migration:
    """The new generation while it is built. Thread-safe: one lock orders the live writes that go
    through :meth:`write` and :meth:`delete` with the client's :meth:`apply`."""

    def __init__(self, generation: Generation, runner: ModelRunner, store: IndexStore, live: IndexStore,
                 originals: Originals, progress_dir: Path) -> None:
        self.generation, self.runner, self.store, self.live, self.originals = generation, runner, store, live, originals
        self.lock = threading.Lock()
        progress_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(progress_dir / "migration.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS built (id TEXT PRIMARY KEY, version REAL NOT NULL)")

    def close(self) -> None:
        self.release()
        self.store.close()

    def release(self) -> None:
        """Close the progress table only: the generation's index lives on (it has been switched to)."""
        self._db.close()

    # the live writes, mirrored ---------------------------------------------------------------
    def write(self, live_write: Callable[[], list[str]], items: list[NewItem], files: list[bytes] | None) -> list[str]:
        """Run ``live_write()`` (the live generation's write), then the same items in this one,
        embedded by its model from their files. The live write is what the client is answered on:
        an item this generation could not take (no file, a failure here) stays pending for
        ``likeness index migrate``, which finds it and builds it."""
        with self.lock:
            stored = live_write()
            if files is None:
                return stored
            try:
                mirrored, versions = [], []
                for item, data in zip(items, files):
                    live = self.live.get(item.id)
                    mirrored.append(NewItem(item.id, self._embed(data), item.metadata, item.thumbnail))
                    versions.append((item.id, live.updated if live else 0.0))
                self.store.upsert(mirrored)
                self._record(versions)
            except Exception:  # noqa: BLE001 - left pending, and the live write stands
                log.exception("the write of %d item(s) to the generation of %s failed; migrate will build them",
                              len(items), self.generation.key)
            return stored

    def delete(self, item_id: str, live_delete: Callable[[], bool]) -> bool:
        with self.lock:
            deleted = live_delete()
            if deleted:
                self.store.delete(item_id)
                self._db.execute("DELETE FROM built WHERE id = ?", (item_id,))
            return deleted

    def _embed(self, data: bytes) -> np.ndarray:
        image = decode_image(data, max_pixels=100_000_000)
        out = self.runner.embed(prepare_image(image, self.runner.spec.input)[None])
        return item_vectors(out, 0)

    # the client's side -----------------------------------------------------------------------
    def pending(self, after: str | None, limit: int) -> list[PendingItem]:
        """Live items after ``after`` (id order) that this generation lacks or holds in an older version."""
        out = []
        while len(out) < limit:
            page = self.live.list(after, limit)
            if not page:
                break
            after = page[-1].id
            built = dict(self._db.execute(f"SELECT id, version FROM built WHERE id IN ({','.join('?' * len(page))})",
                                          [item.id for item in page]).fetchall())
            out += [PendingItem(item.id, item.updated, item.metadata) for item in page if built.get(item.id) != item.updated]
        return out[:limit]

    def apply(self, entries: list[tuple[str, float, np.ndarray, bytes | None]]) -> int:
        """Write (id, live version, vectors, original) sent by the client, each only if the live item is
        still that version; returns how many were written."""
        written = 0
        with self.lock:
            items, versions = [], []
            for item_id, version, vectors, data in entries:
                live = self.live.get(item_id)
                if live is None or live.updated != version:
                    continue  # changed or deleted since the client read it: that write mirrored itself
                thumbnail = self.live.thumbnail(item_id)
                if thumbnail is None and data is not None:
                    try:
                        thumbnail = make_thumbnail(decode_image(data, max_pixels=100_000_000))
                    except ImageError:
                        thumbnail = None
                items.append(NewItem(item_id, vectors, live.metadata or {}, thumbnail))
                versions.append((item_id, version))
            if items:
                self.store.upsert(items)
                self._record(versions)
                written = len(items)
        return written

    def finish(self) -> dict[str, int]:
        """Remove what the live generation no longer holds, check that the rest is built in its live
        version, and mark the generation complete; MigrationError (naming how many) otherwise."""
        with self.lock:
            live_ids, missing, after = set(), 0, None
            while page := self.live.list(after, 1000):
                after = page[-1].id
                built = dict(self._db.execute(
                    f"SELECT id, version FROM built WHERE id IN ({','.join('?' * len(page))})",
                    [item.id for item in page]).fetchall())
                live_ids.update(item.id for item in page)
                missing += sum(built.get(item.id) != item.updated for item in page)
            extra, after = [], None
            while page := self.store.list(after, 1000):
                after = page[-1].id
                extra += [item.id for item in page if item.id not in live_ids]
            for item_id in extra:
                self.store.delete(item_id)
                self._db.execute("DELETE FROM built WHERE id = ?", (item_id,))
            if missing:
                raise MigrationError(f"{missing} live item(s) are not yet in the generation of {self.generation.key}: "
                                     "run likeness index migrate again")
            self.generation.complete = True
            return {"items": len(live_ids), "removed": len(extra)}

    def status(self) -> dict[str, Any]:
        built = self._db.execute("SELECT COUNT(*) FROM built").fetchone()[0]
        return {"model": self.generation.key, "model_path": self.generation.model, "complete": self.generation.complete,
                "built": int(built), "live_items": self.live.count(), "location": self.generation.location}

    def _record(self, versions: list[tuple[str, float]]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR REPLACE INTO built VALUES (?, ?)", versions)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
