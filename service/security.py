"""Optional API key: required on writes when set, and on every endpoint but health if configured.

The key may come as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``. It is compared in
constant time. A missing key is 401, a wrong one 403; neither says anything about the key.
An empty ``LIKENESS_API_KEY`` is no key (settings.py).

Cross-origin requests with any method but GET, HEAD and OPTIONS are refused with 403, key or no
key: without a key, any web page the user visits could otherwise POST a form to a service on
localhost (a multipart form needs no CORS preflight). Browsers say where a request
comes from (``Sec-Fetch-Site``, else ``Origin``); clients that are not browsers send neither and
are not affected.

A Host header the service does not answer to (LIKENESS_ALLOWED_HOSTS) is refused with 400 before
anything else runs: a web page on attacker.example can make its own name resolve to 127.0.0.1 (DNS
rebinding), and its requests are then same-origin to the browser, but they still carry
``Host: attacker.example``.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ApiError, send_error


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            key = token.strip()
    return key


def _check(request: Request) -> None:
    settings = request.app.state.settings
    if settings.api_key is None:
        return
    presented = _presented_key(request)
    if presented is None:
        raise ApiError(401, "unauthorized", "an API key is required (X-API-Key header or Bearer token)",
                       headers={"WWW-Authenticate": "Bearer"})
    # The key is sent as UTF-8 (the README says so); Starlette decodes header bytes as Latin-1, which
    # maps every byte to one character, so encoding back to Latin-1 gives the bytes as sent.
    expected = settings.api_key.get_secret_value().encode("utf-8")
    if not hmac.compare_digest(presented.encode("latin-1"), expected):
        raise ApiError(403, "forbidden", "the API key is not valid")


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _refuse_cross_origin(request: Request) -> None:
    if request.method in SAFE_METHODS:
        return
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        cross = site not in ("same-origin", "none")  # "none": typed in or bookmarked by the user
    else:
        origin = request.headers.get("origin")
        cross = origin is not None and _origin_host(origin) != request.headers.get("host", "").lower()
    if cross:
        raise ApiError(403, "cross_origin", f"{request.method} from a page on another site is refused; "
                       "call the API from this service's own page or from a client that is not a browser")


def _origin_host(origin: str) -> str | None:
    try:
        return urlsplit(origin).netloc.lower() or None  # "null" (a sandboxed or file: page) has none
    except ValueError:
        return None


async def require_write_key(request: Request) -> None:
    """Dependency for endpoints that change the index."""
    _refuse_cross_origin(request)
    _check(request)


async def require_read_key(request: Request) -> None:
    """Dependency for read endpoints: checks the key only when ``api_key_for_reads`` is set."""
    _refuse_cross_origin(request)
    if request.app.state.settings.api_key_for_reads:
        _check(request)


class AllowedHostsMiddleware:
    """400 for a request whose Host header matches none of ``patterns``: ``name`` (any port),
    ``name:port``, ``*.domain`` (any subdomain, any port) or ``*``. A request without a Host header
    (HTTP/1.0 clients, never a browser) is served."""

    def __init__(self, app: ASGIApp, patterns: list[str]) -> None:
        self.app, self.patterns = app, patterns
        self.any = "*" in patterns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.any or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((value for name, value in scope.get("headers") or [] if name == b"host"), None)
        if host is None or host_allowed(host.decode("latin-1").strip().lower(), self.patterns):
            await self.app(scope, receive, send)
            return
        await send_error(send, 400, "host_not_allowed", "this service does not answer to the name in the Host "
                         "header; its operator can add it to LIKENESS_ALLOWED_HOSTS", close=True)


def host_allowed(host: str, patterns: list[str]) -> bool:
    """Whether a lower-case Host header value (``name`` or ``name:port``) matches one of ``patterns``."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") and "]:" in host else host
    for pattern in patterns:
        if pattern in (host, name):
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False
