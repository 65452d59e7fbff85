"""A hostile contract is refused when it is read, with a sentence that names what and where.

Whoever can write CHURN_CONTRACT_PATH or a run's contract artifact writes input the whole
platform is derived from; these are the ways one broke a run, the API or the machine.
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from churn_assets.ml.data.cleaning import clean_customers
from churn_assets.ml.data.contract import (
    MAX_BLANK_CHARS,
    MAX_CONTRACT_BYTES,
    MAX_FEATURES,
    MAX_LEVELS,
    ContractError,
    load_contract,
    parse_contract,
)
from churn_assets.ml.data.contract_inference import infer_contract
from churn_assets.ml.data.splitting import features_and_target
from churn_assets.ml.data.synthetic import generate_for_contract
from churn_assets.ml.model.features import fit_preprocessor, output_features
from serving.columns import BatchReader
from serving.model import FastScorer
from serving.schemas import request_models

CHURN = str(Path(sys.executable).parent / "churn")
HEAD = "target: {column: Churn, positive: ['Yes']}\nfeatures:\n"
#: Average charges per month of tenure: no value at tenure 0.
RATIO = (
    "id: customerID\n" + HEAD + "  tenure: {type: integer, min: 0, max: 72}\n"
    "  total: {type: number, min: 0}\n"
    "  plan: {type: category, levels: [basic, plus]}\n"
    "  monthly: {type: number, min: 0, blank: 'total / tenure'}\n"
)


def _with_blank(rule: str) -> str:
    return HEAD + "  a: {type: number}\n" + f"  x: {{type: number, blank: '{rule}'}}\n"


def _refusal(text: str) -> str:
    with pytest.raises(ContractError) as error:
        parse_contract(text, "mine.yaml")
    message = str(error.value)
    assert message.startswith("contract mine.yaml ")
    return message


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHURN, "contract", "check", str(path)], capture_output=True, text=True, check=False
    )


# ---- 1. the size and shape of a blank rule ---------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "mistake"),
    [
        # these three passed `check` and then failed the run (RecursionError), or `check`
        # itself with an uncaught RecursionError and a MemoryError
        (
            "+".join(["a"] * 1500),
            "features.x.blank is 2,999 characters long, over the limit of 500",
        ),
        (
            "+".join(["a"] * 3000),
            "features.x.blank is 5,999 characters long, over the limit of 500",
        ),
        ("-" * 10_000 + "a", "features.x.blank is 10,001 characters long, over the limit of 500"),
        ("-" * 40 + "a", "features.x.blank nests deeper than 32 levels"),
        ("+".join(["(a+a+a+a)"] * 13), "features.x.blank has more than 100 terms and operations"),
        ("a + 1 \\n", "features.x.blank may only hold names, numbers, spaces and + - * / ( )"),
        ("a +* 2", "features.x.blank is not an arithmetic expression"),
    ],
)
def test_a_blank_rule_too_large_or_deep_is_refused_before_it_is_parsed(
    rule: str, mistake: str
) -> None:
    assert mistake in _refusal(_with_blank(rule))


def test_check_refuses_the_rule_that_used_to_fail_the_run(tmp_path: Path) -> None:
    contract = tmp_path / "long_rule.yaml"
    contract.write_text(_with_blank("+".join(["a"] * 1500)))
    checked = _check(contract)
    assert checked.returncode == 2, checked.stdout
    assert "features.x.blank is 2,999 characters long, over the limit of 500" in checked.stderr
    assert "Traceback" not in checked.stderr and "a+a+a" not in checked.stderr


def test_a_rule_over_thirty_features_still_fits_the_limits() -> None:
    names = [f"charge_{i:02d}" for i in range(30)]
    rule = " + ".join(names)
    assert len(rule) < MAX_BLANK_CHARS
    text = HEAD + "".join(f"  {n}: {{type: number}}\n" for n in names)
    contract = parse_contract(text + f"  total: {{type: number, blank: '{rule}'}}\n", "wide")
    filled = contract.blank_fill(
        "total", {n: np.array([1.0, float(i)]) for i, n in enumerate(names)}
    )
    np.testing.assert_array_equal(filled, [30.0, sum(range(30))])


# ---- 2. a blank rule's value is finite ---------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "mistake"),
    [
        ("a / 0", "features.x.blank divides by zero"),
        ("a / (2 - 2)", "features.x.blank divides by zero"),
        ("a / -0.0", "features.x.blank divides by zero"),
        ("0 / 0", "features.x.blank divides by zero"),
        ("a * (1e308 * 1e308)", "features.x.blank has no finite value"),
        ("a * 1e999", "features.x.blank: a number in it is too large"),
    ],
)
def test_a_constant_without_a_finite_value_is_refused(rule: str, mistake: str) -> None:
    assert mistake in _refusal(_with_blank(rule))


def test_a_fill_without_a_finite_value_is_kept_missing_for_columns_and_rows() -> None:
    contract = parse_contract(RATIO, "ratio.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero warning escapes either
        series = contract.blank_fill(
            "monthly", {"tenure": pd.Series([0.0, 4.0, 0.0]), "total": pd.Series([5.0, 10.0, 0.0])}
        )
        array = contract.blank_fill(
            "monthly", {"tenure": np.array([0.0]), "total": np.array([5.0])}
        )
        scalar = contract.blank_fill("monthly", {"tenure": 0, "total": 5.0})
        overflow = contract.blank_fill("monthly", {"tenure": 1e-300, "total": 1e300})
    assert isinstance(series, pd.Series)
    np.testing.assert_array_equal(series, [np.nan, 2.5, np.nan])
    assert np.isnan(array).all() and array.shape == (1,)
    assert np.isnan(scalar) and np.isnan(overflow)
    assert contract.blank_fill("monthly", {"tenure": 4, "total": 10.0}) == 2.5


def _export(contract_text: str, rows: int = 300) -> pd.DataFrame:
    raw = generate_for_contract(parse_contract(contract_text, "ratio.yaml"), rows, seed=4)
    raw.loc[0, ["tenure", "total", "monthly"]] = ["0", "5", " "]
    return raw


def test_cleaning_keeps_a_blank_whose_rule_has_no_value_missing() -> None:
    contract = parse_contract(RATIO, "ratio.yaml")
    cleaned, report = clean_customers(_export(RATIO), contract)
    assert np.isnan(cleaned.loc[0, "monthly"])  # was inf: 5 / 0
    assert np.isfinite(cleaned["monthly"].dropna()).all()
    assert report.blanks_filled["monthly"] >= 1


def test_the_api_scores_a_blank_whose_rule_has_no_value_as_missing() -> None:
    contract = parse_contract(RATIO, "ratio.yaml")
    cleaned, _ = clean_customers(_export(RATIO), contract)
    features, target = features_and_target(cleaned, contract)
    preprocessor = fit_preprocessor(features, contract)
    model = lgb.LGBMClassifier(n_estimators=5, verbose=-1)
    model.fit(preprocessor.transform(features), target)
    scorer = FastScorer(Pipeline([("preprocess", preprocessor), ("model", model)]), contract)
    customer = request_models(contract).customer
    blank = customer(tenure=0, total=5.0, plan="basic", monthly=None)
    missing_column = output_features(preprocessor).index("monthly")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reader = BatchReader(request_models(contract), scorer.levels)
        both = [blank, customer(tenure=2, total=5.0, plan="plus", monthly=None)]
        matrix = scorer.matrix(reader.of_customers(both))
    assert np.isnan(matrix[0, missing_column])  # was inf
    assert matrix[1, missing_column] == 2.5


# ---- 3. the size of a contract -----------------------------------------------------------


def test_a_contract_file_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    contract = tmp_path / "huge.yaml"
    padding = "# SECRET-LOOKING-PADDING\n" * (MAX_CONTRACT_BYTES // 25 + 1)
    contract.write_text(_with_blank("a") + padding)
    size = contract.stat().st_size
    with pytest.raises(ContractError) as error:
        load_contract(contract)
    assert str(error.value) == (
        f"contract {contract} is {size:,} bytes, over the limit of 1,048,576 (1 MiB): a "
        "contract declares columns, it holds no data"
    )
    checked = _check(contract)
    assert checked.returncode == 2 and "over the limit of 1,048,576" in checked.stderr
    assert "SECRET" not in checked.stderr and "Traceback" not in checked.stderr


def test_contract_text_over_the_limit_is_refused_before_yaml_reads_it() -> None:
    message = _refusal(_with_blank("a") + "#" * MAX_CONTRACT_BYTES)
    assert "characters, over the limit of 1,048,576" in message


def test_a_fifo_named_as_the_contract_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "contract.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ContractError, match="is not a regular file"):
        load_contract(fifo)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # built recursively, this crashed libyaml's builder and raised Python's RecursionError
        ("features: " + "[" * 200_000 + "]" * 200_000, 1),
        (HEAD + "  x: {type: number, min: " + "{a: " * 50_000 + "1" + "}" * 50_000 + "}\n", 3),
        ("a:\n" + "".join(" " * i + "b:\n" for i in range(1, 40)), 17),
    ],
)
def test_yaml_nested_deeper_than_a_contract_needs_is_refused(text: str, line: int) -> None:
    assert f"nests deeper than 16 levels at line {line}" in _refusal(text)


def test_features_and_levels_are_bounded() -> None:
    many = HEAD + "".join(f"  f{i}: {{type: number}}\n" for i in range(MAX_FEATURES + 1))
    assert "features: Dictionary should have at most 1000 items" in _refusal(many)
    levels = ", ".join(f"l{i}" for i in range(MAX_LEVELS + 1))
    assert "features.c.levels: Tuple should have at most 1000 items" in _refusal(
        HEAD + f"  c: {{type: category, levels: [{levels}]}}\n"
    )
    codes = ", ".join(f"k{i}: a" for i in range(MAX_LEVELS + 1))
    assert "features.c.map: Dictionary should have at most 1000 items" in _refusal(
        HEAD + f"  c: {{type: category, map: {{{codes}}}}}\n"
    )
    at_limit = HEAD + "".join(f"  f{i}: {{type: number}}\n" for i in range(MAX_FEATURES))
    assert len(parse_contract(at_limit, "wide").features) == MAX_FEATURES


# ---- 4. YAML that would silently mean something else -------------------------------------


@pytest.mark.parametrize(
    ("text", "mistake"),
    [
        (
            HEAD + "  x: {type: number}\n  y: {type: number}\n  x: {type: integer}\n",
            "repeats the key 'x' at line 5 (first at line 3); YAML would keep only the last",
        ),
        (
            HEAD + "  x: {type: number}\nfeatures:\n  y: {type: number}\n",
            "repeats the key 'features' at line 4 (first at line 2)",
        ),
        (
            HEAD + "  x:\n    type: number\n    min: 0\n    min: 5\n",
            "repeats the key 'min' at line 6 (first at line 5)",
        ),
        # an alias lets a few lines stand for a structure far larger than the file
        (
            "target: {column: Churn, positive: &codes ['Yes']}\n"
            "features: {x: {type: category, levels: *codes}}\n",
            "reuses the YAML anchor at line 1: a contract may not use aliases",
        ),
        (HEAD + "  x: {type: number}\n  <<: {y: {type: number}}\n", "merge key (<<) at line 4"),
    ],
)
def test_yaml_that_would_mean_something_else_is_refused_by_line(text: str, mistake: str) -> None:
    assert mistake in _refusal(text)


# ---- 5. names the API's request models cannot take -------------------------------------------


@pytest.mark.parametrize(
    ("name", "mistake"),
    [
        # these three broke every request: swallowed as configuration, or read back as the
        # model's own property instead of the customer's value
        ("model_config", "collides with the API's request models"),
        ("model_fields_set", "collides with the API's request models"),
        ("model_extra", "collides with the API's request models"),
        ("model_dump", "collides with the API's request models"),  # pydantic refuses to build
        ("model_anything", "collides with the API's request models"),  # its protected prefix
        ("json", "collides with the API's request models"),  # shadowed, warned on each build
        ("register", "collides with the API's request models"),  # the metaclass's member
        ("_x", "starts with an underscore, which pydantic keeps private"),
        ("__init__", "starts with an underscore, which pydantic keeps private"),
        ("class", "is a Python keyword, which a blank rule cannot name"),
    ],
)
def test_a_feature_name_the_api_cannot_take_is_refused(name: str, mistake: str) -> None:
    message = _refusal(HEAD + f"  {name}: {{type: number}}\n")
    assert f"features.{name}.[key]: '{name}' {mistake}" in message
    assert mistake in _refusal(HEAD + "  x: {type: number}\n" + f"id: {name}\n")


def test_names_near_pydantic_own_build_request_models_that_read_them_back() -> None:
    names = ("fields", "self", "customers", "type", "modelled", "Model_config")
    text = HEAD + "".join(f"  {n}: {{type: number}}\n" for n in names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "shadows an attribute" warning either
        customer = request_models(parse_contract(text, "near.yaml")).customer
    parsed = customer(**{n: float(i) for i, n in enumerate(names)})
    assert [getattr(parsed, n) for n in names] == [float(i) for i in range(len(names))]


def test_a_drafted_contract_renames_columns_the_api_cannot_take(tmp_path: Path) -> None:
    export = tmp_path / "export.csv"
    rows = [f"C{i},{'Yes' if i % 3 else 'No'},{i * 7 % 40},{i * 2},{i % 4}" for i in range(40)]
    export.write_text("customerID,Churn,model_config,class,json\n" + "\n".join(rows) + "\n")
    contract = parse_contract(infer_contract(export), "draft")
    assert contract.rename == {"model_config": "c_model_config", "class": "class_", "json": "json_"}
    assert set(contract.features) == {"c_model_config", "class_", "json_"}
