"""Contact logs: held to the extracts' rules, recorded whole or not at all, kept for good, and
read into the per-protocol measure; the sensor and the record_contacts run on real Dagster."""

import os
import time
from datetime import date, datetime, tzinfo
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from churn_assets.definitions import defs
from churn_assets.ml.campaigns import contacts, effect, ledger
from churn_assets.ml.campaigns.assignment import Arm
from churn_assets.ml.data.reading import CustomerDataError
from churn_assets.ml.files import file_sha256
from churn_assets.resources import ChurnSettingsResource
from churn_assets.sensors import CONTACT_LOG_SHA256_TAG, CONTACT_LOG_TAG, incoming_contact_logs
from churn_assets_tests.test_campaigns import POLICY, _campaign, _scores

DAY = date(2026, 12, 4)


@pytest.fixture
def campaign(tmp_path: Path) -> tuple[Path, ledger.Campaign, pd.DataFrame]:
    """A kept campaign in a scores folder, and its assignments."""
    folder = tmp_path / "scores"
    folder.mkdir()
    kept = ledger.start(_scores(folder), folder, _campaign(DAY), POLICY, "customerID")
    return folder, kept, ledger.read_assignments(folder, kept.id)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _log(assignments: pd.DataFrame, campaign: str, arm: str, n: int, contacted: str) -> str:
    ids = assignments.loc[assignments["arm"] == arm, "customerID"].iloc[:n]
    return "".join(f"{c},{campaign},{contacted},no\n" for c in ids)


def test_a_log_is_recorded_once_and_a_later_one_corrects_it(
    tmp_path: Path, campaign: tuple[Path, ledger.Campaign, pd.DataFrame]
) -> None:
    folder, kept, assignments = campaign
    header = "customer,campaign,contacted,accepted\n"
    body = _log(assignments, kept.id, "treatment", 40, "yes") + _log(
        assignments, kept.id, "control", 3, "yes"
    )
    first = _write(tmp_path / "in" / "monday.csv", header + body)
    log, new = contacts.record(first, folder)
    assert new and log.rows == 43 and log.contacted == 43 and log.accepted == 0
    assert log.control_contacted == 3  # against the protocol: recorded, counted
    assert log.campaigns == {kept.id: 43}
    assert log.sha256 == file_sha256(first)
    # a file in the kept folder that is not a whole kept log is left out, not a crash
    (contacts.folder_of(folder) / "junk.parquet").write_bytes(b"")
    assert contacts.recorded(folder) == [log]
    # the same bytes under another name are the same log
    copy = _write(tmp_path / "in" / "copy.csv", first.read_text())
    assert contacts.record(copy, folder) == (log, False)
    assert len(contacts.recorded(folder)) == 1
    # a later log corrects a row: the latest row of a customer wins
    one = assignments.loc[assignments["arm"] == "treatment", "customerID"].iloc[0]
    _write(tmp_path / "in" / "fix.csv", f"{header}{one},{kept.id},yes,yes\n")
    contacts.record(tmp_path / "in" / "fix.csv", folder)
    rows = contacts.of_campaign(folder, kept.id)
    assert rows is not None and len(rows) == 43
    assert bool(rows.loc[one, "accepted"]) and rows.loc[one, "contacted"]
    assert contacts.of_campaign(folder, "2026-01-01-v1") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("customer,campaign\nx,y\n", "missing column(s) 'contacted'"),
        ("customer,campaign,contacted\n", "has a header but no rows"),
        (
            "customer,campaign,contacted\n{t},{c},yes\n{t},2026-01-01-v9,yes\n",
            "line 3, column campaign: no kept campaign is called '2026-01-01-v9'",
        ),
        (
            "customer,campaign,contacted\n{t},{c},maybe\n",
            "line 2, column contacted: 'maybe' is not yes or no (a blank is not allowed)",
        ),
        (
            "customer,campaign,contacted,accepted\n{t},{c},no,yes\n",
            "line 2, column accepted: 'yes' for a customer not contacted",
        ),
        (
            "customer,campaign,contacted\n{t},{c},yes\nNOBODY-1,{c},yes\nNOBODY-2,{c},no\n",
            "line 3, column customer: customer 'NOBODY-1' was not assigned by the row's campaign "
            "(1 more row(s) like it)",
        ),
        (
            "customer,campaign,contacted\n{t},{c},yes,extra\n",
            "line 2 has 4 field(s) where the header (line 1) has 3",
        ),
        ('customer,campaign,contacted\n"{t}\nX",{c},yes\n', "line 2, column customer: customer "),
        (
            "customer,campaign,contacted,contacted\n{t},{c},yes,maybe\n",
            "column(s) 'contacted' appear more than once in the header",
        ),
        (
            "customer,campaign,contacted,accepted\r{t},{c},yes,no,EXTRA\r",
            "its lines end in a carriage return alone",
        ),
        # blank lines are lines of the file too, though no rows
        (
            "customer,campaign,contacted\n{t},{c},yes\n\n\n{t},{c},maybe\n",
            "line 5, column contacted",
        ),
        ("customer,campaign,contacted\n" + "x" * 200 + ",{c},yes\n", "longer than 128 characters"),
        # a quoted line break is a line of the file: the bad row is on line 4
        (
            'customer,campaign,contacted\n"{t}\n",{c},yes\n{t},{c},maybe\n',
            "line 4, column contacted: 'maybe'",
        ),
    ],
)
def test_a_bad_row_refuses_the_whole_log_naming_line_column_and_value(
    tmp_path: Path,
    campaign: tuple[Path, ledger.Campaign, pd.DataFrame],
    text: str,
    message: str,
) -> None:
    folder, kept, assignments = campaign
    treated = assignments.loc[assignments["arm"] == "treatment", "customerID"].iloc[0]
    path = _write(tmp_path / "in" / "log.csv", text.format(t=treated, c=kept.id))
    with pytest.raises(CustomerDataError, match="nothing of it was recorded") as refused:
        contacts.record(path, folder)
    assert message in str(refused.value)
    assert str(path.name) in str(refused.value)
    assert contacts.recorded(folder) == []


