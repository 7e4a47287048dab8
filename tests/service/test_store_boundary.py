"""Routes reach the index store only off the event loop (service/store_calls.py)."""

from __future__ import annotations

import re
import statistics
import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient

from service.app import create_app
from tests.service.conftest import make_settings

API = Path(__file__).resolve().parents[2] / "service" / "api"


def test_a_held_write_lock_stalls_no_probe(tmp_path):
    """A writer holds the store's lock; requests that need the store wait for it on worker threads,
    and the probes, answered on the event loop they would otherwise block, still come back at once."""
    with TestClient(create_app(make_settings(tmp_path, seed_gallery=False))) as client:
        store = client.app.state.service.store
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with store._lock.write():
                held.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(5)
        answered: dict[str, int] = {}
        waiting = [threading.Thread(target=lambda p=path: answered.__setitem__(p, client.get(p).status_code))
                   for path in ("/items/a", "/items", "/index", "/model", "/metrics", "/items/a/thumbnail")]
        for thread in waiting:
            thread.start()
        time.sleep(0.3)  # they are all waiting for the lock now
        try:
            assert not answered, f"answered while a writer held the lock: {answered}"
            for path in ("/healthz", "/readyz"):
                times = []
                for _ in range(5):
                    started = time.perf_counter()
                    response = client.get(path)
                    times.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.text
                assert statistics.median(times) < 0.1, (path, times)
                assert max(times) < 0.5, (path, times)
        finally:
            release.set()
            holder.join()
            for thread in waiting:
                thread.join(30)
        assert answered == {"/items/a": 404, "/items": 200, "/index": 200, "/model": 200, "/metrics": 200,
                            "/items/a/thumbnail": 404}


def test_no_route_calls_the_store_itself():
    """Every route goes through ``state.index`` (OffLoopStore); ``state.store`` is for wiring only."""
    offenders = [f"{path.name}:{n}" for path in API.glob("*.py") for n, line in
                 enumerate(path.read_text().splitlines(), 1) if re.search(r"\bstate\.store\b", line)]
    assert offenders == []
