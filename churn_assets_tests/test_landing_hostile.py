"""Hostile and careless files in the landing folder, each beside a good extract.

Every case checks the same promises: the bad file is refused with its name, line and the
unchanged-snapshot sentence; no content of it other than the offending column and value is
echoed; the good extract beside it is still merged; the snapshot is never half-written.
"""

import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from churn_assets.definitions import defs
from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.history import today
from churn_assets.ml.data.landing import LandingCursor, merge_extract, ready_extracts
from churn_assets.ml.data.limits import MAX_ID_CHARS, ExtractLimits
from churn_assets.ml.data.reading import CustomerDataError, read_customer_csv
from churn_assets.ml.data.snapshots import SHORT_ID, SnapshotStore
from churn_assets.ml.data.synthetic import generate_customers, write_customers
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store
from churn_assets.resources import ChurnSettingsResource
from churn_assets.sensors import incoming_extracts
from churn_assets_tests.conftest import seeded_store

TELCO = default_contract()

SECRET = "DB_PASSWORD=hunter2-do-not-print"
OLD = 600.0


def _settled(path: Path) -> Path:
    then = time.time() - OLD
    os.utime(path, (then, then), follow_symlinks=False)
    return path


def _good(folder: Path, name: str = "good.csv", seed: int = 3) -> Path:
    return _settled(write_customers(generate_customers(30, seed), folder / name))


def _secret_file(tmp_path: Path) -> Path:
    outside = tmp_path / "outside" / "credentials.csv"
    outside.parent.mkdir(exist_ok=True)
    outside.write_text(f"{SECRET}\nAPI_TOKEN=abc123\n")
    return outside


def _link_outside(folder: Path, tmp_path: Path) -> None:
    (folder / "linked.csv").symlink_to(_secret_file(tmp_path))


def _dangling_link(folder: Path, _: Path) -> None:
    (folder / "dangling.csv").symlink_to(folder / "nowhere" / "gone.csv")


def _link_loop(folder: Path, _: Path) -> None:
    (folder / "loop.csv").symlink_to(folder / "loop.csv")


def _fifo(folder: Path, _: Path) -> None:
    os.mkfifo(folder / "pipe.csv")


def _directory(folder: Path, _: Path) -> None:
    (folder / "folder.csv").mkdir()


def _too_large(folder: Path, _: Path) -> None:
    write_customers(generate_customers(400, 9), folder / "huge.csv")


@pytest.mark.parametrize(
    ("plant", "name", "reason"),
    [
        (_link_outside, "linked.csv", "is a symbolic link"),
        (_dangling_link, "dangling.csv", "is a symbolic link"),
        (_link_loop, "loop.csv", "is a symbolic link"),
        (_fifo, "pipe.csv", "is not a regular file"),
        (_directory, "folder.csv", "is not a regular file"),
        (_too_large, "huge.csv", "over the limit of 20,000"),
    ],
    ids=["link-outside", "dangling-link", "link-loop", "fifo", "directory", "too-large"],
)
def test_a_file_that_may_not_be_read_is_refused_and_the_good_one_proceeds(
    tmp_path: Path, plant: Callable[[Path, Path], None], name: str, reason: str
) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    good = _good(folder)
    plant(folder, tmp_path)
    _settled(folder / name)
    limits = ExtractLimits(max_file_bytes=20_000)
    cursor = LandingCursor()

    scan = ready_extracts(folder, cursor, 60, limits=limits)

    assert [f.path for f in scan.ready] == [good]
    (refused,) = scan.newly_refused
    assert refused.name == name and reason in refused.reason and name in refused.reason
    assert "hunter2" not in refused.reason
    # reported once; the next tick stays quiet about it and still sees the good file
    again = ready_extracts(folder, cursor, 60, limits=limits)
    assert again.newly_refused == [] and [f.path for f in again.ready] == [good]


