"""Snapshots through the real graph and CLI: a wrong extract undone, a version reproduced."""

import json
import os
import time
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from churn_assets import cli
from churn_assets.definitions import defs
from churn_assets.ml.data import snapshots
from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.landing import merge_extract
from churn_assets.ml.data.reading import CustomerDataError, read_customer_csv
from churn_assets.ml.data.snapshots import SnapshotError, SnapshotStore
from churn_assets.ml.data.synthetic import generate_customers, write_customers
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store
from churn_assets_tests.conftest import (
    ChurnEnv,
    failure_messages,
    file_sha256,
    local_store,
    materialize_graph,
    merge_through_graph,
    seeded_store,
)

TELCO = default_contract()

DAY = date(2026, 11, 20)


def _churn(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The `churn` command's own code, in this process (a subprocess only adds imports)."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


def _parquet(store: SnapshotStore, snapshot_id: str) -> bytes:
    return Path(store.data_uri(snapshot_id).removeprefix("file://")).read_bytes()


def test_a_poisoned_extract_is_undone_by_restore_and_the_version_reproduces(
    churn_env: ChurnEnv,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    trained = materialize_graph(churn_env, instance)
    assert trained.success, failure_messages(trained)
    store = snapshot_store(ChurnSettings())
    good = store.current()
    assert good is not None
    good_bytes = _parquet(store, good.id)

    # a valid but wrong extract: every customer of the base sent again as a stayer
    poison = generate_customers(7043, 42).assign(Churn="No")
    path = write_customers(poison, churn_env.root / "wrong.csv")
    merged = merge_through_graph(churn_env, instance, path)
    assert merged.success, failure_messages(merged)
    poisoned = store.current()
    assert poisoned is not None and poisoned.parent == good.id and poisoned.churn_rate == 0.0

    code, out, _ = _churn(capsys, "snapshots")
    assert code == 0
    lines = {line[2:14]: line for line in out.splitlines()[2:]}
    assert lines[good.short_id].startswith(" ") and lines[good.short_id].endswith("  1")
    assert lines[poisoned.short_id].startswith("*") and "wrong.csv" in lines[poisoned.short_id]

    # the restore moves the pointer back and tells Dagster, whose automation retrains
    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    code, out, err = _churn(capsys, "snapshots", "restore", good.id[:8])
    assert code == 0, err
    assert f"{poisoned.short_id} -> {good.short_id}" in out
    assert store.current_id() == good.id
    assert _parquet(store, good.id) == good_bytes  # the exact bytes trained on before
    event = instance.get_latest_materialization_event(dg.AssetKey("customer_snapshot"))
    assert event is not None and event.asset_materialization is not None
    assert event.asset_materialization.metadata["snapshot_id"].value == good.id
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert after.get_num_requested(dg.AssetKey("raw_customers")) == 1

    # and the next training run reads the restored snapshot
    reread = materialize_graph(churn_env, instance, selection="raw_customers")
    (raw,) = reread.asset_materializations_for_node("raw_customers")
    assert raw.metadata["snapshot_id"].value == good.id

    code, out, err = _churn(capsys, "reproduce", "--version", "1")
    assert code == 0, out + err
    assert f"snapshot {good.short_id}" in out and "every holdout metric matches" in out


def test_restore_names_an_unknown_snapshot_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHURN_STATE_DIR", str(tmp_path))
    store = seeded_store(tmp_path, generate_customers(50, 1))
    current = store.current_id()
    code, _, err = _churn(capsys, "snapshots", "restore", "abcdef0123")
    assert code == 1 and "no snapshot in" in err and "match 'abcdef0123'" in err
    code, _, err = _churn(capsys, "snapshots", "restore", "abc")  # too short to be a name
    assert code == 1 and store.current_id() == current


def test_prune_keeps_the_newest_the_current_and_every_snapshot_a_version_uses(
    tmp_path: Path,
) -> None:
    store = seeded_store(tmp_path, generate_customers(30, 1))
    made = [store.current()]
    for seed in range(2, 7):
        frame = generate_customers(30, seed)
        made.append(
            store.write(
                frame, kind="file", source=f"{seed}.csv", source_sha256="", parent=None, as_of=DAY
            )
        )
    ids = [s.id for s in made if s is not None]
    removed = store.prune(keep=2, in_use={ids[2]: ["3"]})
    # kept: the current (the seed, ids[0]), the one version 3 uses, the two newest
    assert [s.id for s in removed] == [ids[1], ids[3]]
    assert [s.id for s in store.all()] == [ids[0], ids[2], ids[4], ids[5]]
    with pytest.raises(Exception, match="has no data"):
        store.read(ids[1])
    pd.testing.assert_frame_equal(
        store.read(ids[5])[list(TELCO.columns)],
        generate_customers(30, 6).astype(str),
        check_dtype=False,
    )


def test_a_snapshot_damaged_in_storage_is_an_error_not_training_data(tmp_path: Path) -> None:
    store = seeded_store(tmp_path, generate_customers(30, 1))
    current = store.current_id()
    assert current is not None
    path = Path(store.data_uri(current).removeprefix("file://"))
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(Exception, match="does not match its SHA-256"):
        store.read(current)


def test_prune_keeps_what_a_version_was_built_on_and_history_starts_after_a_pruned_one(
    tmp_path: Path,
) -> None:
    store = seeded_store(tmp_path, generate_customers(30, 1))
    chain = [store.current_id()]
    for week in (1, 2, 3):
        frame = generate_customers(30 + week, 1)
        made = store.write(
            frame,
            kind="merge",
            source=f"w{week}.csv",
            source_sha256="",
            parent=chain[-1],
            as_of=DAY + timedelta(days=week),
        )
        store.point_to(made.id, "test", replacing=store.pointer())
        chain.append(made.id)
    # a version trained on week 2 needs weeks 0-2; week 3 is current
    assert store.prune(keep=1, in_use={chain[2]: ["5"]}) == []
    removed = store.prune(keep=1, in_use={})
    assert [s.id for s in removed] == chain[:3]
    # the current snapshot's history now starts with it; nothing fails on the missing parent
    assert [s.id for s in store.lineage(chain[3])] == [chain[3]]


def test_an_export_is_imported_a_partition_at_a_time_as_the_same_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "PARTITION_ROWS", 1000)
    path = write_customers(generate_customers(3500, 8), tmp_path / "2026-11-20.csv")
    limits = ChurnSettings().extract_limits
    chunked = local_store(tmp_path / "a").write_export(path, limits, kind="file", parent=None)
    whole = local_store(tmp_path / "b").write(
        read_customer_csv(path, None, TELCO),
        kind="file",
        source=str(path.resolve()),
        source_sha256=file_sha256(path),
        parent=None,
        as_of=DAY,
    )
    assert chunked.id == whole.id and chunked.source_sha256 == whole.source_sha256
    assert local_store(tmp_path / "a").partitions(chunked.id) == 4


def test_a_bad_row_past_the_first_partitions_fails_the_import_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "PARTITION_ROWS", 1000)
    path = write_customers(generate_customers(20_000, 8), tmp_path / "seed.csv")
    lines = path.read_bytes().split(b"\r\n")
    lines[19_001] = lines[19_001].replace(b"Yes", b"Y\xffs", 1)  # line 19,002: not UTF-8
    path.write_bytes(b"\r\n".join(lines))
    store = local_store(tmp_path / "state")
    not_utf8 = r"not UTF-8: line 19002, byte \d+ is 0xff"
    with pytest.raises(CustomerDataError, match=not_utf8):
        store.sync_seed(path, ChurnSettings().extract_limits)
    assert store.all() == [] and store.current_id() is None
    assert [p.name for p in (tmp_path / "state" / "snapshots").rglob("*") if p.is_file()] == []