def test_hostile_files_are_refused_before_they_are_read(
    tmp_path: Path, campaign: tuple[Path, ledger.Campaign, pd.DataFrame]
) -> None:
    folder, _, _ = campaign
    secret = _write(tmp_path / "secret.txt", "password=hunter2\n")
    link = tmp_path / "in" / "log.csv"
    link.parent.mkdir()
    link.symlink_to(secret)
    with pytest.raises(CustomerDataError, match=r"contact log log\.csv is a symbolic link") as e:
        contacts.record(link, folder)
    assert "hunter2" not in str(e.value)
    binary = tmp_path / "in" / "latin.csv"
    binary.write_bytes(b"customer,campaign,contacted\n\xe9t\xe9,c,yes\n")
    with pytest.raises(CustomerDataError, match="is not UTF-8: line 2, byte 1 is 0xe9"):
        contacts.record(binary, folder)
    fifo = tmp_path / "in" / "fifo.csv"
    os.mkfifo(fifo)
    with pytest.raises(CustomerDataError, match="is not a regular file"):
        contacts.record(fifo, folder)


def test_per_protocol_and_per_contact_figures() -> None:
    """100 treated (60 contacted, 20 of them churned; 40 not contacted, 20 churned) against 50
    control (5 contacted by mistake, 2 churned; 45 not, 15 churned)."""
    arm = np.array([Arm.treatment.value] * 100 + [Arm.control.value] * 50)
    ids = pd.Series([f"c{i}" for i in range(150)])
    contacted = np.r_[np.arange(100) < 60, np.arange(50) < 5]
    left = np.r_[np.arange(60) < 20, np.arange(40) < 20, np.arange(5) < 2, np.arange(45) < 15]
    accepted = pd.array([True] * 30 + [False] * 20 + [pd.NA] * 10, dtype="boolean")
    log = pd.DataFrame(
        {
            "contacted": pd.array(contacted[contacted], dtype="boolean"),
            "accepted": pd.array([*accepted, *[pd.NA] * 5], dtype="boolean"),
        },
        index=ids[contacted].to_numpy(),
    )
    treated, control = arm == Arm.treatment.value, arm == Arm.control.value
    found = effect.Protocol.of(
        log, ids, left, arm, effect.Comparison.of(left[treated], left[control])
    )
    assert (found.treated_contacted, found.control_contacted) == (60, 5)
    assert found.contact_rate == 0.6
    assert found.acceptance_rate == 30 / 50
    pp = found.per_protocol
    assert pp is not None and (pp.offered, pp.held_back) == (60, 45)
    assert pp.reduction == pytest.approx(15 / 45 - 20 / 60)
    # by assignment 17/50 - 40/100 = -0.06, over a contact gap of 0.6 - 0.1
    assert found.reduction_per_contact == pytest.approx((17 / 50 - 40 / 100) / 0.5)


