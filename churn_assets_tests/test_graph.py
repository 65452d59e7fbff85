"""The whole asset graph against a temporary MLflow store and Dagster instance."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from churn_assets import cli
from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.snapshots import SHORT_ID
from churn_assets.ml.registry import artifacts as signed
from churn_assets.ml.registry import model_registry as registry
from churn_assets.ml.registry import signing
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store
from churn_assets.resources import INPUTS_FROM_RUN_TAG
from churn_assets_tests.conftest import (
    TRAINING_ASSETS,
    ChurnEnv,
    PromotedStore,
    assert_no_mlflow_run_left_running,
    copied_store,
    failure_messages,
    gate_config,
    materialize_graph,
    mlflow_runs,
)
from serving.app import create_app
from serving.settings import Settings

TELCO = default_contract()

NAME = "churn-classifier"
REPO = Path(__file__).resolve().parents[1]
TO_EVALUATION = list(TRAINING_ASSETS[: TRAINING_ASSETS.index("evaluation_report") + 1])


def _production(env: ChurnEnv) -> str | None:
    current = registry.production_version(env.client, NAME, "production")
    return None if current is None else str(current.version)


def _tags(env: ChurnEnv, version: str) -> dict[str, str]:
    return env.client.get_model_version(NAME, version).tags


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (materialization,) = result.asset_materializations_for_node(asset)
    return materialization.metadata


def _assert_snapshot_recorded(env: ChurnEnv, tags: dict[str, str], run: Any) -> None:
    """The version names the snapshot it learned from, and its run logs it as a dataset."""
    store = snapshot_store(ChurnSettings())
    current = store.current()
    # the store's current snapshot, seeded from CHURN_DATA_PATH
    assert current is not None and current.kind == "seed"
    assert tags["snapshot_id"] == current.id
    assert current.source_sha256 == hashlib.sha256(env.data_path.read_bytes()).hexdigest()
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == current.id[:SHORT_ID]
    assert dataset_input.dataset.source == json.dumps({"uri": store.data_uri(current.id)})
    assert [t.value for t in dataset_input.tags] == ["training"]


def test_whole_graph_registers_evaluates_gates_and_promotes(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = materialize_graph(churn_env, instance)
    assert result.success, failure_messages(result)

    assert _production(churn_env) == "1"
    tags = _tags(churn_env, "1")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    assert tags["git_sha"].removesuffix("-dirty") == (head or "unknown")
    assert tags["dagster_run_id"] == result.run_id
    assert float(tags["holdout_auc"]) >= 0.82
    assert float(tags["holdout_accuracy"]) >= 0.78
    assert 0 < float(tags["holdout_f1"]) < 1
    assert tags[registry.GATE_TAG] == registry.GATE_PASSED
    _assert_signed(churn_env, result.run_id, tags["snapshot_id"])
    assert tags[registry.COMPARED_WITH_TAG] == "none"
    assert tags[registry.PREVIOUS_TAG] == "none"
    assert 0 < float(tags["decision_threshold"]) < 1  # the cost-based threshold travels along
    assert (tags["decision_offer_cost"], tags["decision_saved_value"]) == ("100", "500")

    # one MLflow run for the Dagster run, finished, holding every artifact
    (run,) = mlflow_runs(churn_env)
    assert run.data.tags["dagster_run_id"] == result.run_id
    _assert_snapshot_recorded(churn_env, tags, run)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["holdout_auc"] == pytest.approx(float(tags["holdout_auc"]))
    assert "best_iteration" in run.data.params
    assert run.data.params["calibration_mode"] == "auto"
    assert run.data.params["tuning_budget_s"] == "0.0"  # no search, so no trial runs
    artifacts = {
        a.path
        for folder in ("evaluation", "training", "preprocessor")
        for a in churn_env.client.list_artifacts(run.info.run_id, folder)
    }
    assert {
        "evaluation/report.json",
        "evaluation/report.md",
        "evaluation/roc.png",
        "evaluation/precision_recall.png",
        "evaluation/calibration.png",
        "evaluation/value_curve.png",
        "training/feature_importance.png",
        "training/profile.json",
        "preprocessor/preprocessor.skops",
    } <= artifacts
    assert (churn_env.state_dir / "mlartifacts").is_dir()
    assert not (churn_env.root / "mlruns").exists()

    _assert_pyfunc_serves(churn_env, monkeypatch)

    # what the Dagster UI shows
    assert _metadata(result, "raw_customers")["dagster/row_count"].value == 7043
    report = _metadata(result, "evaluation_report")
    assert report["holdout_auc"].value == pytest.approx(float(tags["holdout_auc"]), abs=1e-4)
    assert "data:image/png;base64," in report["plots"].value
    assert report["production_version"].value == "none"
    promotion = _metadata(result, "production_promotion")
    assert promotion["production_version"].value == "1"
    scores = _metadata(result, "churn_scores")
    ranked = pd.read_parquet(scores["parquet"].value)
    active = int((pd.read_csv(churn_env.data_path)["Churn"] == "No").sum())
    assert scores["dagster/row_count"].value == len(ranked) == active
    assert (ranked["model_version"] == "1").all() and ranked["rank"].iloc[0] == 1
    assert Path(scores["csv"].value).parent == churn_env.state_dir.resolve() / "scores"
    assert scores["top_risk_segments"].value.records
    _assert_campaign(result, ranked)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "required_columns": True,
        "customer_ids": True,
        "value_types": True,
        "category_levels": True,
        "value_ranges": True,
        "target_codes": True,
        "churn_rate_plausible": True,
        "quality_gate": True,
        "realized_auc": True,  # nothing to judge yet: no outcomes have arrived
        "offers_work": True,  # no campaign window has outcomes yet either
        "uplift_pays": True,  # no uplift version yet
    }
    assert_no_mlflow_run_left_running(churn_env)


def _assert_campaign(result: dg.ExecuteInProcessResult, ranked: pd.DataFrame) -> None:
    """The scoring's targets split into treatment and control, a few explored below the
    threshold; the CRM's file holds exactly the offered, with what the scores say of them."""
    campaign = _metadata(result, "retention_campaign")
    assert campaign["campaign"].value.endswith("-v1")
    arms = pd.read_parquet(campaign["assignments"].value)
    by_arm = arms.groupby("arm")["customerID"].apply(set)
    targeted = set(ranked.loc[ranked["offer"], "customerID"])
    assert by_arm["treatment"] | by_arm["control"] == targeted
    assert 0.05 < len(by_arm["control"]) / len(targeted) < 0.15  # 10% +- 4 sd at ~1,300
    assert not by_arm["explore"] & targeted and len(by_arm["explore"]) > 0
    offers = pd.read_csv(campaign["offers"].value, dtype={"customerID": str})
    assert set(offers["customerID"]) == by_arm["treatment"] | by_arm["explore"]
    assert {"rank", "churn_probability", "Contract"} <= set(offers.columns)
    assert campaign["offered"].value == len(offers)
    assert campaign["arm_control"].value == len(by_arm["control"])


