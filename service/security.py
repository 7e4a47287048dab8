"""Optional API key: required on writes when set, and on every endpoint but health if configured.

The key may come as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``. It is compared in
constant time. A missing key is 401, a wrong one 403; neither says anything about the key.
"""

from __future__ import annotations

import hmac

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


async def require_write_key(request: Request) -> None:
    """Dependency for endpoints that change the index."""
    _check(request)


async def require_read_key(request: Request) -> None:
    """Dependency for read endpoints: checks the key only when ``api_key_for_reads`` is set."""
    if request.app.state.settings.api_key_for_reads:
        _check(request)
