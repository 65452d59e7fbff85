"""New extracts through the real graph: merge, drift, retrain, scores; bad files change nothing."""

import json
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from churn_assets.ml.data.snapshots import SHORT_ID
from churn_assets.ml.data.synthetic import generate_customers, write_customers
from churn_assets.ml.registry import model_registry as registry
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store
from churn_assets_tests.conftest import (
    ChurnEnv,
    PromotedStore,
    assert_no_mlflow_run_left_running,
    copied_store,
    failure_messages,
    materialize_graph,
    merge_through_graph,
)


def _drift(result: dg.ExecuteInProcessResult) -> Any:
    evaluations = result.get_asset_check_evaluations()
    (evaluation,) = [e for e in evaluations if e.check_name == "extract_drift"]
    return evaluation


def _production(env: ChurnEnv) -> str | None:
    current = registry.production_version(env.client, "churn-classifier", "production")
    return None if current is None else str(current.version)


def test_extract_is_merged_measured_for_drift_and_retrained_on(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, promoted_store: PromotedStore
) -> None:
    copied_store(promoted_store, churn_env.state_dir)  # a snapshot, production = version 1
    extract = write_customers(generate_customers(1500, 7), churn_env.root / "week48.csv")

    merged = merge_through_graph(churn_env, instance, extract)

    assert merged.success, failure_messages(merged)
    (event,) = merged.asset_materializations_for_node("customer_snapshot")
    assert event.metadata["new_customers"].value == 1500
    assert event.metadata["snapshot_rows_after"].value == 7043 + 1500
    store = snapshot_store(ChurnSettings())
    assert event.metadata["snapshot_id"].value == store.current_id()
    drift = _drift(merged)
    assert drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
    assert drift.metadata["production_version"].value == "1"
    rows = drift.metadata["features"].value.records
    assert len(rows) == 19 and {"feature", "psi", "unseen_share"} <= set(rows[0].data)
    assert drift.metadata["max_psi"].value < 0.03  # active customers on both sides
    assert drift.metadata["features_judged"].value == 19
    # kept beside the scores for the console's overview, as the check judged it
    kept = json.loads((churn_env.state_dir / "scores" / "drift" / "latest.json").read_text())
    assert kept["summary"] == drift.description and kept["production_version"] == "1"
    assert kept["snapshot"] == event.metadata["snapshot_id"].value  # the extract's snapshot
    assert kept["max_psi"] == round(drift.metadata["max_psi"].value, 4) and kept["measured"]

    retrained = materialize_graph(churn_env, instance)
    assert retrained.success, failure_messages(retrained)
    (raw,) = retrained.asset_materializations_for_node("raw_customers")
    assert raw.metadata["dagster/row_count"].value == 8543
    assert _production(churn_env) == "2"
    scores = pd.read_csv(churn_env.state_dir / "scores" / "churn_scores.csv")
    assert (scores["model_version"] == 2).all()
    assert set(generate_customers(1500, 7).query("Churn == 'No'")["customerID"]) <= set(
        scores["customerID"]
    )

    # three customers say nothing about drift, however odd they look
    few = generate_customers(3, 11).assign(Contract="Two year", Churn="No")
    few_csv = write_customers(few, churn_env.root / "few.csv")
    tiny = _drift(merge_through_graph(churn_env, instance, few_csv))
    assert tiny.passed and (tiny.description or "").startswith("too few rows to judge: 3 ")
    assert "max_psi" not in tiny.metadata
    assert_no_mlflow_run_left_running(churn_env)


def test_drifted_extract_warns_without_blocking_the_merge(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, promoted_store: PromotedStore
) -> None:
    copied_store(promoted_store, churn_env.state_dir)  # a snapshot, production = version 1
    shifted = generate_customers(800, 8)
    shifted["Contract"] = "Month-to-month"
    shifted["tenure"] = np.minimum(shifted["tenure"] + 36, 72)
    extract = write_customers(shifted, churn_env.root / "shifted.csv")

    merged = merge_through_graph(churn_env, instance, extract)

    assert merged.success
    drift = _drift(merged)
    assert not drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
    assert {"Contract", "tenure"} <= set(drift.metadata["drifted_features"].value.split(", "))
    assert "drifted from the training data" in (drift.description or "")


def test_drift_is_not_measured_before_any_model_is_in_production(
    churn_env: ChurnEnv, instance: dg.DagsterInstance
) -> None:
    extract = write_customers(generate_customers(300, 9), churn_env.root / "first.csv")
    merged = merge_through_graph(churn_env, instance, extract)
    assert merged.success
    drift = _drift(merged)
    assert drift.passed and "no production model yet" in (drift.description or "")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: f.assign(PaymentMethod="Bitcoin"), "column 'PaymentMethod'"),
        (lambda f: f.drop(columns=["tenure"]), "missing required column(s) 'tenure'"),
    ],
    ids=["unknown-level", "missing-column"],
)
def test_malformed_extract_fails_the_merge_and_changes_nothing(
    churn_env: ChurnEnv,
    instance: dg.DagsterInstance,
    promoted_store: PromotedStore,
    damage,
    expected: str,
) -> None:
    copied_store(promoted_store, churn_env.state_dir)  # a snapshot, production = version 1
    store = snapshot_store(ChurnSettings())
    before = store.all()
    current = store.current_id()
    assert current is not None
    extract = write_customers(damage(generate_customers(200, 10)), churn_env.root / "bad.csv")

    merged = merge_through_graph(churn_env, instance, extract)

    assert not merged.success
    message = failure_messages(merged)
    assert "extract bad.csv rejected" in message and expected in message
    assert "line 2" in message or "the header (line 1)" in message
    assert f"the current snapshot {current[:SHORT_ID]} was not changed" in message
    assert store.all() == before and store.current_id() == current
    assert merged.asset_materializations_for_node("customer_snapshot") == []
    assert _production(churn_env) == "1"


def test_scores_need_a_production_model(churn_env: ChurnEnv, instance: dg.DagsterInstance) -> None:
    upstream = materialize_graph(
        churn_env, instance, selection=["raw_customers", "cleaned_customers"]
    )
    assert upstream.success
    alone = materialize_graph(churn_env, instance, selection="churn_scores")
    assert not alone.success
    assert "no churn-classifier@production to score with" in failure_messages(alone)
    assert not (churn_env.state_dir / "scores").exists()
