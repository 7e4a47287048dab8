"""Multipart text fields that are not UTF-8 are refused, not stored as mojibake.

Starlette decodes a text field that is not valid UTF-8 as Latin-1, silently, so an id or a metadata
value sent as raw non-UTF-8 bytes would be stored as different text than the client meant. Here
such bytes are kept as lone surrogates (Python's ``surrogateescape``), which no valid text can
contain, and the field checks (service/item_fields.py) refuse them with a 422 naming the field.
Routers that read forms use :class:`Utf8FormRoute`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import aclosing

from fastapi import Request, Response
from fastapi.routing import APIRoute
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser


class _Utf8MultiPartParser(MultiPartParser):
    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None and self._charset == "utf-8":
            self.items.append((part.field_name, bytes(part.data).decode("utf-8", "surrogateescape")))
        else:
            super().on_part_end()


class Utf8FormRequest(Request):
    async def _get_form(self, *, max_files: int | float = 1000, max_fields: int | float = 1000,
                        max_part_size: int = 1024 * 1024) -> FormData:
        content_type, _ = parse_options_header(self.headers.get("Content-Type"))
        if self._form is None and content_type == b"multipart/form-data":
            try:
                async with aclosing(self.stream()) as stream:
                    parser = _Utf8MultiPartParser(self.headers, stream, max_files=max_files, max_fields=max_fields,
                                                  max_part_size=max_part_size)
                    self._form = await parser.parse()
            except MultiPartException as exc:
                raise HTTPException(status_code=400, detail=exc.message) from None
        return await super()._get_form(max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)


class Utf8FormRoute(APIRoute):
    """An APIRoute whose form fields keep non-UTF-8 bytes visible to the field checks."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(Utf8FormRequest(request.scope, request.receive))

        return handle
