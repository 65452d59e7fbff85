"""Too good to be true: a leaked target is refused by the gate, naming the feature."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from churn_assets.ml.data.contract import load_contract
from churn_assets.ml.data.synthetic import generate_for_contract, write_customers
from churn_assets.ml.evaluation import leakage
from churn_assets.ml.evaluation.gate import GateOverride, GateThresholds, evaluate_gate
from churn_assets.ml.evaluation.report import EvaluationReport
from churn_assets.ml.registry import model_registry as registry
from churn_assets_tests.conftest import ChurnEnv, failure_messages, materialize_graph
from churn_assets_tests.test_contracts import IBM

THRESHOLDS = GateThresholds(min_auc=0.82, min_accuracy=0.78, max_auc_drop=0.01)


def _report(auc: float, alone: dict[str, float] | None = None) -> EvaluationReport:
    return EvaluationReport(
        "churn-classifier", "1", "run", 1000, {"auc": auc, "accuracy": 0.9}, {}, feature_alone=alone
    )


def test_an_auc_above_the_ceiling_fails_the_gate() -> None:
    result = evaluate_gate(_report(0.9999), THRESHOLDS)
    assert not result.passed
    assert "auc <= max_plausible_auc 0.9999 vs 0.9900: FAILED" in result.summary()
    assert evaluate_gate(_report(0.88, {"tenure": 0.7}), THRESHOLDS).passed


def test_one_feature_alone_above_the_ceiling_is_named() -> None:
    result = evaluate_gate(_report(0.95, {"tenure": 0.7, "ChurnFlag": 0.995}), THRESHOLDS)
    assert not result.passed
    assert "auc of 'ChurnFlag' alone <= max_plausible_auc 0.9950 vs 0.9900: FAILED" in (
        result.summary()
    )


def test_the_ceiling_is_a_floor_run_config_cannot_raise_and_an_override_is_recorded() -> None:
    looser = THRESHOLDS.with_changes(max_plausible_auc=1.0)
    assert looser.looser_than(THRESHOLDS) == ["max_plausible_auc 1 > floor 0.99"]
    override = GateOverride(looser, "the feature is known at scoring time", "alice", "run-1")
    result = evaluate_gate(_report(0.9999), looser, override)
    assert result.passed
    assert result.signed_record()["override"]["requested_by"] == "alice"


def test_a_recoded_target_alone_ranks_churners_perfectly() -> None:
    contract = load_contract(IBM)
    frame = generate_for_contract(contract, 2000, seed=3)
    frame["leak"] = pd.Categorical(frame["Churn Value"])
    target = (frame["Churn Label"] == "Yes").astype(int)
    frame["y"] = target
    train, holdout = frame.iloc[:1000], frame.iloc[1000:]
    assert leakage.alone_auc(train, holdout, "leak", "y") == 1.0
    assert 0.5 <= leakage.alone_auc(train, holdout, "Tenure Months", "y") < 0.95


def test_a_contract_declaring_a_recoded_target_as_a_feature_is_not_promoted(
    churn_env: ChurnEnv,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The reproduction: a new contract (no gate history to compare with) that declares the
    export's recoded churn flag as a feature trained to AUC 1.0 and was promoted."""
    leaky = yaml.safe_load(IBM.read_text())
    leaky["drop"] = ["Churn Score", "Churn Reason"]
    leaky["rename"]["Churn Value"] = "churn_value"
    leaky["features"]["churn_value"] = {"type": "category"}
    contract_path = tmp_path / "leaky.yaml"
    contract_path.write_text(yaml.safe_dump(leaky, sort_keys=False))
    frame = generate_for_contract(load_contract(IBM), 2000, seed=3)
    write_customers(frame, churn_env.data_path)
    monkeypatch.setenv("CHURN_CONTRACT_PATH", str(contract_path))

    result = materialize_graph(churn_env, instance)
    assert not result.success
    (gate,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "quality_gate"]
    assert not gate.passed
    assert "FAILED" in gate.metadata["auc of 'churn_value' alone <= max_plausible_auc"].value
    assert result.asset_materializations_for_node("production_promotion") == []
    client = churn_env.client
    assert registry.production_version(client, "churn-classifier", "production") is None
    tags = client.get_model_version("churn-classifier", "1").tags
    assert tags[registry.GATE_TAG] == registry.GATE_FAILED
    assert "'churn_value' alone" in tags[registry.GATE_REASON_TAG]
    assert "churn_scores" not in failure_messages(result)
