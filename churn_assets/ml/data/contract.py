"""The data contract: the one declaration of what the customer export holds.

A YAML file (CHURN_CONTRACT_PATH; the shipped `contracts/telco.yaml` when unset) names the ID,
the target and its codes, the features with their types, ranges and levels, the columns to
rename or never read, and the scoring segments. Reading, cleaning, validation, the
preprocessor, drift profiles, reasons, segments, the generator and the API are all derived from
it, so an operator's own export needs a contract, not a code change.

Mistakes in the contract itself are reported one per line with the key's path
(`features.tenure.min: ...`), because the person editing it needs to find the key, each as a
sentence that says how to fix it; names that are not identifiers (`Tenure Months`, as exports
write them) are reported together, with the `rename` block that fixes them all.

A contract is input like any other (whoever can write CHURN_CONTRACT_PATH or a run's artifact
writes it), so what it can make the platform do is bounded before it is read: the file's size,
the number of features and levels, the size and shape of a `blank` rule, repeated keys and
YAML aliases, and names that would collide with the API's request models.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import keyword
import math
import os
import re
import stat
from collections.abc import Hashable, Mapping
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

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

#: The largest contract read, in bytes. A contract declares columns, it holds no data: the
#: shipped ones are a few KB and a thousand features with their levels fit in a fraction of
#: this, while reading and checking one costs about a second a megabyte (a 54 MB file took
#: minutes and gigabytes).
MAX_CONTRACT_BYTES = 2**20
#: How deep YAML may nest: a contract needs four levels (features, a feature, its levels).
#: Deeper nesting is refused before the document is built, which recurses once per level
#: (libyaml's builder crashes the process at some hundred thousand, Python's raises
#: RecursionError at a thousand).
MAX_YAML_DEPTH = 16
#: The most features a contract declares: wider than any real export, and it bounds the API's
#: request model and every per-feature loop of a run.
MAX_FEATURES = 1000
#: The most levels (and export codes in `map`) one category lists: the API enumerates them.
MAX_LEVELS = 1000
#: How large a `blank` rule may be. A real rule is a few terms ("tenure * MonthlyCharges",
#: "(a + b + c) / 3"); a sum of 30 features is about 300 characters, 59 nodes and 30 levels
#: deep. The length is checked before the text is parsed (Python's parser and the recursive
#: `_evaluate` overflow their stacks on thousands of terms); depth and node count bound the
#: recursion and the work a rule costs on every request.
MAX_BLANK_CHARS = 500
MAX_BLANK_DEPTH = 32
MAX_BLANK_NODES = 100


class ContractError(ValueError):
    """The contract file cannot be used; the message names the file and each offending key."""


#: A name the contract gives a column: the API's field and the model's feature use it as is.
_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: Names pydantic gives its own members: as a request field, `model_config` is swallowed by the
#: model's configuration, `model_fields_set` and `model_extra` read back the model's own
#: property, `model_dump` and `model_validate*` refuse to build, and the other members (`json`,
#: `copy`, `schema`, the metaclass's `register`, `mro`...) are shadowed with a warning on every
#: build. The whole `model_` prefix is pydantic's protected namespace, where new members appear
#: with new versions.
_PYDANTIC_MEMBERS = frozenset(dir(BaseModel)) | frozenset(dir(type(BaseModel)))


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a field of the API's request body, or None when it can."""
    if name.startswith("_"):
        return f"{name!r} starts with an underscore, which pydantic keeps private"
    if name.startswith("model_") or name in _PYDANTIC_MEMBERS:
        return (
            f"{name!r} collides with the API's request models (pydantic's `model_` names and "
            "BaseModel members): give the column another name with `rename`"
        )
    if keyword.iskeyword(name):
        return f"{name!r} is a Python keyword, which a blank rule cannot name"
    return None


