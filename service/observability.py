"""Request ids, access logs, the request timeout, unexpected errors as JSON, client disconnects, and JSON
log lines."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import threading
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import send_error

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# Set once the client has gone (or the request has timed out): work on worker threads checks it.
client_gone_var: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("client_gone", default=None)
log = logging.getLogger("likeness")
access_log = logging.getLogger("likeness.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    """Gives every request an id (the client's ``X-Request-ID`` if sane, else a fresh one), echoes it
    in the response, logs one access line, answers 408 when the whole request outlives the
    timeout, and answers an unexpected error with the JSON 500 (keeping the connection usable).

    Once the request body is in, it watches for the client going away and sets ``client_gone_var``
    (also on timeout), so image preparation on a worker thread can stop early.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app, self.timeout_s = app, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        gone = threading.Event()
        gone_token = client_gone_var.set(gone)
        started = time.perf_counter()
        state = {"status": 500, "started": False}
        watch = _DisconnectWatch(receive, gone)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
                message = {**message, "headers": [*message.get("headers", []),
                                                   (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            # asyncio.timeout runs the app in this task; wait_for would start a task per request.
            async with asyncio.timeout(self.timeout_s):
                await self.app(scope, watch.receive, send_with_id)
        except TimeoutError:
            if not state["started"]:
                state["status"] = 408
                await _send_error(send, request_id, 408, "request_timeout",
                                  f"the request took longer than the limit of {self.timeout_s:g} s "
                                  "(LIKENESS_REQUEST_TIMEOUT_S)", close=True)
        except Exception:
            if state["started"]:
                raise  # half an answer is out: only closing the connection can tell the client
            log.exception("unexpected error in %s %s", scope.get("method"), _for_log(scope.get("path", "")))
            state["status"] = 500
            # No "Connection: close": the request was read or is discarded by the server, so the
            # client's next request on this connection is served as usual.
            await _send_error(send, request_id, 500, "internal_error",
                              f"the server failed on this request; its log has the details under request id "
                              f"{request_id}")
        finally:
            gone.set()  # whatever still runs for this request on a worker thread may stop
            watch.stop()
            access_log.info("%s %s %d %.1fms", scope.get("method"), _for_log(scope.get("path", "")), state["status"],
                            (time.perf_counter() - started) * 1000)
            client_gone_var.reset(gone_token)
            request_id_var.reset(token)


def _for_log(text: str) -> str:
    """Client text fit for a plain log line: a path with %0A in it must not start a forged line."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class _DisconnectWatch:
    """Passes the request body through; after its last chunk, one task waits for the client to
    disconnect (the only message left to come) and serves that to every later ``receive``."""

    def __init__(self, receive: Receive, gone: threading.Event) -> None:
        self._receive, self._gone = receive, gone
        self._disconnected = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def receive(self) -> Message:
        if self._task is not None:
            await self._disconnected.wait()
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self._gone.set()
        elif message["type"] == "http.request" and not message.get("more_body", False):
            self._task = asyncio.ensure_future(self._wait_for_disconnect())
        return message

    async def _wait_for_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._gone.set()
        self._disconnected.set()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def _send_error(send: Send, request_id: str, status: int, code: str, message: str, close: bool = False) -> None:
    await send_error(send, status, code, message, close=close, headers=[(b"x-request-id", request_id.encode())])


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(json_lines: bool, level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
