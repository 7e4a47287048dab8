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

__all__ = ["OVERALL", "SNAPSHOT", "Dismissal", "drop_location", "EmbeddedStore", "FilterError", "Hit", "IndexLocked", "IndexMismatch",
           "IndexStore", "IndexUnavailable", "NewItem", "StoreOptions", "StoredItem", "create_store"]


def create_store(settings: Settings, dim: int, aspects: list[str], model_identity: dict[str, str],
                 options: StoreOptions | None = None, location: str = ".") -> IndexStore:
    """The backend LIKENESS_INDEX_BACKEND names, not yet opened, for the index generation at
    ``location`` (service/generations.py): "." is the data directory itself (embedded) or
    LIKENESS_MILVUS_COLLECTION (milvus); ``generations/<slug>`` a folder under it, or the collection
    ``<collection>__<slug>``."""
    if settings.index_backend == "milvus":
        from service.index_store.milvus import MilvusStore

        collection = settings.milvus_collection if location == "." else \
            f"{settings.milvus_collection}__{location.rsplit('/', 1)[-1]}"
        return MilvusStore(settings.resolved_milvus_uri, collection, dim, aspects, model_identity,
                           token=settings.milvus_token.get_secret_value() if settings.milvus_token else "")
    return EmbeddedStore(settings.data_dir / location, dim, aspects, model_identity, options)


def drop_location(settings: Settings, location: str) -> None:
    """Delete the index of a generation that is not open (its model file is gone): the embedded
    store's files at ``location``, or its Milvus collections."""
    if settings.index_backend == "milvus":
        from service.index_store.milvus import drop_collections

        base = settings.milvus_collection
        drop_collections(settings.resolved_milvus_uri,
                         base if location == "." else f"{base}__{location.rsplit('/', 1)[-1]}",
                         settings.milvus_token.get_secret_value() if settings.milvus_token else "")
        return
    from service.index_store.item_log import DATABASE

    for name in (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", SNAPSHOT, "index.lock"):
        (settings.data_dir / location / name).unlink(missing_ok=True)