def identifier(name: str) -> str:
    """A plain name for an export's column: letters, digits and underscores, not starting with
    a digit, and none the platform or the API's request models keep for themselves."""
    plain = re.sub(r"\W+", "_", name.strip()).strip("_") or "column"
    plain = f"c_{plain}" if plain[0].isdigit() or plain.startswith("model_") else plain
    return f"{plain}_" if plain in RESERVED or name_problem(plain) else plain


def _field_name(name: str) -> str:
    if problem := name_problem(name):
        raise ValueError(problem)
    return name


Name = Annotated[str, Field(pattern=_NAME)]
#: A name that becomes a field of the API's request body (the ID and the features).
FieldName = Annotated[str, Field(pattern=_NAME), AfterValidator(_field_name)]


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
            raise ValueError(
                f"codes {sorted(both)} are both positive and negative: a code means churned "
                "or stayed, so keep each in one list"
            )
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
        'numbers such as "tenure * MonthlyCharges" (+ - * / and parentheses). Where the '
        "expression has no finite value for a customer (TotalCharges / tenure at tenure 0), "
        "the number is kept missing. Unset: a blank is refused.",
    )
    map: dict[str, str] | None = Field(
        None,
        max_length=MAX_LEVELS,
        description="Export code -> level, applied before levels are checked (categories).",
    )
    levels: tuple[str, ...] | None = Field(
        None,
        max_length=MAX_LEVELS,
        description="The allowed levels in encoding order; unset: learned from training.",
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
            raise ValueError(
                f"{', '.join(given)} cannot be used with type {self.type}: remove "
                f"{'it' if len(given) == 1 else 'them'}, or change the type"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}: swap them")
        if self.levels is not None:
            if not self.levels:
                raise ValueError("levels is empty: list them, or leave levels out to learn them")
            if len(set(self.levels)) != len(self.levels):
                twice = sorted({level for level in self.levels if self.levels.count(level) > 1})
                raise ValueError(f"levels lists {twice} twice: list each level once")
            if self.map and (unknown := set(self.map.values()) - set(self.levels)):
                raise ValueError(
                    f"map gives level(s) {sorted(unknown)} that levels lacks: add them to "
                    "levels, or map those codes to a listed level"
                )
        if self.bands is not None and (
            not self.bands or list(self.bands) != sorted(set(self.bands))
        ):
            raise ValueError(
                "bands must be increasing upper edges, at least one: e.g. bands: [12, 24, 48]"
            )
        return self

    @property
    def numeric(self) -> bool:
        return self.type != "category"


class Contract(_Strict):
    """A validated contract; its derived views are what the rest of the platform reads."""

    version: int = Field(1, ge=1, description="Bump when callers of the API must change.")
    id: FieldName | None = Field(None, description="The customer ID column, if any.")
    target: TargetSpec
    rename: dict[str, str] = Field(default_factory=dict, description="Export name -> name.")
    drop: tuple[str, ...] = Field((), description="Export columns never read.")
    features: dict[FieldName, FeatureSpec] = Field(min_length=1, max_length=MAX_FEATURES)
    segments: tuple[str, ...] = Field((), description="What churn_scores groups customers by.")
    carry: tuple[str, ...] = Field((), description="Features copied into churn_scores.")

    @model_validator(mode="after")
    def _consistent(self) -> Contract:
        named = [*([self.id] if self.id else []), self.target.column, *self.features]
        if len(set(named)) != len(named):
            roles = [
                *([(self.id, "the id")] if self.id else []),
                (self.target.column, "the target"),
                *((name, "a feature") for name in self.features),
            ]
            twice = next(n for n in named if named.count(n) > 1)
            where = " and ".join(role for name, role in roles if name == twice)
            raise ValueError(
                f"{twice!r} is both {where}: the id, the target and the features must have "
                "distinct names, so keep it in one place"
            )
        if clash := [n for n in self.features if n in RESERVED] + (
            [self.id] if self.id in RESERVED else []
        ):
            raise ValueError(
                f"{clash} are reserved for the platform's own columns: map the export's "
                "column to another name in `rename`"
            )
        if len(set(self.rename.values())) != len(self.rename):
            new = next(n for n in self.rename.values() if list(self.rename.values()).count(n) > 1)
            olds = sorted(old for old, name in self.rename.items() if name == new)
            raise ValueError(
                f"rename maps {olds} to one name {new!r}: give each column its own name"
            )
        if both := set(self.drop) & (set(named) | set(self.rename) | set(self.rename.values())):
            raise ValueError(
                f"drop lists {sorted(both)}, which the contract reads: remove them from drop, "
                "or from the rest of the contract"
            )
        for key, columns in (("segments", self.segments), ("carry", self.carry)):
            if unknown := [c for c in columns if c not in self.features]:
                raise ValueError(
                    f"{key} names {unknown}, which are not features: add them to features, "
                    f"or remove them from {key}"
                )
        for column in self.segments:
            spec = self.features[column]
            if spec.numeric and spec.bands is None:
                raise ValueError(
                    f"segment {column!r} is a number: give it bands (upper edges, e.g. "
                    "bands: [12, 24, 48]), or remove it from segments"
                )
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
        """The value a blank `column` stands for, from the other features' `values` (scalars,
        arrays or Series): NaN, kept missing, where the rule has no finite value."""
        expression = self.features[column].blank
        if expression in (None, MISSING):
            return np.nan
        # A rule like TotalCharges / tenure has no value at tenure 0: the customer's number is
        # kept missing, as `blank: missing` keeps it (LightGBM reads NaN as missing, and
        # training and the API fill alike), rather than an infinity the model would split on
        # or refusing the whole run or request for one customer.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            filled = _evaluate(_parsed(str(expression)), values)
        if isinstance(filled, pd.Series):
            return filled.where(np.isfinite(filled))
        finite = np.isfinite(filled)
        if np.ndim(filled) == 0:
            return filled if finite else np.nan
        return np.where(finite, filled, np.nan)


@cache
def _parsed(expression: str) -> ast.expr:
    """A blank rule's syntax tree, parsed once (the API fills blanks on every request)."""
    return ast.parse(expression, mode="eval").body


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


_OPERATORS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide}


