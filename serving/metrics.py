"""Prometheus metrics, per app instance, recorded by a plain ASGI middleware (cheap per request)."""

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: A scope key the server protocol (serving/protocol.py) sets when a request's connection ends
#: before its answer went out: the status it is counted under instead of the one the app chose
#: (499 the client went away, 408 its body was cut off), since that answer never arrived.
CUT_SHORT = "churn.cut_short"


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "churn_api_requests", "HTTP requests.", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "churn_api_request_seconds",
            "Request latency.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "churn_api_errors", "Responses with status >= 400.", ["route"], registry=self.registry
        )
        self.rows_scored = Counter(
            "churn_api_rows_scored", "Customers scored.", registry=self.registry
        )
        self.model_version = Gauge(
            "churn_api_model_version", "Registry version being served.", registry=self.registry
        )
        # What to alert on: 1 while production names a version this API does not serve,
        # `refused` (not signed or not attested by the gate) or `failed` (could not load).
        self.production_not_served = Gauge(
            "churn_api_production_not_served",
            "Production names a version this API does not serve, by outcome.",
            ["outcome"],
            registry=self.registry,
        )


def _mounted(scope: Any, root: str) -> str:
    """The route of a request a mounted app answered (the docs' scripts and styles, which
    fastapi-offline serves from a StaticFiles mount): FastAPI's router sets no `route` for a
    mount, only the mount's prefix onto the root path. Else `unmatched`."""
    mounted = scope.get("root_path", "")
    if mounted != root and mounted.startswith(root):
        return f"{mounted[len(root) :]}/{{path}}"
    return "unmatched"


class MetricsMiddleware:
    """Counts and times every HTTP request by route template (not raw path: bounded labels)."""

    def __init__(self, app: Any, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._cache: dict[tuple[str, int], tuple[Any, Any, Any]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        root = scope.get("root_path", "")

        async def send_with_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            status = scope.get(CUT_SHORT, status)
            route = getattr(scope.get("route"), "path", None) or _mounted(scope, root)
            requests, latency, errors = self._children(route, status)
            requests.inc()
            latency.observe(time.perf_counter() - start)
            if errors is not None:
                errors.inc()

    def _children(self, route: str, status: int) -> tuple[Any, Any, Any]:
        """Labelled series, looked up once per route and status rather than per request."""
        key = (route, status)
        children = self._cache.get(key)
        if children is None:
            metrics = self.metrics
            children = (
                metrics.requests.labels(route, str(status)),
                metrics.latency.labels(route),
                metrics.errors.labels(route) if status >= 400 else None,
            )
            self._cache[key] = children
        return children
