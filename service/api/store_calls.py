"""The one way a route reaches the index store.

Every store method blocks: the embedded backend on its read/write lock and SQLite's fsync, the
milvus backend on a network round trip. Routes therefore never call the store; they await
:class:`OffLoopStore`, whose every method runs the call on a worker thread (Starlette's thread
pool). The event loop (health probes, the inference batcher, every other request) never waits
for a store lock or a disk.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from service.index_store import OVERALL, Hit, IndexStore, NewItem, StoredItem


class OffLoopStore:
    """An :class:`IndexStore` as routes see it: the same calls, awaited, each on a worker thread."""

    def __init__(self, store: IndexStore) -> None:
        self.store = store

    async def upsert(self, items: list[NewItem]) -> list[str]:
        return await run_in_threadpool(self.store.upsert, items)

    async def delete(self, item_id: str) -> bool:
        return await run_in_threadpool(self.store.delete, item_id)

    async def get(self, item_id: str) -> StoredItem | None:
        return await run_in_threadpool(self.store.get, item_id)

    async def thumbnail(self, item_id: str) -> bytes | None:
        return await run_in_threadpool(self.store.thumbnail, item_id)

    async def vector(self, item_id: str, space: str = OVERALL) -> np.ndarray | None:
        return await run_in_threadpool(self.store.vector, item_id, space)

    async def list(self, after: str | None, limit: int) -> list[StoredItem]:
        return await run_in_threadpool(self.store.list, after, limit)

    async def search(self, queries: list[np.ndarray], k: int, space: str = OVERALL,
                     where: dict[str, Any] | None = None) -> list[list[Hit]]:
        """Several queries' hits in one trip to a worker thread."""
        return await run_in_threadpool(lambda: [self.store.search(q, k, space, where) for q in queries])

    async def count(self) -> int:
        return await run_in_threadpool(self.store.count)

    async def stats(self) -> dict[str, Any]:
        return await run_in_threadpool(self.store.stats)

    async def snapshot(self) -> bool:
        return await run_in_threadpool(self.store.snapshot)

    async def compact(self) -> int:
        return await run_in_threadpool(self.store.compact)
