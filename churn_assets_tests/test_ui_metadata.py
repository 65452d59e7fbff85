"""Metadata as people read it in the Dagster UI: figures rounded, no NaN, and the settings each
run only echoes in one entry per asset or check instead of numbers the UI plots as flat lines.
"""

import math
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from churn_assets.assets.metadata import readable, ui_metadata
from churn_assets_tests.conftest import ChurnEnv, failure_messages, materialize_graph

#: Settings and thresholds every run echoes; none may be a numeric entry of its own.
ECHOED = {
    "reasons_per_customer",
    "outcome_window_days",
    "offer_cost",
    "saved_customer_value",
    "break_even_probability",
    "psi_warn",
    "unseen_warn",
    "min_auc",
    "contract_version",
    "columns_required",
    "min",
    "max",
    *(f"{side}_{name}" for side in ("applied", "floor") for name in ("min_auc", "min_accuracy")),
}


def test_figures_keep_four_significant_digits_and_constants_one_entry() -> None:
    assert readable(0.8676157999431657) == 0.8676
    assert readable(0.000123456) == 0.0001235
    assert readable(1868.234) == 1868.0  # a whole part is never cut
    assert readable(123456.7) == 123457.0
    assert readable(float("nan")) is None
    shown = ui_metadata(
        {"auc": 0.8676157999431657, "rows": 7043, "passed": True, "production_auc": math.nan},
        settings={"min_auc": 0.82, "offer_cost": 100.0},
    )
    assert shown["auc"] == 0.8676 and shown["rows"] == 7043 and shown["passed"] is True
    assert "production_auc" not in shown  # never NaN: left out
    assert shown["settings"] == dg.MetadataValue.json({"min_auc": 0.82, "offer_cost": 100.0})


def _entries(result: dg.ExecuteInProcessResult) -> Iterator[tuple[str, str, Any]]:
    """(where, key, value) of every metadata entry of every materialization and check."""
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        for key, entry in materialization.metadata.items():
            yield materialization.asset_key.to_user_string(), key, entry
    for evaluation in result.get_asset_check_evaluations():
        for key, entry in evaluation.metadata.items():
            yield evaluation.check_name, key, entry


def _numbers(value: Any) -> Iterator[float]:
    """Every float inside a metadata value: plain, in a JSON entry or in a table's cells."""
    if isinstance(value, dict):
        for inner in value.values():
            yield from _numbers(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _numbers(inner)
    elif isinstance(value, dg.TableRecord):
        yield from _numbers(dict(value.data))
    elif isinstance(value, float):
        yield value


def test_a_run_writes_readable_metadata_and_links_to_the_running_mlflow_ui(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `churn mlflow-ui --port 15000` running: the record it keeps while it serves
    churn_env.state_dir.mkdir(parents=True, exist_ok=True)
    (churn_env.state_dir / "mlflow-ui.url").write_text("http://127.0.0.1:15000\n")
    monkeypatch.setenv("CHURN_MIN_AUC", "0.6")  # the deployment's floor
    raised = {"ops": {"evaluation_report_quality_gate": {"config": {"min_auc": 0.65}}}}
    result = materialize_graph(churn_env, instance, run_config=raised)
    assert result.success, failure_messages(result)

    entries = list(_entries(result))
    for where, key, entry in entries:
        value = entry.value
        if isinstance(value, dg.TableMetadataValue):
            value = list(value.records)
        for number in _numbers(value):
            assert math.isfinite(number), f"{where}: {key} holds {number}"
            assert readable(number) == number, f"{where}: {key} = {number} is not rounded"
        numeric = isinstance(entry, (dg.FloatMetadataValue, dg.IntMetadataValue))
        assert not (numeric and key in ECHOED), f"{where}: {key} is echoed as a number"

    by_key = {(where, key): entry.value for where, key, entry in entries}
    # the first model: no production to compare with, and no NaN standing in for it
    assert ("evaluation_report", "production_auc") not in by_key
    assert by_key[("evaluation_report", "production_version")] == "none"
    assert by_key[("evaluation_report", "settings")]["offer_cost"] == 100.0
    gate = by_key[("quality_gate", "thresholds")]
    assert (gate["applied"]["min_auc"], gate["floor"]["min_auc"]) == (0.65, 0.6)
    assert by_key[("churn_scores", "settings")] == {"reasons_per_customer": 3}
    assert set(by_key[("churn_rate_plausible", "contract")]) == {"min", "max"}  # its bounds

    run = by_key[("churn_model", "mlflow_run")]
    assert run.startswith("http://127.0.0.1:15000/#/experiments/"), run
    version = by_key[("evaluation_report", "model_version")]
    assert version.startswith("http://127.0.0.1:15000/#/models/churn-classifier/versions/")
