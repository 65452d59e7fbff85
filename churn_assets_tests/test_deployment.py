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


def _published(mapping: str) -> str:
    """A port mapping with `${VAR:-default}` resolved to its default, as an unset .env does."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", mapping)


def test_every_service_of_the_stack_is_there() -> None:
    assert set(SERVICES) == {
        "preflight",
        "postgres",
        "minio",
        "minio-buckets",
        "mlflow",
        "dagster-code",
        "dagster-webserver",
        "dagster-daemon",
        "dask-scheduler",
        "dask-worker",
        "api",
    }
    ports = {name: [_published(p) for p in s.get("ports", [])] for name, s in SERVICES.items()}
    # no authentication of their own: loopback only unless the operator says otherwise
    assert ports["mlflow"] == ["127.0.0.1:5000:5000"]
    assert ports["dagster-webserver"] == ["127.0.0.1:3000:3000"]
    assert ports["minio"] == ["127.0.0.1:9000:9000"]  # S3 API for runs outside the stack
    assert ports["api"] == ["8000:8000"]  # behind CHURN_API_KEY
    assert not ports["postgres"]
    assert "--no-serve-artifacts" in SERVICES["mlflow"]["command"]  # so clients need MinIO
    assert not ports["dask-scheduler"] and not ports["dask-worker"]  # inside the stack only


def test_runs_spread_partitions_over_dask_workers_that_reach_the_store() -> None:
    """`--scale dask-worker=N` needs a worker without a fixed name or port; the runs' scheduler
    address must be what the workers serve, and the partitions live on the S3 store, which
    the workers reach with the runs' credentials (no volume shared with the runs)."""
    worker = SERVICES["dask-worker"]
    assert "container_name" not in worker and not worker.get("ports")
    assert "tcp://dask-scheduler:8786" in worker["command"]
    assert "--nthreads=1" in worker["command"]
    assert "8786" in SERVICES["dask-scheduler"]["command"]
    code = _env("dagster-code")
    assert code["CHURN_DASK_SCHEDULER"] == "tcp://dask-scheduler:8786"
    assert not worker.get("volumes")
    assert set(CONNECTIONS) <= set(_env("dask-worker"))  # they load models from MLflow
    workers = _env("dask-worker")
    for name in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert workers[name] == code[name], name  # the store the runs write to
    # snapshots and asset outputs (cleaned partitions too) live on the artifact store
    assert code["CHURN_IO_URI"].startswith("s3://churn/")
    assert code["CHURN_SNAPSHOT_URI"].startswith("s3://churn/")


def _dependencies(name: str) -> set[str]:
    direct = set(SERVICES[name].get("depends_on") or {})
    return direct.union(*(_dependencies(d) for d in direct)) if direct else set()


def test_nothing_starts_before_the_preflight_check() -> None:
    for name in set(SERVICES) - {"preflight"}:
        assert "preflight" in _dependencies(name), name
    checked = set(SERVICES["preflight"]["environment"])
    assert {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "CHURN_API_KEY"} <= checked
    assert SERVICES["api"]["environment"]["CHURN_API_KEY"].startswith("${CHURN_API_KEY:?")


def _preflight(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "deploy/preflight.py")],
        env={"PATH": "/usr/bin:/bin", **environ},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_preflight_refuses_the_example_secrets_and_an_empty_api_key() -> None:
    example = dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    refused = _preflight(example)
    assert refused.returncode == 1
    for name in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "AWS_SECRET_ACCESS_KEY"):
        assert f"{name} still holds an example value" in refused.stderr
    assert "CHURN_API_KEY is empty" in refused.stderr
    for value in {v for k, v in example.items() if "PASSWORD" in k or "SECRET" in k}:
        assert value not in refused.stderr + refused.stdout  # names, never values

    short = _preflight({**example, "POSTGRES_PASSWORD": "x7Kq9", "CHURN_API_KEY": ""})
    assert "POSTGRES_PASSWORD is shorter than 16 characters" in short.stderr

    strong = {
        **example,
        "POSTGRES_PASSWORD": "q3V9xT2mLp8Rz6Wd4Nb1",
        "MINIO_ROOT_PASSWORD": "Hk7Ws2Qz9Lm4Xc8Vb3Nt",
        "AWS_SECRET_ACCESS_KEY": "Hk7Ws2Qz9Lm4Xc8Vb3Nt",
        "CHURN_API_KEY": "f0c1d2e3a4b5968778695a4b3c2d1e0f",
    }
    accepted = _preflight(strong)
    assert accepted.returncode == 0, accepted.stderr


def test_healthchecks_dependencies_restarts_and_volumes() -> None:
    long_running = set(SERVICES) - {"minio-buckets", "dagster-daemon", "preflight"}
    for name in long_running:
        assert "healthcheck" in SERVICES[name], name
    for name, service in SERVICES.items():
        expected = {"no"} if name == "preflight" else {"unless-stopped", "on-failure"}
        assert service.get("restart") in expected, name
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


DIGEST = re.compile(r"^[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}$")


def test_images_are_built_from_files_that_exist_and_the_lock() -> None:
    for name, service in SERVICES.items():
        build = service.get("build")
        if build is None:
            assert DIGEST.match(service["image"]), f"{name}: {service['image']} is not pinned"
            continue
        dockerfile = REPO / build["context"] / build["dockerfile"]
        text = dockerfile.read_text()
        assert "uv sync --frozen" in text and "uv.lock" in text, name
        for line in text.splitlines():
            if line.startswith("COPY ") and "--from" not in line:
                for source in line.split()[1:-1]:
                    assert (REPO / source).exists(), (dockerfile, source)
    assert "--group serving" in (REPO / "serving/Dockerfile").read_text()


def test_base_images_and_actions_are_pinned_and_uv_is_hash_checked() -> None:
    for dockerfile in (REPO / "Dockerfile", REPO / "serving/Dockerfile"):
        text = dockerfile.read_text()
        for line in text.splitlines():
            if line.startswith("FROM "):
                assert DIGEST.match(line.split()[1]), (dockerfile, line)
            assert "COPY --from=" not in line or "COPY --from=build" in line, line
        assert "--require-hashes" in text and "deploy/uv-bootstrap.txt" in text
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes --no-deps \\\n\t\t-r deploy/uv-bootstrap.txt" in makefile
    requirements = (REPO / "deploy/uv-bootstrap.txt").read_text()
    assert re.search(r"^uv==\d+\.\d+\.\d+ \\$", requirements, re.M)
    assert len(re.findall(r"--hash=sha256:[0-9a-f]{64}", requirements)) >= 10  # every wheel
    for workflow in (REPO / ".github/workflows").glob("*.yml"):
        uses = re.findall(r"uses: (\S+)", workflow.read_text())
        assert uses, workflow
        for action in uses:
            assert re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", action), (workflow, action)
        for image in re.findall(r"image: (\S+)", workflow.read_text()):
            assert DIGEST.match(image), (workflow, image)


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
        ("vendor.github-workflows", ".github/workflows/retrain.yml"),
        ("vendor.azure-pipelines", ".azure-pipelines/retrain.yml"),
    ],
)
def test_files_validate_against_their_published_schemas(schema: str, path: str) -> None:
    validator = Path(sys.executable).parent / "check-jsonschema"
    # the Azure schema's patterns are Python regexes, not ECMAScript ones
    done = subprocess.run(
        [str(validator), "--regex-variant", "python", "--builtin-schema", schema, str(REPO / path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
