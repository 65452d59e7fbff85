"""HTTP routes: scoring, health, readiness, model information and metrics."""

import secrets
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from churn_assets.ml.model.reasons import MAX_REASONS
from serving import arrow
from serving.arrow import ARROW
from serving.columns import Columns, validation_error
from serving.errors import ApiError
from serving.metrics import ApiMetrics
from serving.model import LoadedModel, LoadedUplift, ModelWatcher
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


#: The header the key comes in; as a security scheme, /docs has an Authorize button for it.
API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,  # a missing key is our 401 and error body, not FastAPI's
    description="Needed when the API is started with CHURN_API_KEY.",
)


async def require_api_key(
    request: Request, x_api_key: Annotated[str | None, Security(_api_key)] = None
) -> None:
    settings = _settings(request)
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    # Compared as bytes: the header arrives as latin-1 text, and compare_digest refuses str
    # with characters outside ASCII (a TypeError, a 500, for any client that sends one).
    given = None if x_api_key is None else x_api_key.encode("latin-1", "replace")
    if given is None or not secrets.compare_digest(given, expected):
        raise ApiError(
            401, "unauthorized", f"missing or wrong {API_KEY_HEADER} header", API_KEY_HEADER
        )


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


async def customer_body(request: Request, served: ServedModel) -> Columns:
    """One customer, validated with pydantic's JSON parser against the served version's
    contract, as the columns the scorer takes.

    FastAPI decodes JSON to Python objects and validates those; parsing and validating in one
    pass is faster. The body model is the version's the request is scored with, so a
    promotion under another data contract changes the fields the API accepts with the model.
    Errors take FastAPI's usual path (and our error body).
    """
    model = served.requests.customer
    raw = await request.body()
    try:
        if len(raw) <= _PARSE_INLINE_BYTES:
            customer = model.model_validate_json(raw)
        else:  # off the event loop, so /health and small requests are answered meanwhile
            customer = await run_in_threadpool(model.model_validate_json, raw)
    except ValidationError as error:
        raise validation_error(error) from None
    return served.reader.of_customers([customer])


async def raw_body(request: Request) -> bytes:
    """The body's bytes; the batch route reads them in its worker thread."""
    return await request.body()


#: The batch route's columnar bodies, for bulk callers (see serving.columns).
CSV = "text/csv"
_CSV_BODY = (
    "A header line of field names (or the export's own headers, where the data contract "
    "renames them), then one line per customer, cells as the export writes them: a blank "
    "number is read by its `blank` rule, surrounding blanks are stripped. Errors name the "
    "line, the column, the field and the value."
)
_ARROW_BODY = (
    "An Arrow IPC stream, uncompressed: a column per field, named as in CSV (the export's "
    "header is accepted where the contract renames it); numbers as integer or floating "
    "columns (null where the contract has a blank rule), categories as text or dictionary "
    "columns. The fastest body to read. Errors name "
    "the row (from 0), the column, the field and the value."
)


def _media(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def documented_body(model: str, csv: bool = False) -> dict[str, Any]:
    """The request body as the OpenAPI document shows it; `serving.app` adds the served
    version's own example to each content type."""
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}
    }
    if csv:
        content[CSV] = {"schema": {"type": "string", "description": _CSV_BODY}}
        content[ARROW] = {
            "schema": {"type": "string", "format": "binary", "description": _ARROW_BODY}
        }
    return {"requestBody": {"required": True, "content": content}}


CustomerBody = Annotated[Columns, Depends(customer_body)]
RawBody = Annotated[bytes, Depends(raw_body)]
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
    customer_id = customer.ids[0]
    uplift = _uplift_of(request, model)
    valued: dict[str, float] = {}
    if uplift is not None:
        lift, value = uplift.score(customer)
        valued = {"uplift": float(lift[0]), "expected_incremental_value": float(value[0])}
    if reasons:
        _within_budget(_settings(request), 1, reasons)
        scores, why = model.scorer.score_with_reasons(customer, reasons)
        _metrics(request).rows_scored.inc()
        body = _prediction(customer_id, float(scores[0]), model.threshold, model.version)
        return _json({**body, **valued, "reasons": why[0]})
    probability = float(model.scorer.score(customer)[0])
    _metrics(request).rows_scored.inc()
    body = _prediction(customer_id, probability, model.threshold, model.version)
    return _json({**body, **valued})


