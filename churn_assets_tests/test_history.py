"""Churn outcomes from full and delta extracts, checked against the weeks' own truth."""

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from churn_assets import cli
from churn_assets.ml.data import snapshots
from churn_assets.ml.data.contract import CHURN_DATE, FIRST_SEEN, default_contract
from churn_assets.ml.data.history import ExtractKind, terms_of
from churn_assets.ml.data.landing import merge_extract
from churn_assets.ml.data.reading import CustomerDataError
from churn_assets.ml.data.snapshots import SnapshotStore
from churn_assets.ml.data.synthetic import generate_customers, write_customers
from churn_assets.ml.data.synthetic_history import make_history, write_history
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store
from churn_assets.sensors import realized_retrain
from churn_assets_tests.conftest import ChurnEnv, failure_messages, merge_through_graph

TELCO = default_contract()

WEEKS = 6


def _landed(tmp_path: Path, kind: ExtractKind) -> tuple[SnapshotStore, object]:
    history = make_history(1500, WEEKS, kind, seed=3)
    files = write_history(history, tmp_path / "demo", kind)
    store = snapshot_store(ChurnSettings(CHURN_STATE_DIR=tmp_path / "state"))
    for extract in files[1:]:
        merge_extract(store, extract, seed=files[0], terms=terms_of(extract, ExtractKind.delta))
    return store, history


@pytest.mark.parametrize("kind", [ExtractKind.full, ExtractKind.delta])
def test_every_churn_is_recorded_on_the_week_it_happened(tmp_path: Path, kind: ExtractKind) -> None:
    store, history = _landed(tmp_path, kind)
    current = store.current()
    assert current is not None and current.as_of == history.extracts[-1][0].isoformat()
    snapshot = store.read(current.id).set_index(TELCO.id_column)
    expected = {
        customer: history.churn_date(customer)
        for customer in snapshot.index
        if history.churn_week[customer] <= WEEKS
    }
    recorded = snapshot.loc[snapshot[CHURN_DATE] != "", CHURN_DATE]
    assert {c: date.fromisoformat(d) for c, d in recorded.items()} == expected
    assert (snapshot.loc[list(expected), TELCO.target_column] == "Yes").all()
    during = [c for c, w in history.churn_week.items() if 1 <= w <= WEEKS]
    assert len(during) > 50  # weeks with churn in them, not a vacuous comparison
    joined = history.join_week[history.join_week > 0]
    first_seen = snapshot.loc[joined.index, FIRST_SEEN].map(date.fromisoformat)
    assert (first_seen == [history.start + timedelta(weeks=int(w)) for w in joined]).all()
    # each week is a snapshot of its own, the seed's first
    assert [s.kind for s in store.all()] == ["seed"] + ["merge"] * WEEKS


def test_a_full_extract_of_stayers_records_the_missing_as_churned_a_delta_does_not(
    tmp_path: Path,
) -> None:
    """The issue's case: an extract of the active base sent after a base with churn."""
    base = generate_customers(400, 5)
    seed = write_customers(base, tmp_path / "customers_2026-11-02.csv")
    active = base.loc[base["Churn"] == "No"]
    leaving = active.sample(25, random_state=1)[TELCO.id_column]
    stayers = active.loc[~active[TELCO.id_column].isin(leaving)]
    for kind, folder in ((ExtractKind.delta, "delta"), (ExtractKind.full, "full")):
        store = snapshot_store(ChurnSettings(CHURN_STATE_DIR=tmp_path / folder))
        path = write_customers(stayers, tmp_path / f"base_2026-11-09.{kind.value}.csv")
        report, _ = merge_extract(store, path, seed=seed)
        snapshot = store.read(report.snapshot.id).set_index(TELCO.id_column)
        gone = snapshot.loc[leaving]
        if kind is ExtractKind.delta:
            assert report.churned_customers == 0 and (gone[CHURN_DATE] == "").all()
        else:
            assert report.churned_customers == 25
            assert (gone[CHURN_DATE] == "2026-11-09").all()
            assert (gone[TELCO.target_column] == "Yes").all()
        # the base's own churners churned on or before the base's date, and stay churned
        before = base.loc[base["Churn"] == "Yes", TELCO.id_column]
        assert (snapshot.loc[before, CHURN_DATE] == "2026-11-02").all()


