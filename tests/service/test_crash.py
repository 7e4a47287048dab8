"""kill -9 while clients are adding items: every acknowledged item survives and is searchable."""

from __future__ import annotations

import random
import threading
import time

import httpx
import numpy as np

from bench.server import ServerProcess
from tests.conftest import png_bytes

ROUNDS = 5
WRITERS = 4


def _writer(url: str, name: str, acked: dict[str, bytes], attempted: set[str], stop: threading.Event) -> None:
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    n = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            ids = [f"{name}-{n}-{j}" for j in range(int(rng.integers(1, 4)))]
            n += 1
            images = {i: png_bytes(rng.integers(0, 256, (28, 28), dtype=np.uint8)) for i in ids}
            attempted.update(ids)
            try:
                response = client.post("/items", files=[("image", (f"{i}.png", images[i])) for i in ids],
                                       data={"id": ids})
            except httpx.HTTPError:
                return  # the server died mid-request: this request was never acknowledged
            if response.status_code == 201:
                for item_id in response.json()["ids"]:
                    acked[item_id] = images[item_id]


def test_kill_9_loses_no_acknowledged_item(tmp_path):
    rng = random.Random(1234)
    acked: dict[str, bytes] = {}
    attempted: set[str] = set()
    # HNSW and a small snapshot interval, so kills also land during and between snapshots and the
    # restart has both a snapshot to load and a log to replay.
    server = ServerProcess(tmp_path / "data", LIKENESS_SEED_GALLERY="0", LIKENESS_SNAPSHOT_EVERY="40",
                           LIKENESS_INDEX_TYPE="hnsw")
    for round_ in range(ROUNDS):
        server.start()
        stop = threading.Event()
        writers = [threading.Thread(target=_writer, args=(server.url, f"r{round_}w{w}", acked, attempted, stop))
                   for w in range(WRITERS)]
        for thread in writers:
            thread.start()
        time.sleep(rng.uniform(0.5, 2.5))  # a random moment
        server.kill()
        stop.set()
        for thread in writers:
            thread.join()
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            present = {i for i in attempted if client.get(f"/items/{i}").status_code == 200}
            missing = set(acked) - present
            assert not missing, f"lost {len(missing)} acknowledged items"
            # At most the requests in flight at each kill can be committed without their 201.
            assert len(present - set(acked)) <= WRITERS * 3 * ROUNDS
            stats = client.get("/index").json()
            assert stats["items"] == len(present) and stats["spaces"]["overall"] == len(present)
            assert len(acked) >= 20 * ROUNDS
            for item_id, image in acked.items():
                hit = client.post("/search", files={"image": ("q.png", image)}, data={"k": "1"}).json()["results"][0]
                assert hit["id"] == item_id
    finally:
        server.stop()