def _tick(tmp_path: Path) -> dg.SensorResult:
    """One evaluation of the contact-log sensor on a fresh instance."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        context = dg.build_sensor_context(
            instance=instance, definitions=defs, resources={"settings": ChurnSettingsResource()}
        )
        result = incoming_contact_logs(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_the_sensor_records_each_new_log_through_record_contacts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    campaign: tuple[Path, ledger.Campaign, pd.DataFrame],
) -> None:
    _, kept, assignments = campaign
    incoming = tmp_path / "incoming"
    monkeypatch.setenv("CHURN_INCOMING_DIR", str(incoming))
    monkeypatch.setenv("CHURN_INCOMING_SETTLE_S", "30")
    header = "customer,campaign,contacted,accepted\n"
    good = _write(
        incoming / "contacts" / "week49.csv",
        header + _log(assignments, kept.id, "treatment", 10, "yes"),
    )
    bad = _write(incoming / "contacts" / "broken.csv", header + "x,nope,yes,no\n")
    extract_like = _write(incoming / "week49.csv", "not a contact log\n")
    then = time.time() - 120
    for path in (good, bad, extract_like):
        os.utime(path, (then, then))
    result = _tick(tmp_path)
    # the broken log is not refused by the sensor (it reads no rows): it gets its own run
    requests = result.run_requests or []
    assert len(requests) == 1
    request = requests[0]
    assert request.job_name in (None, "record_contacts")
    name = request.tags[CONTACT_LOG_TAG]
    assert name in ("broken.csv", "week49.csv")
    assert request.tags[CONTACT_LOG_SHA256_TAG] == file_sha256(incoming / "contacts" / name)
    config = request.run_config["ops"]["contact_log"]["config"]
    assert config["path"] == str((incoming / "contacts" / name).resolve())
    # the extract in the landing folder itself is not this sensor's
    assert all(e.metadata.get("refused_file") != "week49.csv" for e in result.asset_events or [])
    job = defs.resolve_job_def("record_contacts")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "contact_log",
        "campaign_effect",
    }


def test_a_linked_contacts_folder_is_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    secret = _write(elsewhere / "creds.csv", "customer,campaign,contacted\nroot,hunter2,yes\n")
    then = time.time() - 120
    os.utime(secret, (then, then))
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "contacts").symlink_to(elsewhere)
    monkeypatch.setenv("CHURN_INCOMING_DIR", str(incoming))
    result = _tick(tmp_path)
    assert not result.run_requests
    assert "is a symbolic link; links are never followed" in str(result.skip_reason)


def test_a_later_log_corrects_an_earlier_one_whatever_the_clock_says(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    campaign: tuple[Path, ledger.Campaign, pd.DataFrame],
) -> None:
    folder, kept, assignments = campaign
    one = assignments.loc[assignments["arm"] == "treatment", "customerID"].iloc[0]
    header = "customer,campaign,contacted,accepted\n"
    contacts.record(_write(tmp_path / "a.csv", f"{header}{one},{kept.id},yes,no\n"), folder)

    class Earlier(datetime):
        """A clock set an hour back, as another machine's might be."""

        @classmethod
        def now(cls, tz: tzinfo | None = None) -> "Earlier":
            return cls.fromtimestamp(datetime.now(tz).timestamp() - 3600, tz)

    monkeypatch.setattr(contacts, "datetime", Earlier)
    contacts.record(_write(tmp_path / "b.csv", f"{header}{one},{kept.id},yes,yes\n"), folder)
    first, second = contacts.recorded(folder)
    assert (first.source, second.source) == ("a.csv", "b.csv")
    rows = contacts.of_campaign(folder, kept.id)
    assert rows is not None and bool(rows.loc[one, "accepted"])
