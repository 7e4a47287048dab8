"""The same image: which hits of a search are copies of the query, and which items of the index are
copies of each other (GET /duplicates).

The score is the model's (contract.same_image_scores over the spec's ``near_duplicate_dims``) and
the threshold the spec's for a catalogue of the index's size (ModelSpec.same_image_threshold), fitted
by export for a target false-positive rate: a larger catalogue holds nearer look-alikes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from contract import ModelSpec, same_image_scores
from service.index_store import OVERALL, Hit, IndexStore


def same_image_score(spec: ModelSpec, a: np.ndarray, b: np.ndarray) -> float | None:
    """The same-image score of two embeddings, or None for a model without the decision."""
    if spec.near_duplicate is None:
        return None
    return float(same_image_scores(a, b, spec.near_duplicate_dims)[0])


def copies_first(spec: ModelSpec, query: np.ndarray, hits: list[Hit], threshold: float) -> list[tuple[Hit, float, bool]]:
    """(hit, same-image score, is a copy at ``threshold``) for hits carrying their vectors: the copies
    of the query first (by their same-image score), then the other hits in their order. The embedding
    ranks look-alikes by how alike they look; a copy is the answer to "is this image in my catalogue?"
    whatever a look-alike scores."""
    if not hits:
        return []
    scores = same_image_scores(np.stack([h.vector for h in hits]), query[None, :], spec.near_duplicate_dims)
    judged = [(hit, float(score), bool(score >= threshold)) for hit, score in zip(hits, scores)]
    copies = sorted((j for j in judged if j[2]), key=lambda j: -j[1])
    return copies + [j for j in judged if not j[2]]


# Neighbours each item's search asks for: a copy of an item is among its nearest items by the
# overall cosine (it is the same image), so a few are enough.
DUPLICATE_NEIGHBOURS = 10
PAGE = 1000


@dataclass(frozen=True)
class DuplicateGroup:
    ids: list[str]  # id order
    score: float  # the weakest same-image score of the group's best spanning tree

    @property
    def order(self) -> tuple[float, str]:
        """Best groups first; among equals, by first id."""
        return -self.score, self.ids[0]


def duplicate_groups(store: IndexStore, spec: ModelSpec, min_score: float,
                     progress: Callable[[int], None] | None = None) -> list[DuplicateGroup]:
    """Groups of items that are the same image (:func:`same_image_pairs`, joined transitively: a copy
    of a copy is in its original's group), best first."""
    return _groups([(score, a, b) for (a, b), score in same_image_pairs(store, spec, min_score, progress).items()])


def same_image_pairs(store: IndexStore, spec: ModelSpec, min_score: float,
                     progress: Callable[[int], None] | None = None) -> dict[tuple[str, str], float]:
    """(first id, second id) -> same-image score, for the pairs of items scoring at least
    ``min_score``, leaving out the pairs a user dismissed (while their items keep the content they
    were dismissed with). Each item's vector is searched once against the index, for its
    DUPLICATE_NEIGHBOURS nearest items; ``progress`` gets the items done, a page at a time."""
    edges: dict[tuple[str, str], float] = {}
    after = None
    while page := store.list(after, PAGE):
        after = page[-1].id
        for item in page:
            vector = store.vector(item.id)
            if vector is None:  # deleted since the page was read
                continue
            hits = [h for h in store.search(vector, DUPLICATE_NEIGHBOURS + 1, OVERALL, with_vectors=True)
                    if h.id != item.id]
            if hits:
                scores = same_image_scores(np.stack([h.vector for h in hits]), vector[None, :],
                                           spec.near_duplicate_dims)
                for hit, score in zip(hits, scores):
                    if score >= min_score:  # found from either side: nearest neighbours are not symmetric
                        edges[min(item.id, hit.id), max(item.id, hit.id)] = float(score)
        if progress is not None:
            progress(len(page))
    dismissed = {d.ids for d in store.dismissals() if d.holds_for((store.vector(d.ids[0]), store.vector(d.ids[1])))}
    return {pair: score for pair, score in edges.items() if pair not in dismissed}


def _groups(edges: list[tuple[float, str, str]]) -> list[DuplicateGroup]:
    """Kruskal over the strongest edges first: each union's edge is the weakest its group needs."""
    parent: dict[str, str] = {}
    weakest: dict[str, float] = {}

    def root(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for score, a, b in sorted(edges, key=lambda e: -e[0]):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[rb] = ra
            weakest[ra] = min(score, weakest.get(ra, score), weakest.pop(rb, score))
    members: dict[str, list[str]] = {}
    for node in parent:
        members.setdefault(root(node), []).append(node)
    groups = [DuplicateGroup(sorted(ids), round(weakest[r], 6)) for r, ids in members.items() if len(ids) > 1]
    return sorted(groups, key=lambda g: g.order)
