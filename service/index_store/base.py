"""The interface every index store backend implements (embedded: SQLite + FAISS; milvus).

Calls block (disk, locks, network): the API calls them off the event loop, through
service/store_calls.py, and nowhere else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from service.index_store.items import OVERALL, Dismissal, Hit, NewItem, StoredItem


class IndexStore(ABC):
    """Items (id, vectors per space, metadata, thumbnail) and nearest-neighbour search over them."""

    backend: str  # "embedded" or "milvus"
    #: What a 201 from POST /items rests on: the write is durable there before upsert returns.
    durability: str
    dim: int
    spaces: list[str]  # OVERALL first, then each aspect
    load_seconds: float = 0.0
    replayed_changes: int = 0
    other_models: list[str] = []  # models other than this one that embedded items of it, found at open

    @abstractmethod
    def open(self) -> None:
        """Open (or create) the index; IndexMismatch for one built by an incompatible model,
        IndexLocked / IndexUnavailable when it cannot be opened here."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def upsert(self, items: list[NewItem]) -> list[str]:
        """Insert or replace items; returns their ids once they are durable and searchable."""

    @abstractmethod
    def delete(self, item_id: str) -> bool:
        """True if the item was there (and is now gone), False if there was no such item."""

    @abstractmethod
    def get(self, item_id: str) -> StoredItem | None: ...

    @abstractmethod
    def thumbnail(self, item_id: str) -> bytes | None:
        """The item's PNG thumbnail; KeyError if there is no such item, None if it has no thumbnail."""

    @abstractmethod
    def vector(self, item_id: str, space: str = OVERALL) -> np.ndarray | None:
        """The stored float32 [dim] vector of an item in one space, or None if there is no such
        item; KeyError for an unknown space."""

    @abstractmethod
    def list(self, after: str | None, limit: int) -> list[StoredItem]:
        """Items in id order, starting after the cursor ``after``, at most ``limit``."""

    @abstractmethod
    def search(self, query: np.ndarray, k: int, space: str = OVERALL,
               where: dict[str, Any] | None = None, with_vectors: bool = False) -> list[Hit]:
        """The k nearest live items by cosine (``query``: float32 [dim], L2-normalised), best
        first, optionally only those whose metadata equals every field of ``where`` (scalars,
        compared as JSON values: 3 and "3" differ); with ``with_vectors``, each hit carries its
        stored vector in ``space``. KeyError for an unknown space, FilterError for a filter that is
        not flat."""

    @abstractmethod
    def dismiss(self, dismissal: Dismissal) -> None:
        """Record durably that two items are not the same image (GET /duplicates leaves them apart)."""

    @abstractmethod
    def dismissals(self) -> list[Dismissal]:
        """Every verdict recorded, whether or not it still holds (Dismissal.holds_for)."""

    @abstractmethod
    def count(self) -> int:
        """How many items, without waiting for a writer (it may be a write behind): for probes."""

    def __len__(self) -> int:
        return self.count()

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """At least ``items``, ``backend``, ``dim`` and ``spaces`` (space -> vectors)."""

    def version(self) -> tuple | None:
        """A value that changes whenever the items or the dismissals change, for caches; None when
        this store cannot tell (a Milvus shared with other processes)."""
        return None

    # Maintenance: the embedded backend's snapshots and compaction; others may have nothing to do.
    def snapshot(self) -> bool:
        """Persist derived state now; False when there was nothing to do."""
        return False

    def compact(self) -> int:
        """Rebuild what deletes left behind; returns how many spaces were rebuilt."""
        return 0

    def rebuild(self, progress: Callable[[int], None] | None = None) -> None:
        """Rebuild derived indexes from the source of truth."""
        return None

    def drop(self) -> None:
        """Close the index and delete it for good (likeness index prune: a generation no longer served)."""
        self.close()

    def wait_for_maintenance(self, timeout: float | None = None) -> None:
        """Block until background maintenance has finished (tests, shutdown)."""
        return None
