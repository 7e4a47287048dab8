"""The index store on real FAISS indexes and a real SQLite file in a temp dir."""

from __future__ import annotations

import logging
import sqlite3
import threading

import numpy as np
import pytest

from service.index_store import SNAPSHOT, EmbeddedStore, IndexMismatch, NewItem, StoreOptions
from service.index_store.faiss_index import IndexOptions

DIM = 16
TYPES = ["flat", "hnsw", "ivf"]


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def options(kind: str, **extra) -> StoreOptions:
    return StoreOptions(index=IndexOptions(type=kind, ivf_min_train=200, hnsw_ef_search=64), **extra)


def make_store(path, kind: str = "flat", aspects: list[str] | None = None, **extra) -> EmbeddedStore:
    store = EmbeddedStore(path, DIM, aspects or [], {"name": "test", "version": "1"}, options(kind, **extra))
    store.open()
    return store


def items(vectors: np.ndarray, prefix: str = "item", labels: list[str] | None = None) -> list[NewItem]:
    return [NewItem(f"{prefix}-{i}", v[None, :], {"label": labels[i] if labels else str(i % 5)})
            for i, v in enumerate(vectors)]


@pytest.mark.parametrize("kind", TYPES)
def test_search_never_returns_deleted_or_replaced_items(tmp_path, kind):
    rng = np.random.default_rng(0)
    vectors = unit(rng, 400)
    store = make_store(tmp_path, kind)
    store.upsert(items(vectors))
    assert store.stats()["kind"]["overall"] == kind  # ivf trained itself past 200 items
    for i in range(0, 400, 7):
        assert store.search(vectors[i], 1)[0].id == f"item-{i}"
    # Delete every third item and replace every fifth with a far-away vector.
    deleted = {f"item-{i}" for i in range(0, 400, 3)}
    for item_id in deleted:
        assert store.delete(item_id)
    replaced = [i for i in range(1, 400, 5) if f"item-{i}" not in deleted]
    store.upsert([NewItem(f"item-{i}", -vectors[i][None, :], {"label": "moved"}) for i in replaced])
    for i in range(400):
        hits = store.search(vectors[i], 10)
        ids = [h.id for h in hits]
        assert not deleted & set(ids)
        if i in replaced:
            # The old vector is gone: the item can only come back with its new (opposite) vector.
            assert all(h.score < 0.5 for h in hits if h.id == f"item-{i}")
        elif f"item-{i}" not in deleted:
            assert ids[0] == f"item-{i}"
    assert len(store) == 400 - len(deleted)
    store.close()


@pytest.mark.parametrize("kind", TYPES)
def test_reopen_after_clean_close_and_after_a_crash(tmp_path, kind, caplog):
    rng = np.random.default_rng(1)
    vectors = unit(rng, 300)
    store = make_store(tmp_path, kind, snapshot_every=0)
    store.upsert(items(vectors[:250]))
    store.close()  # snapshot at change 250
    assert (tmp_path / SNAPSHOT).is_file()
    store = make_store(tmp_path, kind, snapshot_every=0)
    assert store.replayed_changes == 0 and len(store) == 250
    store.upsert(items(vectors[250:], prefix="late"))
    store.delete("item-3")
    # "Crash": no close, no snapshot. The next open replays the 51 changes after the snapshot.
    del store
    caplog.set_level(logging.INFO)
    store = make_store(tmp_path, kind, snapshot_every=0)
    assert store.replayed_changes == 51 and len(store) == 299
    assert store.search(vectors[260], 1)[0].id == "late-10"
    assert all(h.id != "item-3" for h in store.search(vectors[3], 5))
    store.close()


