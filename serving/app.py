"""`create_app(settings)`: the churn API, its model watcher started in the lifespan."""

import asyncio
import contextlib
import gc
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from pydantic.json_schema import models_json_schema

from serving.body_limit import BodySizeLimit
from serving.columns import example_csv
from serving.errors import install_error_handlers
from serving.metrics import ApiMetrics, MetricsMiddleware
from serving.model import ModelWatcher
from serving.routes import CSV, router
from serving.schemas import SHIPPED
from serving.settings import Settings


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    watcher: ModelWatcher = app.state.watcher
    # MLflow's HTTP client retries for minutes by default; the watcher retries every
    # refresh interval anyway, so each check should give up quickly.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    await asyncio.to_thread(watcher.refresh)  # no model yet is fine: predict answers 503
    # Move everything loaded so far (MLflow, sklearn, the model) out of the collector's
    # reach: otherwise each full collection walks it all, a 100-200 ms pause (measured).
    gc.freeze()
    task = asyncio.create_task(_watch(watcher))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _watch(watcher: ModelWatcher) -> None:
    while True:
        await asyncio.sleep(watcher.settings.refresh_interval_s)
        await asyncio.to_thread(watcher.refresh)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the request models the routes parse themselves: those of the
    served version's data contract (the shipped contract's until a version is loaded), with
    customers from the input example training logged with that version as examples."""
    current = app.state.watcher.current
    requests = SHIPPED if current is None else current.requests
    key = (requests.contract.digest, None if current is None else current.version)
    if app.openapi_schema is None or app.state.openapi_key != key:
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _, definitions = models_json_schema(
            [(requests.customer, "validation"), (requests.batch, "validation")],
            ref_template="#/components/schemas/{model}",
        )
        components = document.setdefault("components", {}).setdefault("schemas", {})
        components.update(definitions.get("$defs", {}))
        if current is not None and current.examples:
            _add_examples(document["paths"], list(current.examples))
        app.openapi_schema = document
        app.state.openapi_key = key
    return app.openapi_schema


def _add_examples(paths: dict[str, Any], customers: list[dict[str, Any]]) -> None:
    """Each request body's example, so /docs' "Try it out" starts from real customers."""
    bodies = {
        ("/predict", "application/json"): customers[0],
        ("/predict/batch", "application/json"): {"customers": customers},
        ("/predict/batch", CSV): example_csv(customers),
    }
    for (path, media), example in bodies.items():
        content = paths[path]["post"]["requestBody"]["content"]
        if media in content:
            content[media]["example"] = example


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # /docs and /redoc with their scripts served by the API itself: FastAPI's default pages
    # load them from a CDN, which a closed network (or a strict browser policy) never reaches.
    app = FastAPIOffline(
        title="Churn API",
        version="1",
        description="Churn probabilities from the registry's production model, "
        "which it follows live.",
        lifespan=lifespan,
    )
    metrics = ApiMetrics()
    app.state.settings = settings
    app.state.watcher = ModelWatcher(settings)
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # added last, so outermost: an oversized body is refused before anything else runs
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app
