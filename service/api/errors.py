"""The app's error handlers: every error a route raises becomes the one error shape (service/errors.py).

Unexpected errors become the JSON 500 in service/observability.py (the outermost middleware).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from contract import ImageError
from service.errors import ApiError, error_body
from service.index_store import IndexUnavailable

__all__ = ["ApiError", "error_body", "image_error", "install_error_handlers"]


def image_error(exc: ImageError, field: str) -> ApiError:
    status = 413 if exc.reason in ("too_many_pixels", "too_much_decoding") else 422
    return ApiError(status, exc.reason, exc.message, field)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts, first_field = [], None
    for error in exc.errors():
        location = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "form")]
        field = ".".join(location) or None
        first_field = first_field or field
        message = error.get("msg", "invalid value")
        if error.get("type") == "missing":
            message = "field required"
        parts.append(f"{field}: {message}" if field else message)
    return "; ".join(parts) or "invalid request", first_field


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.field), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(IndexUnavailable)
    async def _index_unavailable(_: Request, exc: IndexUnavailable) -> JSONResponse:
        # The index's own service (Milvus) failed or did not answer: the request may succeed later.
        return JSONResponse(error_body("index_unavailable", str(exc)), status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc)
        return JSONResponse(error_body("invalid_request", message, field), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed", 413: "upload_too_large"}
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        return JSONResponse(error_body(codes.get(exc.status_code, "http_error"), detail), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))
