"""Model upgrades without re-adding anything: the admin side of ``likeness index migrate`` and ``prune``.

    POST /index/migration          {"model": "PATH.onnx"}: a new generation for that model (or the one
                                   being built); every write lands in both from now on
    GET  /index/migration          how far it is
    GET  /index/migration/pending  live items it lacks or holds in an older version, a page at a time
    POST /index/migration/items    embeddings of those, made by the client from the kept originals
    POST /index/migration/finish   check it holds every live item in its live version; mark it complete
    POST /index/migration/switch   serve it: one step, no failed request (the old one stays until pruned)
    POST /index/prune              delete the generations not served, and originals no item refers to

All need the API key when one is set (service/migration.py has the design).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from service.api.deps import ServiceState, get_state
from service.api.errors import ApiError
from service.api.json_bodies import json_body_doc, read_json
from service.api.schemas import ErrorResponse, JsonRequest
from service.migration import MigrationError
from service.model_runner import ModelLoadError
from service.security import require_write_key
from service.state import prune_generations, start_batcher, start_migration, switched

router = APIRouter(tags=["index"], dependencies=[Depends(require_write_key)])
ERRORS = {code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 413, 415, 422, 503)}
MAX_ITEMS = 256


class StartRequest(JsonRequest):
    model: str = Field(description="path of the new model's ONNX file, as the service sees it")


class BuiltItem(JsonRequest):
    id: str
    version: float = Field(description="the live item's `version` from /index/migration/pending")
    vectors: list[list[float]] = Field(description="the new model's vectors: overall, then each aspect")


class ItemsRequest(JsonRequest):
    items: list[BuiltItem] = Field(max_length=MAX_ITEMS)


def _migration(state: ServiceState):
    if state.migration is None:
        raise ApiError(404, "no_migration", "no migration is under way: start one with POST /index/migration")
    return state.migration


@router.post("/index/migration", responses=ERRORS, openapi_extra=json_body_doc(StartRequest, multipart=False))
async def start(request: Request, state: ServiceState = Depends(get_state)) -> dict[str, Any]:
    body = await read_json(request, StartRequest)
    try:
        path = Path(body.model).expanduser().resolve()
    except (ValueError, OSError, RuntimeError) as exc:  # a NUL byte, a loop of links, an unknown ~user
        raise ApiError(422, "invalid_model", f"model: not a usable path ({exc})", "model") from None
    try:
        migration = await run_in_threadpool(start_migration, state, path)
    except ModelLoadError as exc:
        raise ApiError(422, "invalid_model", str(exc), "model") from None
    except MigrationError as exc:
        raise ApiError(409, "migration_conflict", str(exc), "model") from None
    return await run_in_threadpool(migration.status)


@router.get("/index/migration", responses=ERRORS)
async def status(state: ServiceState = Depends(get_state)) -> dict[str, Any]:
    return await run_in_threadpool(_migration(state).status)


@router.get("/index/migration/pending", responses=ERRORS)
async def pending(after: Annotated[str | None, Query()] = None, limit: Annotated[int, Query(ge=1, le=1000)] = 256,
                  state: ServiceState = Depends(get_state)) -> dict[str, Any]:
    migration = _migration(state)
    items = await run_in_threadpool(migration.pending, after, limit)
    return {"items": [{"id": i.id, "version": i.version} for i in items],
            "next": items[-1].id if len(items) == limit else None}


@router.post("/index/migration/items", responses=ERRORS, openapi_extra=json_body_doc(ItemsRequest, multipart=False))
async def items(request: Request, state: ServiceState = Depends(get_state)) -> dict[str, int]:
    migration = _migration(state)
    body = await read_json(request, ItemsRequest)
    spec = migration.runner.spec
    shape = (1 + len(spec.aspects), spec.embedding_dim)
    entries = []
    for n, item in enumerate(body.items):
        vectors = np.asarray(item.vectors, dtype=np.float32)
        if vectors.shape != shape or not np.isfinite(vectors).all():
            raise ApiError(422, "invalid_vector", f"items[{n}].vectors: {shape[0]} lists of {shape[1]} finite numbers "
                           f"(the {spec.name} {spec.version} model's)", f"items[{n}].vectors")
        entries.append((item.id, item.version, vectors, None))
    return {"applied": await run_in_threadpool(migration.apply, entries), "sent": len(entries)}


@router.post("/index/migration/finish", responses=ERRORS)
async def finish(state: ServiceState = Depends(get_state)) -> dict[str, Any]:
    migration = _migration(state)
    try:
        done = await run_in_threadpool(migration.finish)
    except MigrationError as exc:
        raise ApiError(409, "migration_incomplete", str(exc)) from None
    state.registry.save()
    return {**done, **migration.status()}


@router.post("/index/migration/switch", responses=ERRORS)
async def switch(request: Request, state: ServiceState = Depends(get_state)) -> dict[str, Any]:
    """Serve the migrated generation: requests already running finish on the old one."""
    try:
        new = switched(state)
    except MigrationError as exc:
        raise ApiError(409, "migration_incomplete", str(exc)) from None
    await start_batcher(new, request.app.state.metrics, request.app.state.batchers)
    request.app.state.service = new
    return {"live": new.generation.key, "others": sorted(new.others)}


@router.post("/index/prune", responses=ERRORS)
async def prune(state: ServiceState = Depends(get_state)) -> dict[str, Any]:
    """Delete every generation the service does not serve live (and a migration under way), and the
    original files no item refers to any more."""
    removed = await run_in_threadpool(prune_generations, state)
    files, size = await run_in_threadpool(state.originals.prune) if state.originals is not None else (0, 0)
    return {"removed_generations": removed, "removed_original_files": files, "removed_original_bytes": size}
