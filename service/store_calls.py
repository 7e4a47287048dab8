"""The one way a route reaches the index store.

Every store method blocks: the embedded backend on its read/write lock and SQLite's fsync, the
milvus backend on a network round trip. Routes therefore never call the store; they await
:class:`OffLoopStore`, whose every method runs the call on a worker thread (Starlette's thread
pool). The event loop (health probes, the inference batcher, every other request) never waits
for a store lock or a disk.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from contract import ModelSpec
from service.copies import DuplicateGroup, duplicate_groups
from service.index_store import OVERALL, Dismissal, Hit, IndexStore, NewItem, StoredItem
from service.migration import Migration
from service.originals import Originals, write_items

# How stale the item count may be when another process writes to a shared (Milvus) index: the
# threshold follows log(items), and what other writers add in 5 seconds barely moves it.
CATALOGUE_SIZE_TTL_S = 5.0


class OffLoopStore:
    """An :class:`IndexStore` as routes see it: the same calls, awaited, each on a worker thread."""

    def __init__(self, store: IndexStore, originals: Originals | None = None) -> None:
        self.store = store
        self.originals = originals  # where the bytes of new items are kept, when they are
        self.migration: Migration | None = None  # a generation being built: writes land in both
        # The last GET /duplicates answer, kept while the index has not changed (stores that can tell).
        self._groups: tuple[tuple, list[DuplicateGroup]] | None = None
        # The item count the same-image threshold is chosen by: (monotonic time, count), re-read after
        # this process writes and every CATALOGUE_SIZE_TTL_S (a Milvus count is a round trip).
        self._size: tuple[float, int] | None = None

    async def upsert(self, items: list[NewItem], files: list[bytes] | None = None) -> list[str]:
        """Write items; with ``files``, keep each item's bytes (service/originals.py); while a
        migration runs, in its generation too."""
        def write() -> list[str]:
            migration = self.migration
            if migration is None:
                return write_items(self.store, self.originals, items, files)
            return migration.write(lambda: write_items(self.store, self.originals, items, files), items, files)

        try:
            return await run_in_threadpool(write)
        finally:
            self._size = None

    async def delete(self, item_id: str) -> bool:
        def delete_live() -> bool:
            deleted = self.store.delete(item_id)
            if deleted and self.originals is not None:
                self.originals.forget(item_id)
            return deleted

        def delete() -> bool:
            migration = self.migration
            return delete_live() if migration is None else migration.delete(item_id, delete_live)

        try:
            return await run_in_threadpool(delete)
        finally:
            self._size = None

    async def original(self, item_id: str) -> bytes | None:
        """The bytes an item was added with; KeyError when there is no such item, None when not kept."""
        def read() -> bytes | None:
            if self.store.get(item_id) is None:
                raise KeyError(item_id)
            return None if self.originals is None else self.originals.read(item_id)

        return await run_in_threadpool(read)

    async def get(self, item_id: str) -> StoredItem | None:
        return await run_in_threadpool(self.store.get, item_id)

    async def thumbnail(self, item_id: str) -> bytes | None:
        return await run_in_threadpool(self.store.thumbnail, item_id)

    async def vector(self, item_id: str, space: str = OVERALL) -> np.ndarray | None:
        return await run_in_threadpool(self.store.vector, item_id, space)

    async def list(self, after: str | None, limit: int) -> list[StoredItem]:
        return await run_in_threadpool(self.store.list, after, limit)

    async def search(self, queries: list[np.ndarray], k: int, space: str = OVERALL,
                     where: dict[str, Any] | None = None, with_vectors: bool = False) -> list[list[Hit]]:
        """Several queries' hits in one trip to a worker thread."""
        return await run_in_threadpool(lambda: [self.store.search(q, k, space, where, with_vectors) for q in queries])

    async def count(self) -> int:
        return await run_in_threadpool(self.store.count)

    async def same_image_threshold(self, spec: ModelSpec) -> float | None:
        """``spec``'s same-image threshold for this index's size (None: a model without the decision);
        the items are counted only for a model whose threshold depends on them."""
        if spec.near_duplicate is None or not spec.near_duplicate_by_items:
            return spec.same_image_threshold()
        return spec.same_image_threshold(await self._catalogue_size())

    async def _catalogue_size(self) -> int:
        """How many items the index holds: exact after this process's own writes, at most
        CATALOGUE_SIZE_TTL_S old after other processes'."""
        now = time.monotonic()
        if self._size is None or now - self._size[0] > CATALOGUE_SIZE_TTL_S:
            self._size = (now, await self.count())
        return self._size[1]

    async def stats(self) -> dict[str, Any]:
        def stats() -> dict[str, Any]:
            figures = self.store.stats()
            if self.originals is not None:
                figures["originals"] = self.originals.stats(figures["items"])
            return figures

        return await run_in_threadpool(stats)

    async def snapshot(self) -> bool:
        return await run_in_threadpool(self.store.snapshot)

    async def compact(self) -> int:
        return await run_in_threadpool(self.store.compact)

    async def duplicate_groups(self, spec: ModelSpec, min_score: float) -> list[DuplicateGroup]:
        """Groups of the same image in the whole index (service/copies.py), computed once per change of it."""
        version = self.store.version()
        key = (version, spec.name, spec.version, min_score)
        if version is not None and self._groups is not None and self._groups[0] == key:
            return self._groups[1]
        groups = await run_in_threadpool(duplicate_groups, self.store, spec, min_score)
        self._groups = (key, groups)
        return groups

    async def dismiss(self, ids: list[str]) -> bool:
        """Record two items as not the same image; False when either is not there."""
        def record() -> bool:
            vectors = [self.store.vector(item_id) for item_id in ids]
            if any(v is None for v in vectors):
                return False
            self.store.dismiss(Dismissal((ids[0], ids[1]), (vectors[0], vectors[1])))
            return True

        return await run_in_threadpool(record)

