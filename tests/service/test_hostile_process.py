"""Issue #33's seven findings, each sent as its reporter sent it to ``python -m service`` (a real
process, over raw sockets where the bytes matter): a 4xx within 2 s, the server's peak memory under
1.5 GB, the next request on the same connection answered as itself, the rebinding write refused,
settings that cannot work refused at start-up, and a non-ASCII key taken in UTF-8."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.server import free_port
from tests.conftest import DEFAULT_MODEL, REPO, wait_until_ready
from tests.hostile import jpeg_scan_bomb, multipart, tiff_tile_bomb

pytestmark = pytest.mark.slow
KEY = "clé-ü"


def _start(tmp_path, **env: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    environment = {**os.environ, "LIKENESS_MODEL_PATH": str(DEFAULT_MODEL), "LIKENESS_DATA_DIR": str(tmp_path),
                   "LIKENESS_SEED_GALLERY": "false", "LIKENESS_PORT": str(port), "LIKENESS_HOST": "127.0.0.1",
                   **{f"LIKENESS_{name.upper()}": value for name, value in env.items()}}
    process = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    wait_until_ready(process, port, timeout=120)
    return process, port


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def peak_rss_mb(process: subprocess.Popen) -> float:
    with open(f"/proc/{process.pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A key-less service with the default model, as a user starts it."""
    process, port = _start(tmp_path_factory.mktemp("hostile2"))
    yield process, port
    _stop(process)


def _raw(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length, read off a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers.get("content-length", 0))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        body += chunk
    assert len(body) == length, "bytes after the response: the next answer would be misread"
    return int(lines[0].split()[1]), headers, body


def _request(method: str, path: str, port: int, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@pytest.mark.parametrize("bomb", ["tiff", "jpeg"])
@pytest.mark.parametrize("route", ["/similarity", "/search", "/items", "/search json"])
def test_decoder_bombs_are_a_413_within_2_s_in_bounded_memory(service, bomb, route):
    process, port = service
    data = tiff_tile_bomb() if bomb == "tiff" else jpeg_scan_bomb()
    url = f"http://127.0.0.1:{port}{route.split()[0]}"
    started = time.monotonic()
    if route == "/search json":
        reply = httpx.post(url, json={"image": base64.b64encode(data).decode()}, timeout=30)
    elif route == "/similarity":
        reply = httpx.post(url, files={"image_a": ("a", data), "image_b": ("b", data)}, timeout=30)
    else:
        reply = httpx.post(url, files={"image": ("a", data)}, data={"id": "bomb"} if route == "/items" else {},
                           timeout=30)
    assert reply.status_code == 413 and reply.json()["code"] == "too_much_decoding", reply.text
    assert time.monotonic() - started < 2
    assert peak_rss_mb(process) < 1500
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200


EARLY_ANSWERS = [
    ("POST", "/no-such-route", {}, 404),
    ("PUT", "/similarity", {}, 405),
    ("POST", "/search/batch", {"Content-Type": "text/plain"}, 415),
    ("POST", "/items", {"Origin": "http://elsewhere.example", "Content-Type": "application/json"}, 403),
]


@pytest.mark.parametrize("method,path,headers,status", EARLY_ANSWERS)
def test_the_request_after_an_early_answer_on_a_kept_alive_connection_is_answered_as_itself(
        service, method, path, headers, status):
    _, port = service
    body = b"x" * 200_000  # more than the 64 KiB of headers the server allows
    with _raw(port) as sock:
        for _ in range(5):
            sock.sendall(_request(method, path, port, body, headers))
            assert _read_response(sock)[0] == status
            sock.sendall(_request("GET", "/healthz", port))
            code, _, reply = _read_response(sock)
            assert code == 200 and json.loads(reply)["status"] == "alive"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=st.sampled_from(EARLY_ANSWERS), size=st.integers(0, 3_000_000), pieces=st.integers(1, 6),
       pause=st.booleans())
