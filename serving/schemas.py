"""Request and response bodies, generated from the data contract so no level is written twice."""

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, create_model

from churn_assets.ml.data.contract import MISSING, Contract, default_contract
from churn_assets.ml.data.limits import MAX_ID_CHARS
from churn_assets.ml.data.reading import blank_as_none


def _feature_field(contract: Contract, column: str) -> tuple[Any, Any]:
    spec = contract.features[column]
    if not spec.numeric:
        if spec.levels is None:  # learned in training: the model reads an unknown one as NaN
            return str, Field(..., min_length=1, max_length=200)
        levels = spec.levels
        return Literal[levels], Field(..., description=f"One of {list(levels)}.")  # type: ignore[valid-type]
    low, high = contract.numeric_range(column)
    ge = low if math.isfinite(low) else None
    le = high if math.isfinite(high) else None
    # Strict: a boolean or a numeric string is a caller's bug, not a number to guess at.
    kind: Any = int if spec.type == "integer" else float
    if spec.blank is None:
        return kind, Field(..., strict=True, ge=ge, le=le)
    number: dict[str, Any] = {"type": "number"}
    number.update({k: v for k, v in (("minimum", ge), ("maximum", le)) if v is not None})
    meaning = "kept missing" if spec.blank == MISSING else f"read as {spec.blank}"
    return Annotated[
        kind | None,
        # the export writes " " for a blank; cleaning reads it the same
        BeforeValidator(blank_as_none),
        WithJsonSchema(
            {"anyOf": [number, {"type": "null"}, {"type": "string", "pattern": r"^\s*$"}]}
        ),
    ], Field(
        None,
        strict=True,
        description=f"Null or blank (as the export writes it) is {meaning}.",
        ge=ge,
        le=le,
    )


def customer_model(contract: Contract) -> type[BaseModel]:
    """One customer as the contract's features; the ID, when the contract has one, is echoed."""
    identity: dict[str, Any] = {}
    if contract.id is not None:
        identity[contract.id] = (
            str | None,
            Field(None, max_length=MAX_ID_CHARS, description="Echoed back."),
        )
    return create_model(  # type: ignore[call-overload,no-any-return]
        "Customer",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"One customer as the data contract describes the export (the "
        f"{contract.target_column} column is what we predict).",
        **identity,
        **{column: _feature_field(contract, column) for column in contract.feature_columns},
    )


@dataclass(frozen=True)
class RequestModels:
    """The request bodies of one data contract: what the version trained under it accepts."""

    contract: Contract
    customer: type[BaseModel]
    batch: type[BaseModel]

    @property
    def id_field(self) -> str | None:
        """The request's field echoed back as the prediction's customerID (None: no ID)."""
        return self.contract.id


_BUILT: dict[str, RequestModels] = {}


def request_models(contract: Contract) -> RequestModels:
    """The contract's request models, built once per contract (pydantic compiles each)."""
    if contract.digest not in _BUILT:
        customer = customer_model(contract)
        batch = create_model(
            "BatchRequest",
            __config__=ConfigDict(extra="forbid"),
            customers=(list[customer], Field(..., min_length=1)),  # type: ignore[valid-type]
        )
        _BUILT[contract.digest] = RequestModels(contract, customer, batch)
    return _BUILT[contract.digest]


#: The shipped contract's models: what /docs shows before a version is loaded.
SHIPPED = request_models(default_contract())
Customer = SHIPPED.customer


class Reason(BaseModel):
    """One feature's exact contribution to this customer's score, in log-odds."""

    feature: str
    value: str
    contribution: float = Field(description="Positive pushes towards churn.")
    text: str = Field(description='e.g. "Contract = Month-to-month: +0.21"')


class Prediction(BaseModel):
    customerID: str | None = None  # noqa: N815  (the export's own column name)
    churn_probability: float
    churn: bool
    model_version: str
    reasons: list[Reason] | None = Field(
        None, description="Only when the request asks for reasons (?reasons=3)."
    )


class BatchPrediction(BaseModel):
    model_version: str
    threshold: float
    predictions: list[Prediction]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool = Field(description="A model is loaded and it is the production version.")
    degraded: bool = Field(
        description="Production points at a version that failed to load; the previous one "
        "still answers (model_version)."
    )
    model_version: str | None = Field(description="The version answering predictions.")
    production_version: str | None = Field(description="The version the alias points at.")
    registry_reachable: bool
    detail: str


class GateOverrideInfo(BaseModel):
    """Present when the served version passed a gate below the deployment's floor."""

    requested_by: str | None
    dagster_run_id: str | None
    reason: str | None
    thresholds: dict[str, float | bool]


class ModelInfo(BaseModel):
    name: str
    alias: str
    version: str | None = Field(description="The version answering predictions.")
    production_version: str | None = Field(
        description="The version the alias points at; differs from `version` while it fails "
        "to load."
    )
    load_error: str | None = Field(description="Why the production version could not be loaded.")
    run_id: str | None
    git_sha: str | None
    holdout_metrics: dict[str, float]
    quality_gate: str | None
    gate_override: GateOverrideInfo | None
    decision_threshold: float | None
    threshold_source: str | None
    loaded_at: str | None
    registry_checked_at: str | None
    registry_reachable: bool
    registry_error: str | None


class ErrorDetail(BaseModel):
    field: str
    problem: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    error: ErrorBody
