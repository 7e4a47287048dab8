"""Index management beyond single items: stats, snapshot, compaction."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from service.api.deps import ServiceState, get_state
from service.api.schemas import ErrorResponse
from service.security import require_write_key

router = APIRouter(tags=["index"])
ERRORS = {code: {"model": ErrorResponse} for code in (401, 403, 503)}


@router.get("/index", responses=ERRORS)
async def index_stats(state: ServiceState = Depends(get_state)) -> dict[str, Any]:
    """Index type, items and tombstones per space, and how far the snapshot trails the log."""
    return await state.index.stats()


@router.post("/index/snapshot", responses=ERRORS, dependencies=[Depends(require_write_key)])
async def snapshot(state: ServiceState = Depends(get_state)) -> dict[str, Any]:
    """Write a FAISS snapshot now (it is also written every LIKENESS_SNAPSHOT_EVERY changes)."""
    written = await state.index.snapshot()
    return {"written": written, **await state.index.stats()}


@router.post("/index/compact", responses=ERRORS, dependencies=[Depends(require_write_key)])
async def compact(state: ServiceState = Depends(get_state)) -> dict[str, Any]:
    """Rebuild HNSW spaces without their tombstones (it also happens by itself past 20% tombstones)."""
    rebuilt = await state.index.compact()
    return {"rebuilt_spaces": rebuilt, **await state.index.stats()}
