"""Promotion and rollback rules against a real MLflow registry on SQLite."""

import json
import shutil
from pathlib import Path

import lightgbm as lgb
import mlflow
import pytest
from mlflow.tracking import MlflowClient
from sklearn.pipeline import Pipeline

from churn_assets.ml.data.cleaning import clean_customers
from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.synthetic import generate_customers
from churn_assets.ml.evaluation.gate import GateThresholds, evaluate_gate
from churn_assets.ml.evaluation.report import EvaluationReport
from churn_assets.ml.model.features import fit_preprocessor
from churn_assets.ml.registry import model_registry as registry
from churn_assets.ml.registry.locks import registry_lock
from churn_assets.ml.registry.tracking import SKOPS_TRUSTED_TYPES
from churn_assets_tests.conftest import session_signer

TELCO = default_contract()

NAME = "churn-classifier"
ALIAS = "production"


THRESHOLDS = GateThresholds(min_auc=0.82, min_accuracy=0.78, max_auc_drop=0.01)


def open_store(uri: str) -> registry.ModelRegistry:
    return registry.ModelRegistry(
        MlflowClient(uri, uri),
        NAME,
        ALIAS,
        registry_lock(uri, None, NAME),
        session_signer,
        lock_timeout_s=60,
    )


@pytest.fixture(scope="module")
def model_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real pipeline saved as an MLflow model: what each test's versions point at,
    so a rollback's load check loads a real model."""
    customers, _ = clean_customers(generate_customers(300, 1), TELCO)
    features = customers[list(TELCO.feature_columns)]
    pipeline = Pipeline(
        [
            ("preprocess", fit_preprocessor(features, TELCO)),
            ("model", lgb.LGBMClassifier(n_estimators=5)),
        ]
    )
    pipeline.fit(features, customers[TELCO.target_column])
    path = tmp_path_factory.mktemp("model") / "pipeline"
    mlflow.sklearn.save_model(pipeline, path, skops_trusted_types=SKOPS_TRUSTED_TYPES)
    return path


@pytest.fixture
def client(tmp_path: Path, model_source: Path) -> registry.ModelRegistry:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)  # what open_registry does: MLflow registers through these
    mlflow.set_registry_uri(uri)
    store = open_store(uri)
    store.client.create_registered_model(NAME)
    shutil.copytree(model_source, tmp_path / "artifacts")  # where `_version` points versions
    return store


def report(version: str, auc: float, recent: dict[str, float] | None = None) -> EvaluationReport:
    return EvaluationReport(
        model_name=NAME,
        candidate_version=version,
        candidate_run_id="run",
        holdout_rows=1000,
        candidate={"auc": auc, "accuracy": 0.8},
        confusion={},
        recent_production_auc=recent,
    )


