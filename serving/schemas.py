"""Request and response bodies, generated from the data contract so no level is written twice."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from churn_assets.ml.data.contract import MISSING, Contract, default_contract
from churn_assets.ml.data.limits import MAX_ID_CHARS
from churn_assets.ml.data.reading import blank_as_none

#: The longest level of a category whose levels are learned in training.
MAX_LEVEL_CHARS = 200


def aliases(contract: Contract) -> dict[str, str]:
    """The export's header -> the request field it names, where the contract renames it: a
    caller may send either name (not both)."""
    fields = {*([contract.id] if contract.id else []), *contract.features}
    return {export: name for export, name in contract.rename.items() if name in fields}


def required_fields(contract: Contract) -> list[str]:
    """The fields a customer must give: every feature but a number with a `blank` rule (left
    out, it is blank). The ID may always be left out."""
    return [column for column, spec in contract.features.items() if spec.blank is None]


def _names(contract: Contract, column: str) -> dict[str, Any]:
    """A renamed field's two accepted names, and a word for the docs."""
    export = {name: header for header, name in aliases(contract).items()}.get(column)
    if export is None:
        return {}
    return {
        "validation_alias": AliasChoices(column, export),
        "description": f"Also accepted as {export!r}, the export's header.",
    }


def _feature_field(contract: Contract, column: str) -> tuple[Any, Any]:
    spec = contract.features[column]
    names = _names(contract, column)
    if not spec.numeric:
        if spec.levels is None:  # learned in training: the model reads an unknown one as NaN
            return str, Field(..., min_length=1, max_length=MAX_LEVEL_CHARS, **names)
        levels = spec.levels
        described = f"One of {list(levels)}. {names.pop('description', '')}".strip()
        return Literal[levels], Field(..., description=described, **names)  # type: ignore[valid-type]
    low, high = contract.numeric_range(column)
    ge = low if math.isfinite(low) else None
    le = high if math.isfinite(high) else None
    # Strict: a boolean or a numeric string is a caller's bug, not a number to guess at.
    kind: Any = int if spec.type == "integer" else float
    limits: dict[str, Any] = {"strict": True, "ge": ge, "le": le}
    if kind is float:  # an infinity or NaN (pydantic's parser reads 1e400, NaN) is no number
        limits["allow_inf_nan"] = False
    if spec.blank is None:
        return kind, Field(..., **limits, **names)
    number: dict[str, Any] = {"type": "number"}
    number.update({k: v for k, v in (("minimum", ge), ("maximum", le)) if v is not None})
    meaning = "kept missing" if spec.blank == MISSING else f"read as {spec.blank}"
    also = names.pop("description", "")
    return Annotated[
        kind | None,
        # the export writes " " for a blank; cleaning reads it the same
        BeforeValidator(blank_as_none),
        WithJsonSchema(
            {"anyOf": [number, {"type": "null"}, {"type": "string", "pattern": r"^\s*$"}]}
        ),
    ], Field(
        None,
        description=f"Null or blank (as the export writes it) is {meaning}. {also}".strip(),
        **limits,
        **names,
    )


def _one_name_each(contract: Contract) -> Callable[..., Any]:
    """A model validator refusing a customer that gives one field under both its names."""
    pairs = [(name, export) for export, name in aliases(contract).items()]

    def check(cls: type[BaseModel], data: Any, handler: Callable[[Any], Any]) -> Any:
        if isinstance(data, dict):
            both = [
                InitErrorDetails(
                    type=PydanticCustomError(
                        "duplicate_field",
                        "'{name}' and '{export}' name the same field: send one of them",
                        {"name": name, "export": export},
                    ),
                    loc=(export,),
                    input=data[export],
                )
                for name, export in pairs
                if name in data and export in data
            ]
            if both:
                raise ValidationError.from_exception_data("Customer", both)
        return handler(data)

    return check


def customer_model(contract: Contract) -> type[BaseModel]:
    """One customer as the contract's features; the ID, when the contract has one, is echoed."""
    identity: dict[str, Any] = {}
    if contract.id is not None:
        names = _names(contract, contract.id)
        described = f"Echoed back. {names.pop('description', '')}".strip()
        identity[contract.id] = (
            str | None,
            Field(None, max_length=MAX_ID_CHARS, description=described, **names),
        )
    validators = (
        {"one_name_each": model_validator(mode="wrap")(_one_name_each(contract))}
        if aliases(contract)
        else {}
    )
    return create_model(  # type: ignore[call-overload,no-any-return]
        "Customer",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"One customer as the data contract describes the export (the "
        f"{contract.target_column} column is what we predict).",
        __validators__=validators,
        **identity,
        **{column: _feature_field(contract, column) for column in contract.feature_columns},
    )


@dataclass(frozen=True)
class RequestModels:
    """The request bodies of one data contract: what the version trained under it accepts."""

    contract: Contract
    customer: type[BaseModel]
    batch: type[BaseModel]


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
    uplift: float | None = Field(
        None,
        description="Only when an uplift model is in production: the churn an offer prevents "
        "for this customer (its churn probability without an offer less with one; negative: "
        "an offer pushes them out).",
    )
    expected_incremental_value: float | None = Field(
        None,
        description="Only with `uplift`: uplift x the value of a kept customer - the offer's "
        "cost, as the uplift model was judged; an offer pays where this is above 0.",
    )
    reasons: list[Reason] | None = Field(
        None, description="Only when the request asks for reasons (?reasons=3)."
    )


class BatchPrediction(BaseModel):
    model_version: str
    threshold: float
    uplift_version: str | None = Field(
        None, description="The uplift model version that valued the offers, when one did."
    )
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
    uplift_version: str | None = Field(
        None, description="The uplift model version whose uplift predictions carry."
    )
    uplift_error: str | None = Field(
        None, description="Why the uplift model's production version is not served."
    )


class ErrorDetail(BaseModel):
    field: str
    problem: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    error: ErrorBody
