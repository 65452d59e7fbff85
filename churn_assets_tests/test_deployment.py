"""docker-compose.yml, the Dockerfiles and dagster.yaml, checked without a Docker engine."""

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from churn_assets_tests.processes import postgres_databases
from serving.settings import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PIPELINE = ("dagster-code", "dagster-webserver", "dagster-daemon")
#: What the code must be told in production: where MLflow and its artifact store are.
CONNECTIONS = {
    "MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
DAGSTER_YAML_VARS = set(
    re.findall(r"env: (\w+)", (REPO / "deploy/dagster/dagster.yaml").read_text())
)


def _env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


def test_every_service_of_the_stack_is_there() -> None:
    assert set(SERVICES) == {
        "postgres",
        "minio",
        "minio-buckets",
        "mlflow",
        "dagster-code",
        "dagster-webserver",
        "dagster-daemon",
        "api",
    }
    ports = {name: s.get("ports", []) for name, s in SERVICES.items()}
    assert ports["mlflow"] == ["5000:5000"]
    assert ports["dagster-webserver"] == ["3000:3000"]
    assert ports["api"] == ["8000:8000"]
    assert not ports["postgres"] and not ports["minio"]  # internal only


def test_healthchecks_dependencies_restarts_and_volumes() -> None:
    long_running = set(SERVICES) - {"minio-buckets", "dagster-daemon"}
    for name in long_running:
        assert "healthcheck" in SERVICES[name], name
    for name, service in SERVICES.items():
        assert service.get("restart") in {"unless-stopped", "on-failure"}, name
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, (name, dependency)
            assert condition["condition"] in {
                "service_healthy",
                "service_completed_successfully",
            }
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], dependency
    assert SERVICES["mlflow"]["depends_on"]["minio-buckets"]["condition"] == (
        "service_completed_successfully"
    )
    named = set(COMPOSE["volumes"])
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            # `${VAR:-./default}` binds a host folder the operator may choose; Docker creates
            # it when missing, so only its default's shape is checked.
            source = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", volume).split(":")[0]
            if source != volume.split(":")[0]:
                assert source.startswith("./data/"), volume
            elif source.startswith("."):
                assert (REPO / source).exists(), source
            else:
                assert source in named, source
    code_volumes = [v.split(":")[-1] for v in SERVICES["dagster-code"]["volumes"]]
    assert {"/data", "/data/incoming", "/data/scores"} <= set(code_volumes)
    environment = SERVICES["dagster-code"]["environment"]
    assert environment["CHURN_INCOMING_DIR"] == "/data/incoming"
    assert environment["CHURN_SCORES_DIR"] == "/data/scores"


def test_mlflow_server_uses_postgres_and_the_minio_bucket() -> None:
    command = " ".join(SERVICES["mlflow"]["command"])
    assert "--backend-store-uri=postgresql+psycopg2://" in command
    assert "@postgres:5432/mlflow" in command
    assert "--default-artifact-root=s3://mlflow/" in command
    init = (REPO / "deploy/postgres/init.sql").read_text()
    assert "CREATE DATABASE mlflow" in init and "CREATE DATABASE dagster" in init
    assert "local/mlflow" in " ".join(SERVICES["minio-buckets"]["entrypoint"])


def test_every_connection_the_code_reads_is_provided() -> None:
    for name in (*PIPELINE, "api"):
        missing = CONNECTIONS - set(_env(name))
        assert not missing, (name, missing)
    for name in PIPELINE:
        assert set(_env(name)) >= DAGSTER_YAML_VARS, name
        assert _env(name)["CHURN_DATA_PATH"].startswith("/data/")
    known = {f.alias for f in Settings.model_fields.values()} | DAGSTER_YAML_VARS | CONNECTIONS
    for name in (*PIPELINE, "api"):
        unknown = {v for v in _env(name) if v.startswith("CHURN_")} - known
        assert not unknown, (name, unknown)  # a typo would silently fall back to a default


def test_every_variable_compose_interpolates_is_in_env_example() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    example = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert used <= example, used - example
    assert not (REPO / ".env").exists() or ".env" in (REPO / ".gitignore").read_text()


def test_images_are_built_from_files_that_exist_and_the_lock() -> None:
    for name, service in SERVICES.items():
        build = service.get("build")
        if build is None:
            assert ":" in service["image"] and not service["image"].endswith(":latest"), name
            continue
        dockerfile = REPO / build["context"] / build["dockerfile"]
        text = dockerfile.read_text()
        assert "uv sync --frozen" in text and "uv.lock" in text, name
        for line in text.splitlines():
            if line.startswith("COPY ") and "--from" not in line:
                for source in line.split()[1:-1]:
                    assert (REPO / source).exists(), (dockerfile, source)
    assert "--group serving" in (REPO / "serving/Dockerfile").read_text()


@pytest.fixture
def dagster_database() -> Iterator[str]:
    with postgres_databases("churn_dagster") as (name,):
        yield name


def test_dagster_yaml_gives_postgres_storage_and_queued_runs(
    dagster_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(REPO / "deploy/dagster/dagster.yaml", tmp_path / "dagster.yaml")
    for key, value in {
        "DAGSTER_POSTGRES_HOST": "127.0.0.1",
        "DAGSTER_POSTGRES_DB": dagster_database,
        "DAGSTER_POSTGRES_USER": "postgres",
        "DAGSTER_POSTGRES_PASSWORD": "",
    }.items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.get_concurrency_config().pool_config.pool_granularity.value == "run"
        assert type(instance.run_launcher).__name__ == "MonitoredRunLauncher"
        assert instance.run_launcher.supports_check_run_worker_health
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds > 0
        assert instance.get_runs() == []


def test_local_instance_has_run_monitoring_and_the_retrain_pool(tmp_path: Path) -> None:
    """What `make run` and `make dev` use (make copies it into DAGSTER_HOME)."""
    shutil.copy(REPO / "deploy/dagster/local.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_launcher.supports_check_run_worker_health
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.get_concurrency_config().pool_config.pool_granularity.value == "op"


def test_compose_daemon_sees_the_run_workers() -> None:
    """The daemon's health check reads /proc: it must share dagster-code's PID namespace."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert compose["services"]["dagster-daemon"]["pid"] == "service:dagster-code"
    code_env = compose["services"]["dagster-code"]["environment"]
    assert code_env["CHURN_REGISTRY_LOCK"].startswith("postgresql://")


def test_github_workflow_runs_the_readme_test_command_with_postgres() -> None:
    workflow = yaml.safe_load((REPO / ".github/workflows/ci.yml").read_text())
    (job,) = workflow["jobs"].values()
    assert "postgres" in job["services"]
    assert job["services"]["postgres"]["ports"] == ["5432:5432"]
    assert [s["run"] for s in job["steps"] if "run" in s] == ["make test"]
    assert "make test" in (REPO / "README.md").read_text()
    assert "make test" in (REPO / ".ci/run").read_text()


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ("vendor.compose-spec", "docker-compose.yml"),
        ("vendor.github-workflows", ".github/workflows/ci.yml"),
    ],
)
def test_files_validate_against_their_published_schemas(schema: str, path: str) -> None:
    validator = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run(
        [str(validator), "--builtin-schema", schema, str(REPO / path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
