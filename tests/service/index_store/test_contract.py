"""One contract, every backend: the embedded store (SQLite + FAISS in a temp dir) and the milvus
store on Milvus Lite (the real Milvus engine, in a temp file)."""

from __future__ import annotations

import numpy as np
import pytest

from service.index_store import EmbeddedStore, FilterError, IndexMismatch, IndexStore, NewItem
from service.index_store.milvus import MilvusStore
from tests.service.index_store.conftest import DIM, MODEL, unit

BACKENDS = ["embedded", "milvus"]
ODD_IDS = ['a "quoted" id', "back\\slash", "it's", "ünïcödé/😀", "x" * 256]


def make(backend: str, path, dim: int = DIM, aspects: list[str] | None = None, model=MODEL) -> IndexStore:
    if backend == "embedded":
        store = EmbeddedStore(path / "embedded", dim, aspects or [], model)
    else:
        path.mkdir(parents=True, exist_ok=True)
        store = MilvusStore(str(path / "milvus.db"), "likeness", dim, aspects or [], model)
    store.open()
    return store


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


def test_upsert_get_replace_and_delete(backend, tmp_path):
    rng = np.random.default_rng(0)
    store = make(backend, tmp_path)
    v = unit(rng, 3)
    assert store.upsert([NewItem("a", v[0][None], {"colour": "red"}, b"png-a"), NewItem("b", v[1][None])]) == ["a", "b"]
    a = store.get("a")
    assert a.id == "a" and a.metadata == {"colour": "red"} and a.problem is None and a.created <= a.updated
    assert store.get("missing") is None and store.count() == 2 and len(store) == 2
    assert store.thumbnail("a") == b"png-a" and store.thumbnail("b") is None
    with pytest.raises(KeyError):
        store.thumbnail("missing")
    np.testing.assert_allclose(store.vector("a"), v[0], atol=1e-6)
    store.upsert([NewItem("a", v[2][None], {"colour": "blue"})])  # replace: new vector, new metadata
    replaced = store.get("a")
    assert replaced.metadata == {"colour": "blue"} and replaced.created == a.created and store.count() == 2
    assert store.search(v[0], 1)[0].id != "a"
    assert store.search(v[2], 1)[0].id == "a"
    assert store.delete("a") and not store.delete("a")
    assert store.get("a") is None and store.count() == 1
    assert all(hit.id != "a" for hit in store.search(v[2], 5))
    store.close()


def test_search_is_by_cosine_best_first(backend, tmp_path):
    rng = np.random.default_rng(1)
    vectors = unit(rng, 60)
    store = make(backend, tmp_path)
    store.upsert([NewItem(f"i{n:02d}", vec[None], {"n": n}) for n, vec in enumerate(vectors)])
    hits = store.search(vectors[7], 10)
    expected = np.argsort(-(vectors @ vectors[7]))[:10]
    assert [h.id for h in hits] == [f"i{n:02d}" for n in expected]
    np.testing.assert_allclose([h.score for h in hits], (vectors @ vectors[7])[expected], atol=1e-5)
    assert hits[0].metadata == {"n": 7}
    store.close()


def test_list_pages_in_id_order_with_a_cursor(backend, tmp_path):
    rng = np.random.default_rng(2)
    ids = [f"item-{n:03d}" for n in range(45)] + ODD_IDS
    order = rng.permutation(len(ids))
    store = make(backend, tmp_path)
    for start in range(0, len(ids), 10):  # several writes, in random order
        chunk = [ids[i] for i in order[start:start + 10]]
        store.upsert([NewItem(i, unit(rng, 1), {"id": i}) for i in chunk])
    seen, after = [], None
    while True:
        page = store.list(after, 7)
        seen += [item.id for item in page]
        if len(page) < 7:
            break
        after = page[-1].id
    # Id order is the order of the ids' UTF-8 bytes, for every backend.
    assert seen == sorted(ids, key=lambda i: i.encode())
    assert all(store.get(i).metadata == {"id": i} for i in ODD_IDS)
    assert store.delete(ODD_IDS[0]) and store.get(ODD_IDS[0]) is None
    store.close()


