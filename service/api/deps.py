"""Shared request plumbing: the service state, upload reading, and parameter checks."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request, UploadFile

from service.api.errors import ApiError, image_error
from service.index_store import OVERALL, IndexStore
from service.inference import ImagePreparationError, PreparationAbandoned, PreparedImage
from service.item_fields import FieldError, id_problem, parse_object, value_problem
from service.observability import client_gone_var
from service.state import ServiceState


async def get_state(request: Request) -> ServiceState:
    # async: FastAPI runs a plain-def dependency in a worker thread, a thread hop on every request.
    state = getattr(request.app.state, "service", None)
    if state is None:
        raise ApiError(503, "not_ready", "the model and index are not loaded yet")
    return state


def generation(state: ServiceState, model: str | None) -> ServiceState:
    """The generation of the index a request's ``model`` field picks (the served one by default)."""
    chosen = state.for_model(model)
    if chosen is None:
        raise ApiError(422, "unknown_model", f"model {model!r} has no generation in this index; it has "
                       f"{', '.join(state.models())}", "model")
    return chosen


def check_image_count(count: int, field: str, state: ServiceState) -> None:
    if count > state.settings.max_images_per_request:
        raise ApiError(413, "too_many_images",
                       f"{count} images in one request; the limit is {state.settings.max_images_per_request} "
                       "(LIKENESS_MAX_IMAGES_PER_REQUEST)", field)


async def read_uploads(files: list[tuple[str, UploadFile]], state: ServiceState) -> list[tuple[str, bytes]]:
    check_image_count(len(files), files[0][0], state)
    out = []
    for field, upload in files:
        data = await upload.read()
        if not data:
            raise ApiError(422, "empty", f"{field}: the file is empty", field)
        out.append((field, data))
    return out


async def prepare(state: ServiceState, files: list[tuple[str, UploadFile]], thumbnails: bool = False
                  ) -> list[PreparedImage]:
    return await prepare_bytes(state, await read_uploads(files, state), thumbnails)


async def prepare_bytes(state: ServiceState, uploads: list[tuple[str, bytes]], thumbnails: bool = False
                        ) -> list[PreparedImage]:
    """Decode and prepare (field, bytes) pairs under the pixel limits; image errors name the field."""
    try:
        return await state.engine.prepare(uploads, thumbnails, client_gone_var.get())
    except ImagePreparationError as exc:
        raise image_error(exc.error, exc.field) from None
    except PreparationAbandoned:
        # Nobody reads this answer; the access log and metrics do (nginx's "client closed request").
        raise ApiError(499, "client_closed_request", "the client went away before its images were prepared") \
            from None


def check_k(k: int, state: ServiceState) -> int:
    if not 1 <= k <= state.settings.max_k:
        raise ApiError(422, "k_out_of_range", f"k must be between 1 and {state.settings.max_k}, got {k}", "k")
    return k


def resolve_aspect(aspect: str | None, state: ServiceState) -> str | None:
    """None or '' means overall; an unknown name is a 422 that lists the valid ones."""
    if aspect in (None, ""):
        return None
    names = state.runner.spec.aspects
    if aspect not in names:
        valid = ", ".join(names) if names else "none (this model has no aspects)"
        raise ApiError(422, "unknown_aspect", f"unknown aspect {aspect!r}; valid aspects: {valid}", "aspect")
    return aspect


def parse_metadata(raw: str | None, field: str, limit: int, code: str = "invalid_metadata") -> dict[str, Any]:
    """A JSON object by the rules of service/item_fields.py: what is accepted can always be returned."""
    if raw in (None, ""):
        return {}
    if len(raw.encode("utf-8", "surrogatepass")) > limit:
        too_large = "filter_too_large" if code == "invalid_filter" else "metadata_too_large"
        raise ApiError(413, too_large, f"{field}: over the limit of {limit} bytes "
                       "(LIKENESS_MAX_METADATA_BYTES)", field)
    try:
        return parse_object(raw)
    except FieldError as exc:
        raise ApiError(422, code, f"{field}: {exc}", field) from None


def parse_filter(raw: str | None, state: ServiceState) -> dict[str, Any] | None:
    """A metadata filter: a JSON object of scalar values, each matched by equality."""
    if raw in (None, ""):
        return None
    return _scalar_filter(parse_metadata(raw, "filter", state.settings.max_metadata_bytes, code="invalid_filter"))


def check_filter(where: dict[str, Any] | None, state: ServiceState) -> dict[str, Any] | None:
    """A metadata filter that came as a JSON object (a JSON body): the same limit and rules as
    :func:`parse_filter`'s text."""
    if not where:
        return None
    problem = value_problem(where)  # first: it also bounds the depth json.dumps recurses to
    if problem:
        raise ApiError(422, "invalid_filter", f"filter: {problem}", "filter")
    limit = state.settings.max_metadata_bytes
    if len(json.dumps(where, ensure_ascii=False).encode("utf-8")) > limit:
        raise ApiError(413, "filter_too_large", f"filter: over the limit of {limit} bytes "
                       "(LIKENESS_MAX_METADATA_BYTES)", "filter")
    return _scalar_filter(where)


def _scalar_filter(where: dict[str, Any]) -> dict[str, Any] | None:
    for key, value in where.items():
        if isinstance(value, (dict, list)):
            raise ApiError(422, "invalid_filter", f"filter: field {key!r} must be a string, number, boolean or null",
                           "filter")
    return where or None


def check_id(item_id: str, field: str, limit: int) -> str:
    problem = id_problem(item_id, limit)
    if problem:
        raise ApiError(422, "invalid_id", f"{field}: {problem}", field)
    return item_id


__all__ = ["OVERALL", "IndexStore", "ServiceState"]