def _two_snapshots(tmp_path: Path) -> tuple[SnapshotStore, str, str]:
    """A store whose first snapshot was replaced by a merge: (store, first, current)."""
    store = seeded_store(tmp_path, generate_customers(30, 1))
    first = store.current_id()
    report, _ = merge_extract(store, write_customers(generate_customers(5, 2), tmp_path / "w.csv"))
    assert first is not None and store.current_id() == report.snapshot.id != first
    return store, first, report.snapshot.id


def test_restore_refuses_a_snapshot_whose_bytes_were_altered_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHURN_STATE_DIR", str(tmp_path))
    store, first, current = _two_snapshots(tmp_path)
    path = Path(store.data_uri(first).removeprefix("file://"))
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")  # still Parquet-shaped
    code, out, err = _churn(capsys, "snapshots", "restore", first[:8])
    assert code == 1, out
    assert f"snapshot {first[:12]}" in err and "does not match its SHA-256" in err, err
    assert f"the current snapshot stays {current[:12]}" in err, err
    assert store.current_id() == current


def _plant_pointer(store: SnapshotStore, named: str) -> Path:
    pointer = Path(store.uri.removeprefix("file://")) / "CURRENT.json"
    pointer.write_text(json.dumps({"id": named, "moved_at": "", "reason": "planted"}))
    return pointer


