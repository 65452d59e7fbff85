"""A table judged and cleaned a partition at a time is judged and cleaned as one pass over it:
the same verdicts (counts, first offending value and line, figures, order) and the same
customers, whichever partition a problem or a duplicate ID falls in."""

import dataclasses
import itertools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churn_assets.ml import stores
from churn_assets.ml.cluster.runners import InProcess
from churn_assets.ml.data import cleaning, partitioned, splitting, validation
from churn_assets.ml.data.contract import default_contract, load_contract
from churn_assets.ml.data.reading import read_customer_csv
from churn_assets.ml.data.synthetic import (
    generate_customers,
    generate_for_contract,
    write_customers,
)
from churn_assets_tests.conftest import cleaned_table, local_store

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


def test_a_cleaned_table_on_the_store_is_cleaning_of_the_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cleaned partitions written to files, read back one at a time: the whole table's rows,
    levels, counts and report, an ID held by two partitions kept from the later one only."""
    frame = generate_customers(3000, 11)
    frame.loc[2999, "customerID"] = frame.loc[5, "customerID"]  # partitions 1 and 3
    frame.loc[1500, "customerID"] = frame.loc[700, "customerID"]  # partitions 1 and 2
    frame.loc[1999, "customerID"] = frame.loc[1998, "customerID"]  # within partition 2
    table = cleaned_table(frame, tmp_path, 1000, monkeypatch)
    snapshot = local_store(tmp_path).read(table.snapshot_id, categorical=True)
    whole, report = cleaning.clean_customers(snapshot, TELCO)
    assert table.partitions == 3
    assert sorted(p.name for p in (tmp_path / "cleaned").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    pd.testing.assert_frame_equal(table.read(), whole)
    assert table.report == report and report.duplicate_ids_dropped == 3
    assert table.rows == len(whole)
    assert table.class_counts == tuple(np.bincount(whole["Churn"], minlength=2))
    assert table.superseded == {0: frozenset(frame.loc[[5, 700], "customerID"])}


def test_levels_found_per_partition_are_the_tables_on_every_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = generate_for_contract(BANK, 3000, 13)
    frame["Geography"] = np.where(np.arange(3000) < 1000, "France", "Spain")
    frame.loc[2500, "Geography"] = "Germany"
    raw = read_customer_csv(write_customers(frame, tmp_path / "bank.csv"), None, BANK)
    table = cleaned_table(raw, tmp_path, 1000, monkeypatch, BANK)
    first = table.read_partition(0)
    assert set(first["Geography"]) == {"France"}
    assert list(first["Geography"].cat.categories) == ["France", "Germany", "Spain"]
    whole = cleaning.clean_customers(raw, BANK)[0]
    pd.testing.assert_frame_equal(table.read()[whole.columns], whole)


@pytest.mark.parametrize(
    "caps",
    [splitting.SplitCaps(), splitting.SplitCaps(1_000, 300), splitting.SplitCaps(1_000, 1_000)],
    ids=["uncapped", "both sampled", "holdout whole"],
)
def test_a_split_by_partition_is_the_split_of_the_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caps: splitting.SplitCaps
) -> None:
    table = cleaned_table(generate_customers(6000, 17), tmp_path, 1000, monkeypatch)
    whole = splitting.split_customers(table.read(), TELCO, 0.2, 42, caps)
    split = partitioned.split_table(table, InProcess(), 0.2, 42, caps)
    pd.testing.assert_frame_equal(split.train, whole.train)
    pd.testing.assert_frame_equal(split.holdout, whole.holdout)
    assert (split.train_available, split.holdout_available) == (
        whole.train_available,
        whole.holdout_available,
    )
    assert split.train_available + split.holdout_available == 6000
    assert len(split.train) == min(caps.train_rows, split.train_available)
    assert len(split.holdout) == min(caps.holdout_rows, split.holdout_available)
    rate = (table.class_counts[1]) / table.rows
    assert split.train["Churn"].mean() == pytest.approx(rate, abs=0.02)
    assert split.snapshot_id == table.snapshot_id


def test_a_key_bound_set_too_tight_is_widened_never_a_short_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounds come from the table's class counts; counts far above the truth make them send
    too few customers, and the split retries wider until the sample is whole."""
    table = cleaned_table(generate_customers(4000, 19), tmp_path, 1000, monkeypatch)
    caps = splitting.SplitCaps(800, 200)
    with pytest.raises(splitting.SampleShortfallError):
        tight = np.zeros((2, 2), dtype=np.uint64)
        part = splitting.split_part(table.read(), TELCO, 0.2, 42, tight)
        splitting.merge_split([part], TELCO, 0.2, 42, caps, table.snapshot_id)
    misjudged = dataclasses.replace(table, class_counts=(10**9, 10**9))
    split = partitioned.split_table(misjudged, InProcess(), 0.2, 42, caps)
    whole = splitting.split_customers(table.read(), TELCO, 0.2, 42, caps)
    pd.testing.assert_frame_equal(split.train, whole.train)
    pd.testing.assert_frame_equal(split.holdout, whole.holdout)


def test_a_table_sent_to_a_worker_carries_no_credentials_and_opens_with_the_workers_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tables reach Dask workers pickled: the store's secret stays behind, and the worker
    opens the files with the credentials of its own environment when it reads them."""
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "churn")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-drivers-secret")
    table = cleaned_table(generate_customers(2000, 23), tmp_path, 1000, monkeypatch)
    sent = pickle.dumps(table)
    assert b"the-drivers-secret" not in sent
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-workers-secret")
    received = pickle.loads(sent)
    assert received.open_location is stores.open_location
    s3 = received.open_location("s3://churn/runs").s3
    assert s3 is not None and s3.secret_key is not None
    assert s3.secret_key.get_secret_value() == "the-workers-secret"
    pd.testing.assert_frame_equal(received.read(), table.read())
