"""`churn contract infer` on exports shaped like the public churn files: the draft's choices.

Each test drafts from a seeded export built like one of the files the command was tried on
(churn_assets_tests/contracts/exports.py) and asserts what the draft got wrong there: the ID,
the ranges, the many-level categories, the constant columns, the segments and the leakage.
"""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn_assets.ml.data.contract import Contract, parse_contract
from churn_assets.ml.data.contract_check import check_data
from churn_assets.ml.data.contract_inference import infer_contract
from churn_assets.ml.data.synthetic import write_customers
from churn_assets_tests.contracts import exports


def _draft(frame: pd.DataFrame, folder: Path, name: str = "export.csv") -> tuple[str, Contract]:
    text = infer_contract(write_customers(frame, folder / name))
    return text, parse_contract(text, "draft")


def _comment(text: str, key: str) -> str:
    """The YAML comment on the line that starts with `key` (a feature or a `drop` item)."""
    pattern = re.compile(rf"\s*(- )?'?{re.escape(key)}'?:?\s")
    (line,) = [ln for ln in text.splitlines() if pattern.match(ln)]
    return line.partition("  # ")[2]


def test_the_bank_export_keeps_its_real_customer_id_and_drops_the_row_counter(
    tmp_path: Path,
) -> None:
    text, contract = _draft(exports.bank(), tmp_path)
    assert contract.id == "CustomerId"  # was RowNumber, with CustomerId kept as a number
    assert "CustomerId" not in contract.features
    assert contract.drop == ("RowNumber", "Surname")
    assert _comment(text, "RowNumber") == (
        "a row counter (1..2,000 in order): not a property of the customer"
    )
    assert "a person's name" in _comment(text, "Surname")
    assert _comment(text, "id") == "unique in every row and named like a customer ID"


def test_a_customer_id_that_repeats_in_an_appending_export_is_still_the_id(
    tmp_path: Path,
) -> None:
    frame = exports.bank()
    frame.loc[frame.index[-60:], "CustomerId"] = frame["CustomerId"].iloc[:60].to_numpy()
    text, contract = _draft(frame, tmp_path)
    assert contract.id == "CustomerId" and "CustomerId" not in contract.features
    assert _comment(text, "id") == (
        "named like a customer ID; 60 rows repeat an ID (cleaning keeps the last of each)"
    )


@pytest.mark.parametrize(
    ("name", "values", "why"),
    [
        ("n", [str(i) for i in range(50)], "a row counter (0..49 in order)"),
        ("Unnamed: 0", [str(i * 7 % 50) for i in range(50)], "named like one, unique"),
        ("index", [str(1000 + i * 3) for i in range(50)], "named like one, unique"),
    ],
)
def test_row_counters_go_in_drop_whether_seen_by_value_or_by_name(
    tmp_path: Path, name: str, values: list[str], why: str
) -> None:
    frame = pd.DataFrame(
        {
            name: values,
            "client_id": [f"K{i:04d}" for i in range(50)],
            "plan": ["basic", "plus"] * 25,
            "Churn": ["Yes", "No", "No", "No", "No"] * 10,
        }
    )
    text, contract = _draft(frame, tmp_path)
    assert contract.id == "client_id"
    assert name in contract.drop and why in _comment(text, name)


def test_ranges_leave_room_so_the_same_source_s_other_file_is_not_refused(
    tmp_path: Path,
) -> None:
    train, other = exports.telecom(), exports.telecom_20()
    numbers = [c for c in train.columns if train[c].dtype.kind in "if"]
    # the other file goes past the first one's largest values: the sample's own maximum
    # (as drafts had it) refused some of its customers
    beyond = np.zeros(len(other), dtype=bool)
    for column in numbers:
        beyond |= (other[column] > np.ceil(train[column].max())).to_numpy()
    assert beyond.sum() >= 3

    text, contract = _draft(train, tmp_path)
    for column in numbers:
        name = contract.rename.get(column, column)
        spec = contract.features[name]
        assert spec.min == 0  # nothing negative seen
        assert spec.max is not None and spec.max >= 1.5 * train[column].max()
        seen = f"{train[column].min():g} to {train[column].max():g}"
        assert _comment(text, name).replace(",", "") == f"seen {seen}", name
    report = check_data(write_customers(other, tmp_path / "other.csv"), contract)
    assert report.passed, report.lines()


def test_a_0_1_flag_keeps_its_exact_range(tmp_path: Path) -> None:
    text, contract = _draft(exports.bank(), tmp_path)
    flag = contract.features["HasCrCard"]
    assert (flag.min, flag.max) == (0, 1) and _comment(text, "HasCrCard") == "a 0/1 flag"


