"""GET /duplicates (groups of items that are the same image) and POST /duplicates/dismiss."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from service.api.deps import ServiceState, check_id, get_state
from service.api.errors import ApiError
from service.api.json_bodies import json_body_doc, read_json
from service.api.schemas import (
    Dismissed,
    DismissRequest,
    DuplicateGroup,
    DuplicatePage,
    ErrorResponse,
)
from service.security import require_write_key

router = APIRouter(tags=["duplicates"])
ERRORS = {code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 413, 415, 422, 503)}


@router.get("/duplicates", response_model=DuplicatePage, responses=ERRORS)
async def duplicates(
    after: Annotated[str | None, Query(description="cursor: `next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="groups per page")] = 50,
    min_score: Annotated[float | None, Query(ge=-1.0, le=1.0, description="join items whose same-image score is at "
                                                                         "least this (default: the model's "
                                                                         "near_duplicate_threshold for the index's size)")] = None,
    state: ServiceState = Depends(get_state),
) -> DuplicatePage:
    """Groups of indexed items that are the same image (copies, re-encodes, crops, borders...), best groups first,
    a page at a time; pairs dismissed with POST /duplicates/dismiss stay apart. The whole index is searched once per
    change of it (a few seconds per 10,000 items): `likeness index duplicates` does it offline for large ones."""
    spec = state.runner.spec
    if spec.near_duplicate is None:
        raise ApiError(409, "no_same_image_decision", f"the model {spec.name} {spec.version} has no same-image "
                       "decision (near_duplicate); export it again with likeness export")
    threshold = await state.index.same_image_threshold(spec) if min_score is None else min_score
    start = _cursor(after)
    groups = await state.index.duplicate_groups(spec, threshold)
    following = [g for g in groups if start is None or g.order > start]
    page = following[:limit]
    next_cursor = _encode(page[-1].order) if len(following) > limit else None
    return DuplicatePage(groups=[DuplicateGroup(ids=g.ids, score=g.score) for g in page], next=next_cursor,
                         min_score=threshold)


@router.post("/duplicates/dismiss", response_model=Dismissed, responses=ERRORS,
             dependencies=[Depends(require_write_key)], openapi_extra=json_body_doc(DismissRequest, multipart=False))
async def dismiss(request: Request, state: ServiceState = Depends(get_state)) -> Dismissed:
    """Record that two items are not the same image: `{"ids": ["a", "b"]}`. Kept durably; the pair never comes back
    in GET /duplicates, until one of them is added again with other content."""
    body = await read_json(request, DismissRequest)
    ids = [check_id(item_id, f"ids[{i}]", state.settings.max_id_length) for i, item_id in enumerate(body.ids)]
    if ids[0] == ids[1]:
        raise ApiError(422, "invalid_ids", "ids: two different items, please", "ids")
    if not await state.index.dismiss(sorted(ids)):
        raise ApiError(404, "not_found", f"no item with id {ids[0]!r} or {ids[1]!r}", "ids")
    return Dismissed(dismissed=sorted(ids))


def _cursor(after: str | None) -> tuple[float, str] | None:
    if after is None:
        return None
    try:
        score, first = json.loads(base64.urlsafe_b64decode(after.encode("ascii")))
        return float(score), str(first)
    except (ValueError, TypeError, UnicodeError, binascii.Error):
        raise ApiError(422, "invalid_cursor", "after: not a cursor this endpoint gave (pass `next` back as it "
                       "came)", "after") from None


def _encode(order: tuple[float, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(order)).encode("utf-8")).decode("ascii")
