"""The commands the README documents, run as a user runs them: real processes, real stores."""

import re
import subprocess
from pathlib import Path

from mlflow.tracking import MlflowClient

from churn_assets_tests.processes import run_command

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 600


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


def test_make_run_trains_and_promotes_on_the_demo_data(shell_env: dict[str, str]) -> None:
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
    # a line per step, then the promoted version in words: no events, warnings or raw IDs
    screen = (done.stdout + done.stderr).splitlines()
    assert len(screen) < 40, screen
    for step in ("raw_customers", "churn_model", "evaluation_report_quality_gate", "churn_scores"):
        assert any(re.match(rf"^  ok +{step} +[0-9.]+ s$", line) for line in screen), step
    assert "churn-classifier version 1 is in production" in done.stdout
    found = re.search(r"holdout AUC ([0-9.]+), accuracy ([0-9.]+)", done.stdout)
    assert found is not None
    assert float(found.group(1)) >= 0.82
    assert "gate passed:" in done.stdout
    assert re.search(
        r"snapshot [0-9a-f]{12} · Dagster run \S{12} · MLflow run [0-9a-f]{12}$",
        done.stdout,
        re.MULTILINE,
    )
    assert not re.search(r"[0-9a-f]{20}", done.stdout)  # no full IDs
    assert not re.search(r"Warning|Traceback|DEBUG|RUN_SUCCESS", done.stdout + done.stderr)
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
