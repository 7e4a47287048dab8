"""The milvus backend over HTTP, black box: the service in a subprocess (as `make serve` runs it)
on Milvus Lite, both as a server on loopback shared by 2 API workers and as a file with 1 worker."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import numpy as np
import pytest

from bench.server import ServerProcess, free_port
from tests.conftest import REPO, png_bytes

# Trains, starts processes or a browser: `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

ITEMS = 1_000
BATCH = 50


@pytest.fixture
def milvus_lite_server(tmp_path):
    """Milvus Lite in server mode (the real Milvus gRPC server) on a free loopback port."""
    from milvus_lite.server import Server

    address = f"127.0.0.1:{free_port()}"
    server = Server(str(tmp_path / "shared.db"), address=address)
    assert server.init() and server.start(), "Milvus Lite did not start"
    yield f"http://{address}"
    server.stop()


def fresh(url: str) -> httpx.Client:
    """A client that opens a new connection per request, so any worker may take each one."""
    return httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_keepalive_connections=0))


def black_box_flow(server: ServerProcess) -> set[int]:
    """Add ITEMS items, read each batch back at once, search, compare, delete, restart, bad inputs.
    Returns the worker process ids that answered."""
    rng = np.random.default_rng(0)
    images = {f"item/{n:04d} ü": png_bytes(rng.integers(0, 256, (28, 28), dtype=np.uint8)) for n in range(ITEMS)}
    ids = list(images)
    workers: set[int] = set()
    with fresh(server.url) as client:
        for start in range(0, ITEMS, BATCH):
            chunk = ids[start:start + BATCH]
            response = client.post("/items", files=[("image", (f"{n}.png", images[i])) for n, i in enumerate(chunk)],
                                   data={"id": chunk, "metadata": [f'{{"batch": {start // BATCH}}}'] * len(chunk)})
            assert response.status_code == 201, response.text
            # The next request, on a new connection (either worker): the write is there.
            for item_id in (chunk[0], chunk[-1]):
                got = client.get(f"/items/{item_id}")
                assert got.status_code == 200 and got.json()["metadata"] == {"batch": start // BATCH}, got.text
            workers.add(client.get("/model").json()["worker"])
        assert client.get("/index").json()["items"] == ITEMS
        for item_id in ids[::97]:
            hits = client.post("/search", files={"image": ("q.png", images[item_id])}, data={"k": "3"}).json()
            assert hits["results"][0]["id"] == item_id and hits["results"][0]["score"] > 0.99
            only = client.post("/search", files={"image": ("q.png", images[item_id])},
                               data={"k": "5", "filter": '{"batch": 3}'}).json()["results"]
            assert len(only) == 5 and all(hit["metadata"] == {"batch": 3} for hit in only)
        same = client.post("/similarity", files={"image_a": ("a.png", images[ids[1]]),
                                                 "image_b": ("b.png", images[ids[1]])})
        assert same.status_code == 200 and same.json()["score"] > 0.99, same.text
        page = client.get("/items", params={"limit": 10, "after": ids[500]}).json()
        assert [item["id"] for item in page["items"]] == ids[501:511]
        assert client.get(f"/items/{ids[7]}/thumbnail").headers["content-type"] == "image/png"
        for item_id in ids[:10]:
            assert client.delete(f"/items/{item_id}").status_code == 200
            assert client.get(f"/items/{item_id}").status_code == 404
        hits = client.post("/search", files={"image": ("q.png", images[ids[3]])}, data={"k": "5"}).json()["results"]
        assert ids[3] not in {hit["id"] for hit in hits}
    server.stop()
    server.start()
    with fresh(server.url) as client:
        assert client.get("/index").json()["items"] == ITEMS - 10
        assert client.get(f"/items/{ids[3]}").status_code == 404 and client.get(f"/items/{ids[30]}").status_code == 200
        bad = [
            client.post("/search", files={"image": ("q.png", images[ids[20]])}, data={"k": "0"}),
            client.post("/search", files={"image": ("q.png", images[ids[20]])}, data={"filter": '{"batch": [1]}'}),
            client.post("/search", files={"image": ("q.png", images[ids[20]])}, data={"filter": "not json"}),
            client.post("/search", files={"image": ("q.png", b"not an image")}),
            client.post("/search", files={"image": ("q.png", images[ids[20]])}, data={"aspect": "colour"}),
            client.post("/search", json={"id": "no such item"}),
            client.post("/items", files={"image": ("a.png", images[ids[20]])}, data={"id": "x\u0000y"}),
            client.delete("/items/no-such-item"),
        ]
        for response in bad:
            assert 400 <= response.status_code < 500 and response.json()["code"], response.text
    return workers


def test_two_workers_share_a_milvus_lite_server(tmp_path, milvus_lite_server):
    server = ServerProcess(tmp_path / "data", LIKENESS_INDEX_BACKEND="milvus", LIKENESS_MILVUS_URI=milvus_lite_server,
                           LIKENESS_WORKERS="2", LIKENESS_SEED_GALLERY="0", LIKENESS_BATCH_MAX_WAIT_MS="0")
    server.start(timeout=120)
    try:
        workers = black_box_flow(server)
    finally:
        server.stop()
    assert len(workers) == 2, workers  # both workers answered, and every read saw the write before it


def test_one_worker_on_a_milvus_lite_file(tmp_path):
    server = ServerProcess(tmp_path / "data", LIKENESS_INDEX_BACKEND="milvus",
                           LIKENESS_MILVUS_URI=str(tmp_path / "index.db"), LIKENESS_SEED_GALLERY="0")
    server.start(timeout=120)
    try:
        black_box_flow(server)
    finally:
        server.stop()


@pytest.mark.parametrize(("env", "says"), [
    ({}, "the embedded index has one writer process"),
    ({"LIKENESS_INDEX_BACKEND": "milvus", "LIKENESS_MILVUS_URI": "/tmp/x.db"}, "opens in one process only"),
])
def test_more_than_one_worker_without_a_shared_index_is_refused_in_one_line(tmp_path, env, says):
    environment = {**os.environ, "LIKENESS_DATA_DIR": str(tmp_path), **env}
    done = subprocess.run([sys.executable, "-m", "likeness", "serve", "--workers", "2"], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and says in lines[0], done.stderr
    assert "LIKENESS_INDEX_BACKEND=milvus" in lines[0] or "LIKENESS_MILVUS_URI=http" in lines[0]
