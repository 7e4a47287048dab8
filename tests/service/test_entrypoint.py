"""``python -m service`` as a process: what its own start-up and protocol options do."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time

import pytest

from bench.server import free_port
from tests.conftest import DEFAULT_MODEL, REPO, wait_until_ready

# Trains, starts processes or a browser: `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow


def _environment(tmp_path, port: int) -> dict[str, str]:
    return {**os.environ, "LIKENESS_MODEL_PATH": str(DEFAULT_MODEL), "LIKENESS_DATA_DIR": str(tmp_path / "data"),
            "LIKENESS_SEED_GALLERY": "false", "LIKENESS_PORT": str(port), "LIKENESS_HOST": "127.0.0.1"}


def test_the_server_bounds_headers_and_a_second_server_on_the_same_index_says_why_it_cannot_start(tmp_path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=_environment(tmp_path, port),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(server, port, timeout=90)
        # Headers past the limit get the JSON 431 of service.http_server, not a dropped connection.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
            reply = conn.recv(65536).decode("latin-1")
        assert reply.startswith("HTTP/1.1 431") and "headers_too_large" in reply
        # A kept-alive connection idle for longer than a client's own limit (httpx: 5 s) is still
        # open: a server that closed it first would race the client's next request, which then
        # gets no answer (the failures `python -m bench load` saw).
        # (http.client reads whole responses, and says RemoteDisconnected if the server has closed.)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/healthz")
            first = conn.getresponse()
            assert first.status == 200 and first.read()
            kept = conn.sock
            time.sleep(6)
            conn.request("GET", "/healthz")
            again = conn.getresponse()
            assert again.status == 200 and again.read() and conn.sock is kept
        finally:
            conn.close()
        # A second process on the same data directory: one line and exit 1, no traceback.
        second = subprocess.run([sys.executable, "-m", "service"], cwd=REPO, env=_environment(tmp_path, free_port()),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 1, second.stderr[-2000:]
        assert "Traceback" not in second.stderr
        assert second.stderr.strip().splitlines()[-1].startswith("likeness: cannot start:")
    finally:
        server.terminate()
        server.wait(timeout=30)
