"""JSON request bodies beside multipart: base64 images, stored ids and raw vectors.

A route that takes both shapes is registered twice on one path: a :class:`JsonBodyRoute` that
matches only requests whose ``Content-Type`` is JSON (``application/json`` or ``*/*+json``), and
the multipart route after it, which takes everything else exactly as before. The JSON route is
left out of the OpenAPI schema; :func:`json_body_doc` adds its body to the multipart operation,
so the schema shows one operation per path with both request shapes.

Bodies are parsed by the rules the service answers with (service/item_fields.py): a key twice in
one object is refused, and NaN or Infinity in a number field is a 422 naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.routing import Match
from starlette.types import Scope

from service.api.errors import ApiError

Body = TypeVar("Body", bound=BaseModel)
_DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def is_json(scope: Scope) -> bool:
    """Does the request say its body is JSON?"""
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))
    return False


class JsonBodyRoute(APIRoute):
    """An APIRoute that serves its path only for JSON requests; others fall through to the next
    route on the same path (the multipart one)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or not is_json(scope):
            return Match.NONE, {}
        return super().matches(scope)


def json_body_doc(model: type[BaseModel], multipart: bool = True) -> dict[str, Any]:
    """``openapi_extra`` that documents ``model`` as the operation's ``application/json`` body (beside
    the multipart body FastAPI documents from the route's form fields, when ``multipart``)."""
    body: dict[str, Any] = {"content": {"application/json": {"schema": model.model_json_schema()}}}
    if not multipart:
        body["required"] = True
    return {"requestBody": body}


async def read_json(request: Request, model: type[Body]) -> Body:
    """The request's JSON body validated as ``model``: 400 ``invalid_body`` for a body that is not
    JSON (or not UTF-8, or with a key twice), 415 for another Content-Type, 422 ``invalid_request``
    naming the field otherwise."""
    if not is_json(request.scope):
        raise ApiError(415, "unsupported_media_type", "this route takes a JSON body (Content-Type: application/json)")
    raw = await request.body()
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_body", "the JSON body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "invalid_body", f"the body is not valid JSON ({exc.msg} at character {exc.pos})") \
            from None
    except _DuplicateKey as exc:
        raise ApiError(400, "invalid_body", str(exc)) from None
    except (ValueError, RecursionError) as exc:  # an integer of more than 4300 digits, a bracket bomb
        raise ApiError(400, "invalid_body", f"the body is not usable JSON ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_request", f"the body must be a JSON object, got {type(value).__name__}")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


def decode_image(text: str, field: str) -> bytes:
    """Base64 text (standard alphabet, padding required; line breaks and a ``data:...;base64,`` prefix
    allowed) -> bytes; a 422 naming the field when it is not base64 or holds nothing."""
    text = _WHITESPACE.sub("", _DATA_URL.sub("", text, count=1))
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(422, "invalid_base64", f"{field}: not valid base64 ({exc})", field) from None
    if not data:
        raise ApiError(422, "empty", f"{field}: the image is empty", field)
    return data


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key!r} appears twice in one object")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result
