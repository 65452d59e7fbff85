"""Cleaning handles the export's quirks and names the column and row of anything it rejects."""

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn_assets.ml.data import reading, validation
from churn_assets.ml.data.cleaning import clean_customers
from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.reading import SOURCE_SHA256, CustomerDataError, read_customer_csv
from churn_assets.ml.data.synthetic import generate_customers, write_customers

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
    with pytest.raises(CustomerDataError, match=r"column 'Churn'.* all stayed.*'No' at line 2"):
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


def _verdicts(frame: pd.DataFrame) -> dict[str, bool]:
    return {r.rule.name: r.passed for r in validation.validate(frame, TELCO)}


ALL_PASS = {rule.name: True for rule in validation.RULES}


def test_each_data_rule_fails_on_its_own(raw: pd.DataFrame) -> None:
    assert _verdicts(raw) == ALL_PASS
    broken = raw.astype(str)
    broken.loc[0, "MonthlyCharges"] = "abc"  # a type: the range rule skips what is no number
    broken.loc[1, "tenure"] = "500"
    broken["Churn"] = "No"
    broken.loc[2, "Churn"] = "Yes"  # both classes, but a churn rate of 0.05%
    assert _verdicts(broken) == {
        **ALL_PASS,
        "value_types": False,
        "value_ranges": False,
        "churn_rate_plausible": False,
    }
    missing = raw.drop(columns=["gender"])  # the other rules judge the columns that are there
    assert _verdicts(missing) == {**ALL_PASS, "required_columns": False}
    levels = raw.astype(str).assign(Contract="Monthly")
    assert _verdicts(levels) == {**ALL_PASS, "category_levels": False}
    everyone = raw.assign(Churn="Yes")
    assert _verdicts(everyone) == {**ALL_PASS, "target_codes": False, "churn_rate_plausible": False}
    ids = raw.astype(str)
    ids.loc[5, "customerID"] = " "
    assert _verdicts(ids) == {**ALL_PASS, "customer_ids": False}


def test_a_violation_names_column_rows_value_and_line(raw: pd.DataFrame) -> None:
    broken = raw.astype(str)
    broken.loc[[40, 41], "tenure"] = "-3"
    ranges = {r.rule.name: r for r in validation.validate(broken, TELCO)}["value_ranges"]
    (violation,) = ranges.violations
    assert (violation.column, violation.count, violation.value, violation.line) == (
        "tenure",
        2,
        "'-3'",
        42,
    )
    assert "are below the minimum 0" in violation.message()


RECORDS = [
    (b'a,b,c\r\n1,2,3\r\n\r\n4,"5,x\ny",6\n7,8,9', None),  # quoted comma and newline, blank line
    (b"a,b,c\n1,2,3\n4,5,6,7\n", "line 3 has 4 field(s) where the header (line 1) has 3"),
    (b'a,b,c\n1,"2\n",3\n4,5\n', "line 4 has 2 field(s) where the header (line 1) has 3"),
    (b'a,b\n"x""y",2\n', None),  # an escaped quote
    (b"a,b\n1,2\n3", "line 3 has 1 field(s) where the header (line 1) has 2"),  # cut off
    (b"a,b\r\n1,2\r\n\r\n\r\n3,4\r\n", None),
    (b'a,b\r\n"1\r\n",2\r\n', None),
]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 1 << 22])
def test_field_counts_do_not_depend_on_where_chunks_end(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Pandas does not count fields of columns it is not asked to read; the scan that does
    must give the same verdict however the file falls into chunks ("\\r\\n" split included)."""
    monkeypatch.setattr(reading, "_SCAN_CHUNK", chunk)
    for data, problem in RECORDS:
        if problem is None:
            reading._check_field_counts(io.BytesIO(data), Path("f.csv"))
        else:
            with pytest.raises(CustomerDataError, match=re.escape(problem)):
                reading._check_field_counts(io.BytesIO(data), Path("f.csv"))
