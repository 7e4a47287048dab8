"""The index store: one interface (:class:`IndexStore`), two backends chosen by LIKENESS_INDEX_BACKEND.

- ``embedded`` (:mod:`.embedded`): SQLite as the log and source of truth, FAISS spaces derived
  from it; one process.
- ``milvus`` (:mod:`.milvus`): a Milvus collection at LIKENESS_MILVUS_URI (a file: Milvus Lite,
  one process; ``http://host:port``: a Milvus server, shared by any number of API workers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.index_store.base import IndexStore
from service.index_store.embedded import SNAPSHOT, EmbeddedStore, StoreOptions
from service.index_store.items import (
    OVERALL,
    Dismissal,
    FilterError,
    Hit,
    IndexLocked,
    IndexMismatch,
    IndexUnavailable,
    NewItem,
    StoredItem,
)

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["OVERALL", "SNAPSHOT", "Dismissal", "EmbeddedStore", "FilterError", "Hit", "IndexLocked", "IndexMismatch",
           "IndexStore", "IndexUnavailable", "NewItem", "StoreOptions", "StoredItem", "create_store"]


def create_store(settings: Settings, dim: int, aspects: list[str], model_identity: dict[str, str],
                 options: StoreOptions | None = None) -> IndexStore:
    """The backend LIKENESS_INDEX_BACKEND names, not yet opened."""
    if settings.index_backend == "milvus":
        from service.index_store.milvus import MilvusStore

        return MilvusStore(settings.resolved_milvus_uri, settings.milvus_collection, dim, aspects, model_identity,
                           token=settings.milvus_token.get_secret_value() if settings.milvus_token else "")
    return EmbeddedStore(settings.data_dir, dim, aspects, model_identity, options)
