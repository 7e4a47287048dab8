"""Optional API key: required on writes when set, and on every endpoint but health if configured.

The key may come as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``. It is compared in
constant time. A missing key is 401, a wrong one 403; neither says anything about the key.
An empty ``LIKENESS_API_KEY`` is no key (settings.py).

Cross-origin requests with any method but GET, HEAD and OPTIONS are refused with 403, key or no
key: without a key, any web page the user visits could otherwise POST a form to a service on
localhost (a multipart form needs no CORS preflight). Browsers say where a request
comes from (``Sec-Fetch-Site``, else ``Origin``); clients that are not browsers send neither and
are not affected.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import Request

from service.api.errors import ApiError


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
    expected = settings.api_key.get_secret_value().encode()
    if not hmac.compare_digest(presented.encode(), expected):
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
