"""Items by id and label, and filter postings."""

from __future__ import annotations

import pytest

from service.index_store import FilterError, StoredItem
from service.index_store.payload_index import PayloadIndex


def test_postings_follow_remember_and_forget():
    payload = PayloadIndex()
    a = StoredItem("a", 1, {"n": 3, "colour": "red"}, 0, 0)
    b = StoredItem("b", 2, {"n": "3", "colour": "red"}, 0, 0)
    payload.remember(a)
    payload.remember(b)
    assert payload.matching({"colour": "red"}).tolist() == [1, 2]
    assert payload.matching({"n": 3}).tolist() == [1] and payload.matching({"n": "3"}).tolist() == [2]
    assert payload.matching({"n": 3, "colour": "blue"}).tolist() == []
    payload.forget(a)
    payload.remember(StoredItem("a", 5, {"colour": "blue"}, 0, 0))  # a new version, a new label
    assert payload.matching({"colour": "red"}).tolist() == [2] and payload.by_label(1) is None
    assert payload.by_label(5).id == "a" and len(payload) == 2 and sorted(payload.live_labels()) == [2, 5]
    with pytest.raises(FilterError):
        payload.matching({"n": {"gt": 2}})