_ARROW_ANSWER = (
    "With `Accept: " + ARROW + "`: an Arrow IPC stream, a row per customer in request order "
    "with the predictions' fields as columns (`customerID`, `churn_probability`, `churn`; "
    "`uplift` and `expected_incremental_value` when an uplift model valued them; `reasons`, "
    "a list of structs, when asked for), and `model_version`, `threshold` and "
    "`uplift_version` in the schema's metadata. Errors are JSON whatever was accepted."
)


@router.post(
    "/predict/batch",
    response_model=BatchPrediction,
    responses={
        **_ERRORS,
        200: {
            "description": "The predictions, as JSON or (asked for by `Accept`) Arrow",
            "content": {
                ARROW: {
                    "schema": {"type": "string", "format": "binary", "description": _ARROW_ANSWER}
                }
            },
        },
    },
    dependencies=[Depends(require_api_key)],
    openapi_extra=documented_body("BatchRequest", csv=True),
    summary="Churn probabilities of many customers, in request order",
    description=(
        'JSON (`{"customers": [...]}`), or for bulk callers CSV (`Content-Type: text/csv`: '
        "a header line, then a line per customer) or an Arrow IPC stream (`Content-Type: "
        f"{ARROW}`: a column per field). The answer is JSON, or an Arrow stream for "
        f"`Accept: {ARROW}`."
    ),
)
def predict_batch(
    body: RawBody, model: ServedModel, request: Request, reasons: ReasonCount = 0
) -> Response:
    settings = _settings(request)
    media = _media(request)
    reader = model.reader
    read = {CSV: reader.read_csv, ARROW: reader.read_arrow}.get(media, reader.read_json)
    customers = read(body, settings.max_batch_size)
    threshold, version, ids = model.threshold, model.version, customers.ids
    why = None
    if reasons:
        _within_budget(settings, customers.rows, reasons)
        scores, why = model.scorer.score_with_reasons(customers, reasons)
    else:
        scores = model.scorer.score(customers)
    uplift = _uplift_of(request, model)
    head: dict[str, Any] = {"model_version": version, "threshold": threshold}
    valued: dict[str, Any] = {}
    if uplift is not None:
        valued["uplift"], valued["expected_incremental_value"] = uplift.score(customers)
        head["uplift_version"] = uplift.version
    _metrics(request).rows_scored.inc(customers.rows)
    if arrow.accepts(request.headers.get("accept", "")):
        text = {key: str(value) for key, value in head.items()}
        columnar = arrow.answer(text, ids, scores, threshold, valued, why)
        return Response(columnar, media_type=ARROW, headers=_VARY)
    predictions = [
        _prediction(customer_id, p, threshold, version)
        for customer_id, p in zip(ids, scores.tolist(), strict=True)
    ]
    for name, values in valued.items():
        for prediction, value in zip(predictions, values.tolist(), strict=True):
            prediction[name] = value
    if why is not None:
        for prediction, reasons_of in zip(predictions, why, strict=True):
            prediction["reasons"] = reasons_of
    return _json({**head, "predictions": predictions}, _VARY)


def _watcher(request: Request) -> ModelWatcher:
    return request.app.state.watcher


def _uplift_version(watcher: ModelWatcher, model: LoadedModel | None) -> str | None:
    """The uplift version predictions carry now (read once: a refresh may swap it)."""
    uplift = watcher.uplift
    if uplift is None or model is None or uplift.bound_to != model.version:
        return None
    return uplift.version


def _uplift_of(request: Request, model: LoadedModel) -> LoadedUplift | None:
    """The uplift model in production, when it is loaded for the churn version scoring."""
    uplift = _watcher(request).uplift
    return uplift if uplift is not None and uplift.bound_to == model.version else None


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


def _json(content: Any, headers: dict[str, str] | None = None) -> Response:
    # Responses are serialized once with orjson instead of re-validated against the
    # response model, which costs more than scoring; the schemas still document them.
    return Response(orjson.dumps(content), media_type="application/json", headers=headers)


#: The batch answer is JSON or Arrow by the caller's Accept header: caches must key on it.
_VARY = {"Vary": "Accept"}


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
        uplift_version=_uplift_version(watcher, model),
        uplift_error=watcher.uplift_error,
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