def test_filters_match_json_values_exactly(backend, tmp_path):
    rng = np.random.default_rng(3)
    store = make(backend, tmp_path)
    metas = [{"n": 3}, {"n": "3"}, {"n": True}, {"n": None}, {"n": 3, "colour": "red"}, {"colour": 'say "hi"'},
             {"ключ": "значение"}, {"n": 1.5}]
    vectors = unit(rng, len(metas))
    store.upsert([NewItem(f"m{n}", vec[None], meta) for n, (vec, meta) in enumerate(zip(vectors, metas))])
    q = unit(rng, 1)[0]

    def ids(where):
        return sorted(h.id for h in store.search(q, 20, where=where))

    assert ids({"n": 3}) == ["m0", "m4"]
    assert ids({"n": "3"}) == ["m1"]
    assert ids({"n": True}) == ["m2"]
    assert ids({"n": None}) == ["m3"]
    assert ids({"n": 1.5}) == ["m7"]
    assert ids({"n": 3, "colour": "red"}) == ["m4"]
    assert ids({"colour": 'say "hi"'}) == ["m5"]
    assert ids({"ключ": "значение"}) == ["m6"]
    assert ids({"n": 4}) == [] and ids({"missing": 1}) == []
    with pytest.raises(FilterError):
        store.search(q, 5, where={"n": [3]})
    store.close()


def test_aspect_spaces(backend, tmp_path):
    rng = np.random.default_rng(4)
    store = make(backend, tmp_path, aspects=["colour", "shape"])
    vectors = np.stack([unit(rng, 20), unit(rng, 20), unit(rng, 20)], axis=1)  # [20, 3 spaces, DIM]
    store.upsert([NewItem(f"s{n}", vec) for n, vec in enumerate(vectors)])
    for s, space in enumerate(["overall", "colour", "shape"]):
        assert store.search(vectors[5, s], 1, space)[0].id == "s5"
        np.testing.assert_allclose(store.vector("s5", space), vectors[5, s], atol=1e-6)
    with pytest.raises(KeyError):
        store.search(vectors[0, 0], 1, "size")
    with pytest.raises(ValueError):
        store.upsert([NewItem("bad", vectors[0, :1])])  # one space where three are expected
    assert store.stats()["items"] == 20 and set(store.stats()["spaces"]) == {"overall", "colour", "shape"}
    store.close()


def test_reopen_keeps_everything(backend, tmp_path):
    rng = np.random.default_rng(5)
    vectors = unit(rng, 30)
    store = make(backend, tmp_path)
    store.upsert([NewItem(f"r{n}", vec[None], {"n": n}, b"thumb") for n, vec in enumerate(vectors)])
    store.delete("r3")
    store.close()
    store = make(backend, tmp_path)
    assert store.count() == 29 and store.get("r3") is None and store.get("r4").metadata == {"n": 4}
    assert store.search(vectors[10], 1)[0].id == "r10" and store.thumbnail("r10") == b"thumb"
    store.close()


def test_a_model_of_another_shape_is_refused(backend, tmp_path):
    rng = np.random.default_rng(6)
    store = make(backend, tmp_path)
    store.upsert([NewItem("a", unit(rng, 1))])
    store.close()
    with pytest.raises(IndexMismatch, match="16-d"):
        make(backend, tmp_path, dim=32)
    with pytest.raises(IndexMismatch):
        make(backend, tmp_path, aspects=["colour"])
    same_shape = make(backend, tmp_path, model={"name": "other", "version": "9"})  # opens: same shape
    assert same_shape.count() == 1
    same_shape.close()


def test_what_no_read_could_return_is_refused(backend, tmp_path):
    rng = np.random.default_rng(7)
    store = make(backend, tmp_path)
    v = unit(rng, 1)
    for bad in [NewItem("a", v, {"x": float("nan")}), NewItem("b\udcff", v), NewItem("c", v, {"x": "\ud800"})]:
        with pytest.raises(ValueError):
            store.upsert([bad])
    with pytest.raises(ValueError):
        store.upsert([NewItem("d", v), NewItem("d", v)])
    assert store.count() == 0
    store.close()