def test_a_pointer_naming_a_path_is_refused_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "deep" / "state"
    monkeypatch.setenv("CHURN_STATE_DIR", str(state))
    store, first, _ = _two_snapshots(state)
    # an entry outside the store, where `../../../x` from its meta folder lands
    outside = tmp_path / "deep" / "x.json"
    assert Path(store.uri.removeprefix("file://"), "meta", "../../../x.json").resolve() == outside
    outside.write_text(json.dumps({**asdict(store.info(first)), "id": "../../../x"}))
    _plant_pointer(store, "../../../x")
    with pytest.raises(SnapshotError, match=r"CURRENT\.json .*'\.\./\.\./\.\./x'.*64 lowercase"):
        store.current()
    code, _, err = _churn(capsys, "snapshots", "restore", first[:8])
    assert code == 1 and "CURRENT.json" in err and "../../../x" in err, err
    _plant_pointer(store, first.upper())  # hex, but not as the store names snapshots
    with pytest.raises(SnapshotError, match=r"CURRENT\.json names '[0-9A-F]{64}'"):
        store.current_id()


@pytest.mark.parametrize("field", ["parent", "id"])
def test_an_entry_naming_a_path_is_refused_by_file(tmp_path: Path, field: str) -> None:
    store, _, current = _two_snapshots(tmp_path)
    meta = Path(store.uri.removeprefix("file://")) / "meta" / f"{current}.json"
    entry = json.loads(meta.read_text())
    meta.write_text(json.dumps({**entry, field: "../../../x"}))
    with pytest.raises(SnapshotError, match=rf"meta/{current}\.json .*'\.\./\.\./\.\./x'"):
        store.lineage(current)
    with pytest.raises(SnapshotError, match=rf"meta/{current}\.json"):
        store.all()


def test_a_stray_file_among_the_entries_is_refused_by_name(tmp_path: Path) -> None:
    store, _, _ = _two_snapshots(tmp_path)
    stray = Path(store.uri.removeprefix("file://")) / "meta" / "notes.json"
    stray.write_text("{}")
    with pytest.raises(SnapshotError, match=r"meta/notes\.json .*not a snapshot ID"):
        store.all()


def test_prune_refuses_to_keep_fewer_than_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHURN_STATE_DIR", str(tmp_path))
    store, first, current = _two_snapshots(tmp_path)
    for keep in ("0", "-3"):
        code, _, err = _churn(capsys, "snapshots", "prune", "--keep", keep)
        assert code == 2 and f"--keep: {keep} is not 1 or more" in err, err
    with pytest.raises(SnapshotError, match="keep 0 snapshots"):
        store.prune(keep=0, in_use={})
    assert [s.id for s in store.all()] == [first, current]
    code, out, err = _churn(capsys, "snapshots", "prune", "--keep", "1")
    assert code == 0 and f"pruned {first[:12]}" in out, err
    assert [s.id for s in store.all()] == [current]


def test_a_write_removes_only_temporary_files_too_old_to_be_a_write_in_progress(
    tmp_path: Path,
) -> None:
    store = seeded_store(tmp_path, generate_customers(30, 1))
    data = Path(store.uri.removeprefix("file://")) / "data"
    killed, in_progress = data / "incoming.killed.tmp", data / "incoming.other-writer.tmp"
    for path in (killed, in_progress):
        path.write_bytes(b"PAR1half-writ")
    then = time.time() - snapshots.LEFTOVER_AGE_S - 60
    os.utime(killed, (then, then))
    store.write(
        generate_customers(5, 2),
        kind="file",
        source="a.csv",
        source_sha256="",
        parent=None,
        as_of=DAY,
    )
    assert not killed.exists() and in_progress.read_bytes() == b"PAR1half-writ"
