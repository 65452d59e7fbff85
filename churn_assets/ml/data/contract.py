"""The data contract: the one declaration of what the customer export holds.

A YAML file (CHURN_CONTRACT_PATH; the shipped `contracts/telco.yaml` when unset) names the ID,
the target and its codes, the features with their types, ranges and levels, the columns to
rename or never read, and the scoring segments. Reading, cleaning, validation, the
preprocessor, drift profiles, reasons, segments, the generator and the API are all derived from
it, so an operator's own export needs a contract, not a code change.

Mistakes in the contract itself are reported one per line with the key's path
(`features.tenure.min: ...`), because the person editing it needs to find the key.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
from collections.abc import Mapping
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: The ID column's name when the contract declares none: a stable hash of each row.
ROW_ID = "row_id"
#: What a snapshot keeps of each customer's history besides the contract's columns (ISO
#: dates; churn_date is empty while the customer is active). See churn_assets.ml.history.
FIRST_SEEN = "first_seen"
CHURN_DATE = "churn_date"
HISTORY_COLUMNS = (FIRST_SEEN, CHURN_DATE)
#: Names a contract cannot give its own columns.
RESERVED = (ROW_ID, *HISTORY_COLUMNS)
#: The `blank` value that keeps a blank number as missing (LightGBM learns what it means).
MISSING = "missing"
DEFAULT_FILE = "telco.yaml"


class ContractError(ValueError):
    """The contract file cannot be used; the message names the file and each offending key."""


#: A name the contract gives a column: the API's field and the model's feature use it as is.
_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
Name = Annotated[str, Field(pattern=_NAME)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetSpec(_Strict):
    """The column a model predicts and which of its codes mean "churned"."""

    column: Name = Field(description="The target's name (after `rename`).")
    positive: tuple[str, ...] = Field(min_length=1, description="Codes that mean churned.")
    negative: tuple[str, ...] | None = Field(
        None, description="Codes that mean stayed; any other code is refused. Unset: the rest."
    )

    @model_validator(mode="after")
    def _disjoint(self) -> TargetSpec:
        if self.negative is not None and (both := set(self.positive) & set(self.negative)):
            raise ValueError(f"codes {sorted(both)} are both positive and negative")
        return self

    def churned(self, code: str) -> bool:
        return code in self.positive

    def allowed(self) -> tuple[str, ...] | None:
        return None if self.negative is None else (*self.positive, *self.negative)


class FeatureSpec(_Strict):
    """One model input: its type, what values are plausible, and how blanks are read."""

    type: Literal["integer", "number", "category"]
    min: float | None = Field(None, description="Smallest plausible value (numbers).")
    max: float | None = Field(None, description="Largest plausible value (numbers).")
    blank: str | None = Field(
        None,
        description='What a blank number means: "missing", or an expression over other '
        'numbers such as "tenure * MonthlyCharges". Unset: a blank is refused.',
    )
    map: dict[str, str] | None = Field(
        None, description="Export code -> level, applied before levels are checked (categories)."
    )
    levels: tuple[str, ...] | None = Field(
        None, description="The allowed levels in encoding order; unset: learned from training."
    )
    bands: tuple[float, ...] | None = Field(
        None, description="Upper band edges when the feature is a segment (numbers)."
    )
    unit: str | None = Field(None, description="Shown after band labels, e.g. months.")

    @model_validator(mode="after")
    def _keys_fit_type(self) -> FeatureSpec:
        numeric_only = {"min": self.min, "max": self.max, "blank": self.blank, "bands": self.bands}
        category_only = {"map": self.map, "levels": self.levels}
        wrong = numeric_only if self.type == "category" else category_only
        if given := [key for key, value in wrong.items() if value is not None]:
            raise ValueError(f"{', '.join(given)} cannot be used with type {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.levels is not None:
            if not self.levels:
                raise ValueError("levels is empty: list them, or leave levels out to learn them")
            if len(set(self.levels)) != len(self.levels):
                raise ValueError("levels are listed twice")
            if self.map and (unknown := set(self.map.values()) - set(self.levels)):
                raise ValueError(f"map gives level(s) {sorted(unknown)} that levels lacks")
        if self.bands is not None and (
            not self.bands or list(self.bands) != sorted(set(self.bands))
        ):
            raise ValueError("bands must be increasing edges, at least one")
        return self

    @property
    def numeric(self) -> bool:
        return self.type != "category"


class Contract(_Strict):
    """A validated contract; its derived views are what the rest of the platform reads."""

    version: int = Field(1, ge=1, description="Bump when callers of the API must change.")
    id: Name | None = Field(None, description="The customer ID column, if any.")
    target: TargetSpec
    rename: dict[str, str] = Field(default_factory=dict, description="Export name -> name.")
    drop: tuple[str, ...] = Field((), description="Export columns never read.")
    features: dict[Name, FeatureSpec] = Field(min_length=1)
    segments: tuple[str, ...] = Field((), description="What churn_scores groups customers by.")
    carry: tuple[str, ...] = Field((), description="Features copied into churn_scores.")

    @model_validator(mode="after")
    def _consistent(self) -> Contract:
        named = [*([self.id] if self.id else []), self.target.column, *self.features]
        if len(set(named)) != len(named):
            raise ValueError("the id, the target and the features must have distinct names")
        if clash := [n for n in self.features if n in RESERVED] + (
            [self.id] if self.id in RESERVED else []
        ):
            raise ValueError(f"{clash} are reserved for the platform's own columns")
        if len(set(self.rename.values())) != len(self.rename):
            raise ValueError("rename maps two export columns to one name")
        if both := set(self.drop) & (set(named) | set(self.rename) | set(self.rename.values())):
            raise ValueError(f"drop lists {sorted(both)}, which the contract reads")
        for key, columns in (("segments", self.segments), ("carry", self.carry)):
            if unknown := [c for c in columns if c not in self.features]:
                raise ValueError(f"{key} names {unknown}, which are not features")
        for column in self.segments:
            spec = self.features[column]
            if spec.numeric and spec.bands is None:
                raise ValueError(f"segment {column!r} is a number: give it bands")
        for column, spec in self.features.items():
            if spec.blank not in (None, MISSING):
                _check_expression(column, spec.blank, self.features)
        return self

    # ---- derived views -------------------------------------------------------------------

    @property
    def id_column(self) -> str:
        return self.id or ROW_ID

    @property
    def target_column(self) -> str:
        return self.target.column

    @cached_property
    def feature_columns(self) -> tuple[str, ...]:
        return tuple(self.features)

    @cached_property
    def categorical_features(self) -> tuple[str, ...]:
        return tuple(c for c, s in self.features.items() if not s.numeric)

    @cached_property
    def numeric_features(self) -> tuple[str, ...]:
        return tuple(c for c, s in self.features.items() if s.numeric)

    @cached_property
    def integer_features(self) -> tuple[str, ...]:
        return tuple(c for c, s in self.features.items() if s.type == "integer")

    @cached_property
    def listed_levels(self) -> dict[str, tuple[str, ...]]:
        """Categories whose levels the contract lists (the rest are learned in training)."""
        return {c: s.levels for c, s in self.features.items() if s.levels is not None}

    def numeric_range(self, column: str) -> tuple[float, float]:
        spec = self.features[column]
        low = -math.inf if spec.min is None else spec.min
        return low, math.inf if spec.max is None else spec.max

    @cached_property
    def columns(self) -> tuple[str, ...]:
        """A snapshot's contract columns: the ID, the features, the target."""
        return (self.id_column, *self.features, self.target_column)

    @cached_property
    def export_names(self) -> dict[str, str]:
        """Contract name -> the export's name for it (they differ where `rename` says)."""
        back = {new: old for old, new in self.rename.items()}
        return {c: back.get(c, c) for c in self.columns if c != ROW_ID}

    @cached_property
    def digest(self) -> str:
        """A fingerprint of what the contract means (not of its comments or key order)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(
            self.model_dump(mode="json", exclude_defaults=True), sort_keys=False, width=100
        )

    def breaking_changes(self, newer: Contract) -> list[str]:
        """What in `newer` would break a caller of an API serving this contract's model:
        fields it no longer accepts, fields it now requires, values it now refuses."""
        breaks = []
        if newer.id != self.id:
            breaks.append(f"the ID field is {newer.id!r}, was {self.id!r}")
        for column, old in self.features.items():
            new = newer.features.get(column)
            if new is None:
                breaks.append(f"feature {column!r} is gone")
                continue
            if old.numeric != new.numeric or (old.type, new.type) == ("number", "integer"):
                breaks.append(f"feature {column!r} is a {new.type}, was a {old.type}")
                continue
            if old.levels is None and new.levels is not None:
                breaks.append(f"feature {column!r} now lists its levels")
            elif old.levels and new.levels and (gone := set(old.levels) - set(new.levels)):
                breaks.append(f"feature {column!r} no longer takes {sorted(gone)}")
            if old.numeric:
                (low, high), (new_low, new_high) = (
                    self.numeric_range(column),
                    newer.numeric_range(column),
                )
                if new_low > low or new_high < high:
                    breaks.append(f"feature {column!r} now takes [{new_low:g}, {new_high:g}]")
                if old.blank is not None and new.blank is None:
                    breaks.append(f"feature {column!r} may no longer be blank")
        for column, new in newer.features.items():
            if column not in self.features and not (new.numeric and new.blank is not None):
                breaks.append(f"feature {column!r} is new and required")
        return breaks

    def band_labels(self, column: str) -> list[str]:
        """Segment labels of a numeric feature's bands: "0-12 months" ... "73+ months"."""
        spec = self.features[column]
        edges = list(spec.bands or ())
        unit = f" {spec.unit}" if spec.unit else ""
        step = 1 if spec.type == "integer" else 0
        low: float | None = spec.min
        labels = []
        for edge in edges:
            labels.append(
                f"{_number(low)}-{_number(edge)}{unit}"
                if low is not None
                else f"<={_number(edge)}{unit}"
            )
            low = edge + step
        labels.append(
            f"{_number(low) if step else '>' + _number(edges[-1])}{'+' if step else ''}{unit}"
        )
        return labels

    def blank_fill(self, column: str, values: Mapping[str, Any]) -> Any:
        """The value a blank `column` stands for, from the other features' `values`."""
        expression = self.features[column].blank
        if expression in (None, MISSING):
            return np.nan
        return _evaluate(_parsed(str(expression)), values)


