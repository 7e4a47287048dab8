"""The FastAPI application: wiring only. Routes live in service/api, logic in the runner and store."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from service import web
from service.api import (
    duplicates_routes,
    health_routes,
    index_routes,
    inference_routes,
    items_routes,
    migration_routes,
)
from service.api.errors import install_error_handlers
from service.limits import BodyLimitMiddleware
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.observability import RequestContextMiddleware
from service.security import AllowedHostsMiddleware, require_read_key
from service.settings import Settings, get_settings
from service.state import ServiceState, load_state, start_batcher

log = logging.getLogger("likeness")


def create_app(settings: Settings | None = None, preloaded: ServiceState | None = None) -> FastAPI:
    """The app; its lifespan loads the model and index unless ``preloaded`` (``python -m service``
    loads them before the server starts, so a bad model ends the process with one clear line)."""
    settings = settings or get_settings()
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = preloaded or load_state(settings)
        app.state.batchers = []
        for generation in (state, *state.others.values()):
            await start_batcher(generation, metrics, app.state.batchers)
        _announce(state, metrics)
        app.state.service = state
        try:
            yield
        finally:
            current, app.state.service = app.state.service, None  # after a switch, the state switched to
            for started in app.state.batchers:
                await started.stop()
            current.close()

    # With the key required on reads, the schema needs it too, and the browser pages /docs and
    # /redoc (which cannot send it when they fetch the schema) are off.
    protect_docs = settings.api_key_for_reads and settings.api_key is not None
    app = FastAPI(
        title="likeness",
        version="0.1.0",
        description="Image similarity: compare two images, search an indexed catalogue, manage the index.",
        lifespan=lifespan,
        **({"openapi_url": None, "docs_url": None, "redoc_url": None} if protect_docs else {}),
    )
    if protect_docs:
        @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_read_key)])
        async def openapi() -> JSONResponse:
            return JSONResponse(app.openapi())
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.service = None
    install_error_handlers(app)
    _install_routes(app)
    # Added innermost first: request context (id, timeout, access log) wraps the body limit,
    # which wraps the metrics.
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestContextMiddleware, timeout_s=settings.request_timeout_s)
    # Outermost: a request for a name this service does not answer to is refused before anything runs.
    app.add_middleware(AllowedHostsMiddleware, patterns=settings.host_patterns)
    return app


def _announce(state: ServiceState, metrics: ServiceMetrics) -> None:
    """The ready line, the model and index metrics, and a warning for an open service off loopback."""
    settings, provider = state.settings, state.runner.provider
    metrics.model_info.labels(state.runner.spec.name, state.runner.spec.version, provider.active).set(1)
    metrics.index_load_seconds.set(state.store.load_seconds)
    metrics.index_replayed.set(state.store.replayed_changes)
    log.info("ready: provider %s (%s), %d items in the %s index, batching %s", provider.active, provider.reason,
             state.store.count(), state.store.backend, "on" if state.engine.batcher else "off")
    if settings.api_key is None and settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("LIKENESS_API_KEY is not set (or empty) and the service listens on %s: anyone who can "
                    "reach it can add and delete items", settings.host)


def _install_routes(app: FastAPI) -> None:
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    app.include_router(health_routes.router)
    app.include_router(health_routes.protected_router, dependencies=[Depends(require_read_key)])
    for module in (inference_routes, items_routes, index_routes, duplicates_routes, migration_routes):
        app.include_router(module.router, dependencies=[Depends(require_read_key)])


def create_app_from_environment() -> FastAPI:
    """The app as each of LIKENESS_WORKERS processes builds it (``uvicorn --factory``): settings
    from the environment, the model and index loaded by the lifespan."""
    from service.observability import configure_logging

    settings = get_settings()
    configure_logging(settings.log_json, settings.log_level)
    return create_app(settings)
