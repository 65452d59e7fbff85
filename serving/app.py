"""`create_app(settings)`: the churn API, its model watcher started in the lifespan."""

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI

from serving.errors import install_error_handlers
from serving.metrics import ApiMetrics, MetricsMiddleware
from serving.model import ModelWatcher
from serving.routes import router
from serving.settings import Settings


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    watcher: ModelWatcher = app.state.watcher
    # MLflow's HTTP client retries for minutes by default; the watcher retries every
    # refresh interval anyway, so each check should give up quickly.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    await asyncio.to_thread(watcher.refresh)  # no model yet is fine: predict answers 503
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


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
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
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
