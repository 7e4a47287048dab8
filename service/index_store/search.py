"""One space's search in the embedded store: the FAISS index, or exactly where that is better."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from service.index_store.faiss_index import VectorIndex
from service.index_store.items import Hit
from service.index_store.payload_index import PayloadIndex

if TYPE_CHECKING:
    from service.index_store.embedded import StoreOptions


def search_space(index: VectorIndex, payload: PayloadIndex, query: np.ndarray, k: int, where: dict[str, Any] | None,
                 options: StoreOptions, with_vectors: bool = False) -> list[Hit]:
    """The k best live hits of ``query`` in ``index`` (the caller holds the store's read lock). A
    filter matching few items (at most ``options.exact_filter_max``, or that fraction of the index)
    is searched exactly, and so is an approximate index that comes back short."""
    allowed = None
    if where:
        allowed = payload.matching(where)
        if len(allowed) == 0:
            return []
    exact = allowed is not None and index.options.type != "flat" and (
        len(allowed) <= options.exact_filter_max
        or len(allowed) <= options.exact_filter_fraction * max(1, index.ntotal))
    if not exact:
        scores, labels = index.search(query, k, allowed)
        # An approximate index can come back short (an HNSW graph walk that does not reach
        # enough items, IVF lists that hold fewer than k): then answer exactly.
        eligible = len(payload) if allowed is None else len(allowed)
        exact = len(labels) < min(k, eligible)
        if exact and allowed is None:
            allowed = payload.live_labels()
    if exact:
        scores = index.reconstruct(allowed) @ query
        top = np.argsort(-scores, kind="stable")[:k]
        scores, labels = scores[top], allowed[top]
    hits = []
    for score, label in zip(scores, labels):
        item = payload.by_label(int(label))
        if item is not None:  # a live label: replaced and deleted versions have none
            hits.append((Hit(item.id, float(score), item.metadata, item.problem), int(label)))
    hits = hits[:k]
    if not with_vectors:
        return [hit for hit, _ in hits]
    vectors = index.reconstruct(np.array([label for _, label in hits], dtype=np.int64))
    return [replace(hit, vector=vector) for (hit, _), vector in zip(hits, vectors)]