#: What a blank rule is written with; anything else (quotes, backslashes, other operators,
#: newlines) is refused before Python's parser sees it.
_EXPRESSION_CHARS = re.compile(r"[A-Za-z0-9_.+\-*/() ]*")


def _check_expression(column: str, expression: str, features: Mapping[str, FeatureSpec]) -> None:
    """A blank rule may only do arithmetic on numbers that are never blank themselves."""
    key = f"features.{column}.blank"
    if len(expression) > MAX_BLANK_CHARS:
        raise ValueError(
            f"{key} is {len(expression):,} characters long, over the limit of {MAX_BLANK_CHARS}"
        )
    if not _EXPRESSION_CHARS.fullmatch(expression):
        raise ValueError(f"{key} may only hold names, numbers, spaces and + - * / ( )")
    try:
        tree = ast.parse(expression, mode="eval")
    # the length limit keeps the parser's own stack limits out of reach; should one be
    # reached, it is this rule's mistake all the same
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ValueError(f"{key} is not an arithmetic expression") from None
    _check_size(key, tree.body)
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
            if not _finite(node.value):
                raise ValueError(f"{key}: a number in it is too large")
        elif not isinstance(node, ast.operator | ast.Load | ast.UnaryOp | ast.USub):
            raise ValueError(f"features.{column}.blank: only arithmetic is allowed")
    _check_constants(key, tree.body)


def _check_size(key: str, root: ast.expr) -> None:
    """Refuse a rule deeper or larger than the limits (walked without recursion)."""
    nodes = 0
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_BLANK_DEPTH:
            raise ValueError(f"{key} nests deeper than {MAX_BLANK_DEPTH} levels")
        if nodes > MAX_BLANK_NODES:
            raise ValueError(f"{key} has more than {MAX_BLANK_NODES} terms and operations")
        stack.extend(
            (child, depth + 1)
            for child in ast.iter_child_nodes(node)
            if isinstance(child, ast.expr)  # not the operators and Load markers
        )