def _assert_pyfunc_serves(env: ChurnEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """The production alias serves probabilities from the raw export's columns through MLflow's
    own pyfunc too, as `mlflow models serve` does: that reader must be let deserialize, since
    every process of ours turns MLflow's loaders off (tracking.NO_PICKLE)."""
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@production")
    sample = pd.read_csv(env.data_path).head(20)
    sample["TotalCharges"] = pd.to_numeric(sample["TotalCharges"], errors="coerce").fillna(0)
    probabilities = np.asarray(model.predict(sample[list(TELCO.feature_columns)]))
    assert probabilities.shape == (20, 2)
    assert np.allclose(probabilities.sum(axis=1), 1)


def _assert_signed(env: ChurnEnv, run_id: str, snapshot_id: str) -> None:
    """What the tags say, signed: files at registration, verdict by the gate, and promotion's."""
    verifier = signing.verifier(env.settings)
    version = env.client.get_model_version(NAME, "1")
    manifest = signed.verified_manifest(verifier, version)
    assert set(manifest["files"]) >= {signed.PIPELINE_FILE, signed.CONTRACT_FILE}
    assert manifest["facts"]["dagster_run_id"] == run_id
    assert signed.verified_verdict(verifier, version)["passed"] is True
    attestation = signed.verified_attestation(verifier, version)
    assert (attestation["signed_by"], attestation["promoted_by_run"]) == ("promotion", run_id)
    assert attestation["registered"]["snapshot_id"] == snapshot_id


def test_failed_gate_leaves_production_untouched_and_promotion_alone_is_refused(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, promoted_store: PromotedStore
) -> None:
    copied_store(promoted_store, churn_env.state_dir)  # v1 in production, as a first run leaves it
    alias_before = _production(churn_env)

    failed = materialize_graph(churn_env, instance, run_config=gate_config(min_auc=0.999))
    assert not failed.success
    assert _production(churn_env) == alias_before == "1"
    assert failed.asset_materializations_for_node("production_promotion") == []
    (gate,) = [e for e in failed.get_asset_check_evaluations() if e.check_name == "quality_gate"]
    assert not gate.passed
    assert "0.9990" in gate.metadata["auc >= min_auc"].value
    assert _tags(churn_env, "2")[registry.GATE_TAG] == registry.GATE_FAILED
    statuses = {r.data.tags["dagster_run_id"]: r.info.status for r in mlflow_runs(churn_env)}
    assert statuses[failed.run_id] == "FAILED"

    # launched on its own (as from the UI or CLI), promotion checks the gate itself
    alone = materialize_graph(churn_env, instance, selection="production_promotion")
    assert not alone.success
    assert "version 2 cannot become 'production'" in failure_messages(alone)
    assert "quality gate is failed" in failure_messages(alone)
    assert _production(churn_env) == "1"
    assert_no_mlflow_run_left_running(churn_env)


def test_thresholds_come_from_the_environment_and_run_config_cannot_lower_them(
    churn_env: ChurnEnv,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CHURN_MIN_ACCURACY", "0.99")
    result = materialize_graph(churn_env, instance)
    assert not result.success
    (gate,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "quality_gate"]
    assert "0.9900" in gate.metadata["accuracy >= min_accuracy"].value
    assert _production(churn_env) is None
    thresholds = json.loads(_tags(churn_env, "1")[registry.GATE_THRESHOLDS_TAG])
    assert thresholds["min_accuracy"] == 0.99  # every verdict records what it applied

    # run config may not go below the environment's floor: refused, recorded, not promoted
    lowered = materialize_graph(churn_env, instance, run_config=gate_config(min_accuracy=0.5))
    assert not lowered.success
    assert _production(churn_env) is None
    tags = _tags(churn_env, "2")
    assert tags[registry.GATE_TAG] == registry.GATE_REFUSED
    assert "min_accuracy 0.5 < floor 0.99" in tags[registry.GATE_REASON_TAG]

    # nor may resource config supplied at launch
    via_resource = materialize_graph(
        churn_env,
        instance,
        run_config={"resources": {"settings": {"config": {"min_accuracy": 0.5}}}},
    )
    assert not via_resource.success
    assert _tags(churn_env, "3")[registry.GATE_TAG] == registry.GATE_REFUSED

    # the named override goes below the floor, and the version says who, why and what
    override = {
        "min_auc": 0.8,
        "min_accuracy": 0.5,
        "max_auc_drop": 0.01,
        "reason": "pilot segment, signed off by risk",
        "requested_by": "ana@example.com",
    }
    overridden = materialize_graph(churn_env, instance, run_config=gate_config(override=override))
    assert overridden.success, failure_messages(overridden)
    assert _production(churn_env) == "4"
    record = json.loads(_tags(churn_env, "4")[registry.GATE_OVERRIDE_TAG])
    assert record["requested_by"] == "ana@example.com"
    assert record["dagster_run_id"] == overridden.run_id
    assert record["thresholds"]["min_accuracy"] == 0.5
    assert record["reason"] == "pilot segment, signed off by risk"

    # shown wherever people look at production: `churn production` and the API's /model
    with pytest.raises(SystemExit) as shown:
        cli.main(["production"])
    assert shown.value.code == 0
    assert "GATE OVERRIDE: requested by ana@example.com" in capsys.readouterr().out
    settings = Settings(state_dir=churn_env.state_dir, refresh_interval_s=60)
    with TestClient(create_app(settings)) as api:
        info = api.get("/model").json()
    assert info["version"] == "4"
    assert info["gate_override"]["requested_by"] == "ana@example.com"
    assert info["gate_override"]["reason"] == "pilot segment, signed off by risk"


def test_a_lowered_gate_does_not_promote_a_bad_model(
    churn_env: ChurnEnv, instance: dg.DagsterInstance
) -> None:
    """The attack from the issue: a one-tree model behind a gate of zeros."""
    run_config = {
        **gate_config(min_auc=0.0, min_accuracy=0.0, max_auc_drop=1.0),
        "ops": {
            **gate_config(min_auc=0.0, min_accuracy=0.0, max_auc_drop=1.0)["ops"],
            "churn_model": {"config": {"n_estimators": 1, "num_leaves": 2}},
        },
    }
    result = materialize_graph(churn_env, instance, run_config=run_config)
    assert not result.success
    assert _production(churn_env) is None
    tags = _tags(churn_env, "1")
    assert tags[registry.GATE_TAG] == registry.GATE_REFUSED
    assert "min_auc 0 < floor 0.82" in tags[registry.GATE_REASON_TAG]
    assert result.asset_materializations_for_node("production_promotion") == []


def test_second_run_is_compared_with_the_champion_and_is_deterministic(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, promoted_store: PromotedStore
) -> None:
    copied_store(promoted_store, churn_env.state_dir)  # the first run, on the same data
    second = materialize_graph(churn_env, instance)
    assert second.success, failure_messages(second)

    report = _metadata(second, "evaluation_report")
    assert report["production_version"].value == "1"
    first_tags, second_tags = _tags(churn_env, "1"), _tags(churn_env, "2")
    assert report["production_auc"].value == pytest.approx(
        float(first_tags["holdout_auc"]), abs=1e-4
    )
    assert second_tags[registry.COMPARED_WITH_TAG] == "1"
    for metric in ("holdout_auc", "holdout_accuracy", "holdout_f1"):
        assert second_tags[metric] == first_tags[metric]  # same data, same seed
    assert _production(churn_env) == "2"
    assert second_tags[registry.PREVIOUS_TAG] == "1"
    assert "gate" not in failure_messages(second)


def test_a_run_that_fails_before_its_gate_refuses_its_version(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, promoted_store: PromotedStore
) -> None:
    """Production's artifact is gone, so evaluation cannot score it: the run fails after its
    churn_model registered version 2, which must not stay without a verdict."""
    copied_store(promoted_store, churn_env.state_dir)  # v1 in production
    source = churn_env.client.get_model_version(NAME, "1").source
    artifacts = churn_env.client.get_logged_model(source.removeprefix("models:/")).artifact_location
    shutil.rmtree(artifacts.removeprefix("file://"))
    failed = materialize_graph(churn_env, instance)
    assert not failed.success
    assert failed.asset_materializations_for_node("churn_model")
    tags = _tags(churn_env, "2")
    assert tags[registry.GATE_TAG] == registry.GATE_REFUSED
    assert (
        f"Dagster run {failed.run_id} failed before the quality gate"
        in (tags[registry.GATE_REASON_TAG])
    )
    assert _production(churn_env) == "1"


def test_promotion_refused_when_production_moved_after_evaluation(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, promoted_store: PromotedStore
) -> None:
    copied_store(promoted_store, churn_env.state_dir)  # v1 in production
    assert materialize_graph(churn_env, instance).success  # v2, replaces v1
    evaluated = materialize_graph(churn_env, instance, selection=TO_EVALUATION)
    assert evaluated.success  # v3 evaluated against v2, gate passed, not promoted
    assert _tags(churn_env, "3")[registry.GATE_TAG] == registry.GATE_PASSED
    registry.open_registry(churn_env.settings).rollback()  # production back to v1
    refused = materialize_graph(churn_env, instance, selection="production_promotion")
    assert not refused.success
    assert "evaluated against production version 2" in failure_messages(refused)
    assert _production(churn_env) == "1"


def _log_messages(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(entry.user_message for entry in instance.all_logs(run_id))


def test_a_run_reads_inputs_it_does_not_produce_from_a_recorded_materialization(
    churn_env: ChurnEnv, instance: dg.DagsterInstance
) -> None:
    to_splits = list(TRAINING_ASSETS[: TRAINING_ASSETS.index("customer_splits") + 1])
    first = materialize_graph(churn_env, instance, selection=to_splits)
    second = materialize_graph(churn_env, instance, selection=to_splits)
    assert first.success and second.success

    latest = materialize_graph(churn_env, instance, selection="preprocessor")
    assert latest.success, failure_messages(latest)
    logs = _log_messages(instance, latest.run_id)
    assert f"reading customer_splits produced by run {second.run_id}" in logs

    chosen = materialize_graph(
        churn_env,
        instance,
        selection="preprocessor",
        tags={INPUTS_FROM_RUN_TAG: first.run_id},
    )
    assert chosen.success, failure_messages(chosen)
    logs = _log_messages(instance, chosen.run_id)
    assert f"reading customer_splits produced by run {first.run_id}" in logs

    wrong = materialize_graph(
        churn_env, instance, selection="preprocessor", tags={INPUTS_FROM_RUN_TAG: latest.run_id}
    )
    assert not wrong.success
    assert f"run {latest.run_id} (tag {INPUTS_FROM_RUN_TAG}) did not materialize" in (
        failure_messages(wrong)
    )


def _missing_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["Contract"])


def _unparseable(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[10, "MonthlyCharges"] = "abc"
    return frame


def _single_class(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(Churn="No")


@pytest.mark.parametrize(
    ("breaks", "expected"),
    [
        (_missing_column, "missing required column(s) 'Contract'"),
        (_unparseable, "column 'MonthlyCharges': 1 row(s) are not numbers, e.g. 'abc' at line 12"),
        (_single_class, "column 'Churn': 7043 row(s) all stayed"),
        (lambda frame: frame.head(0), "has a header but no customer rows"),
        (None, "is empty"),
    ],
    ids=["missing-column", "unparseable", "single-class", "header-only", "empty"],
)
def test_bad_csv_fails_loudly_and_touches_nothing(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, breaks, expected: str
) -> None:
    if breaks is None:
        churn_env.data_path.write_bytes(b"")
    else:
        frame = pd.read_csv(churn_env.data_path, dtype=str, keep_default_na=False)
        breaks(frame).to_csv(churn_env.data_path, index=False, lineterminator="\r\n")
    result = materialize_graph(churn_env, instance)
    assert not result.success
    # a file that cannot be read fails raw_customers; values the contract refuses fail a
    # blocking data check (shown as such in the UI), which stops everything downstream
    failed_checks = [
        e.description or "" for e in result.get_asset_check_evaluations() if not e.passed
    ]
    assert expected in failure_messages(result) + "\n".join(failed_checks)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized <= {"raw_customers"}
    assert churn_env.client.search_registered_models() == []
    assert_no_mlflow_run_left_running(churn_env)