def test_history_does_not_go_backwards_and_a_returning_customer_is_active_again(
    tmp_path: Path,
) -> None:
    base = generate_customers(100, 6).assign(Churn="No")
    seed = write_customers(base, tmp_path / "customers_2026-11-02.csv")
    store = snapshot_store(ChurnSettings(CHURN_STATE_DIR=tmp_path / "state"))
    left = base.head(1).assign(Churn="Yes")
    merge_extract(store, write_customers(left, tmp_path / "w1_2026-11-09.csv"), seed=seed)
    came_back = base.head(1)
    report, _ = merge_extract(store, write_customers(came_back, tmp_path / "w2_2026-11-16.csv"))
    assert report.returned_customers == 1
    snapshot = store.read(report.snapshot.id)
    assert snapshot.loc[0, CHURN_DATE] == "" and snapshot.loc[0, "Churn"] == "No"
    current = store.current_id()
    late = write_customers(base.head(2), tmp_path / "w0_2026-11-05.csv")
    with pytest.raises(CustomerDataError, match="dated 2026-11-05, before the current"):
        merge_extract(store, late)
    assert store.current_id() == current


def test_the_merge_asset_takes_kind_and_date_from_its_config(
    churn_env: ChurnEnv, instance: dg.DagsterInstance
) -> None:
    base = pd.read_csv(churn_env.data_path, dtype=str, keep_default_na=False)
    active = base.loc[base["Churn"] == "No"]
    path = write_customers(active.iloc[10:], churn_env.root / "billing.csv")
    as_of = (date.today() + timedelta(days=1)).isoformat()
    merged = merge_through_graph(churn_env, instance, path, extract_kind="full", as_of=as_of)
    assert merged.success, failure_messages(merged)
    (event,) = merged.asset_materializations_for_node("customer_snapshot")
    assert event.metadata["extract_kind"].value == "full"
    assert event.metadata["as_of"].value == as_of
    assert event.metadata["churned_customers"].value == 10


def test_realized_retrain_starts_one_retrain_per_warning(instance: dg.DagsterInstance) -> None:
    def evaluate(cursor: str | None) -> dg.SensorResult:
        context = dg.build_sensor_context(instance=instance, cursor=cursor)
        result = realized_retrain(context)
        assert isinstance(result, dg.SensorResult)
        return result

    assert evaluate(None).skip_reason is not None  # never evaluated
    key = dg.AssetKey("realized_performance")
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=key, check_name="realized_auc", passed=True)
    )
    assert evaluate(None).skip_reason is not None  # within bounds
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=key, check_name="realized_auc", passed=False)
    )
    warned = evaluate(None)
    (request,) = warned.run_requests or []
    assert request.tags["churn/trigger"] == "realized_auc"
    assert evaluate(warned.cursor).skip_reason is not None  # the same warning: once


def test_generate_history_writes_a_dated_base_and_named_weeks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(
            [
                *("generate-history", "--weeks", "2", "--customers", "300", "--kind", "delta"),
                *("--start", "2026-10-05", "--out", str(tmp_path)),
            ]
        )
    assert done.value.code == 0
    assert sorted(p.name for p in tmp_path.rglob("*.csv")) == [
        "customers_2026-10-05.csv",
        "week01_2026-10-12.delta.csv",
        "week02_2026-10-19.delta.csv",
    ]
    assert "2 delta extracts" in capsys.readouterr().out


@pytest.mark.parametrize("kind", [ExtractKind.full, ExtractKind.delta])
def test_an_extract_lands_a_partition_at_a_time_as_into_one_table(
    tmp_path: Path, kind: ExtractKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The merge reads the current snapshot a partition at a time (an extract into a hundred
    million customers needs the extract's memory, not the snapshot's): every week's snapshot
    and counts are those of merging into the table whole."""
    history = make_history(1500, WEEKS, kind, seed=4)
    files = write_history(history, tmp_path / "demo", kind)

    def land(name: str) -> tuple[list[pd.DataFrame], list[tuple[int, ...]]]:
        store = snapshot_store(ChurnSettings(CHURN_STATE_DIR=tmp_path / name))
        tables, counts = [], []
        for extract in files[1:]:
            report, _ = merge_extract(
                store, extract, seed=files[0], terms=terms_of(extract, ExtractKind.delta)
            )
            snapshot = report.snapshot
            counts.append(
                (
                    report.new_customers,
                    report.updated_customers,
                    report.churned_customers,
                    report.returned_customers,
                    report.snapshot_rows_before,
                    report.snapshot_rows_after,
                )
            )
            assert report.snapshot_rows_after == snapshot.rows
            tables.append(store.read(snapshot.id))
            if name == "partitioned":
                assert store.partitions(snapshot.id) == -(-snapshot.rows // 200) > 1
        return tables, counts

    whole_tables, whole_counts = land("whole")
    monkeypatch.setattr(snapshots, "PARTITION_ROWS", 200)
    tables, counts = land("partitioned")
    assert counts == whole_counts
    assert sum(c[2] for c in counts) > 0 and sum(c[0] for c in counts) > 0
    for table, whole in zip(tables, whole_tables, strict=True):
        pd.testing.assert_frame_equal(table.reset_index(drop=True), whole.reset_index(drop=True))
