"""HTTP routes: scoring, health, readiness, model information and metrics."""

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError

from churn_assets.ml.model.reasons import MAX_REASONS
from serving.errors import ApiError
from serving.metrics import ApiMetrics
from serving.model import LoadedModel, ModelWatcher
from serving.schemas import (
    BatchPrediction,
    ErrorResponse,
    GateOverrideInfo,
    Health,
    ModelInfo,
    Prediction,
    Readiness,
)
from serving.settings import Settings


# Each dependency costs a resolution per request, so routes get the app's settings and metrics
# from `request.app.state` and only the served model comes through `Depends`. Dependencies are
# `async def` on purpose: FastAPI runs plain `def` ones in a thread pool, a hop that costs
# more than scoring a customer.
def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


async def require_api_key(
    request: Request, x_api_key: Annotated[str | None, Header()] = None
) -> None:
    settings = _settings(request)
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    # Compared as bytes: the header arrives as latin-1 text, and compare_digest refuses str
    # with characters outside ASCII (a TypeError, a 500, for any client that sends one).
    given = None if x_api_key is None else x_api_key.encode("latin-1", "replace")
    if given is None or not secrets.compare_digest(given, expected):
        raise ApiError(401, "unauthorized", "missing or wrong X-API-Key header", "X-API-Key")


async def serving_model(request: Request) -> LoadedModel:
    """The model this request is scored with; later swaps do not affect it."""
    watcher: ModelWatcher = request.app.state.watcher
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
#: Opt-in per request, so the default path never pays for contributions.
ReasonCount = Annotated[
    int,
    Query(
        ge=0,
        le=MAX_REASONS,
        description=(
            "Return this many top reasons per customer: exact LightGBM feature contributions "
            "in log-odds, largest first (0: none, the fast path)."
        ),
    ),
]


#: Bodies up to this size are parsed on the event loop: a thread hop costs more than that.
_PARSE_INLINE_BYTES = 64 * 1024


def json_body(
    pick: Callable[[LoadedModel], type[BaseModel]],
) -> Callable[[Request, LoadedModel], Awaitable[Any]]:
    """Validate the raw body with pydantic's JSON parser, against the served version's contract.

    FastAPI decodes JSON to Python objects and validates those, which for a 1,000-customer
    batch costs more than scoring it; parsing and validating in one pass is about 2.5x faster.
    The body model is `pick`ed from the version the request is scored with, so a promotion
    under another data contract changes the fields the API accepts with the model. Errors
    take FastAPI's usual path (and our error body); the schema is documented in the OpenAPI
    document by `documented_body`.
    """

    async def parse(request: Request, served: ServedModel) -> Any:
        model = pick(served)
        raw = await request.body()
        try:
            if len(raw) <= _PARSE_INLINE_BYTES:
                return model.model_validate_json(raw)
            # A large batch takes tens of milliseconds or more to parse: off the event loop,
            # so /health and small requests are answered meanwhile.
            return await run_in_threadpool(model.model_validate_json, raw)
        except ValidationError as error:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
            ) from None

    return parse


def documented_body(model: str) -> dict[str, Any]:
    schema_ref = {"$ref": f"#/components/schemas/{model}"}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema_ref}}}
    }


CustomerBody = Annotated[Any, Depends(json_body(lambda served: served.requests.customer))]
BatchBody = Annotated[Any, Depends(json_body(lambda served: served.requests.batch))]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 503)
}

router = APIRouter()


@router.post(
    "/predict",
    response_model=Prediction,
    responses=_ERRORS,
    dependencies=[Depends(require_api_key)],
    openapi_extra=documented_body("Customer"),
    summary="Churn probability of one customer",
)
async def predict(
    customer: CustomerBody, model: ServedModel, request: Request, reasons: ReasonCount = 0
) -> Response:
    if reasons:
        _within_budget(_settings(request), 1, reasons)
        scores, why = model.scorer.score_with_reasons([customer], reasons)
        _metrics(request).rows_scored.inc()
        body = _prediction(
            _customer_id(customer, model), float(scores[0]), model.threshold, model.version
        )
        return _json({**body, "reasons": why[0]})
    probability = float(model.scorer.score([customer])[0])
    _metrics(request).rows_scored.inc()
    return _json(
        _prediction(_customer_id(customer, model), probability, model.threshold, model.version)
    )


@router.post(
    "/predict/batch",
    response_model=BatchPrediction,
    responses=_ERRORS,
    dependencies=[Depends(require_api_key)],
    openapi_extra=documented_body("BatchRequest"),
    summary="Churn probabilities of many customers, in request order",
)
def predict_batch(
    body: BatchBody, model: ServedModel, request: Request, reasons: ReasonCount = 0
) -> Response:
    settings = _settings(request)
    customers = body.customers
    if len(customers) > settings.max_batch_size:
        raise ApiError(
            413,
            "batch_too_large",
            f"{len(customers)} customers exceed the limit of {settings.max_batch_size} per request",
            "customers",
        )
    threshold, version, field = model.threshold, model.version, model.requests.id_field
    if reasons:
        _within_budget(settings, len(customers), reasons)
        scores, why = model.scorer.score_with_reasons(customers, reasons)
        predictions = [
            {**_prediction(_id(customer, field), p, threshold, version), "reasons": r}
            for customer, p, r in zip(customers, scores.tolist(), why, strict=True)
        ]
    else:
        predictions = [
            _prediction(_id(customer, field), p, threshold, version)
            for customer, p in zip(customers, model.scorer.score(customers).tolist(), strict=True)
        ]
    _metrics(request).rows_scored.inc(len(customers))
    return _json({"model_version": version, "threshold": threshold, "predictions": predictions})


