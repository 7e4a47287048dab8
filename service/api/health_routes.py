"""GET /healthz, /readyz, /model and /metrics."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.errors import error_body
from service.api.schemas import ModelResponse, ReadyResponse

router = APIRouter(tags=["health"])  # open: probes never need the API key
protected_router = APIRouter(tags=["health"])  # behind the key when LIKENESS_API_KEY_FOR_READS is set


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (it may still be loading)."""
    return {"status": "alive"}


@router.get("/readyz", response_model=ReadyResponse, responses={503: {"description": "not ready"}})
async def readyz(request: Request):
    """200 once the model and the index are loaded; 503 before (and after shutdown starts)."""
    state = getattr(request.app.state, "service", None)
    if state is None:
        return JSONResponse(error_body("not_ready", "the model and index are not loaded yet"), status_code=503)
    provider = state.runner.provider
    return ReadyResponse(status="ready", provider=provider.active, device=provider.device,
                         index_items=await state.index.count())


@protected_router.get("/model", response_model=ModelResponse)
async def model(request: Request):
    """The served model's spec, the execution provider it really runs on, and the index."""
    state = getattr(request.app.state, "service", None)
    if state is None:
        return JSONResponse(error_body("not_ready", "the model and index are not loaded yet"), status_code=503)
    provider = state.runner.provider
    return ModelResponse(spec=state.runner.spec.model_dump(),
                         provider={"requested": provider.requested, "active": provider.active,
                                   "device": provider.device, "reason": provider.reason},
                         index=await state.index.stats(),
                         limits={name: getattr(state.settings, name) for name in (
                             "max_upload_bytes", "max_pixels", "max_images_per_request", "max_k",
                             "max_metadata_bytes", "max_id_length", "max_pixels_per_request",
                             "request_timeout_s")},
                         worker=os.getpid())


@protected_router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    registry = request.app.state.metrics
    state = getattr(request.app.state, "service", None)
    if state is not None:
        for space, count in (await state.index.stats())["spaces"].items():
            registry.index_items.labels(space).set(count)
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
