"""The one error shape, below every layer that answers with it: ``{"detail": message, "code":
short_code, "field": name or null}``.

Routes raise :class:`ApiError` (service/api/errors.py turns it into a response); the ASGI
middlewares and the HTTP protocol, which answer before any route runs, write the same shape
with :func:`send_error` or :func:`error_bytes`.
"""

from __future__ import annotations

import json

from starlette.types import Send


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers


def error_body(code: str, message: str, field: str | None = None) -> dict:
    return {"detail": message, "code": code, "field": field}


def error_bytes(code: str, message: str) -> bytes:
    """The error body as the bytes a response carries."""
    return json.dumps(error_body(code, message)).encode()


async def send_error(send: Send, status: int, code: str, message: str, *, close: bool = False,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer an ASGI request with the JSON error; ``close`` asks the server to close the connection."""
    body = error_bytes(code, message)
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
