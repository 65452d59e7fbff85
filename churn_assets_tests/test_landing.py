"""The landing folder: which files are ready, and how an extract joins the snapshot."""

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from churn_assets.ml import schema
from churn_assets.ml.cleaning import CustomerDataError, read_customer_csv
from churn_assets.ml.files import replacing
from churn_assets.ml.landing import LandingCursor, merge_extract, ready_extracts
from churn_assets.ml.synthetic import generate_customers, write_customers

SETTLED = 60.0


def _age(path: Path, seconds: float) -> Path:
    """Backdate a file as if it had been written `seconds` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def _extract(path: Path, rows: int, seed: int, age: float = 2 * SETTLED) -> Path:
    return _age(write_customers(generate_customers(rows, seed), path), age)


def _copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return _age(target, 2 * SETTLED)


def test_ready_extracts_are_settled_unseen_csv_files_oldest_first(tmp_path: Path) -> None:
    older = _extract(tmp_path / "b_monday.csv", 50, 1, age=300)
    newer = _extract(tmp_path / "a_tuesday.csv", 50, 2, age=200)
    _extract(tmp_path / "still_copying.csv", 50, 3, age=0)  # modified just now
    _extract(tmp_path / "upload.csv.part", 50, 4)
    _extract(tmp_path / ".hidden.csv", 50, 5)
    _extract(tmp_path / "notes.txt", 50, 6)

    cursor = LandingCursor()
    ready = ready_extracts(tmp_path, cursor, SETTLED).ready
    assert [f.path for f in ready] == [older, newer]
    assert set(cursor.hashes) == {"b_monday.csv", "a_tuesday.csv"}


def test_seen_content_never_comes_back_even_under_another_name(tmp_path: Path) -> None:
    first = _extract(tmp_path / "week1.csv", 50, 1)
    cursor = LandingCursor()
    (landed,) = ready_extracts(tmp_path, cursor, SETTLED).ready
    cursor.mark_seen(landed.sha256)
    restored = LandingCursor.from_json(cursor.to_json())  # as after a daemon restart
    assert ready_extracts(tmp_path, restored, SETTLED).ready == []

    _copy(first, tmp_path / "week1_copy.csv")
    assert ready_extracts(tmp_path, restored, SETTLED).ready == []

    _extract(first, 60, 9)  # new content under the old name is a new extract
    (again,) = ready_extracts(tmp_path, restored, SETTLED).ready
    assert again.path == first and again.sha256 != landed.sha256


def test_two_files_with_the_same_content_are_one_extract(tmp_path: Path) -> None:
    first = _extract(tmp_path / "a.csv", 50, 1)
    _copy(first, tmp_path / "b.csv")
    assert [f.path.name for f in ready_extracts(tmp_path, LandingCursor(), SETTLED).ready] == [
        "a.csv"
    ]


def test_missing_landing_folder_is_nothing_to_do(tmp_path: Path) -> None:
    assert ready_extracts(tmp_path / "absent", LandingCursor(), SETTLED).ready == []


def _snapshot(tmp_path: Path, rows: int = 200) -> tuple[Path, pd.DataFrame]:
    frame = generate_customers(rows, 42)
    return write_customers(frame, tmp_path / "snapshot.csv"), frame


def _ids(path: Path) -> list[str]:
    return read_customer_csv(path, "")[schema.ID_COLUMN].tolist()


def test_extract_upserts_by_customer_id_and_newest_row_wins(tmp_path: Path) -> None:
    snapshot, frame = _snapshot(tmp_path)
    updated = frame.head(3).copy()
    updated["MonthlyCharges"] = ["11.11", "22.22", "33.33"]
    newcomers = generate_customers(5, 7)
    first_version = newcomers.head(1).assign(MonthlyCharges="1.00")
    extract = pd.concat([first_version, updated, newcomers], ignore_index=True)
    extract["source_system"] = "billing"  # a column outside the schema
    path = write_customers(extract, tmp_path / "incoming.csv")

    report, cleaned = merge_extract(snapshot, path)

    merged = read_customer_csv(snapshot, "")
    assert list(merged.columns) == list(schema.RAW_COLUMNS)
    assert len(merged) == 205 and merged[schema.ID_COLUMN].is_unique
    charges = pd.to_numeric(merged.set_index(schema.ID_COLUMN)["MonthlyCharges"])
    for customer, value in zip(updated[schema.ID_COLUMN], [11.11, 22.22, 33.33], strict=True):
        assert charges[customer] == value
    first_id = newcomers[schema.ID_COLUMN].iloc[0]
    assert charges[first_id] == newcomers["MonthlyCharges"].iloc[0]  # the later row won
    untouched = frame.iloc[3:].set_index(schema.ID_COLUMN)["MonthlyCharges"]
    assert (charges[untouched.index] == untouched).all()
    assert (report.new_customers, report.updated_customers) == (5, 3)
    assert (report.extract_rows, report.duplicate_ids_in_extract) == (9, 1)
    assert (report.snapshot_rows_before, report.snapshot_rows_after) == (200, 205)
    assert report.extra_columns == ["source_system"]
    assert len(cleaned) == 8 and cleaned["MonthlyCharges"].dtype == float
    assert snapshot.read_bytes().count(b"\r\n") == 206  # still the export's CRLF format


def test_first_extract_starts_a_missing_snapshot(tmp_path: Path) -> None:
    path = _extract(tmp_path / "first.csv", 30, 3)
    snapshot = tmp_path / "new" / "snapshot.csv"
    report, _ = merge_extract(snapshot, path)
    assert _ids(snapshot) == _ids(path)
    assert (report.snapshot_rows_before, report.new_customers) == (0, 30)


def test_an_extract_of_customers_who_all_stayed_is_accepted(tmp_path: Path) -> None:
    snapshot, _ = _snapshot(tmp_path)
    stayers = generate_customers(40, 5).assign(Churn="No")
    report, _ = merge_extract(snapshot, write_customers(stayers, tmp_path / "stayers.csv"))
    assert report.snapshot_rows_after == 240


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: f.drop(columns=["Contract"]), "missing required column(s) 'Contract'"),
        (
            lambda f: f.assign(Contract=["Bi-annual", *f["Contract"].tolist()[1:]]),
            "column 'Contract': 1 row(s) have a level outside",
        ),
        (lambda f: f.assign(tenure="abc"), "column 'tenure': 20 row(s) are not numbers"),
        (lambda f: f.iloc[0:0], "has a header but no customer rows"),
    ],
    ids=["missing-column", "unknown-level", "not-a-number", "header-only"],
)
def test_malformed_extract_is_rejected_and_the_snapshot_stays(
    tmp_path: Path, damage, expected: str
) -> None:
    snapshot, _ = _snapshot(tmp_path)
    before = snapshot.read_bytes()
    bad = write_customers(damage(generate_customers(20, 8)), tmp_path / "bad.csv")
    with pytest.raises(CustomerDataError) as error:
        merge_extract(snapshot, bad)
    assert "extract bad.csv rejected" in str(error.value)
    assert expected in str(error.value)
    assert snapshot.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".snap")) in (
        [],
        [".snapshot.csv.lock"],
    )


def test_unknown_level_error_names_the_line_column_and_value_only(tmp_path: Path) -> None:
    snapshot, _ = _snapshot(tmp_path)
    frame = generate_customers(20, 8)
    frame.loc[6, "PaymentMethod"] = "Bitcoin"
    bad = write_customers(frame, tmp_path / "week7.csv")
    with pytest.raises(CustomerDataError, match=r"extract week7\.csv rejected") as error:
        merge_extract(snapshot, bad)
    assert "'Bitcoin' at line 8" in str(error.value)
    # the row's other content (its customerID included) stays out of logs and run failures
    assert frame.loc[6, schema.ID_COLUMN] not in str(error.value)
    assert "was not changed" in str(error.value)


def test_file_changed_since_the_sensor_saw_it_is_refused(tmp_path: Path) -> None:
    snapshot, _ = _snapshot(tmp_path)
    before = snapshot.read_bytes()
    path = _extract(tmp_path / "moving.csv", 20, 1)
    with pytest.raises(CustomerDataError, match="changed since it was picked up"):
        merge_extract(snapshot, path, expected_sha256="0" * 64)
    assert snapshot.read_bytes() == before


def test_replacing_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "scores.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), replacing(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]
    with replacing(target) as temporary:
        temporary.write_text("new\n")
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o044  # readable by others, as a plain write makes it


def test_the_next_merge_removes_what_a_killed_merge_left(tmp_path: Path) -> None:
    snapshot, _ = _snapshot(tmp_path)
    # what `replacing` leaves when its process is killed mid-write: a hidden half file
    leftover = snapshot.with_name(f".{snapshot.name}.4242.139.tmp")
    leftover.write_text("customerID,gender\r\nhalf-writ")
    merge_extract(snapshot, _extract(tmp_path / "week.csv", 10, 5))
    assert not leftover.exists()
    assert sorted(p.name for p in snapshot.parent.glob(f".{snapshot.name}*")) == [
        f".{snapshot.name}.lock"
    ]
