"""The embedded store's in-memory view of the items: by id, by label, and postings for filters."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np

from service.index_store.items import StoredItem, check_filter


def filter_key(value: Any) -> str:
    """Filters match on the JSON text of a scalar, so {"label": 3} and {"label": "3"} differ as in JSON."""
    return json.dumps(value, sort_keys=True)


class PayloadIndex:
    """Live items by id and by label, and which labels hold each (field, scalar value). Not
    thread-safe by itself: the store's lock guards it."""

    def __init__(self) -> None:
        self._items: dict[str, StoredItem] = {}
        self._ids_by_label: dict[int, str] = {}
        self._postings: dict[tuple[str, str], set[int]] = defaultdict(set)  # (field, json value) -> labels

    def __len__(self) -> int:
        return len(self._items)

    def get(self, item_id: str) -> StoredItem | None:
        return self._items.get(item_id)

    def by_label(self, label: int) -> StoredItem | None:
        """The live item with this label; None for a replaced or deleted version."""
        item_id = self._ids_by_label.get(label)
        return None if item_id is None else self._items[item_id]

    def live_labels(self) -> np.ndarray:
        return np.fromiter(self._ids_by_label, dtype=np.int64, count=len(self._ids_by_label))

    def remember(self, item: StoredItem) -> None:
        self._items[item.id] = item
        self._ids_by_label[item.label] = item.id
        for key, value in (item.metadata or {}).items():
            if not isinstance(value, (dict, list)):
                self._postings[(key, filter_key(value))].add(item.label)

    def forget(self, item: StoredItem) -> None:
        self._items.pop(item.id, None)
        self._ids_by_label.pop(item.label, None)
        for key, value in (item.metadata or {}).items():
            if not isinstance(value, (dict, list)):
                postings = self._postings.get((key, filter_key(value)))
                if postings is not None:
                    postings.discard(item.label)
                    if not postings:
                        del self._postings[(key, filter_key(value))]

    def matching(self, where: dict[str, Any]) -> np.ndarray:
        """Sorted labels of the items whose metadata equals every field of ``where``."""
        check_filter(where)
        sets = sorted((self._postings.get((key, filter_key(value)), set()) for key, value in where.items()), key=len)
        result = set(sets[0])
        for other in sets[1:]:
            result &= other
        return np.array(sorted(result), dtype=np.int64)
