"""Cleaning handles the export's quirks and names the column and row of anything it rejects."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn_assets.ml import quality
from churn_assets.ml.cleaning import (
    SOURCE_SHA256,
    CustomerDataError,
    clean_customers,
    read_customer_csv,
)
from churn_assets.ml.contract import default_contract
from churn_assets.ml.synthetic import generate_customers, write_customers

TELCO = default_contract()


@pytest.fixture
def raw(tmp_path: Path) -> pd.DataFrame:
    path = write_customers(generate_customers(2000, 11), tmp_path / "c.csv")
    return read_customer_csv(path, "abc", TELCO)


def test_reads_crlf_export_as_text_and_keeps_quirks(raw: pd.DataFrame) -> None:
    assert tuple(raw.columns) == TELCO.columns
    for column, dtype in raw.dtypes.items():  # text as written: strings, or categories of them
        if column in (TELCO.id_column, "MonthlyCharges", "TotalCharges"):  # nearly unique
            assert pd.api.types.is_object_dtype(dtype), column
        else:
            assert isinstance(dtype, pd.CategoricalDtype), column
            assert all(isinstance(level, str) for level in dtype.categories), column
    assert "0" in raw["SeniorCitizen"].cat.categories
    assert (raw["TotalCharges"] == " ").any()
    assert not raw["Churn"].str.endswith("\r").any()
    assert raw.attrs[SOURCE_SHA256] == "abc"


def test_clean_types_target_and_blank_total_charges(raw: pd.DataFrame) -> None:
    cleaned, report = clean_customers(raw, TELCO)
    assert list(cleaned.columns) == [TELCO.id_column, *TELCO.feature_columns, "Churn"]
    assert set(cleaned["Churn"]) == {0, 1}
    assert cleaned["TotalCharges"].dtype == np.float64
    assert cleaned["tenure"].dtype == np.int64
    assert cleaned["Contract"].dtype == "category"
    new = cleaned["tenure"] == 0
    assert report.blanks_filled["TotalCharges"] == int(new.sum()) > 0
    assert (cleaned.loc[new, "TotalCharges"] == 0).all()
    assert cleaned.attrs[SOURCE_SHA256] == "abc"
    assert all(r.passed for r in quality.evaluate_rules(cleaned, TELCO))


def test_duplicate_customer_ids_keep_the_last_row(raw: pd.DataFrame) -> None:
    newer = raw.iloc[[0]].copy()
    newer["tenure"] = "71"
    cleaned, report = clean_customers(pd.concat([raw, newer], ignore_index=True), TELCO)
    assert report.duplicate_ids_dropped == 1
    assert len(cleaned) == len(raw)
    row = cleaned[cleaned["customerID"] == raw.loc[0, "customerID"]]
    assert row["tenure"].tolist() == [71]


def _bad(raw: pd.DataFrame, row: int, column: str, value: str) -> pd.DataFrame:
    """Edit one cell; the column becomes plain text, which cleaning takes as well."""
    raw[column] = raw[column].astype(object)
    raw.loc[row, column] = value
    return raw


def test_whitespace_around_values_is_tolerated(raw: pd.DataFrame, tmp_path: Path) -> None:
    cleaned, _ = clean_customers(_bad(raw, 3, "Contract", " Two year "), TELCO)
    assert cleaned.loc[3, "Contract"] == "Two year"
    path = tmp_path / "padded.csv"
    path.write_text(path.with_name("c.csv").read_text().replace(",Two year,", ", Two year ,"))
    from_file, _ = clean_customers(read_customer_csv(path, "", TELCO), TELCO)
    assert " Two year " in read_customer_csv(path, "", TELCO)["Contract"].cat.categories
    assert set(from_file["Contract"].cat.categories) == set(TELCO.listed_levels["Contract"])
    assert (from_file["Contract"] == "Two year").sum() > 0


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("TotalCharges", "12,5O", "are not numbers"),
        ("tenure", "ten", "are not numbers"),
        ("tenure", "3.5", "are not whole numbers"),
        ("MonthlyCharges", "", "are blank"),
        ("MonthlyCharges", "-5", "below the minimum"),
        ("SeniorCitizen", "Yes", "are not numbers"),
        ("SeniorCitizen", "2", "above the plausible maximum 1"),
        ("Contract", "Monthly", "level outside"),
        ("Churn", "Maybe", "are not one of ['Yes', 'No']"),
        ("customerID", "", "are blank"),
    ],
)
def test_bad_value_names_column_value_and_line(
    raw: pd.DataFrame, column: str, value: str, message: str
) -> None:
    bad = _bad(raw, 41, column, value)
    with pytest.raises(CustomerDataError) as error:
        clean_customers(bad, TELCO)
    text = str(error.value)
    assert f"column {column!r}" in text
    assert message in text
    assert repr(value) in text
    assert "line 43" in text  # row 41 + header line + 1-based lines


def test_missing_column_is_named(raw: pd.DataFrame) -> None:
    with pytest.raises(CustomerDataError, match="missing required column\\(s\\) 'TotalCharges'"):
        clean_customers(raw.drop(columns=["TotalCharges"]), TELCO)


def test_single_class_is_rejected(raw: pd.DataFrame) -> None:
    raw["Churn"] = "No"
    with pytest.raises(CustomerDataError, match=r"column 'Churn' has a single class.*'No'.*line 2"):
        clean_customers(raw, TELCO)


def test_empty_and_header_only_files_are_rejected(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(CustomerDataError, match=r"empty\.csv is empty"):
        read_customer_csv(empty, "x", TELCO)
    header = tmp_path / "header.csv"
    header.write_text(",".join(TELCO.columns) + "\r\n")
    with pytest.raises(CustomerDataError, match="header but no customer rows"):
        read_customer_csv(header, "x", TELCO)
    with pytest.raises(CustomerDataError, match="does not exist"):
        read_customer_csv(tmp_path / "missing.csv", "x", TELCO)


def test_quality_rules_flag_broken_frames(raw: pd.DataFrame) -> None:
    cleaned, _ = clean_customers(raw, TELCO)
    broken = cleaned.copy()
    broken.loc[0, "MonthlyCharges"] = np.nan
    broken.loc[1, "tenure"] = 500
    broken["Churn"] = 0
    broken.loc[2, "Churn"] = 1
    verdicts = {r.name: r.passed for r in quality.evaluate_rules(broken, TELCO)}
    assert verdicts == {
        "required_columns": True,
        "binary_target": True,
        "churn_rate_plausible": False,
        "no_null_features": False,
        "numeric_ranges": False,
    }
    assert not quality.required_columns(broken.drop(columns=["gender"]), TELCO).passed
    assert not quality.binary_target(broken.assign(Churn=1), TELCO).passed
