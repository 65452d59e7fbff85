"""The synthetic export has the public data's schema, quirks and signal."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churn_assets.cli import main as churn_cli
from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.synthetic import generate_chunks, generate_customers, write_customers

TELCO = default_contract()


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return generate_customers(20_000, seed=7)


def test_columns_are_the_export_schema_in_order(customers: pd.DataFrame) -> None:
    assert tuple(customers.columns) == TELCO.columns
    assert len(TELCO.columns) == 21


def test_levels_and_quirks_match_the_real_export(customers: pd.DataFrame) -> None:
    for column, levels in TELCO.listed_levels.items():
        assert set(customers[column]) == set(levels), column
    assert set(customers["SeniorCitizen"]) == {0, 1}
    assert set(customers["Churn"]) == {"Yes", "No"}
    new = customers["tenure"] == 0
    assert new.any()
    assert (customers.loc[new, "TotalCharges"] == " ").all()
    assert (customers.loc[~new, "TotalCharges"] != " ").all()
    no_internet = customers["InternetService"] == "No"
    assert (customers.loc[no_internet, "TechSupport"] == "No internet service").all()
    no_phone = customers["PhoneService"] == "No"
    assert (customers.loc[no_phone, "MultipleLines"] == "No phone service").all()
    assert customers["customerID"].is_unique
    assert customers["customerID"].str.fullmatch(r"\d{4}-[A-Z]{5}").all()


def test_churn_rate_and_drivers_follow_the_public_data(customers: pd.DataFrame) -> None:
    churned = customers["Churn"] == "Yes"
    assert churned.mean() == pytest.approx(0.265, abs=0.015)
    by_contract = churned.groupby(customers["Contract"]).mean()
    assert by_contract["Month-to-month"] > by_contract["One year"] > by_contract["Two year"]
    fiber = churned[customers["InternetService"] == "Fiber optic"].mean()
    assert fiber > churned[customers["InternetService"] == "DSL"].mean()
    echeck = churned[customers["PaymentMethod"] == "Electronic check"].mean()
    assert echeck > churned[customers["PaymentMethod"] != "Electronic check"].mean()
    # tenure alone separates churners, but far from perfectly
    tenure_auc = roc_auc_score(churned, -customers["tenure"])
    assert 0.65 < tenure_auc < 0.85


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    pd.testing.assert_frame_equal(generate_customers(500, 1), generate_customers(500, 1))
    assert not generate_customers(500, 1).equals(generate_customers(500, 2))


def test_file_has_crlf_line_endings_and_blank_total_charges(tmp_path: Path) -> None:
    path = write_customers(generate_customers(3000, 3), tmp_path / "c.csv")
    content = path.read_bytes()
    assert content.count(b"\r\n") == 3001
    assert b",Yes\r\n" in content or b",No\r\n" in content
    assert b", ," in content  # TotalCharges is a single blank for tenure 0


def test_cli_writes_file_and_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "customers.csv"
    with pytest.raises(SystemExit) as done:
        churn_cli(["generate-data", "--rows", "50", "--seed", "3", "--out", str(out)])
    assert done.value.code == 0
    original = out.read_bytes()
    assert len(pd.read_csv(out)) == 50
    with pytest.raises(SystemExit, match="not overwriting"):
        churn_cli(["generate-data", "--rows", "10", "--out", str(out)])
    assert out.read_bytes() == original


def test_rows_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rows must be at least 1"):
        generate_customers(0)
    assert np.isfinite(generate_customers(1)["MonthlyCharges"]).all()


def test_chunks_make_one_table_with_unique_ids_and_the_same_signal(tmp_path: Path) -> None:
    chunks = list(generate_chunks(25_000, 7, chunk_rows=10_000))
    assert [len(c) for c in chunks] == [10_000, 10_000, 5_000]
    # the first chunk is the table of that size; the others are new customers, not copies
    pd.testing.assert_frame_equal(chunks[0], generate_customers(10_000, 7))
    table = pd.concat(chunks)
    assert table["customerID"].is_unique and table.index.equals(pd.RangeIndex(25_000))
    assert not chunks[1].drop(columns="customerID").equals(chunks[0].drop(columns="customerID"))
    for chunk in chunks:
        assert abs((chunk["Churn"] == "Yes").mean() - 0.265) < 0.02
    # written one after another, they are one export with one header
    path = write_customers(iter(chunks), tmp_path / "c.csv")
    assert path.read_bytes().count(b"customerID") == 1
    pd.testing.assert_frame_equal(
        pd.read_csv(path, dtype=str, keep_default_na=False),
        table.astype(str).reset_index(drop=True),
    )