def test_the_sensor_reports_an_unreadable_file_and_launches_the_merge_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    monkeypatch.setenv("CHURN_INCOMING_DIR", str(folder))
    good = _good(folder, "b_good.csv")
    _link_outside(folder, tmp_path)
    _dangling_link(folder, tmp_path)
    for name in ("linked.csv", "dangling.csv"):
        _settled(folder / name)
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance,
            definitions=defs,
            resources={"settings": ChurnSettingsResource()},
        )
        result = incoming_extracts(context)
    assert isinstance(result, dg.SensorResult)
    (request,) = result.run_requests or []
    assert request.tags["churn/extract"] == good.name
    observed = [e for e in result.asset_events if isinstance(e, dg.AssetObservation)]
    assert sorted(str(e.metadata["refused_file"].value) for e in observed) == [
        "dangling.csv",
        "linked.csv",
    ]
    assert all("hunter2" not in str(e.description) for e in observed)


def _snapshot(tmp_path: Path) -> SnapshotStore:
    return seeded_store(tmp_path / "state", generate_customers(100, 42))


@pytest.fixture
def export_lines(tmp_path: Path) -> list[str]:
    path = write_customers(generate_customers(6, 11), tmp_path / "template.csv")
    return path.read_text().splitlines()


def _write(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    return path


def _with_field(lines: list[str], row: int, column: str, value: str) -> list[str]:
    """The lines with one field of data row `row` replaced (quoted, as an export would)."""
    header = lines[0].split(",")
    fields = lines[row + 1].split(",")
    fields[header.index(column)] = '"' + value.replace('"', '""') + '"'
    return [*lines[: row + 1], ",".join(fields), *lines[row + 2 :]]


def _latin1(lines: list[str]) -> tuple[list[str], str]:
    return _with_field(lines, 3, "gender", "Männlich"), "latin-1"


def _ragged(lines: list[str]) -> tuple[list[str], str]:
    return [*lines[:4], lines[4] + ",surplus", *lines[5:]], "utf-8"


def _quoted_newline_then_bad_level(lines: list[str]) -> tuple[list[str], str]:
    # a quoted newline in row 0 makes row 3 start one line further down the file
    quoted = _with_field(lines, 0, TELCO.id_column, "7590-\nVHVEG")
    return _with_field(quoted, 3, "Contract", "Bi-annual"), "utf-8"


def _quoted_newline_then_ragged(lines: list[str]) -> tuple[list[str], str]:
    # row 4 is the sixth list item but starts on line 7: row 1 spans two lines
    quoted = _with_field(lines, 1, TELCO.id_column, "0001-\nABCDE")
    return [*quoted[:5], quoted[5] + ",x", *quoted[6:]], "utf-8"


def _long_id(lines: list[str]) -> tuple[list[str], str]:
    return _with_field(lines, 2, TELCO.id_column, "X" * (MAX_ID_CHARS + 1)), "utf-8"


def _huge_field(lines: list[str]) -> tuple[list[str], str]:
    return _with_field(lines, 2, TELCO.id_column, "Y" * 200_000), "utf-8"


def _credentials(_: list[str]) -> tuple[list[str], str]:
    return [SECRET, "API_TOKEN=abc123"], "utf-8"


def _mac_line_endings(lines: list[str]) -> tuple[list[str], str]:
    # carriage returns alone between rows (with one surplus field that must not slip through)
    return ["\r".join([*lines[:4], lines[4] + ",surplus", *lines[5:]])], "utf-8"


def _long_value(lines: list[str]) -> tuple[list[str], str]:
    return _with_field(lines, 1, "TotalCharges", "abc" * 200), "utf-8"


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_latin1, "is not UTF-8: line 5, byte"),
        (_ragged, "line 5 has 22 field(s) where the header (line 1) has 21"),
        (_quoted_newline_then_bad_level, "'Bi-annual' at line 6"),
        (_quoted_newline_then_ragged, "line 7 has 22 field(s)"),
        (_long_id, f"are longer than {MAX_ID_CHARS} characters, e.g. 'XXXX"),
        (_huge_field, "line 4 is longer than the limit of 65536 bytes"),
        (_credentials, "missing required column(s) 'customerID'"),
        (_long_value, "(600 characters) at line 3"),
        (_mac_line_endings, "its lines end in a carriage return alone"),
    ],
    ids=[
        "latin-1",
        "ragged-row",
        "quoted-newline-line-numbers",
        "quoted-newline-ragged",
        "long-customer-id",
        "200kb-field",
        "credentials-file",
        "long-value-cut",
        "classic-mac-line-endings",
    ],
)
def test_a_bad_extract_names_file_and_line_and_leaves_the_snapshot_for_the_good_one(
    tmp_path: Path,
    export_lines: list[str],
    damage: Callable[[list[str]], tuple[list[str], str]],
    expected: str,
) -> None:
    store = _snapshot(tmp_path)
    before = store.current_id()
    assert before is not None
    lines, encoding = damage(export_lines)
    bad = _write(tmp_path / "bad.csv", lines, encoding)

    with pytest.raises(CustomerDataError) as error:
        merge_extract(store, bad)

    message = str(error.value)
    assert "bad.csv" in message and expected in message, message
    assert f"the current snapshot {before[:SHORT_ID]} was not changed" in message
    assert "hunter2" not in message and "API_TOKEN" not in message
    assert len(message) < 1000
    assert store.current_id() == before and len(store.all()) == 1
    good = write_customers(generate_customers(30, 5), tmp_path / "good.csv")
    report, _ = merge_extract(store, good)
    assert report.snapshot_rows_after == len(store.read(report.snapshot.id)) > 100


