"""Shared request plumbing: the service state, upload reading, and parameter checks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request, UploadFile

from service.api.errors import ApiError, image_error
from service.index_store import OVERALL, IndexStore
from service.inference import ImagePreparationError, InferenceEngine, PreparedImage
from service.model_runner import ModelRunner
from service.settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    runner: ModelRunner
    store: IndexStore
    engine: InferenceEngine

    @property
    def model_ref(self) -> dict[str, str]:
        return {"name": self.runner.spec.name, "version": self.runner.spec.version}


def get_state(request: Request) -> ServiceState:
    state = getattr(request.app.state, "service", None)
    if state is None:
        raise ApiError(503, "not_ready", "the model and index are not loaded yet")
    return state


async def read_uploads(files: list[tuple[str, UploadFile]], state: ServiceState) -> list[tuple[str, bytes]]:
    if len(files) > state.settings.max_images_per_request:
        raise ApiError(413, "too_many_images",
                       f"{len(files)} images in one request; the limit is {state.settings.max_images_per_request}",
                       files[0][0])
    out = []
    for field, upload in files:
        data = await upload.read()
        if not data:
            raise ApiError(422, "empty", f"{field}: the file is empty", field)
        out.append((field, data))
    return out


async def prepare(state: ServiceState, files: list[tuple[str, UploadFile]], thumbnails: bool = False
                  ) -> list[PreparedImage]:
    try:
        return await state.engine.prepare(await read_uploads(files, state), thumbnails)
    except ImagePreparationError as exc:
        raise image_error(exc.error, exc.field) from None


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
    if raw in (None, ""):
        return {}
    if len(raw.encode()) > limit:
        too_large = "filter_too_large" if code == "invalid_filter" else "metadata_too_large"
        raise ApiError(413, too_large, f"{field}: over the limit of {limit} bytes "
                       "(LIKENESS_MAX_METADATA_BYTES)", field)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(422, code, f"{field}: not valid JSON ({exc.msg})", field) from None
    if not isinstance(value, dict):
        raise ApiError(422, code, f"{field}: must be a JSON object, got {type(value).__name__}", field)
    return value


def parse_filter(raw: str | None, state: ServiceState) -> dict[str, Any] | None:
    """A metadata filter: a JSON object of scalar values, each matched by equality."""
    if raw in (None, ""):
        return None
    where = parse_metadata(raw, "filter", state.settings.max_metadata_bytes, code="invalid_filter")
    for key, value in where.items():
        if isinstance(value, (dict, list)):
            raise ApiError(422, "invalid_filter", f"filter: field {key!r} must be a string, number, boolean or null",
                           "filter")
    return where or None


def check_id(item_id: str, field: str, limit: int) -> str:
    if not item_id or item_id != item_id.strip():
        raise ApiError(422, "invalid_id", f"{field}: ids must be non-empty with no leading or trailing spaces", field)
    if len(item_id) > limit:
        raise ApiError(422, "invalid_id", f"{field}: id is longer than the limit of {limit} characters", field)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in item_id):
        raise ApiError(422, "invalid_id", f"{field}: ids may not contain control characters", field)
    # Ids travel in URL paths (GET /items/{id}): browsers drop '.' and '..' segments, and
    # '<id>/thumbnail' is the thumbnail route.
    segments = item_id.split("/")
    if any(segment in (".", "..") for segment in segments) or (len(segments) > 1 and segments[-1] == "thumbnail"):
        raise ApiError(422, "invalid_id", f"{field}: ids may not have '.' or '..' path segments or end in "
                       "'/thumbnail'", field)
    return item_id


__all__ = ["OVERALL", "IndexStore", "ServiceState"]
