"""Prometheus metrics, one registry per app so several apps (tests, workers) never collide."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("likeness_requests_total", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("likeness_request_seconds", "HTTP request latency", ["route", "method"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.index_items = Gauge("likeness_index_items", "items per index space", ["space"], registry=self.registry)
        self.index_load_seconds = Gauge("likeness_index_load_seconds",
                                        "time to load the index at startup (snapshot and log replay)",
                                        registry=self.registry)
        self.index_replayed = Gauge("likeness_index_replayed_changes", "log records replayed at startup",
                                    registry=self.registry)
        self.batch_size = Histogram("likeness_inference_batch_size", "images per inference call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.queue_wait = Histogram("likeness_inference_queue_seconds", "time a request waited for its batch",
                                    buckets=LATENCY_BUCKETS, registry=self.registry)
        self.model_info = Gauge("likeness_model_info", "the served model", ["name", "version", "provider"],
                                registry=self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request by route template (not raw path, so ids don't explode labels)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.requests.labels(template, method, str(status["code"])).inc()
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - started)
