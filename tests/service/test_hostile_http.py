"""Hostile clients at the connection level (issue 17), against the real app under uvicorn in this
process, over raw sockets: a 500 keeps the connection, slow or oversized headers are cut off,
and a client that leaves stops the work on its images."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import numpy as np
import pytest
import uvicorn

from bench.server import free_port
from service import inference
from service.app import create_app
from service.http_server import uvicorn_options
from tests.conftest import png_bytes
from tests.hostile import multipart
from tests.service.conftest import make_settings

HEADER_TIMEOUT_S = 1.0
MAX_HEADER_BYTES = 4096


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    app = create_app(make_settings(tmp_path_factory.mktemp("live"), seed_gallery=False))

    @app.get("/test-failure", include_in_schema=False)
    async def failure() -> None:
        raise RuntimeError("a bug the tests planted")

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                            **uvicorn_options(header_timeout_s=HEADER_TIMEOUT_S, max_header_bytes=MAX_HEADER_BYTES,
                                              keep_alive_s=2))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(20)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_a_500_is_the_json_error_and_the_connection_stays_usable(live):
    connection = http.client.HTTPConnection("127.0.0.1", live, timeout=10)
    connection.request("GET", "/test-failure", headers={"X-Request-ID": "boom-1"})
    failed = connection.getresponse()
    body = json.loads(failed.read())
    assert failed.status == 500 and failed.getheader("content-type") == "application/json"
    assert body["code"] == "internal_error" and "boom-1" in body["detail"] and set(body) == {"detail", "code", "field"}
    assert failed.getheader("x-request-id") == "boom-1" and failed.getheader("connection") is None
    sock = connection.sock
    connection.request("GET", "/healthz")  # the client's next, innocent request on the same connection
    after = connection.getresponse()
    assert after.status == 200 and json.loads(after.read()) == {"status": "alive"}
    assert connection.sock is sock  # not reconnected behind our back
    connection.close()


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(live):
    started = time.monotonic()
    with connect(live) as sock:
        assert read_all(sock) == b""
    assert HEADER_TIMEOUT_S * 0.9 <= time.monotonic() - started < HEADER_TIMEOUT_S + 3


def test_trickled_headers_get_a_408_at_the_header_timeout(live):
    started = time.monotonic()
    with connect(live) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        try:
            for byte in b"Host: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            pass  # the server closed the connection mid-trickle, as it should
        status, headers, body = parse(read_all(sock))
    assert status == 408 and json.loads(body)["code"] == "header_timeout" and headers["x-request-id"]
    assert headers["connection"] == "close"
    assert time.monotonic() - started < HEADER_TIMEOUT_S + 3


def test_headers_over_the_limit_get_a_431(live):
    with connect(live) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 100))
        status, headers, body = parse(read_all(sock))
    assert status == 431 and json.loads(body)["code"] == "headers_too_large" and headers["connection"] == "close"


def test_a_kept_alive_connection_is_not_cut_off_between_requests(live):
    connection = http.client.HTTPConnection("127.0.0.1", live, timeout=10)
    for _ in range(3):
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() == b'{"status":"alive"}'
        time.sleep(HEADER_TIMEOUT_S * 0.7)  # idle time never counts against the next request's headers
    connection.close()


def test_image_preparation_stops_when_the_client_goes_away(live, monkeypatch):
    loaded = []
    real_load = inference.load_image

    def slow_load(image, **kwargs):
        time.sleep(0.2)
        loaded.append(1)
        return real_load(image, **kwargs)

    monkeypatch.setattr(inference, "load_image", slow_load)
    image = png_bytes(np.zeros((28, 28), np.uint8))
    body, content_type = multipart([("image", image, f"{i}.png") for i in range(30)])
    with connect(live) as sock:
        sock.sendall(f"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.6)
    # 30 images at 0.2 s each would take 6 s; the worker stops before the next image once the
    # disconnect is seen.
    time.sleep(1.5)
    stopped_at = len(loaded)
    time.sleep(1.0)
    assert len(loaded) == stopped_at and 1 <= stopped_at <= 12, stopped_at


def test_a_path_cannot_forge_a_line_in_the_access_log(live, caplog):
    caplog.set_level("INFO", logger="likeness.access")
    connection = http.client.HTTPConnection("127.0.0.1", live, timeout=10)
    connection.request("GET", "/items/x%0A127.0.0.1%20GET%20/admin%20200")
    assert connection.getresponse().status == 404
    connection.close()
    deadline = time.monotonic() + 5
    while not (lines := [r.getMessage() for r in caplog.records if r.name == "likeness.access"]):
        assert time.monotonic() < deadline, "no access log line"  # it is written after the response
        time.sleep(0.05)
    assert any("\\n127.0.0.1 GET /admin" in line for line in lines), lines
    assert all("\n" not in line for line in lines)
