"""Limits on a connection before its request reaches the app, which cannot see it until then.

uvicorn closes an idle kept-alive connection after ``timeout_keep_alive``, but has no bound on how
long a request's headers may take: a client that connects and sends nothing, or trickles a few
header bytes a second, holds a connection (and a file descriptor) for as long as it likes. The
protocol here gives the request line and headers ``HEADER_TIMEOUT_S`` from the connection (or
from the first byte of the next request on a kept-alive one) and ``MAX_HEADER_BYTES``; past
either it answers with the service's JSON error (408 or 431) and closes.

An answer sent before the request's body was read (a 404, 405, 415, 401 or 403 needs none of it)
leaves the rest of the body arriving on a kept-alive connection. uvicorn's parser reads it through
and drops it; the limits here do not count those bytes as the next request's headers (they did:
the next request on the connection got an unsolicited 431), and bound the drain to
``MAX_DRAIN_BYTES`` and ``HEADER_TIMEOUT_S``, past which the connection is closed. (With h11, the
fallback parser, none of this applies: it closes such a connection itself.)

Run the server with ``uvicorn.run(app, ..., **uvicorn_options())``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from service.errors import error_bytes

HEADER_TIMEOUT_S = 10.0
MAX_HEADER_BYTES = 64 * 1024
# The unread rest of a body answered early, drained before the next request; more is cut off.
MAX_DRAIN_BYTES = 16 * 1024 * 1024
# Longer than the clients' and load balancers' own idle limits (httpx 5 s, AWS ALB 60 s): a client
# reuses a kept-alive connection until its own limit, so a server that closes first races it, and
# a request sent as the server closes gets no answer at all. At uvicorn's 5 s, the same as httpx's,
# `python -m bench load` lost about one request in 15,000 that way (docs/load.md).
KEEP_ALIVE_S = 65

log = logging.getLogger("likeness.http")


class HeaderLimits:
    """Mixed into a uvicorn HTTP protocol (httptools or h11). Both create ``self.cycle`` when a
    request's headers are complete, which is how the limits know the headers are done."""

    header_timeout_s: float = HEADER_TIMEOUT_S
    max_header_bytes: int = MAX_HEADER_BYTES
    max_drain_bytes: int = MAX_DRAIN_BYTES
    # Between the end of a request's headers and the end of its body (httptools' parser callbacks).
    _body_pending = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._header_timer: asyncio.TimerHandle | None = None
        self._drain_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._drained = 0
        self._header_tail = b""  # the last bytes seen, for a blank line split across chunks
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._body_pending = True
        super().on_headers_complete()  # type: ignore[misc]

    def on_message_complete(self) -> None:
        self._body_pending = False
        self._disarm_drain_timer()
        super().on_message_complete()  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._draining():
            self._drained += len(data)
            if self._drained > self.max_drain_bytes:
                log.info("closing a connection whose unread request body is over %d bytes", self.max_drain_bytes)
                self.transport.close()  # type: ignore[attr-defined]
                return
        elif self._waiting_for_headers():
            # Counted before the parser sees the chunk (one chunk can carry the rest of an
            # oversized header block and complete it), and only up to the blank line that ends the
            # headers: a body in the same chunk is never counted.
            seen = self._header_tail + data
            end = seen.find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._header_tail))
            self._header_tail = seen[-3:]
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, "headers_too_large",
                             f"the request line and headers are over the limit of {self.max_header_bytes} bytes")
                return
        super().data_received(data)  # type: ignore[misc]
        if self._waiting_for_headers():
            self._arm_header_timer()
        else:
            self._disarm_header_timer()
            self._header_bytes, self._header_tail = 0, b""

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        self._disarm_drain_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        # The next request's headers get their own full allowance, armed by its first byte;
        # until then the connection is idle and uvicorn's keep-alive timeout applies.
        self._header_bytes, self._header_tail = 0, b""
        if self._body_pending:  # answered before the body was read: the rest is drained, for so long
            self._drained = 0
            self._drain_timer = asyncio.get_running_loop().call_later(self.header_timeout_s, self._on_drain_timeout)

    def _waiting_for_headers(self) -> bool:
        cycle = getattr(self, "cycle", None)
        return not self._body_pending and (cycle is None or cycle.response_complete)

    def _draining(self) -> bool:
        cycle = getattr(self, "cycle", None)
        return self._body_pending and cycle is not None and cycle.response_complete

    def _disarm_drain_timer(self) -> None:
        if getattr(self, "_drain_timer", None) is not None:
            self._drain_timer.cancel()
            self._drain_timer = None

    def _on_drain_timeout(self) -> None:
        self._drain_timer = None
        if self._draining():
            log.info("closing a connection whose unread request body took over %g s", self.header_timeout_s)
            self.transport.close()  # type: ignore[attr-defined]

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            loop = asyncio.get_running_loop()
            self._header_timer = loop.call_later(self.header_timeout_s, self._on_header_timeout)

    def _disarm_header_timer(self) -> None:
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        transport = self.transport  # type: ignore[attr-defined]
        if transport.is_closing() or not self._waiting_for_headers():
            return
        if self._header_bytes == 0 and getattr(self, "cycle", None) is None:
            transport.close()  # a connection that never said anything gets no answer
            return
        self._refuse(408, "header_timeout",
                     f"the request headers took longer than the limit of {self.header_timeout_s:g} s")

    def _refuse(self, status: int, code: str, message: str) -> None:
        transport = self.transport  # type: ignore[attr-defined]
        self._disarm_header_timer()
        reasons = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
        body = error_bytes(code, message)
        request_id = uuid.uuid4().hex
        log.info("%s: %s (request id %s)", code, message, request_id)
        transport.write(b"".join([
            b"HTTP/1.1 %d %s\r\n" % (status, reasons[status]),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-request-id: %s\r\n" % request_id.encode(),
            b"connection: close\r\n\r\n",
            body,
        ]))
        transport.close()


def header_limited_protocol(header_timeout_s: float = HEADER_TIMEOUT_S, max_header_bytes: int = MAX_HEADER_BYTES
                            ) -> type[asyncio.Protocol]:
    """uvicorn's own HTTP protocol (httptools when installed, else h11) with :class:`HeaderLimits`."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # httptools is optional; h11 always comes with uvicorn
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    return type(f"HeaderLimited{base.__name__}", (HeaderLimits, base),
                {"header_timeout_s": header_timeout_s, "max_header_bytes": max_header_bytes})


def uvicorn_options(header_timeout_s: float = HEADER_TIMEOUT_S, max_header_bytes: int = MAX_HEADER_BYTES,
                    keep_alive_s: int = KEEP_ALIVE_S) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` that bound time and bytes before a
    request's headers are complete, and how long an idle kept-alive connection stays open."""
    return {"http": header_limited_protocol(header_timeout_s, max_header_bytes), "timeout_keep_alive": keep_alive_s,
            "h11_max_incomplete_event_size": max_header_bytes}


# The same protocol by import path, for uvicorn's worker processes (which cannot be handed a class
# made at run time).
HeaderLimitedProtocol = header_limited_protocol()
HEADER_LIMITED_PROTOCOL = "service.http_server:HeaderLimitedProtocol"
