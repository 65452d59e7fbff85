"""Training on a capped stratified sample, and the learning curve that justifies the cap."""

from typing import Any

import dagster as dg
import pytest
from mlflow import MlflowClient

from churn_assets import cli
from churn_assets.ml.data.cleaning import clean_customers
from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.synthetic import generate_customers
from churn_assets.ml.model.sampling import stratified_sample
from churn_assets_tests.conftest import ChurnEnv, failure_messages, materialize_graph

TELCO = default_contract()
UP_TO_THE_MODEL = [
    "raw_customers",
    "cleaned_customers",
    "customer_splits",
    "preprocessor",
    "churn_model",
]


def _model_metadata(churn_env: ChurnEnv, instance: dg.DagsterInstance) -> dict[str, Any]:
    """The graph up to churn_model, run; the metadata of its churn_model materialization."""
    result = materialize_graph(churn_env, instance, selection=UP_TO_THE_MODEL)
    assert result.success, failure_messages(result)
    return dict(result.asset_materializations_for_node("churn_model")[-1].metadata)


def test_a_sample_keeps_the_churn_rate_and_is_the_same_every_time() -> None:
    customers, _ = clean_customers(generate_customers(20_000, seed=5), TELCO)
    sample = stratified_sample(customers, TELCO, 4_000, seed=42)
    assert len(sample) == 4_000
    rate, sampled_rate = customers["Churn"].mean(), sample["Churn"].mean()
    assert abs(sampled_rate - rate) < 0.001
    assert sample.index.is_unique and sample.index.isin(customers.index).all()
    assert sample.equals(stratified_sample(customers, TELCO, 4_000, seed=42))
    assert stratified_sample(customers, TELCO, 50_000, seed=42) is customers  # under the cap


def test_a_capped_run_trains_on_the_sample_and_draws_the_learning_curve(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_TRAIN_MAX_ROWS", "2000")
    monkeypatch.setenv("CHURN_LEARNING_CURVE_MIN_ROWS", "0")
    metadata = _model_metadata(churn_env, instance)
    assert metadata["training_customers"].value == 2000
    available = metadata["training_customers_available"].value
    assert available > 5000  # the 7,043 sample less its holdout
    points = metadata["learning_curve_points"].value
    assert [p["rows"] for p in points] == [1000, 2000]  # 1/8 and 1/4 are under 1,000 rows
    assert all(0.5 < p["holdout_auc"] <= 1 for p in points)
    assert "learning_curve_last_doubling_auc_gain" in metadata

    client = MlflowClient(churn_env.settings.tracking_uri)
    run = client.search_runs(
        [client.get_experiment_by_name(churn_env.settings.experiment_name).experiment_id]
    )[0]
    assert run.data.params["training_rows_available"] == str(available)
    history = client.get_metric_history(run.info.run_id, "learning_curve_holdout_auc")
    assert sorted(m.step for m in history) == [1000, 2000]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "training")}
    assert {"training/learning_curve.json", "training/learning_curve.png"} <= artifacts


def test_an_uncapped_small_run_draws_no_curve(
    churn_env: ChurnEnv, instance: dg.DagsterInstance
) -> None:
    metadata = _model_metadata(churn_env, instance)
    assert metadata["training_customers"].value == metadata["training_customers_available"].value
    assert "learning_curve_points" not in metadata


def test_a_version_trained_on_samples_reproduces_from_the_caps_it_recorded(
    churn_env: ChurnEnv,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CHURN_TRAIN_MAX_ROWS", "2000")
    monkeypatch.setenv("CHURN_HOLDOUT_MAX_ROWS", "1000")
    result = materialize_graph(
        churn_env, instance, selection=[*UP_TO_THE_MODEL, "evaluation_report"]
    )
    assert result.success, failure_messages(result)
    splits = result.asset_materializations_for_node("customer_splits")[-1].metadata
    assert (splits["train_rows"].value, splits["holdout_rows"].value) == (2000, 1000)
    assert splits["holdout_rows_available"].value > 1000
    # other caps today: reproduce draws the samples the version recorded, not these
    monkeypatch.setenv("CHURN_TRAIN_MAX_ROWS", "3000")
    monkeypatch.delenv("CHURN_HOLDOUT_MAX_ROWS")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["reproduce", "--version", "1"])
    out, err = capsys.readouterr()
    assert exit_.value.code in (0, None), out + err
    assert "every holdout metric matches" in out
