"""The documented stage-by-stage commands, rollback and the CI summary, run as a user runs them.

Apart from test_cli.py (which runs `make run` itself) so the two long command-line tests run on
different workers; here production's version 1 is the session's promoted store, copied, as
`make run` on the same demo data would have left it.
"""

import shutil
from pathlib import Path

from mlflow.tracking import MlflowClient

from churn_assets_tests.conftest import PromotedStore, copied_store
from churn_assets_tests.processes import run_command

STAGES = [
    "raw_customers,cleaned_customers,customer_splits,preprocessor",
    "churn_model",
    "evaluation_report",
    "production_promotion",
]


def _production(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias("churn-classifier", "production").version)


def test_stage_by_stage_then_rollback(
    shell_env: dict[str, str], promoted_store: PromotedStore, sample_csv: Path
) -> None:
    data = Path(shell_env["CHURN_DATA_PATH"])
    data.parent.mkdir()
    shutil.copy(sample_csv, data)
    store = copied_store(promoted_store, Path(shell_env["CHURN_STATE_DIR"]))
    client = MlflowClient(store.tracking_uri, store.tracking_uri)
    assert _production(client) == "1"

    # each a separate Dagster run, reading what the one before it materialized
    for selection in STAGES:
        step = run_command(["make", "materialize", f"SELECT={selection}"], shell_env)
        assert step.returncode == 0, f"{selection}: {step.stderr[-3000:]}"
    assert _production(client) == "2"
    tags = client.get_model_version("churn-classifier", "2").tags
    assert tags["quality_gate"] == "passed"
    assert tags["compared_with_production"] == "1"
    assert {r.info.status for r in client.search_runs(["1"])} == {"FINISHED"}

    rolled = run_command(["make", "rollback"], shell_env)
    assert rolled.returncode == 0, rolled.stderr
    assert "version 2 -> 1" in rolled.stdout
    assert _production(client) == "1"

    refused = run_command([".venv/bin/churn", "rollback"], shell_env)
    assert refused.returncode == 1
    assert "records no previous 'production' version" in refused.stderr
    assert _production(client) == "1"

    # what a CI retrain writes to its job summary
    summary = run_command([".venv/bin/churn", "production", "--markdown"], shell_env)
    assert summary.returncode == 0
    assert "| newest | 2 | passed: auc >= min_auc" in summary.stdout
    assert "| production | 1 | passed: auc >= min_auc" in summary.stdout