def test_a_hand_merge_of_a_link_is_refused_without_reading_it(tmp_path: Path) -> None:
    store = _snapshot(tmp_path)
    before = store.current_id()
    link = tmp_path / "handmade.csv"
    link.symlink_to(_secret_file(tmp_path))
    with pytest.raises(CustomerDataError, match="is a symbolic link") as error:
        merge_extract(store, link)
    assert "hunter2" not in str(error.value)
    assert store.current_id() == before and len(store.all()) == 1


def test_the_line_limit_is_a_setting(tmp_path: Path, export_lines: list[str]) -> None:
    path = _write(tmp_path / "wide.csv", _with_field(export_lines, 0, "TotalCharges", "1" * 3000))
    with pytest.raises(CustomerDataError, match="line 2 is longer than the limit of 2048"):
        read_customer_csv(path, "", TELCO, max_line_bytes=2048)
    limits = ChurnSettings(CHURN_MAX_LINE_BYTES=4096, CHURN_MAX_EXTRACT_MB=1).extract_limits
    assert limits == ExtractLimits(max_file_bytes=2**20, max_line_bytes=4096)


def test_an_extract_dated_in_the_future_is_refused_by_name_and_date(tmp_path: Path) -> None:
    store = _snapshot(tmp_path)
    before = store.current_id()
    assert before is not None
    future = _good(tmp_path, "week03_2062-01-15.delta.csv")
    with pytest.raises(CustomerDataError) as error:
        merge_extract(store, future)
    message = str(error.value)
    assert "week03_2062-01-15.delta.csv" in message and "2062-01-15" in message, message
    assert "CHURN_MAX_EXTRACT_AHEAD_DAYS" in message, message
    assert f"the current snapshot {before[:SHORT_ID]} was not changed" in message
    assert store.current_id() == before and len(store.all()) == 1
    # the store was not poisoned: today's extract still merges
    report, _ = merge_extract(store, _good(tmp_path, f"week03_{today()}.delta.csv", seed=4))
    assert store.current_id() == report.snapshot.id != before


def test_how_far_ahead_an_extract_may_be_dated_is_a_setting(tmp_path: Path) -> None:
    seeded = _snapshot(tmp_path)
    tomorrow = _good(tmp_path, f"w_{today() + timedelta(days=1)}.csv")
    strict = snapshot_store(
        ChurnSettings(CHURN_STATE_DIR=tmp_path / "state", CHURN_MAX_EXTRACT_AHEAD_DAYS=0)
    )
    assert strict.uri == seeded.uri
    with pytest.raises(CustomerDataError, match=f"{tomorrow.name} is dated"):
        merge_extract(strict, tomorrow)
    report, _ = merge_extract(seeded, tomorrow)  # the default allows a day ahead (time zones)
    assert seeded.current_id() == report.snapshot.id


def test_a_seed_dated_in_the_future_is_refused_and_no_snapshot_is_made(tmp_path: Path) -> None:
    store = snapshot_store(ChurnSettings(CHURN_STATE_DIR=tmp_path / "state"))
    seed = _good(tmp_path, "customers_2062-01-15.csv")
    with pytest.raises(CustomerDataError, match=r"customers_2062-01-15\.csv is dated 2062-01-15"):
        store.sync_seed(seed, ChurnSettings().extract_limits)
    assert store.all() == [] and store.current_id() is None
