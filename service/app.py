"""The FastAPI application: wiring only. Routes live in service/api, logic in the runner and store."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import health_routes, inference_routes, items_routes
from service.api.deps import ServiceState
from service.api.errors import install_error_handlers
from service.gallery import seed_gallery
from service.index_store import IndexStore
from service.inference import InferenceEngine
from service.limits import BodyLimitMiddleware
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.model_runner import ModelRunner
from service.settings import Settings, get_settings

log = logging.getLogger("likeness")


def load_state(settings: Settings) -> ServiceState:
    """Load the model and open the index; raises ModelLoadError / IndexMismatch with one clear line."""
    runner = ModelRunner(settings.model_path, settings.device, settings.allow_cpu_fallback, settings.intra_op_threads)
    runner.warm_up()
    spec = runner.spec
    store = IndexStore(settings.data_dir, spec.embedding_dim, spec.aspects,
                       {"name": spec.name, "version": spec.version})
    store.open()
    if settings.seed_gallery and len(store) == 0:
        seed_gallery(store, runner, settings.gallery_dir)
    return ServiceState(settings, runner, store, InferenceEngine(runner, settings.max_pixels))


def create_app(settings: Settings | None = None, preloaded: ServiceState | None = None) -> FastAPI:
    """The app; its lifespan loads the model and index unless ``preloaded`` (``python -m service``
    loads them before the server starts, so a bad model ends the process with one clear line)."""
    settings = settings or get_settings()
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = preloaded or load_state(settings)
        provider = state.runner.provider
        metrics.model_info.labels(state.runner.spec.name, state.runner.spec.version, provider.active).set(1)
        metrics.index_load_seconds.set(state.store.load_seconds)
        log.info("ready: provider %s (%s), %d items in %s", provider.active, provider.reason, len(state.store),
                 settings.data_dir)
        app.state.service = state
        try:
            yield
        finally:
            app.state.service = None
            state.store.close()

    app = FastAPI(
        title="likeness",
        version="0.1.0",
        description="Image similarity: compare two images, search an indexed catalogue, manage the index.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.service = None
    install_error_handlers(app)
    for module in (inference_routes, items_routes, health_routes):
        app.include_router(module.router)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    return app