@cache
def _parsed(expression: str) -> ast.expr:
    """A blank rule's syntax tree, parsed once (the API fills blanks on every request)."""
    return ast.parse(expression, mode="eval").body


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


_OPERATORS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide}


def _check_expression(column: str, expression: str, features: Mapping[str, FeatureSpec]) -> None:
    """A blank rule may only do arithmetic on numbers that are never blank themselves."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        raise ValueError(f"features.{column}.blank {expression!r} is not an expression") from None
    for node in ast.walk(tree.body):
        if isinstance(node, ast.Name):
            spec = features.get(node.id)
            if spec is None or not spec.numeric or spec.blank is not None:
                raise ValueError(
                    f"features.{column}.blank uses {node.id!r}: only numeric features without "
                    "a blank rule of their own"
                )
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _OPERATORS:
                raise ValueError(f"features.{column}.blank: only + - * / are allowed")
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float) or isinstance(node.value, bool):
                raise ValueError(f"features.{column}.blank: only numbers as constants")
        elif not isinstance(node, ast.operator | ast.Load | ast.UnaryOp | ast.USub):
            raise ValueError(f"features.{column}.blank: only arithmetic is allowed")


def _evaluate(node: ast.expr, values: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp):
        return -_evaluate(node.operand, values)
    assert isinstance(node, ast.BinOp)  # _check_expression allowed nothing else
    return _OPERATORS[type(node.op)](_evaluate(node.left, values), _evaluate(node.right, values))


def parse_contract(text: str, source: str) -> Contract:
    """A contract from YAML text; `source` names it in errors."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ContractError(f"contract {source} is not valid YAML{where}") from None
    if not isinstance(document, dict):
        raise ContractError(f"contract {source} must be a mapping of keys (id, target, features)")
    try:
        return Contract.model_validate(document)
    except ValidationError as error:
        lines = [
            f"  {'.'.join(map(str, e['loc'])) or '(top level)'}: "
            + e["msg"].removeprefix("Value error, ")
            for e in error.errors()
        ]
        raise ContractError(
            f"contract {source} has {len(lines)} mistake(s):\n" + "\n".join(lines)
        ) from None


def load_contract(path: Path | None) -> Contract:
    """The contract at `path`, or the shipped default when `path` is None."""
    if path is None:
        return default_contract()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ContractError(
            f"contract {path} does not exist: set CHURN_CONTRACT_PATH to your contract, or "
            "draft one with `churn contract infer YOUR_EXPORT.csv`"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ContractError(f"contract {path} cannot be read: {error}") from None
    return parse_contract(text, str(path))


@cache
def default_contract() -> Contract:
    """The shipped contract: the public telco export, exactly."""
    text = resources.files("churn_assets.ml.data").joinpath("contracts", DEFAULT_FILE).read_text()
    return parse_contract(text, DEFAULT_FILE)