def _version(client: registry.ModelRegistry, gate: str | None = None, against: str = "none") -> str:
    source = Path(client.client.tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
    version = str(client.register(source.as_uri(), {}).version)
    if gate is not None:
        auc = 0.86 if gate == "passed" else 0.5
        result = evaluate_gate(report(version, auc), THRESHOLDS)
        client.record_verdict(version, result, None if against == "none" else against)
    return version


def _production(client: registry.ModelRegistry) -> str | None:
    current = client.production()
    return None if current is None else str(current.version)


def test_no_alias_means_no_production(client: registry.ModelRegistry) -> None:
    assert _production(client) is None
    assert registry.production_version(client.client, "never-registered", ALIAS) is None


def test_first_promotion_records_no_previous_version(client: registry.ModelRegistry) -> None:
    v1 = _version(client, "passed")
    move = client.promote(v1)
    assert (move.version, move.previous_version, move.changed) == (v1, None, True)
    assert _production(client) == v1
    tags = client.client.get_model_version(NAME, v1).tags
    assert tags[registry.PREVIOUS_TAG] == "none"
    assert registry.PROMOTED_AT_TAG in tags


def test_promotion_is_idempotent(client: registry.ModelRegistry) -> None:
    v1 = _version(client, "passed")
    client.promote(v1)
    again = client.promote(v1)
    assert not again.changed
    assert _production(client) == v1


@pytest.mark.parametrize("gate", ["failed", None])
def test_version_without_a_passed_gate_is_refused(
    client: registry.ModelRegistry, gate: str | None
) -> None:
    v1 = _version(client, "passed")
    client.promote(v1)
    v2 = _version(client, gate, against=v1)
    with pytest.raises(registry.PromotionRefusedError, match="quality gate is"):
        client.promote(v2)
    assert _production(client) == v1


def test_candidate_compared_with_an_older_champion_is_refused(
    client: registry.ModelRegistry,
) -> None:
    v1 = _version(client, "passed")
    client.promote(v1)
    v2 = _version(client, "passed", against=v1)
    v3 = _version(client, "passed", against=v1)
    client.promote(v3)
    with pytest.raises(registry.PromotionRefusedError, match="is now version 3"):
        client.promote(v2)
    assert _production(client) == v3


def test_rollback_returns_to_the_replaced_version(client: registry.ModelRegistry) -> None:
    v1 = _version(client, "passed")
    client.promote(v1)
    v2 = _version(client, "passed", against=v1)
    client.promote(v2)
    move = client.rollback()
    assert (move.version, move.previous_version, move.changed) == (v1, v2, True)
    assert _production(client) == v1
    assert client.client.get_model_version(NAME, v2).tags[registry.ROLLED_BACK_TO_TAG] == v1
    with pytest.raises(registry.PromotionRefusedError, match="records no previous"):
        client.rollback()


def test_rollback_to_named_version_requires_a_passed_gate(client: registry.ModelRegistry) -> None:
    v1 = _version(client, "passed")
    client.promote(v1)
    rejected = _version(client, "failed", against=v1)
    with pytest.raises(registry.PromotionRefusedError, match="never passed"):
        client.rollback(rejected)
    with pytest.raises(registry.PromotionRefusedError, match="has no version 99"):
        client.rollback("99")
    assert _production(client) == v1


def test_rollback_refuses_a_version_whose_model_cannot_be_loaded(
    client: registry.ModelRegistry, tmp_path: Path
) -> None:
    v1 = _version(client, "passed")
    client.promote(v1)
    broken = tmp_path / "broken"  # its artifact is gone: deleted, or a bucket lost
    broken.mkdir()
    v2 = str(client.client.create_model_version(NAME, source=broken.as_uri()).version)
    client.record_verdict(v2, evaluate_gate(report(v2, 0.86), THRESHOLDS), v1)
    v3 = _version(client, "passed", against=v1)
    client.promote(v3)
    with pytest.raises(registry.PromotionRefusedError, match="version 2 cannot be loaded"):
        client.rollback(v2)
    assert _production(client) == v3
    assert client.rollback(v1).version == v1


def test_rollback_without_production_is_refused(client: registry.ModelRegistry) -> None:
    with pytest.raises(registry.PromotionRefusedError, match="no 'production' version"):
        client.rollback()


def test_registered_versions_start_pending_and_a_failed_run_refuses_them(
    client: registry.ModelRegistry, tmp_path: Path
) -> None:
    source = tmp_path / "model"
    source.mkdir()
    (source / "MLmodel").write_text("artifact_path: model\nflavors: {}\n")
    version = client.register(source.as_uri(), {registry.DAGSTER_RUN_TAG: "run-a"})
    tags = client.client.get_model_version(NAME, str(version.version)).tags
    assert tags[registry.GATE_TAG] == registry.GATE_PENDING
    assert client.refuse_unjudged("run-b", "other run") == []
    assert client.refuse_unjudged("run-a", "run-a died") == [str(version.version)]
    tags = client.client.get_model_version(NAME, str(version.version)).tags
    assert (tags[registry.GATE_TAG], tags[registry.GATE_REASON_TAG]) == ("refused", "run-a died")
    with pytest.raises(registry.PromotionRefusedError, match="quality gate is refused"):
        client.promote(str(version.version))


def test_every_verdict_records_the_thresholds_it_applied(client: registry.ModelRegistry) -> None:
    v1 = _version(client, "passed")
    recorded = json.loads(client.client.get_model_version(NAME, v1).tags["quality_gate_thresholds"])
    assert recorded["min_auc"] == 0.82
    assert recorded["max_auc_drop"] == 0.01
    assert recorded["overridden"] is False


def test_the_loser_of_a_promotion_is_told_and_carries_no_promoted_at(
    client: registry.ModelRegistry,
) -> None:
    v1 = _version(client, "passed")
    client.promote(v1, "run-1")
    v2 = _version(client, "passed", against=v1)
    v3 = _version(client, "passed", against=v1)
    client.promote(v2, "run-2")
    with pytest.raises(registry.PromotionRefusedError, match=r"is now version 2 \(promoted by"):
        client.promote(v3, "run-3")
    tags = client.client.get_model_version(NAME, v3).tags
    assert registry.PROMOTED_AT_TAG not in tags
    assert "is now version 2" in tags[registry.PROMOTION_REFUSED_TAG]
    assert client.client.get_model_version(NAME, v2).tags[registry.PROMOTED_BY_TAG] == "run-2"


def test_no_slide_three_retrains_each_0006_worse(client: registry.ModelRegistry) -> None:
    """Each retrain loses 0.006 AUC, within the 0.01 allowance against its predecessor; the
    third step is refused because the best recent production version is 0.012 better."""
    aucs = {"1": 0.860}
    v1 = _version(client)
    client.record_verdict(v1, evaluate_gate(report(v1, aucs[v1]), THRESHOLDS), None)
    client.promote(v1)
    verdicts = []
    for step in range(1, 4):
        candidate_auc = round(0.860 - 0.006 * step, 3)
        version = _version(client)
        recent = client.recent_production_versions(3)
        # each recent version scored on the candidate's holdout (here: its known AUC)
        result = evaluate_gate(
            report(version, candidate_auc, {v: aucs[v] for v in recent}), THRESHOLDS
        )
        client.record_verdict(version, result, recent[0])
        verdicts.append(result.passed)
        if result.passed:
            client.promote(version)
            aucs[version] = candidate_auc
        else:
            assert result.reference_version == "1"
            assert "best recent production auc (v1)" in result.summary()
    assert verdicts == [True, False, False]
    assert _production(client) == "2"


def test_recent_production_versions_skip_rolled_back_ones(client: registry.ModelRegistry) -> None:
    v1 = _version(client, "passed")
    client.promote(v1)
    v2 = _version(client, "passed", against=v1)
    client.promote(v2)
    v3 = _version(client, "passed", against=v2)
    client.promote(v3)
    assert client.recent_production_versions(3) == ["3", "2", "1"]
    assert client.recent_production_versions(2) == ["3", "2"]
    client.rollback()
    assert client.recent_production_versions(3) == ["2", "1"]


def test_a_server_without_a_shared_lock_refuses_to_move_the_alias() -> None:
    from churn_assets.ml.registry.locks import LockUnavailableError

    lock = registry_lock("http://mlflow:5000", None, NAME)
    with pytest.raises(LockUnavailableError, match="set CHURN_REGISTRY_LOCK"), lock.hold(1):
        pass