def _check_constants(key: str, root: ast.expr) -> None:
    """Refuse a division by a constant zero, and constant parts with no finite value."""
    for node in ast.walk(root):
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div)
            and _constant(node.right)
            and _value(node.right) == 0
        ):
            raise ValueError(f"{key} divides by zero")
        if isinstance(node, ast.expr) and _constant(node) and not _finite(_value(node)):
            raise ValueError(f"{key} has no finite value: a constant part of it overflows")


def _constant(node: ast.expr) -> bool:
    return not any(isinstance(inner, ast.Name) for inner in ast.walk(node))


def _value(node: ast.expr) -> Any:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _evaluate(node, {})


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _evaluate(node: ast.expr, values: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)  # integers as floats: no silent int64 wrap-around
    if isinstance(node, ast.UnaryOp):
        return -_evaluate(node.operand, values)
    assert isinstance(node, ast.BinOp)  # _check_expression allowed nothing else
    return _OPERATORS[type(node.op)](_evaluate(node.left, values), _evaluate(node.right, values))


class _RefusedYamlError(Exception):
    """YAML that parses but that a contract may not use; the message says what and where."""


if TYPE_CHECKING:
    from yaml import SafeLoader as _SafeLoader
else:  # libyaml reads a contract at the size limit in a second, pure Python in six
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _ContractLoader(_SafeLoader):
    """YAML as a contract may use it: no key twice in a mapping, no aliases, shallow.

    YAML keeps the last of a repeated key, so a second `tenure:` would silently replace the
    first; an alias lets a few lines expand into a structure far larger than the file.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # a node is met twice only through an alias (*name) of its anchor (&name)
        if node in self.constructed_objects or node in self.recursive_objects:
            raise _RefusedYamlError(
                f"reuses the YAML anchor at line {node.start_mark.line + 1}: a contract may "
                "not use aliases"
            )
        return super().construct_object(node, deep=deep)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping: dict[Any, Any] = {}
        lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _RefusedYamlError(f"uses a YAML merge key (<<) at line {line}")
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise _RefusedYamlError(f"has a key that is not a name at line {line}")
            if key in lines:
                shown = repr(key) if len(repr(key)) <= 60 else repr(key)[:57] + "..."
                raise _RefusedYamlError(
                    f"repeats the key {shown} at line {line} (first at line {lines[key]}); "
                    "YAML would keep only the last, so keep one of them"
                )
            lines[key] = line
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


def _check_nesting(text: str) -> None:
    """Refuse YAML nested deeper than MAX_YAML_DEPTH, from the parser's events (which come
    without recursion) before a document is built from them."""
    depth = 0
    for event in yaml.parse(text, Loader=_ContractLoader):
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise _RefusedYamlError(
                    f"nests deeper than {MAX_YAML_DEPTH} levels at line {event.start_mark.line + 1}"
                )
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1


#: The keys each part of a contract takes, for the sentence that names a stray key.
_KEYS: dict[str, tuple[str, ...]] = {
    "the contract": tuple(Contract.model_fields),
    "target": tuple(TargetSpec.model_fields),
    "a feature": tuple(FeatureSpec.model_fields),
}
_TYPES = ("integer", "number", "category")
_NUMBER_ERRORS = frozenset({"float_parsing", "float_type", "int_parsing", "int_type"})
_LIST_ERRORS = frozenset({"tuple_type", "list_type"})


def _mistakes(errors: list[Any], document: dict[Any, Any]) -> list[str]:
    """Each validation error as one sentence that says what to do; names that are not plain
    identifiers as one sentence with the `rename` block that fixes them all."""
    lines = []
    unplain: dict[str, str] = {}
    inner = {tuple(error["loc"][:-1]) for error in errors if error["loc"]}
    for error in errors:
        given = error.get("input")
        if error["type"] == "too_short" and tuple(error["loc"]) in inner:
            continue  # its items were refused, and are named
        if error["type"] == "string_pattern_mismatch" and isinstance(given, str):
            unplain.setdefault(given, identifier(given))
            continue
        loc = tuple(str(part) for part in error["loc"])
        sentence = _mistake(loc, error["type"], given, error["msg"])
        lines.append(f"{'.'.join(loc)}: {sentence}" if loc else sentence)
    if unplain:
        lines.insert(0, _rename_mistake(unplain, document))
    return lines


#: Sentences for mistakes at a fixed key: (pydantic's error type, the key's path).
_FIXED_MISTAKES = {
    ("missing", ("target",)): 'missing: add `target: {column: Churn, positive: ["Yes"]}`, '
    "naming the export's churn column and the code(s) that mean churned",
    ("missing", ("features",)): "missing: list the columns a model reads under `features`, "
    "or draft a contract with `churn contract infer YOUR_EXPORT.csv`",
    ("missing", ("target", "column")): "missing: name the export's churn column, e.g. "
    "column: Churn",
    ("missing", ("target", "positive")): "missing: list the code(s) that mean churned, e.g. "
    'positive: ["Yes"]',
    ("too_short", ("target", "positive")): "empty: list the code(s) that mean churned, e.g. "
    'positive: ["Yes"]',
    ("too_short", ("features",)): "empty: list at least one column a model reads",
}


def _mistake(loc: tuple[str, ...], kind: str, given: Any, message: str) -> str:
    """One validation error as a sentence with its fix; pydantic's own where none is known."""
    if fixed := _FIXED_MISTAKES.get((kind, loc)):
        return fixed
    shown = repr(given) if len(repr(given)) <= 40 else repr(given)[:37] + "..."
    feature = len(loc) >= 2 and loc[0] == "features"
    sentence = str(message).removeprefix("Value error, ")
    if kind == "missing" and loc[-1] == "type":
        sentence = f"missing: add it ({', '.join(_TYPES)})"
    elif kind == "literal_error" and feature and loc[-1] == "type":
        sentence = (
            f"{shown} is not a type: use integer, number or category (a column of free text "
            "is no feature: list it under drop)"
        )
    elif kind == "extra_forbidden":
        part = "a feature" if feature else "target" if loc[0] == "target" else "the contract"
        keys = _KEYS[part]
        close = difflib.get_close_matches(loc[-1], keys, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        sentence = f"{loc[-1]!r} is not a key of {part}{hint}: use {', '.join(keys)}"
    elif kind in _NUMBER_ERRORS:
        sentence = f"{shown} is not a number: write one, e.g. {loc[-1]}: 0"
    elif kind in {"model_type", "dict_type"} and feature and len(loc) == 2:
        typed = given if given in _TYPES else "number"
        sentence = f"{shown} is not a mapping: write the feature as {{type: {typed}}}"
    elif kind == "model_type" and loc == ("target",):
        sentence = f'{shown} is not a mapping: write {{column: {given}, positive: ["Yes"]}}'
    elif kind in _LIST_ERRORS:
        sentence = f"{shown} is not a list: write [{_quoted(given)}]"
    elif kind == "string_type" and isinstance(given, bool | int | float):
        sentence = (
            f"{shown} is read by YAML as {'true/false' if isinstance(given, bool) else 'a number'}"
            f", not text: quote it as the export writes it, e.g. {_quoted(given)}"
        )
    return sentence


def _quoted(value: Any) -> str:
    """A YAML value as the quoted text it stood for: an unquoted Yes reads as true."""
    if isinstance(value, bool):
        return '"Yes"' if value else '"No"'
    return json.dumps(str(value)) if isinstance(value, int | float) else str(value)


def _rename_mistake(unplain: dict[str, str], document: dict[Any, Any]) -> str:
    """The sentence for names with spaces or symbols, and the `rename` block to paste."""
    had = document.get("rename")
    merged = {**(had if isinstance(had, dict) else {})}
    for old, new in unplain.items():
        merged.setdefault(old, new)
    block = yaml.safe_dump(
        {"rename": merged}, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    names = ", ".join(repr(name) for name in unplain)
    return (
        f"{len(unplain)} name(s) ({names}) are not plain identifiers (letters, digits and _, "
        "not starting with a digit), as the API's fields and the model's features must be: "
        "keep the export's names in this `rename` block and use the new names in id, target "
        "and features:\n" + "\n".join(f"      {line}" for line in block.splitlines())
    )


def parse_contract(text: str, source: str) -> Contract:
    """A contract from YAML text; `source` names it in errors."""
    if len(text) > MAX_CONTRACT_BYTES:
        raise ContractError(
            f"contract {source} is {len(text):,} characters, over the limit of "
            f"{MAX_CONTRACT_BYTES:,}: a contract declares columns, it holds no data"
        )
    try:
        _check_nesting(text)
        document = yaml.load(text, Loader=_ContractLoader)
    except _RefusedYamlError as refused:
        raise ContractError(f"contract {source} {refused}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ContractError(
            f"contract {source} is not valid YAML{where}: check the indentation and quoting "
            "there (a value holding ': ' or ' #' needs quotes)"
        ) from None
    if not isinstance(document, dict):
        raise ContractError(f"contract {source} must be a mapping of keys (id, target, features)")
    try:
        return Contract.model_validate(document)
    except ValidationError as error:
        lines = [f"  {line}" for line in _mistakes(error.errors(), document)]
        raise ContractError(
            f"contract {source} has {len(lines)} mistake(s):\n" + "\n".join(lines)
        ) from None


def load_contract(path: Path | None) -> Contract:
    """The contract at `path`, or the shipped default when `path` is None."""
    if path is None:
        return default_contract()
    try:
        text = _read_limited(Path(path)).decode("utf-8")
    except FileNotFoundError:
        raise ContractError(
            f"contract {path} does not exist: set CHURN_CONTRACT_PATH to your contract, or "
            "draft one with `churn contract infer YOUR_EXPORT.csv`"
        ) from None
    except UnicodeDecodeError as error:
        raise ContractError(
            f"contract {path} is not UTF-8 text (byte {error.start:,} cannot be decoded): "
            "save it as UTF-8"
        ) from None
    except OSError as error:
        raise ContractError(f"contract {path} cannot be read: {error.strerror}") from None
    return parse_contract(text, str(path))


def _read_limited(path: Path) -> bytes:
    """The file's bytes, refused unless it is a regular file of at most MAX_CONTRACT_BYTES."""
    # non-blocking open: a FIFO named like a contract would otherwise wait for a writer
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise ContractError(
                f"contract {path} is not a regular file: point CHURN_CONTRACT_PATH at the YAML "
                "file itself"
            )
        os.set_blocking(descriptor, True)
        # read one byte past the limit: the file may have grown since fstat
        data = handle.read(MAX_CONTRACT_BYTES + 1)
    if info.st_size > MAX_CONTRACT_BYTES or len(data) > MAX_CONTRACT_BYTES:
        size = max(info.st_size, len(data))
        raise ContractError(
            f"contract {path} is {size:,} bytes, over the limit of {MAX_CONTRACT_BYTES:,} "
            f"({MAX_CONTRACT_BYTES / 2**20:g} MiB): a contract declares columns, it holds no data"
        )
    return data


@cache
def default_contract() -> Contract:
    """The shipped contract: the public telco export, exactly."""
    text = resources.files("churn_assets.ml.data").joinpath("contracts", DEFAULT_FILE).read_text()
    return parse_contract(text, DEFAULT_FILE)
