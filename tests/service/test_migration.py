"""Model upgrades without re-adding anything (issue #31): a real service with the default model and
1,000 items; `likeness index migrate --model models/csn.onnx` under a steady load of searches, adds
and deletes, killed with SIGKILL once in the middle and run again, then the switch. No request fails,
no acknowledged write is lost, every item of the new generation holds the new model's embedding of
its original, and searches answer as an index built from scratch with the new model would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from bench.server import free_port
from tests.conftest import CSN_MODEL, DEFAULT_MODEL, REPO, png_bytes, wait_until_ready

pytestmark = pytest.mark.slow
ITEMS = 1000


def environment(data_dir, port: int, model, **extra: str) -> dict[str, str]:
    return {**os.environ, "LIKENESS_MODEL_PATH": str(model), "LIKENESS_DATA_DIR": str(data_dir),
            "LIKENESS_SEED_GALLERY": "false", "LIKENESS_PORT": str(port), "LIKENESS_HOST": "127.0.0.1",
            "LIKENESS_BATCH_MAX_WAIT_MS": "1", **extra}


def start(data_dir, model, **extra: str) -> tuple[subprocess.Popen, str, dict[str, str]]:
    port = free_port()
    env = environment(data_dir, port, model, **extra)
    process = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    wait_until_ready(process, port, timeout=180)
    return process, f"http://127.0.0.1:{port}", env


class Load:
    """Searches, adds and deletes in a loop on two threads; every answer recorded."""

    def __init__(self, url: str, images: np.ndarray) -> None:
        self.url, self.images = url, images
        self.failures: list[str] = []
        self.added: set[str] = set()
        self.deleted: set[str] = set()
        self.requests = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._searches), threading.Thread(target=self._writes)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _record(self, response: httpx.Response, expected: int) -> bool:
        self.requests += 1
        if response.status_code != expected:
            self.failures.append(f"{response.request.method} {response.request.url.path}: {response.status_code} "
                                 f"{response.text[:200]}")
            return False
        return True

    def _searches(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            n = 0
            while not self._stop.is_set():
                image = png_bytes(self.images[n % len(self.images)][:, :, 0])
                self._record(client.post("/search", files={"image": ("q.png", image)}, data={"k": "5"}), 200)
                n += 1

    def _writes(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            n = 0
            while not self._stop.is_set():
                item_id = f"live-{n:04d}"
                image = png_bytes(self.images[(7 * n) % len(self.images)][:, :, 0])
                if self._record(client.post("/items", files={"image": ("x.png", image)}, data={"id": item_id}), 201):
                    self.added.add(item_id)
                victim = f"item-{(13 * n) % ITEMS:04d}"
                if victim not in self.deleted:
                    response = client.delete(f"/items/{victim}")
                    if self._record(response, 200):
                        self.deleted.add(victim)
                n += 1
                time.sleep(0.05)


def add_catalogue(url: str, images: np.ndarray) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        for start_at in range(0, ITEMS, 50):
            ids = [f"item-{i:04d}" for i in range(start_at, start_at + 50)]
            files = [("image", (f"{i}.png", png_bytes(images[i][:, :, 0]))) for i in range(start_at, start_at + 50)]
            assert client.post("/items", files=files, data={"id": ids}).status_code == 201


def migrate(env: dict[str, str], url: str, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "service.jobs", "migrate", "--model", str(CSN_MODEL), "--url", url,
                             "--batch-size", "32", *flags], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def migrate_under_load(tmp_path, fashion_test, **extra: str) -> tuple[Load, list[str]]:
    images = fashion_test.images
    process, url, env = start(tmp_path, DEFAULT_MODEL, **extra)
    try:
        add_catalogue(url, images)
        with Load(url, images[ITEMS:ITEMS + 300]) as load:
            first = migrate(env, url)
            deadline = time.monotonic() + 300
            while True:  # kill -9 once it has built a part, not all
                status = httpx.get(f"{url}/index/migration", timeout=30)
                if status.status_code == 200 and 200 <= status.json()["built"] < 800:
                    break
                assert first.poll() is None and time.monotonic() < deadline, first.communicate()
                time.sleep(0.2)
            first.send_signal(signal.SIGKILL)
            first.wait(30)
            built_then = httpx.get(f"{url}/index/migration", timeout=30).json()["built"]
            second = migrate(env, url, "--switch")
            out, err = second.communicate(timeout=900)
            assert second.returncode == 0, err[-3000:]
            assert "items/s" in err and "could not re-read" not in err
            time.sleep(1.0)  # the load goes on after the switch
        assert not load.failures, load.failures[:5]
        assert load.requests > 100 and load.added and load.deleted
        assert 200 <= built_then < ITEMS
        with httpx.Client(base_url=url, timeout=60) as client:
            model = client.get("/model").json()["spec"]
            assert model["name"] == "likeness-fmnist-csn"
            for item_id in load.added:  # no acknowledged write lost, on the new generation
                assert client.get(f"/items/{item_id}").status_code == 200, item_id
            for item_id in load.deleted:
                assert client.get(f"/items/{item_id}").status_code == 404, item_id
            # Both models side by side until the old generation is pruned.
            kept = next(f"item-{i:04d}" for i in range(ITEMS) if f"item-{i:04d}" not in load.deleted)
            old = client.post("/search", json={"id": kept, "k": 3, "model": "likeness-fmnist"})
            assert old.status_code == 200 and old.json()["model"]["name"] == "likeness-fmnist"
            queries = [client.post("/search", json={"id": f"item-{i:04d}", "k": 10}).json()["results"]
                       for i in range(2, 40, 3) if f"item-{i:04d}" not in load.deleted]
        return load, queries
    finally:
        process.terminate()
        process.wait(timeout=60)


def check_generation_against_a_fresh_index(tmp_path, queries: list, **extra: str) -> None:
    """Offline: every item of the new generation holds the new model's embedding of its original, and
    an index built from scratch with the new model from the same originals answers the same searches."""
    from service.index_store import NewItem
    from service.settings import Settings
    from service.state import load_state, open_store

    settings = Settings(model_path=CSN_MODEL, data_dir=tmp_path, seed_gallery=False,
                        **{k.removeprefix("LIKENESS_").lower(): v for k, v in extra.items()})
    state = load_state(settings)
    fresh_settings = settings.model_copy(update={"data_dir": tmp_path / "fresh", "milvus_collection": "fresh"})
    fresh = open_store(fresh_settings, state.runner, ".")
    try:
        from contract import decode_image, prepare_image
        from service.ingest import item_vectors

        after, ids = None, []
        while page := state.store.list(after, 500):
            after = page[-1].id
            ids += [item.id for item in page]
        for start_at in range(0, len(ids), 64):
            chunk = ids[start_at:start_at + 64]
            arrays = [prepare_image(decode_image(state.originals.read(i), max_pixels=10**7), state.runner.spec.input)
                      for i in chunk]
            out = state.runner.embed(np.stack(arrays))
            items = []
            for row, item_id in enumerate(chunk):
                vectors = item_vectors(out, row)
                assert np.allclose(state.store.vector(item_id), vectors[0], atol=1e-5), item_id
                items.append(NewItem(item_id, vectors, {}))
            fresh.upsert(items)
        for results in queries:  # the API puts copies first: compare by score
            query = state.store.vector(next(r["id"] for r in results if r["score"] >= 0.99999))
            again = sorted(((round(h.score, 4), h.id) for h in fresh.search(query, 10)), reverse=True)
            served = sorted(((round(r["score"], 4), r["id"]) for r in results), reverse=True)
            assert [i for _, i in again[:5]] == [i for _, i in served[:5]]
            assert np.allclose([s for s, _ in again], [s for s, _ in served], atol=1e-3)
    finally:
        fresh.close()
        state.close()


def test_a_model_upgrade_under_load_with_a_kill_in_the_middle(tmp_path, fashion_test):
    _, queries = migrate_under_load(tmp_path, fashion_test)
    check_generation_against_a_fresh_index(tmp_path, queries)
    # At restart, the configured model picks its generation; the old one is served beside it until pruned.
    process, url, env = start(tmp_path, CSN_MODEL)
    try:
        assert httpx.get(f"{url}/model", timeout=30).json()["spec"]["name"] == "likeness-fmnist-csn"
        pruned = subprocess.run([sys.executable, "-m", "service.jobs", "prune", "--url", url], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=300)
        assert pruned.returncode == 0, pruned.stderr[-2000:]
        assert "likeness-fmnist 3.0.0" in pruned.stdout or "likeness-fmnist" in pruned.stdout
        gone = httpx.post(f"{url}/search", json={"id": queries[0][0]["id"], "model": "likeness-fmnist"}, timeout=30)
        assert gone.status_code == 422 and gone.json()["code"] == "unknown_model"
    finally:
        process.terminate()
        process.wait(timeout=60)
    # The old model on the migrated index: one line naming the command.
    refused = subprocess.run([sys.executable, "-m", "service"], cwd=REPO, capture_output=True, text=True, timeout=120,
                             env=environment(tmp_path, free_port(), DEFAULT_MODEL))
    assert refused.returncode == 1 and "likeness index migrate --model" in refused.stderr.splitlines()[-1]


def test_the_same_on_the_milvus_backend(tmp_path, fashion_test):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "service.milvus_lite_server", str(tmp_path / "milvus.db"),
                               "--address", f"127.0.0.1:{port}"], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    try:
        time.sleep(5)
        extra = {"LIKENESS_INDEX_BACKEND": "milvus", "LIKENESS_MILVUS_URI": f"http://127.0.0.1:{port}"}
        _, queries = migrate_under_load(tmp_path, fashion_test, **extra)
        check_generation_against_a_fresh_index(tmp_path, queries, **extra)
    finally:
        server.terminate()
        server.wait(timeout=60)
