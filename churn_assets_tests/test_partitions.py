"""A table judged and cleaned a partition at a time is judged and cleaned as one pass over it:
the same verdicts (counts, first offending value and line, figures, order) and the same
customers, whichever partition a problem or a duplicate ID falls in."""

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churn_assets.ml.data import cleaning, validation
from churn_assets.ml.data.contract import default_contract, load_contract
from churn_assets.ml.data.reading import read_customer_csv
from churn_assets.ml.data.synthetic import (
    generate_customers,
    generate_for_contract,
    write_customers,
)

TELCO = default_contract()
BANK = load_contract(Path(__file__).parent / "contracts" / "bank_no_id.yaml")
CUTS = [0, 1000, 2000, 3000]


def _parts(frame: pd.DataFrame) -> list[pd.DataFrame]:
    return [frame.iloc[a:b] for a, b in itertools.pairwise(CUTS)]


def _verdicts(results: list[validation.RuleResult]) -> list[tuple[str, list[Any], Any]]:
    return [(r.rule.name, [v.as_row() for v in r.violations], r.figures) for r in results]


def _by_partition(frame: pd.DataFrame, **kwargs: Any) -> list[validation.RuleResult]:
    checks = [validation.check_partition(part, TELCO, int(part.index[0])) for part in _parts(frame)]
    return validation.merge(checks[::-1], TELCO, **kwargs)  # merged in any order


@pytest.fixture
def export() -> pd.DataFrame:
    """3,000 customers as read (text), with problems spread over three partitions."""
    frame = generate_customers(3000, 11).astype(str)
    frame.loc[2500, "customerID"] = ""  # blank ID: only the last partition
    frame.loc[10, "customerID"] = "X" * 300  # too long: the first
    frame.loc[2999, "customerID"] = frame.loc[5, "customerID"]  # a duplicate across partitions
    frame.loc[[1200, 2100], "TotalCharges"] = ["abc", "n/a"]  # two partitions, first in the 2nd
    frame.loc[500, "Contract"] = "Forever"  # a level outside: the first partition ...
    frame.loc[2200, "Contract"] = ""  # ... blank, tested before it, only in the last
    frame.loc[1500, "MonthlyCharges"] = "999"  # above the plausible maximum
    frame.loc[2700, "Churn"] = "Maybe"
    return frame


def test_validation_by_partition_is_validation_of_the_whole(export: pd.DataFrame) -> None:
    whole = validation.validate(export, TELCO)
    assert not all(r.passed for r in whole)
    assert _verdicts(_by_partition(export)) == _verdicts(whole)
    levels = next(r for r in whole if r.rule is validation.CATEGORY_LEVELS).violations
    assert [(v.problem, v.line) for v in levels] == [
        ("are blank", 2202),
        ("have a level outside ['Month-to-month', 'One year', 'Two year']", 502),
    ]
    ids = next(r for r in whole if r.rule is validation.CUSTOMER_IDS)
    assert ids.figures["duplicate_ids"] == 1


@pytest.mark.parametrize("churn", ["No", "Yes"])
def test_one_class_in_every_partition_is_judged_on_the_whole(churn: str) -> None:
    frame = generate_customers(3000, 12).astype(str).assign(Churn=churn)
    whole = validation.validate(frame, TELCO)
    assert _verdicts(_by_partition(frame)) == _verdicts(whole)
    target = next(r for r in whole if r.rule is validation.TARGET_CODES)
    assert not target.passed and target.violations[0].count == 3000
    # a partition of one class is no problem when the table has both
    mixed = generate_customers(3000, 12).astype(str)
    mixed.loc[:999, "Churn"] = "No"
    assert _verdicts(_by_partition(mixed)) == _verdicts(validation.validate(mixed, TELCO))


def test_cleaning_by_partition_is_cleaning_of_the_whole(export: pd.DataFrame) -> None:
    frame = generate_customers(3000, 11)
    frame.loc[2999, "customerID"] = frame.loc[5, "customerID"]  # the later row is kept
    frame.loc[1999, "customerID"] = frame.loc[1998, "customerID"]  # within one partition
    whole, report = cleaning.clean_customers(frame.astype(str), TELCO)
    parts = [cleaning.clean_partition(part.astype(str), TELCO) for part in _parts(frame)]
    merged, merged_report = cleaning.merge_cleaned(parts, TELCO)
    pd.testing.assert_frame_equal(merged, whole)
    assert merged_report == report and report.duplicate_ids_dropped == 2
    kept = whole.set_index("customerID").loc[frame.loc[5, "customerID"]]
    assert kept["MonthlyCharges"] == float(frame.loc[2999, "MonthlyCharges"])


def test_categories_learned_from_the_data_are_one_set_across_partitions(tmp_path: Path) -> None:
    # a contract without listed levels, without an ID (a row hash stands in)
    frame = generate_for_contract(BANK, 3000, 13)
    frame["Geography"] = np.where(np.arange(3000) < 1000, "France", "Spain")
    frame.loc[2500, "Geography"] = "Germany"
    raw = read_customer_csv(write_customers(frame, tmp_path / "bank.csv"), None, BANK)
    whole, report = cleaning.clean_customers(raw, BANK)
    parts = [cleaning.clean_partition(part, BANK) for part in _parts(raw)]
    merged, merged_report = cleaning.merge_cleaned(parts, BANK)
    pd.testing.assert_frame_equal(merged, whole)
    assert list(merged["Geography"].cat.categories) == ["France", "Germany", "Spain"]
    assert merged_report == report