def _within_budget(settings: Settings, rows: int, reasons: int) -> None:
    """Contributions cost a full tree walk per row and reason list; a budget keeps one request
    from holding the CPU for seconds while every other caller waits."""
    asked = rows * reasons
    if asked > settings.max_contributions:
        raise ApiError(
            413,
            "contributions_over_budget",
            f"{rows} customers x {reasons} reasons = {asked:,} contributions, over the budget "
            f"of {settings.max_contributions:,} per request (CHURN_MAX_CONTRIBUTIONS); ask "
            "for fewer reasons or send smaller batches",
            "reasons",
        )


def _customer_id(customer: Any, model: LoadedModel) -> str | None:
    return _id(customer, model.requests.id_field)


def _id(customer: Any, field: str | None) -> str | None:
    """The request's ID field, echoed as customerID (None: the contract has no ID)."""
    return None if field is None else getattr(customer, field)


def _prediction(
    customer_id: str | None, probability: float, threshold: float, version: str
) -> dict[str, Any]:
    """A `Prediction` as JSON-ready dict; built by hand, the per-row cost of batches is lower."""
    return {
        "customerID": customer_id,
        "churn_probability": probability,
        "churn": probability >= threshold,
        "model_version": version,
    }


def _json(content: Any) -> Response:
    # Responses are serialized once with orjson instead of re-validated against the
    # response model, which costs more than scoring; the schemas still document them.
    return Response(orjson.dumps(content), media_type="application/json")


@router.get("/health", response_model=Health, summary="The process is alive")
async def health() -> Health:
    return Health()


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
    summary="A model is loaded and being served",
)
async def ready(request: Request) -> JSONResponse:
    """503 until a model is loaded, and while production points at a version that failed to
    load (degraded: the previous version is still answering, but not the one promoted)."""
    watcher: ModelWatcher = request.app.state.watcher
    model, registry, failure = watcher.current, watcher.registry, watcher.load_failure
    serving = None if model is None else model.version
    # What a probe needs, in words that carry no URI, path, credential or stack (the log
    # has those): the version served, and why another is not.
    if failure is not None:
        why = "refuses to serve it" if failure.outcome == "refused" else "could not load it"
        detail = (
            f"degraded: production is version {failure.version} and this API {why} "
            f"({failure.error}); serving version {serving or 'none'}"
        )
    elif model is None:
        detail = registry.error or "no model loaded yet"
        if not registry.reachable:
            detail = f"registry unreachable ({detail})"
    elif not registry.reachable:
        detail = f"serving version {model.version}; registry unreachable ({registry.error})"
    else:
        detail = f"serving version {model.version}"
    body = Readiness(
        ready=model is not None and failure is None,
        degraded=failure is not None,
        model_version=serving,
        production_version=failure.version if failure is not None else serving,
        registry_reachable=registry.reachable,
        detail=detail,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get(
    "/model",
    response_model=ModelInfo,
    responses=_ERRORS,
    dependencies=[Depends(require_api_key)],
    summary="What is being served and how fresh it is",
)
async def model_info(request: Request) -> ModelInfo:
    watcher: ModelWatcher = request.app.state.watcher
    model, registry, settings = watcher.current, watcher.registry, watcher.settings
    failure = watcher.load_failure
    return ModelInfo(
        name=settings.model_name,
        alias=settings.production_alias,
        version=None if model is None else model.version,
        production_version=(
            failure.version if failure is not None else (None if model is None else model.version)
        ),
        load_error=None if failure is None else failure.error,
        run_id=None if model is None else model.run_id,
        git_sha=None if model is None else model.git_sha,
        holdout_metrics={} if model is None else model.holdout_metrics,
        quality_gate=None if model is None else model.quality_gate,
        gate_override=(
            None
            if model is None or model.gate_override is None
            else GateOverrideInfo.model_validate(model.gate_override)
        ),
        decision_threshold=None if model is None else model.threshold,
        threshold_source=None if model is None else model.threshold_source,
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
async def prometheus_metrics(request: Request) -> Response:
    watcher: ModelWatcher = request.app.state.watcher
    metrics = _metrics(request)
    if watcher.current is not None:
        metrics.model_version.set(float(watcher.current.version))
    failure = watcher.load_failure
    for outcome in ("refused", "failed"):
        metrics.production_not_served.labels(outcome).set(
            float(failure is not None and failure.outcome == outcome)
        )
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
