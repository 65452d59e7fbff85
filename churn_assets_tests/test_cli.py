"""The commands the README documents, run as a user runs them: real processes, real stores."""

import re
import subprocess
from pathlib import Path

from mlflow.tracking import MlflowClient

from churn_assets_tests.processes import run_command

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 600
STAGES = [
    "raw_customers,cleaned_customers,customer_splits,preprocessor",
    "churn_model",
    "evaluation_report",
    "production_promotion",
]


def _production(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias("churn-classifier", "production").version)


def _readme_figures_are_this_runs(client: MlflowClient) -> None:
    """The README's value figures come from `make run` on the demo data (same seed)."""
    (run,) = client.search_runs(["1"])
    readme = (REPO / "README.md").read_text()
    for metric in (
        "holdout_expected_value_per_1000_customers",
        "holdout_expected_value_target_all_per_1000_customers",
    ):
        figure = f"{round(run.data.metrics[metric], -2):,.0f} per 1,000"
        assert figure in readme, (metric, figure)


def test_make_run_then_stage_by_stage_then_rollback(shell_env: dict[str, str]) -> None:
    # an explicit CHURN_DATA_PATH that does not exist (a typo) trains nothing
    data = Path(shell_env["CHURN_DATA_PATH"])
    typo = run_command(["make", "run"], shell_env)
    assert typo.returncode != 0
    assert f"CHURN_DATA_PATH is {data}, which does not exist" in typo.stderr
    assert not data.exists()
    assert not (Path(shell_env["CHURN_STATE_DIR"]) / "mlflow.db").exists()

    generated = run_command([".venv/bin/churn", "generate-data", "--out", str(data)], shell_env)
    assert generated.returncode == 0, generated.stderr
    done = run_command(["make", "run"], shell_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "churn-classifier@production = version 1" in done.stdout
    found = re.search(r"holdout_auc: ([0-9.]+)", done.stdout)
    assert found is not None
    assert float(found.group(1)) >= 0.82
    home = Path(shell_env["DAGSTER_HOME"])
    assert any(home.rglob("*.db"))  # where `make dev` looks
    assert "run_monitoring" in (home / "dagster.yaml").read_text()
    assert "DeprecationWarning" not in done.stderr and "superseded" not in done.stderr
    uri = f"sqlite:///{shell_env['CHURN_STATE_DIR']}/mlflow.db"
    client = MlflowClient(uri, uri)
    assert {r.info.status for r in client.search_runs(["1"])} == {"FINISHED"}
    _readme_figures_are_this_runs(client)

    # a user's data file is never overwritten
    before = data.read_bytes()
    again = run_command(["make", "data"], shell_env)
    assert again.returncode == 0
    assert "using existing" in again.stdout
    assert data.read_bytes() == before

    # the documented stage-by-stage commands, each a separate Dagster run
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

    # what a CI retrain writes to its job summary (`make run` showed the plain form)
    summary = run_command([".venv/bin/churn", "production", "--markdown"], shell_env)
    assert summary.returncode == 0
    assert "| newest | 2 | passed: auc >= min_auc" in summary.stdout
    assert "| production | 1 | passed: auc >= min_auc" in summary.stdout


def test_demo_data_only_for_the_default_path(tmp_path: Path, shell_env: dict[str, str]) -> None:
    env = {k: v for k, v in shell_env.items() if k != "CHURN_DATA_PATH"}
    done = subprocess.run(
        [str(REPO / ".venv/bin/churn"), "ensure-data"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "SYNTHETIC demo customers" in done.stdout
    assert (tmp_path / "data" / "telco_churn.csv").is_file()