def test_a_negative_number_gets_room_below_as_well(tmp_path: Path) -> None:
    text, contract = _draft(exports.ibm_telco_33(), tmp_path)
    longitude = contract.features["Longitude"]
    assert longitude.min == -250 and longitude.max == 0  # seen -124.8 to -114.2
    assert _comment(text, "Longitude").startswith("seen -124.")


def test_a_many_level_category_is_kept_and_nearly_unique_text_is_dropped(
    tmp_path: Path,
) -> None:
    text, contract = _draft(exports.telecom(), tmp_path)
    state = contract.features["State"]  # was dropped as "free text or PII"
    assert state.type == "category" and state.levels is None  # learned, 51 of them
    assert _comment(text, "State").startswith("51 levels, learned from the training rows")
    assert "phone number" in contract.drop
    assert "a phone number" in _comment(text, "phone number")

    text, contract = _draft(exports.ibm_telco_33(), tmp_path)
    assert "Lat Long" in contract.drop  # a name no rule knows, unique per row
    assert _comment(text, "Lat Long").startswith("nearly unique text (2,000 values in 2,000 rows)")
    assert contract.features["City"].levels is not None  # 20 cities: listed


def test_a_category_with_more_levels_than_a_contract_holds_is_dropped(tmp_path: Path) -> None:
    rows = 2600
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(rows)],
            "zip": [f"Z{i % 1300}" for i in range(rows)],  # two customers each: not unique
            "plan": ["basic", "plus"] * (rows // 2),
            "churned": (["yes"] + ["no"] * 3) * (rows // 4) + ["no"] * (rows % 4),
        }
    )
    text, contract = _draft(frame, tmp_path)
    assert "zip" in contract.drop
    assert _comment(text, "zip").startswith("1,300 distinct values: more levels than a category")


def test_constant_columns_are_dropped_with_the_reason(tmp_path: Path) -> None:
    text, contract = _draft(exports.ibm_telco_33(), tmp_path)
    assert {"Count", "Country", "State"} <= set(contract.drop)
    assert not {"Count", "Country", "State"} & set(contract.features)
    assert _comment(text, "Country") == (
        "the same value ('United States') in every row: nothing to learn"
    )


def test_segments_are_suggested_from_what_a_campaign_plans_by(tmp_path: Path) -> None:
    text, contract = _draft(exports.ibm_telco(), tmp_path)
    assert contract.segments == ("Contract", "PaymentMethod")  # not gender, not 2-level flags
    assert "# churn_scores ranks each combination of their levels" in text
    _, bank = _draft(exports.bank(), tmp_path)
    assert bank.segments == ("Geography",)  # Gender has 2 levels too, and is not suggested
    small = exports.ibm_telco(200)
    _, few = _draft(small, tmp_path)
    assert few.segments == ("Contract",)  # 3 x 4 combinations need 240 customers


def test_a_column_that_alone_gives_the_target_away_is_dropped_as_leakage(
    tmp_path: Path,
) -> None:
    frame = exports.ibm_telco()
    rng = np.random.default_rng(0)
    churned = (frame["Churn"] == "Yes").to_numpy()
    # a CRM status updated when the customer left, and a field filled only for leavers
    frame["Account Status"] = np.where(churned, "Closed", "Open")
    frame["Days Since Cancel"] = np.where(churned, rng.integers(1, 90, len(frame)), "")
    # strong but not perfect: 97% of churners and no stayer have it (AUC 0.985)
    frame["Promo"] = np.where(churned & (rng.random(len(frame)) < 0.97), "A", "B")
    text, contract = _draft(frame, tmp_path)
    assert {"Account Status", "Days Since Cancel"} <= set(contract.drop)
    assert _comment(text, "Account Status").startswith(
        "alone it separates churners from stayers (AUC 1.000)"
    )
    assert "Promo" in contract.features
    assert "Days_Since_Cancel" not in contract.rename.values()


def test_a_sample_with_few_churners_is_not_searched_for_leakage(tmp_path: Path) -> None:
    frame = exports.ibm_telco(60)
    frame["Account Status"] = np.where(frame["Churn"] == "Yes", "Closed", "Open")
    text, contract = _draft(frame, tmp_path)
    assert "Account_Status" in contract.features
    assert "# too few churners or stayers (under 20 of either)" in text


@pytest.mark.parametrize("name", sorted(exports.EXPORTS))
def test_each_draft_loads_and_passes_the_data_checks_on_its_own_export(
    tmp_path: Path, name: str
) -> None:
    export = write_customers(exports.EXPORTS[name](), tmp_path / name)
    contract = parse_contract(infer_contract(export), "draft")
    report = check_data(export, contract)
    assert report.passed, report.lines()
    assert report.rows == len(pd.read_csv(export))
