"""What every index store backend takes and returns, and the errors they share."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.item_fields import text_problem, value_problem

OVERALL = "overall"


class IndexMismatch(RuntimeError):
    """The index was built by a model whose embeddings are not comparable with this one."""


class IndexLocked(RuntimeError):
    """Another process has this index open; two writers would each keep their own FAISS copy."""


class IndexUnavailable(RuntimeError):
    """The index cannot be opened or reached (a Milvus that does not answer, a model it cannot hold)."""


class FilterError(ValueError):
    """A metadata filter that is not a flat JSON object of scalar values."""


@dataclass
class NewItem:
    id: str
    vectors: np.ndarray  # float32 [1 + aspects, dim]
    metadata: dict[str, Any] = field(default_factory=dict)
    thumbnail: bytes | None = None


@dataclass(frozen=True)
class StoredItem:
    id: str
    label: int  # embedded: the change that wrote this version; milvus: 0 (Milvus keys by id)
    metadata: dict[str, Any] | None  # None when ``problem`` is set
    created: float
    updated: float
    # Why this row cannot be returned as stored (an older version accepted metadata the rules in
    # service/item_fields.py now refuse): reads show the row with this error, not fail the page.
    problem: str | None = None


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    metadata: dict[str, Any] | None
    error: str | None = None
    vector: np.ndarray | None = None  # the hit's stored vector in the searched space, when asked for


@dataclass(frozen=True)
class Dismissal:
    """A user's verdict that two items are not the same image, with the vectors each had then: an
    item added again with new content no longer matches them, and the verdict lapses."""

    ids: tuple[str, str]  # in order
    vectors: tuple[np.ndarray, np.ndarray]  # each item's overall vector when the verdict was given

    @property
    def key(self) -> str:
        """A fixed-length key for the pair (SHA-256 of the two ids)."""
        return hashlib.sha256(json.dumps(list(self.ids)).encode("utf-8")).hexdigest()

    def to_json(self) -> str:
        return json.dumps({"ids": list(self.ids), "vectors": [v.tolist() for v in self.vectors]})

    @classmethod
    def from_json(cls, text: str) -> Dismissal:
        value = json.loads(text)
        return cls(tuple(value["ids"]), tuple(np.asarray(v, dtype=np.float32) for v in value["vectors"]))

    def holds_for(self, vectors: tuple[np.ndarray | None, np.ndarray | None]) -> bool:
        """Whether the verdict still applies to the items' current vectors (None: deleted)."""
        return all(now is not None and float(np.dot(now, then)) >= 1 - 1e-4 for now, then in zip(vectors, self.vectors))


def check_new_items(items: list[NewItem], shape: tuple[int, int]) -> None:
    """Refuse a batch no read could return as stored: the API checks these first; this keeps every
    other writer (ingest) to the same rules. ``shape`` is (spaces, dim)."""
    if len({item.id for item in items}) != len(items):
        raise ValueError("the same id appears twice in one upsert")
    for item in items:
        if item.vectors.shape != shape:
            raise ValueError(f"item {item.id!r}: vectors {item.vectors.shape}, expected {shape}")
        problem = text_problem(item.id) or value_problem(item.metadata)
        if problem is None and not isinstance(item.metadata, dict):
            problem = "metadata is not an object"
        if problem:
            raise ValueError(f"item {item.id!r}: {problem}")


def check_filter(where: dict[str, Any]) -> None:
    for key, value in where.items():
        if isinstance(value, (dict, list)):
            raise FilterError(f"filter field {key!r}: only equality on scalar values is supported")


def stored_item(item_id: str, label: int, metadata: str, created: float, updated: float) -> StoredItem:
    """A stored row; metadata that breaks the rules of service/item_fields.py (written by an older
    version, or edited by hand) is kept as a problem rather than failing every read."""
    try:
        value = json.loads(metadata)
    except (ValueError, RecursionError) as exc:
        problem = f"the stored metadata is not readable JSON ({exc})"
    else:
        problem = value_problem(value) or (None if isinstance(value, dict) else "the stored metadata is not an object")
    if problem:
        return StoredItem(item_id, label, None, created, updated,
                          f"this item cannot be returned as stored: {problem}; delete it or add it again")
    return StoredItem(item_id, label, value, created, updated)


def model_key(identity: dict[str, Any]) -> str:
    """A model identity ({"name", "version"}) as the sorted JSON text stores keep."""
    return json.dumps(identity, sort_keys=True)