def test_a_torn_snapshot_is_dropped_with_a_log_line_and_nothing_is_lost(tmp_path, caplog):
    rng = np.random.default_rng(2)
    vectors = unit(rng, 120)
    store = make_store(tmp_path, "hnsw", snapshot_every=0)
    store.upsert(items(vectors))
    store.close()
    snapshot = tmp_path / SNAPSHOT
    snapshot.write_bytes(snapshot.read_bytes()[: snapshot.stat().st_size // 2])
    caplog.set_level(logging.WARNING)
    store = make_store(tmp_path, "hnsw", snapshot_every=0)
    assert "torn or unreadable" in caplog.text
    assert len(store) == 120 and store.search(vectors[5], 1)[0].id == "item-5"
    store.close()


def test_automatic_snapshots_trim_the_log(tmp_path):
    rng = np.random.default_rng(3)
    store = make_store(tmp_path, "flat", snapshot_every=50)
    for chunk in np.array_split(unit(rng, 120), 12):
        store.upsert(items(chunk, prefix=f"c{len(store)}"))
        store.wait_for_maintenance()  # snapshots run in the background
    stats = store.stats()
    assert stats["snapshot_change"] == 100 and stats["applied_change"] == 120
    remaining = store._log._require_db().execute("SELECT COUNT(*) FROM changes").fetchone()[0]
    assert remaining == 20
    store.close()


def test_hnsw_tombstones_are_compacted(tmp_path):
    rng = np.random.default_rng(4)
    vectors = unit(rng, 200)
    store = make_store(tmp_path, "hnsw")
    store.upsert(items(vectors))
    for i in range(30):
        store.delete(f"item-{i}")
    assert store.stats()["tombstones"] == 30
    for i in range(30, 40):  # reaching 20% of the 200 stored vectors triggers a rebuild
        store.delete(f"item-{i}")
    store.wait_for_maintenance()  # compaction runs in the background
    assert store.stats()["tombstones"] == 0 and len(store) == 160
    assert store.search(vectors[100], 1)[0].id == "item-100"
    store.close()


@pytest.mark.parametrize("kind", TYPES)
def test_filters_keep_recall_when_selective(tmp_path, kind):
    rng = np.random.default_rng(5)
    vectors = unit(rng, 3000)
    labels = ["rare" if i % 300 == 0 else f"common-{i % 3}" for i in range(3000)]
    store = make_store(tmp_path, kind)
    store.upsert(items(vectors, labels=labels))
    rare = np.array([i for i, label in enumerate(labels) if label == "rare"])
    for q in unit(rng, 20):
        hits = store.search(q, 5, where={"label": "rare"})
        expected = rare[np.argsort(-(vectors[rare] @ q))][:5]
        assert [h.id for h in hits] == [f"item-{i}" for i in expected]
        assert all(h.metadata == {"label": "rare"} for h in hits)
    assert store.search(vectors[0], 5, where={"label": "nothing"}) == []
    assert store.search(vectors[0], 5, where={"label": "rare", "other": 1}) == []
    store.close()


def test_aspect_spaces_stay_in_step(tmp_path):
    rng = np.random.default_rng(6)
    store = make_store(tmp_path, "flat", aspects=["colour", "shape"])
    stacked = np.stack([unit(rng, 50) for _ in range(3)], axis=1)  # [50, 3 spaces, dim]
    store.upsert([NewItem(f"i{n}", stacked[n]) for n in range(50)])
    store.delete("i7")
    for space_index, space in enumerate(["overall", "colour", "shape"]):
        assert store.search(stacked[9, space_index], 1, space=space)[0].id == "i9"
        assert all(h.id != "i7" for h in store.search(stacked[7, space_index], 3, space=space))
    assert set(store.stats()["spaces"].values()) == {49}
    store.close()


def test_compaction_keeps_writes_that_land_while_it_rebuilds(tmp_path):
    rng = np.random.default_rng(8)
    vectors = unit(rng, 400)
    store = make_store(tmp_path, "hnsw", snapshot_every=0)
    store.upsert(items(vectors[:300]))
    for i in range(100):
        store.delete(f"item-{i}")
    store.wait_for_maintenance()
    for i in range(100, 150):  # tombstones again, then a compaction racing with more writes
        store.delete(f"item-{i}")
    writer = threading.Thread(target=lambda: [store.upsert(items(vectors[300 + j:301 + j], prefix=f"new{j}"))
                                              for j in range(100)])
    writer.start()
    store.compact()
    writer.join()
    store.wait_for_maintenance()
    assert len(store) == 250
    for j in range(0, 100, 9):
        assert store.search(vectors[300 + j], 1)[0].id == f"new{j}-0"
    assert all(h.id not in {f"item-{i}" for i in range(150)} for h in store.search(vectors[120], 10))
    store.close()


def test_an_index_from_another_model_is_refused(tmp_path):
    make_store(tmp_path).close()
    with pytest.raises(IndexMismatch, match="16-d"):
        EmbeddedStore(tmp_path, 32, [], {"name": "other"}, options("flat")).open()


def open_with_version_2(path, caplog) -> tuple[EmbeddedStore, list[str]]:
    """Open the index with a newer model of the same shape; return it and the warnings logged."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="likeness.index"):
        store = EmbeddedStore(path, DIM, [], {"name": "test", "version": "2"}, options("flat"))
        store.open()
    return store, [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_an_index_built_by_another_model_of_the_same_shape_opens_with_a_warning(tmp_path, caplog):
    """Same dimension, other model (a new default version): the vectors load, and the log says so."""
    store = make_store(tmp_path)
    store.upsert(items(unit(np.random.default_rng(3), 4)))
    store.close()
    again, warned = open_with_version_2(tmp_path, caplog)
    assert len(again) == 4
    again.close()
    assert any('"version": "1"' in m and '"version": "2"' in m and "4 of 4 items" in m for m in warned), warned


def test_the_other_model_warning_counts_items_not_yet_re_added_and_stops_when_all_are(tmp_path, caplog):
    rng = np.random.default_rng(4)
    store = make_store(tmp_path)
    store.upsert(items(unit(rng, 4)))
    store.close()
    again, warned = open_with_version_2(tmp_path, caplog)
    again.upsert(items(unit(rng, 3)))  # ids 0-2 re-added with version 2; id 3 still version 1
    again.close()
    again, warned = open_with_version_2(tmp_path, caplog)
    assert any("1 of 4 items" in m and '1 by {"name": "test", "version": "1"}' in m for m in warned), warned
    again.upsert(items(unit(rng, 4)))
    again.close()
    again, warned = open_with_version_2(tmp_path, caplog)
    again.close()
    assert not [m for m in warned if "another model" in m], warned


def test_an_index_from_before_per_item_models_opens_with_all_its_items(tmp_path, caplog):
    """Upgrading: an items table without the model column gains it; its items count as the index's
    first model (store_meta), so nothing is lost and the warning is right."""
    store = make_store(tmp_path)
    store.upsert(items(unit(np.random.default_rng(5), 4)))
    store.close()
    with sqlite3.connect(tmp_path / "index.sqlite3") as db:
        db.execute("ALTER TABLE items DROP COLUMN model")
    with caplog.at_level(logging.WARNING, logger="likeness.index"):
        same = make_store(tmp_path)
    assert len(same) == 4 and not [r for r in caplog.records if "another model" in r.getMessage()]
    same.close()
    newer, warned = open_with_version_2(tmp_path, caplog)
    assert len(newer) == 4
    newer.close()
    assert any("4 of 4 items" in m for m in warned), warned


def test_concurrent_searches_never_see_half_an_upsert(tmp_path):
    rng = np.random.default_rng(7)
    store = make_store(tmp_path, "hnsw", snapshot_every=0)
    background = unit(rng, 500)
    store.upsert(items(background))
    a = unit(rng, 1)[0]
    b = (a + 0.3 * unit(rng, 1)[0]).astype(np.float32)
    b /= np.linalg.norm(b)
    store.upsert([NewItem("x", a[None, :])])
    stop, failures = threading.Event(), []

    def writer():
        for n in range(300):
            store.upsert([NewItem("x", (a if n % 2 else b)[None, :])])
        stop.set()

    def reader():
        while not stop.is_set():
            hits = store.search(a, 1)
            if not hits or hits[0].id != "x":
                failures.append(hits)

    threads = [threading.Thread(target=reader) for _ in range(4)] + [threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    store.close()


def test_searches_on_worker_threads_use_the_configured_faiss_threads(tmp_path):
    """omp_set_num_threads is per thread: the service's searches run on worker threads, so the cap
    must be applied there, not once at startup (it was, and a 10k search took 23 ms, not 0.1)."""
    import faiss

    store = make_store(tmp_path, "flat")
    rng = np.random.default_rng(0)
    store.upsert([NewItem(f"i{n}", v[None], {}) for n, v in enumerate(unit(rng, 50))])
    seen: dict[str, int] = {}

    def search_on_a_new_thread() -> None:
        store.search(unit(rng, 1)[0], 5)
        seen["after"] = faiss.omp_get_max_threads()

    worker = threading.Thread(target=search_on_a_new_thread)
    worker.start()
    worker.join()
    assert seen["after"] == 1
    store.close()


def test_replay_counts_an_id_upserted_several_times_after_the_snapshot_once(tmp_path):
    """Issue 17, finding 8: HNSW counted a tombstone for a version the replay never added."""
    rng = np.random.default_rng(8)
    vectors = unit(rng, 301)
    store = make_store(tmp_path, "hnsw", snapshot_every=0)
    store.upsert(items(vectors[:300]))
    store.snapshot()
    for round_ in range(3):  # one id upserted three times after the snapshot, and a new one
        store.upsert([NewItem("item-7", vectors[300][None, :], {"round": round_})])
    store.upsert([NewItem("new", vectors[299][None, :], {})])
    del store  # "crash": no close, no snapshot
    store = make_store(tmp_path, "hnsw", snapshot_every=0)
    assert len(store) == 301
    stats = store.stats()
    assert stats["spaces"]["overall"] == 301, stats
    assert store.search(vectors[300], 1)[0].id == "item-7"
    store.close()


@pytest.mark.parametrize("kind", TYPES)
def test_search_returns_k_results_when_k_items_pass(tmp_path, kind):
    """Issue 17, finding 9: an HNSW walk can reach fewer than k items (about 193 of 300 on the
    service's defaults); the store then answers exactly."""
    rng = np.random.default_rng(9)
    vectors = unit(rng, 300)
    store = make_store(tmp_path, kind)
    store.upsert(items(vectors))
    assert len(store.search(vectors[0], 300)) == 300
    for i in range(0, 300, 3):
        store.delete(f"item-{i}")
    hits = store.search(vectors[1], 300)
    assert len(hits) == 200 and len({h.id for h in hits}) == 200
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].id == "item-1"
    store.close()


def test_upsert_refuses_what_no_read_could_return(tmp_path):
    rng = np.random.default_rng(10)
    store = make_store(tmp_path)
    vector = unit(rng, 1)
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    for bad in ({"x": "\ud800"}, {"x": float("nan")}, {"x": deep},
                {"x": b"bytes"}):
        with pytest.raises(ValueError):
            store.upsert([NewItem("a", vector, bad)])
    with pytest.raises(ValueError):
        store.upsert([NewItem("b\udcff", vector, {})])
    assert len(store) == 0
    store.close()


def test_rows_an_older_version_stored_load_with_their_problem(tmp_path, caplog):
    rng = np.random.default_rng(11)
    store = make_store(tmp_path)
    store.upsert(items(unit(rng, 4)))
    store.close()
    db = sqlite3.connect(tmp_path / "index.sqlite3")
    with db:
        db.execute("UPDATE items SET metadata = ? WHERE id = 'item-1'", ('{"x": "\\ud800"}',))
        db.execute("UPDATE items SET metadata = ? WHERE id = 'item-2'", ("not json",))
    db.close()
    caplog.set_level(logging.WARNING)
    store = make_store(tmp_path)
    assert "2 item(s) hold metadata that cannot be returned" in caplog.text
    listed = store.list(None, 10)
    assert [i.problem is None for i in listed] == [True, False, False, True]
    assert listed[0].metadata == {"label": "0"} and listed[1].metadata is None
    hits = {h.id: h for h in store.search(unit(rng, 1)[0], 10)}
    assert set(hits) == {"item-0", "item-1", "item-2", "item-3"}
    assert hits["item-2"].error and hits["item-2"].metadata is None and hits["item-0"].error is None
    store.close()


def test_stored_vectors_per_space(tmp_path):
    """vector() returns what upsert stored, per space."""
    store = make_store(tmp_path, aspects=["colour"])
    rng = np.random.default_rng(0)
    vectors = np.stack([unit(rng, 2), unit(rng, 2)], axis=1)  # [2 items, 2 spaces, DIM]
    store.upsert([NewItem(f"v-{i}", v) for i, v in enumerate(vectors)])
    np.testing.assert_array_equal(store.vector("v-1"), vectors[1, 0])
    np.testing.assert_array_equal(store.vector("v-1", "colour"), vectors[1, 1])
    assert store.vector("missing") is None and store.count() == 2
    with pytest.raises(KeyError):
        store.vector("v-1", "no-such-space")
    store.close()
