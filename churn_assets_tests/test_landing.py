"""The landing folder: which files are ready, and how an extract joins the snapshot."""

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from churn_assets.ml.data.contract import HISTORY_COLUMNS, default_contract
from churn_assets.ml.data.landing import LandingCursor, merge_extract, ready_extracts
from churn_assets.ml.data.reading import CustomerDataError, read_customer_csv
from churn_assets.ml.data.snapshots import LEFTOVER_AGE_S, SnapshotInfo, SnapshotStore
from churn_assets.ml.data.synthetic import generate_customers, write_customers
from churn_assets.ml.files import replacing
from churn_assets_tests.conftest import local_store, seeded_store

TELCO = default_contract()

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


def _snapshot(tmp_path: Path, rows: int = 200) -> tuple[SnapshotStore, pd.DataFrame]:
    frame = generate_customers(rows, 42)
    return seeded_store(tmp_path, frame), frame


def _ids(path: Path) -> list[str]:
    return read_customer_csv(path, "", TELCO)[TELCO.id_column].tolist()


def _current(store: SnapshotStore) -> pd.DataFrame:
    current = store.current_id()
    assert current is not None
    return store.read(current)


def test_extract_upserts_by_customer_id_and_newest_row_wins(tmp_path: Path) -> None:
    store, frame = _snapshot(tmp_path)
    seed = store.current()
    updated = frame.head(3).copy()
    updated["MonthlyCharges"] = ["11.11", "22.22", "33.33"]
    newcomers = generate_customers(5, 7)
    first_version = newcomers.head(1).assign(MonthlyCharges="1.00")
    extract = pd.concat([first_version, updated, newcomers], ignore_index=True)
    extract["source_system"] = "billing"  # a column outside the schema
    path = write_customers(extract, tmp_path / "incoming.csv")

    report, cleaned = merge_extract(store, path)

    merged = _current(store)
    assert list(merged.columns) == [*TELCO.columns, *HISTORY_COLUMNS]
    assert len(merged) == 205 and merged[TELCO.id_column].is_unique
    charges = pd.to_numeric(merged.set_index(TELCO.id_column)["MonthlyCharges"])
    for customer, value in zip(updated[TELCO.id_column], [11.11, 22.22, 33.33], strict=True):
        assert charges[customer] == value
    first_id = newcomers[TELCO.id_column].iloc[0]
    assert charges[first_id] == newcomers["MonthlyCharges"].iloc[0]  # the later row won
    untouched = frame.iloc[3:].set_index(TELCO.id_column)["MonthlyCharges"]
    assert (charges[untouched.index] == untouched).all()
    assert (report.new_customers, report.updated_customers) == (5, 3)
    assert (report.extract_rows, report.duplicate_ids_in_extract) == (9, 1)
    assert (report.snapshot_rows_before, report.snapshot_rows_after) == (200, 205)
    assert report.extra_columns == ["source_system"]
    assert len(cleaned) == 8 and cleaned["MonthlyCharges"].dtype == float
    # a new snapshot, named by its content; the one before it is still there, unchanged
    assert seed is not None and report.snapshot.parent == seed.id
    assert (report.snapshot.kind, report.snapshot.source) == ("merge", "incoming.csv")
    assert store.current_id() == report.snapshot.id != seed.id
    pd.testing.assert_frame_equal(
        store.read(seed.id)[list(TELCO.columns)], frame.astype(str), check_dtype=False
    )
    assert [s.id for s in store.all()] == [seed.id, report.snapshot.id]


def test_first_extract_starts_a_missing_snapshot(tmp_path: Path) -> None:
    path = _extract(tmp_path / "first.csv", 30, 3)
    store = local_store(tmp_path / "new")
    report, _ = merge_extract(store, path)
    assert _current(store)[TELCO.id_column].tolist() == _ids(path)
    assert (report.snapshot_rows_before, report.new_customers) == (0, 30)
    assert report.snapshot.parent is None


def test_an_extract_of_customers_who_all_stayed_is_accepted(tmp_path: Path) -> None:
    store, _ = _snapshot(tmp_path)
    stayers = generate_customers(40, 5).assign(Churn="No")
    report, _ = merge_extract(store, write_customers(stayers, tmp_path / "stayers.csv"))
    assert report.snapshot_rows_after == 240


def test_the_same_content_is_one_snapshot(tmp_path: Path) -> None:
    store, frame = _snapshot(tmp_path)
    seed = store.current_id()
    # an extract that changes nothing: same rows, so the same content address
    report, _ = merge_extract(store, write_customers(frame.head(10), tmp_path / "same.csv"))
    assert report.snapshot.id == seed and len(store.all()) == 1


def _unchanged(store: SnapshotStore, before: list[SnapshotInfo], current: str | None) -> None:
    assert store.all() == before and store.current_id() == current
    root = Path(store.uri.removeprefix("file://"))
    assert [p.name for p in root.rglob("*.tmp")] == []


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
    store, _ = _snapshot(tmp_path)
    before, current = store.all(), store.current_id()
    bad = write_customers(damage(generate_customers(20, 8)), tmp_path / "bad.csv")
    with pytest.raises(CustomerDataError) as error:
        merge_extract(store, bad)
    assert "extract bad.csv rejected" in str(error.value)
    assert expected in str(error.value)
    assert f"the current snapshot {before[0].short_id} was not changed" in str(error.value)
    _unchanged(store, before, current)


def test_unknown_level_error_names_the_line_column_and_value_only(tmp_path: Path) -> None:
    store, _ = _snapshot(tmp_path)
    frame = generate_customers(20, 8)
    frame.loc[6, "PaymentMethod"] = "Bitcoin"
    bad = write_customers(frame, tmp_path / "week7.csv")
    with pytest.raises(CustomerDataError, match=r"extract week7\.csv rejected") as error:
        merge_extract(store, bad)
    assert "'Bitcoin' at line 8" in str(error.value)
    # the row's other content (its customerID included) stays out of logs and run failures
    assert frame.loc[6, TELCO.id_column] not in str(error.value)
    assert "was not changed" in str(error.value)


def test_file_changed_since_the_sensor_saw_it_is_refused(tmp_path: Path) -> None:
    store, _ = _snapshot(tmp_path)
    before, current = store.all(), store.current_id()
    path = _extract(tmp_path / "moving.csv", 20, 1)
    with pytest.raises(CustomerDataError, match="changed since it was picked up"):
        merge_extract(store, path, expected_sha256="0" * 64)
    _unchanged(store, before, current)


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
    store, _ = _snapshot(tmp_path)
    # what a write leaves when its process is killed before the move: a temporary sibling,
    # untouched since (a younger one may be another writer's write in progress)
    root = Path(store.uri.removeprefix("file://"))
    leftover = root / "data" / f"{'0' * 64}.parquet.4242.tmp"
    leftover.write_bytes(b"PAR1half-writ")
    then = time.time() - LEFTOVER_AGE_S - 60
    os.utime(leftover, (then, then))
    merge_extract(store, _extract(tmp_path / "week.csv", 10, 5))
    assert not leftover.exists()
    assert len(store.all()) == 2
