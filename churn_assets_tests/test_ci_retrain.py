"""Retraining from CI: the GitHub Actions workflow and the Azure DevOps pipeline run the same
graph as `make run` against the team's MLflow and MinIO, from secrets they never print. Their
schemas are checked in test_deployment; here, what they do, and the commands they call."""

import re
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pytest
import yaml

from churn_assets.ml.data.synthetic import generate_customers, write_customers
from churn_assets.ml.uris import without_credentials
from churn_assets_tests.processes import REPO, base_env, free_port, run_command, running

GITHUB = yaml.safe_load((REPO / ".github/workflows/retrain.yml").read_text())
AZURE = yaml.safe_load((REPO / ".azure-pipelines/retrain.yml").read_text())
README = (REPO / "README.md").read_text()
SECRETS = {
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "CHURN_REGISTRY_LOCK",
}
#: Shell that would print the environment or trace commands with their expanded values.
LEAKS = re.compile(
    r"set -x|set -o xtrace|\bprintenv\b|^\s*env\s*$|echo \$\{?[A-Z_]*(KEY|PASSWORD|URI)", re.M
)


def _github_steps() -> list[dict[str, Any]]:
    (job,) = GITHUB["jobs"].values()
    return job["steps"]


def test_github_workflow_is_manual_or_scheduled_and_runs_make_run() -> None:
    triggers = GITHUB[True]  # YAML 1.1 reads the key `on` as a boolean
    assert set(triggers) == {"workflow_dispatch", "schedule"}
    (job,) = GITHUB["jobs"].values()
    assert {f"${{{{ secrets.{name} }}}}" for name in SECRETS} <= set(job["env"].values())
    runs = [step.get("run", "") for step in _github_steps()]
    assert "make sync" in runs and "make run" in runs
    assert any("churn fetch-data" in run for run in runs)
    summary = _github_steps()[-1]
    assert summary["if"] == "always()"
    assert "churn production --markdown" in summary["run"]
    assert "$GITHUB_STEP_SUMMARY" in summary["run"]
    assert GITHUB["permissions"] == {"contents": "read"}


def test_azure_pipeline_maps_each_secret_into_the_steps_that_need_it() -> None:
    assert AZURE["trigger"] == "none" and AZURE["schedules"]
    (job,) = AZURE["jobs"]
    scripts = [step for step in job["steps"] if "script" in step]
    train = next(step for step in scripts if "make run" in step["script"])
    assert {name: f"$({name})" for name in SECRETS}.items() <= train["env"].items()
    summary = scripts[-1]
    assert summary["condition"] == "always()"
    assert "churn production --markdown" in summary["script"]
    assert "##vso[task.uploadsummary]" in summary["script"]


@pytest.mark.parametrize("pipeline", ["github", "azure"])
def test_no_step_prints_a_secret(pipeline: str) -> None:
    if pipeline == "github":
        scripts = [step.get("run", "") for step in _github_steps()]
    else:
        scripts = [step.get("script", "") for step in AZURE["jobs"][0]["steps"]]
    for script in scripts:
        assert not LEAKS.search(script), script
        # secrets reach scripts as environment variables, never spliced into the text
        assert "secrets." not in script
        assert not any(f"$({name})" in script for name in SECRETS), script


def test_readme_lists_every_secret_the_pipelines_need() -> None:
    section = README.split("### Retraining from CI", 1)[1].split("\n## ", 1)[0]
    for name in (*SECRETS, "CHURN_DATA_S3_URI"):
        assert f"`{name}`" in section, name


def test_fetch_data_downloads_the_snapshot_from_s3(
    shell_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    keys = {"AWS_ACCESS_KEY_ID": "ci-access-key", "AWS_SECRET_ACCESS_KEY": "ci-secret-key-1234"}
    moto = [str(Path(dg.__file__).parents[4] / "bin" / "moto_server"), "-H", "127.0.0.1"]
    snapshot = write_customers(generate_customers(300, 4), tmp_path / "upload.csv")
    env = {
        **shell_env,
        **keys,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with running(
        [*moto, "-p", str(port)], base_env(), f"{endpoint}/moto-api/", tmp_path / "s3.log"
    ):
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
        )
        s3.create_bucket(Bucket="churn-data")
        s3.upload_file(str(snapshot), "churn-data", "exports/telco_churn.csv")

        done = run_command(
            [".venv/bin/churn", "fetch-data", "s3://churn-data/exports/telco_churn.csv"], env
        )
        assert done.returncode == 0, done.stderr
        assert Path(shell_env["CHURN_DATA_PATH"]).read_bytes() == snapshot.read_bytes()

        missing = run_command([".venv/bin/churn", "fetch-data", "s3://churn-data/nope.csv"], env)
        assert missing.returncode == 1 and "nope.csv" in missing.stderr
        assert keys["AWS_SECRET_ACCESS_KEY"] not in missing.stderr + missing.stdout
    assert not list(Path(shell_env["CHURN_DATA_PATH"]).parent.glob(".*.download"))


def test_tracking_uris_are_shownwithout_credentials() -> None:
    assert without_credentials("https://ci:s3cr3t@mlflow.example.com:8443/") == (
        "https://***@mlflow.example.com:8443/"
    )
    assert without_credentials("http://mlflow:5000") == "http://mlflow:5000"
    assert without_credentials("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