def test_any_early_answer_leaves_the_connection_clean(service, answer, size, pieces, pause):
    """Property: whatever the unread body (size, how it is split, whether it arrives after the answer),
    the next request on the connection gets its own answer."""
    _, port = service
    method, path, headers, status = answer
    body = bytes(size)
    request = _request(method, path, port, body, headers)
    head_end = request.index(b"\r\n\r\n") + 4
    with _raw(port) as sock:
        sock.sendall(request[:head_end])
        if pause:  # the answer comes before any of the body
            assert _read_response(sock)[0] == status
        step = max(1, len(body) // pieces)
        for start in range(head_end, len(request), step):
            sock.sendall(request[start:start + step])
        if not pause:
            assert _read_response(sock)[0] == status
        sock.sendall(_request("GET", "/healthz", port))
        assert _read_response(sock)[0] == 200


def test_an_endless_body_after_an_early_answer_is_cut_off_at_the_drain_limit(service):
    """A chunked body (no Content-Length for the upload limit to refuse) that goes on after a 404."""
    from service.http_server import MAX_DRAIN_BYTES

    _, port = service
    chunk = b"%x\r\n" % (1 << 20) + bytes(1 << 20) + b"\r\n"
    with _raw(port) as sock:
        sock.sendall(f"POST /no-such-route HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode() + chunk)
        assert _read_response(sock)[0] == 404
        sent, closed = 0, False
        try:
            while sent < 3 * MAX_DRAIN_BYTES:
                sock.sendall(chunk)
                sent += 1 << 20
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        if not closed:
            sock.settimeout(10)
            try:
                closed = sock.recv(1) == b""
            except ConnectionResetError:
                closed = True
        assert closed and sent <= 2 * MAX_DRAIN_BYTES


REBINDING = {"Host": "attacker.example:{port}", "Origin": "http://attacker.example:{port}",
             "Sec-Fetch-Site": "same-origin"}


def test_dns_rebinding_reads_and_writes_are_refused(service, fashion_test):
    from tests.conftest import png_bytes

    _, port = service
    headers = {name: value.format(port=port) for name, value in REBINDING.items()}
    body, content_type = multipart([("image", png_bytes(fashion_test.images[0][:, :, 0]), "x.png"),
                                    ("id", b"rebound", None)])
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        write = client.post("/items", content=body, headers={**headers, "Content-Type": content_type})
        assert write.status_code == 400 and write.json()["code"] == "host_not_allowed"
        for path in ("/items", "/index", "/model", "/"):
            assert client.get(path, headers=headers).status_code == 400
        assert client.get("/items/rebound").status_code == 404  # nothing was written
        assert client.get("/items", headers={"Host": f"localhost:{port}"}).status_code == 200


@pytest.mark.parametrize("env", [{"index_type": "ivf", "ivf_nlist": "1000", "ivf_min_train": "400"},
                                 {"index_type": "ivf", "ivf_nlist": "16384"},
                                 {"api_key": "a\x01b"}, {"api_key_for_reads": "true"}])
def test_settings_that_cannot_work_are_refused_at_start_up_in_one_line(tmp_path, env):
    environment = {**os.environ, "LIKENESS_MODEL_PATH": str(DEFAULT_MODEL), "LIKENESS_DATA_DIR": str(tmp_path),
                   **{f"LIKENESS_{name.upper()}": value for name, value in env.items()}}
    done = subprocess.run([sys.executable, "-m", "service"], cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("likeness: cannot start: LIKENESS_"), done.stderr[-2000:]


def test_the_milvus_backend_answers_an_unstorable_id_as_the_embedded_one_does_and_takes_a_utf8_key(
        tmp_path, fashion_test):
    from tests.conftest import png_bytes

    process, port = _start(tmp_path, index_backend="milvus", api_key=KEY, index_type="flat")
    try:
        url = f"http://127.0.0.1:{port}"
        image = png_bytes(fashion_test.images[0][:, :, 0])
        body, content_type = multipart([("image", image, "x.png"), ("id", b"one", None)])
        as_sent = {b"X-API-Key": KEY.encode("utf-8"), b"Content-Type": content_type.encode()}
        latin1 = {b"X-API-Key": KEY.encode("latin-1"), b"Content-Type": content_type.encode()}
        assert httpx.post(f"{url}/items", content=body, headers=latin1, timeout=30).status_code == 403
        assert httpx.post(f"{url}/items", content=body, headers=as_sent, timeout=30).status_code == 201
        started = time.monotonic()
        lookup = httpx.post(f"{url}/search", content=json.dumps({"id": "\ud800"}, ensure_ascii=True),
                            headers={"Content-Type": "application/json"}, timeout=30)
        assert lookup.status_code == 404 and lookup.json()["code"] == "not_found"
        assert time.monotonic() - started < 2
    finally:
        _stop(process)
