"""HTTP routes: scoring, health, readiness, model information and metrics."""

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.errors import ApiError
from serving.metrics import ApiMetrics
from serving.model import LoadedModel, ModelWatcher
from serving.schemas import (
    BatchPrediction,
    BatchRequest,
    Customer,
    ErrorResponse,
    Health,
    ModelInfo,
    Prediction,
    Readiness,
)
from serving.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_watcher(request: Request) -> ModelWatcher:
    return request.app.state.watcher


def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
WatcherDep = Annotated[ModelWatcher, Depends(get_watcher)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]


def require_api_key(
    settings: SettingsDep, x_api_key: Annotated[str | None, Header()] = None
) -> None:
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value()
    if x_api_key is None or not secrets.compare_digest(x_api_key, expected):
        raise ApiError(401, "unauthorized", "missing or wrong X-API-Key header", "X-API-Key")


def serving_model(watcher: WatcherDep) -> LoadedModel:
    """The model this request is scored with; later swaps do not affect it."""
    model = watcher.current
    if model is None:
        settings = watcher.settings
        raise ApiError(
            503,
            "no_model",
            f"{settings.model_name} has no {settings.production_alias!r} version to serve yet; "
            "predictions start as soon as one is promoted",
        )
    return model


ServedModel = Annotated[LoadedModel, Depends(serving_model)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 503)
}

router = APIRouter()


@router.post(
    "/predict",
    response_model=Prediction,
    responses=_ERRORS,
    dependencies=[Depends(require_api_key)],
    summary="Churn probability of one customer",
)
async def predict(
    customer: Customer,  # type: ignore[valid-type]
    model: ServedModel,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> Prediction:
    probability = float(model.scorer.score([customer])[0])
    metrics.rows_scored.inc()
    return Prediction(
        customerID=customer.customerID,  # type: ignore[attr-defined]
        churn_probability=probability,
        churn=probability >= settings.threshold,
        model_version=model.version,
    )


@router.post(
    "/predict/batch",
    response_model=BatchPrediction,
    responses=_ERRORS,
    dependencies=[Depends(require_api_key)],
    summary="Churn probabilities of many customers, in request order",
)
def predict_batch(
    body: BatchRequest, model: ServedModel, settings: SettingsDep, metrics: MetricsDep
) -> BatchPrediction:
    customers = body.customers
    if len(customers) > settings.max_batch_size:
        raise ApiError(
            413,
            "batch_too_large",
            f"{len(customers)} customers exceed the limit of {settings.max_batch_size} per request",
            "customers",
        )
    probabilities = model.scorer.score(customers)
    metrics.rows_scored.inc(len(customers))
    threshold = settings.threshold
    return BatchPrediction(
        model_version=model.version,
        threshold=threshold,
        predictions=[
            Prediction(
                customerID=customer.customerID,  # type: ignore[attr-defined]
                churn_probability=float(p),
                churn=bool(p >= threshold),
                model_version=model.version,
            )
            for customer, p in zip(customers, probabilities, strict=True)
        ],
    )


@router.get("/health", response_model=Health, summary="The process is alive")
async def health() -> Health:
    return Health()


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
    summary="A model is loaded and being served",
)
async def ready(watcher: WatcherDep) -> JSONResponse:
    model, registry = watcher.current, watcher.registry
    if model is None:
        detail = registry.error or "no model loaded yet"
    elif not registry.reachable:
        detail = f"serving version {model.version}; registry unreachable: {registry.error}"
    else:
        detail = f"serving version {model.version}"
    body = Readiness(
        ready=model is not None,
        model_version=None if model is None else model.version,
        registry_reachable=registry.reachable,
        detail=detail,
    )
    return JSONResponse(body.model_dump(), status_code=200 if model is not None else 503)


@router.get(
    "/model",
    response_model=ModelInfo,
    responses=_ERRORS,
    dependencies=[Depends(require_api_key)],
    summary="What is being served and how fresh it is",
)
async def model_info(watcher: WatcherDep) -> ModelInfo:
    model, registry, settings = watcher.current, watcher.registry, watcher.settings
    return ModelInfo(
        name=settings.model_name,
        alias=settings.production_alias,
        version=None if model is None else model.version,
        run_id=None if model is None else model.run_id,
        git_sha=None if model is None else model.git_sha,
        holdout_metrics={} if model is None else model.holdout_metrics,
        loaded_at=None if model is None else model.loaded_at.isoformat(),
        registry_checked_at=None
        if registry.checked_at is None
        else registry.checked_at.isoformat(),
        registry_reachable=registry.reachable,
        registry_error=registry.error,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
    summary="Prometheus metrics",
)
async def prometheus_metrics(watcher: WatcherDep, metrics: MetricsDep) -> Response:
    if watcher.current is not None:
        metrics.model_version.set(float(watcher.current.version))
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
