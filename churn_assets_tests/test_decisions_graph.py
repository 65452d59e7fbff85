"""Calibration, threshold, tuning and reasons through the real graph, registry and API."""

import json

import dagster as dg
import mlflow
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from churn_assets.ml.model import reasons
from churn_assets_tests.conftest import (
    ChurnEnv,
    failure_messages,
    materialize_graph,
    mlflow_runs,
    verified_pipeline,
)
from churn_assets_tests.test_serving import customer_payloads
from serving.app import create_app
from serving.settings import Settings

NAME = "churn-classifier"


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return event.metadata


def test_calibrated_tuned_model_with_reasons_threshold_and_trials(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_SCORES_REASONS", "2")
    monkeypatch.setenv("CHURN_TUNING_MAX_TRIALS", "3")
    monkeypatch.setenv("CHURN_OFFER_COST", "50")
    run_config = {
        "ops": {"churn_model": {"config": {"calibration": "always", "tuning_budget_s": 120}}}
    }
    result = materialize_graph(churn_env, instance, run_config=run_config)
    assert result.success, failure_messages(result)
    parent = _check_tuning(churn_env, result)
    threshold = _check_calibration_and_threshold(churn_env, result, parent)
    _check_scores_and_api(churn_env, result, threshold)


def _check_tuning(churn_env: ChurnEnv, result: dg.ExecuteInProcessResult):
    # Tuning: three trials, each a child run of the training run, with its parameters.
    runs = mlflow_runs(churn_env)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 3 == parent.data.metrics["tuning_trials"]
    for trial in trials:
        assert {"learning_rate", "num_leaves", "min_child_samples"} <= set(trial.data.params)
        assert trial.data.metrics["validation_log_loss"] > 0
        assert trial.info.status == "FINISHED"
    best = min(trials, key=lambda r: r.data.metrics["validation_log_loss"])
    assert parent.data.params["num_leaves"] == best.data.params["num_leaves"]
    model_metadata = _metadata(result, "churn_model")
    assert model_metadata["tuning_trials"].value == 3
    assert model_metadata["calibration_applied"].value is True
    return parent


def _check_calibration_and_threshold(
    churn_env: ChurnEnv, result: dg.ExecuteInProcessResult, parent
) -> float:
    # Calibration: before and after on the holdout, in the report and in MLflow.
    report = _metadata(result, "evaluation_report")
    assert report["calibration_applied"].value is True
    markdown = report["report"].value
    assert "| brier | " in markdown and "| holdout | before | after |" in markdown
    stored = json.loads(
        mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/evaluation/report.json")
    )
    assert stored["uncalibrated"]["brier"] == pytest.approx(
        report["uncalibrated_brier"].value, abs=1e-4
    )
    assert stored["candidate"]["auc"] == pytest.approx(stored["uncalibrated"]["auc"])  # monotone
    assert "holdout_uncalibrated_brier" in parent.data.metrics
    assert "![value_curve](data:image/png;base64," in report["plots"].value

    # Threshold: computed from the configured costs, tagged on the version, in the report.
    tags = churn_env.client.get_model_version(NAME, "1").tags
    threshold = float(tags["decision_threshold"])
    assert tags["decision_offer_cost"] == "50" and tags["decision_saved_value"] == "500"
    assert report["decision_threshold"].value == pytest.approx(threshold)
    assert report["expected_value"].value >= max(report["expected_value_target_all"].value, 0)
    assert "Decision threshold" in markdown
    assert parent.data.metrics["holdout_decision_threshold"] == pytest.approx(threshold)
    return threshold


def _check_scores_and_api(
    churn_env: ChurnEnv, result: dg.ExecuteInProcessResult, threshold: float
) -> None:
    # Scores: who to make an offer to, and why.
    scores = pd.read_parquet(_metadata(result, "churn_scores")["parquet"].value)
    assert (scores["offer"] == (scores["churn_probability"] >= threshold)).all()
    assert scores["reason_1"].str.match(r"^\w+ = .+: [+-]\d+\.\d\d$").all()
    assert scores["reason_2"].notna().all() and "reason_3" not in scores
    csv = pd.read_csv(_metadata(result, "churn_scores")["csv"].value)
    assert list(csv.columns) == list(scores.columns)

    # The API uses the version's threshold unless an operator sets one.
    holdout = result.output_for_node("customer_splits").holdout
    payloads = customer_payloads(holdout.head(30))
    settings = Settings(state_dir=churn_env.state_dir, refresh_interval_s=0.2)
    with TestClient(create_app(settings)) as client:
        info = client.get("/model").json()
        assert info["decision_threshold"] == pytest.approx(threshold)
        assert info["threshold_source"] == "model version tag decision_threshold"
        batch = client.post("/predict/batch", json={"customers": payloads}).json()
        assert batch["threshold"] == pytest.approx(threshold)
        for p in batch["predictions"]:
            assert p["churn"] == (p["churn_probability"] >= threshold)
        # The API's reasons are the pipeline's reasons for the same customer.
        explained = client.post("/predict?reasons=2", json=payloads[0]).json()
        pipeline = verified_pipeline(churn_env.state_dir, "1")
        (expected,) = reasons.frame_reasons(pipeline, holdout.head(1), 2)
        assert [r["feature"] for r in explained["reasons"]] == [r["feature"] for r in expected]
        for got, want in zip(explained["reasons"], expected, strict=True):
            assert got["contribution"] == pytest.approx(want["contribution"], abs=1e-9)
    override = Settings(state_dir=churn_env.state_dir, refresh_interval_s=0.2, threshold=0.9)
    with TestClient(create_app(override)) as client:
        assert client.get("/model").json()["threshold_source"] == "CHURN_DECISION_THRESHOLD"
        assert (
            client.post("/predict/batch", json={"customers": payloads}).json()["threshold"] == 0.9
        )
