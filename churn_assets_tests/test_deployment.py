"""docker-compose.yml, the Dockerfiles and dagster.yaml, checked without a Docker engine."""

import json
import re
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from churn_assets_tests.processes import (
    Postgres,
    base_env,
    free_port,
    mlflow_server_command,
    running,
)
from deploy import mlflow_read_proxy, preflight
from serving.settings import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PIPELINE = ("dagster-code", "dagster-webserver", "dagster-daemon")
#: Where runs and sensors execute; the webserver and the daemon only need Dagster's storage.
RUNS = "dagster-code"
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
        "minio-init",
        "mlflow",
        "mlflow-read",
        "dagster-code",
        "dagster-webserver",
        "dagster-daemon",
        "dask-scheduler",
        "dask-worker",
        "api",
        "console",
    }
    ports = {name: [_published(p) for p in s.get("ports", [])] for name, s in SERVICES.items()}
    # no authentication of their own: loopback only unless the operator says otherwise
    assert ports["mlflow"] == ["127.0.0.1:5000:5000"]
    assert ports["dagster-webserver"] == ["127.0.0.1:3000:3000"]
    assert ports["minio"] == ["127.0.0.1:9000:9000"]  # S3 API for runs outside the stack
    assert ports["api"] == ["8000:8000"]  # behind CHURN_API_KEY
    assert ports["console"] == ["127.0.0.1:8050:8050"]  # its login, for a TLS proxy in front
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
    keys = {preflight.SIGNING_KEY, preflight.VERIFY_KEY}
    assert {*preflight.SECRETS, *preflight.REQUIRED, *keys} <= checked
    assert SERVICES["api"]["environment"]["CHURN_API_KEY"].startswith("${CHURN_API_KEY:?")
    # it runs in the training image, which has `cryptography` and holds the script
    assert SERVICES["preflight"]["build"]["dockerfile"] == "Dockerfile"
    (script,) = [a for a in SERVICES["preflight"]["command"] if a.endswith("preflight.py")]
    assert "COPY deploy/preflight.py" in (REPO / "Dockerfile").read_text()
    assert script.startswith("/opt/churn/deploy/")
    assert SERVICES["preflight"]["network_mode"] == "none"


def _preflight(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "deploy/preflight.py"), *args],
        env={"PATH": "/usr/bin:/bin", **environ},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _example() -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )


def _pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _strong() -> dict[str, str]:
    """A production env: every secret its own random value, a signing pair that pairs."""
    signing = Ed25519PrivateKey.generate()
    return {
        **_example(),
        "POSTGRES_PASSWORD": "q3V9xT2mLp8Rz6Wd4Nb1",
        "MINIO_ROOT_PASSWORD": "Hk7Ws2Qz9Lm4Xc8Vb3Nt",
        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(24),
        "API_AWS_SECRET_ACCESS_KEY": secrets.token_hex(24),
        "CHURN_API_KEY": "f0c1d2e3a4b5968778695a4b3c2d1e0f",
        "CHURN_CONSOLE_SECRET": secrets.token_hex(24),
        "CHURN_SIGNING_KEY": _pem(signing),
        "CHURN_VERIFY_KEY": _public_pem(signing),
    }


def _secret_values(environ: dict[str, str]) -> set[str]:
    names = (*preflight.SECRETS, preflight.SIGNING_KEY)
    return {environ[n] for n in names if environ.get(n, "").strip()}


def test_preflight_refuses_the_example_secrets_and_an_empty_api_key() -> None:
    example = _example()
    refused = _preflight(example)
    assert refused.returncode == 1
    for name in (
        "POSTGRES_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "API_AWS_SECRET_ACCESS_KEY",
    ):
        assert f"{name} still holds an example value" in refused.stderr
    assert "CHURN_API_KEY is empty" in refused.stderr
    assert "CHURN_SIGNING_KEY is empty" in refused.stderr
    assert "CHURN_VERIFY_KEY is empty" in refused.stderr
    for value in _secret_values(example):
        assert value not in refused.stderr + refused.stdout  # names, never values

    short = _preflight({**example, "POSTGRES_PASSWORD": "x7Kq9", "CHURN_API_KEY": ""})
    assert "POSTGRES_PASSWORD is shorter than 16 characters" in short.stderr

    accepted = _preflight(_strong())
    assert accepted.returncode == 0, accepted.stderr


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("aaaaaaaaaaaaaaaa", "has fewer than 8 different characters"),
        ("abababababababababababab", "has fewer than 8 different characters"),
        ("0123456789abcdefghij", "is too predictable"),  # a run: every step is +1
        ("abcdefghabcdefghabcdefgh", "is too predictable"),  # a block, repeated
        ("zyxwvutsrqponmlkjihgfedcba", "is too predictable"),  # a run down
    ],
)
def test_preflight_refuses_low_entropy_secrets(value: str, reason: str) -> None:
    refused = _preflight({**_strong(), "MINIO_ROOT_PASSWORD": value})
    assert refused.returncode == 1
    assert f"MINIO_ROOT_PASSWORD {reason}" in refused.stderr
    assert value not in refused.stderr + refused.stdout


def test_the_entropy_estimate_separates_random_values_from_patterns() -> None:
    for _ in range(200):
        assert preflight.entropy_bits(secrets.token_hex(24)) > 3 * preflight.MIN_ENTROPY_BITS
    for pattern in ("aaaaaaaaaaaaaaaaaaaa", "1234567890123456", "abcdabcdabcdabcdabcd"):
        assert preflight.entropy_bits(pattern) < preflight.MIN_ENTROPY_BITS, pattern


def test_preflight_refuses_one_value_for_two_secrets_naming_both() -> None:
    strong = _strong()
    reused = _preflight({**strong, "CHURN_API_KEY": strong["POSTGRES_PASSWORD"]})
    assert reused.returncode == 1
    assert "POSTGRES_PASSWORD and CHURN_API_KEY hold the same value" in reused.stderr
    assert strong["POSTGRES_PASSWORD"] not in reused.stderr + reused.stdout
    every = dict.fromkeys(preflight.SECRETS, strong["AWS_SECRET_ACCESS_KEY"])
    everywhere = _preflight({**strong, **every})
    assert f"{preflight._names(list(preflight.SECRETS))} hold the same value" in (everywhere.stderr)
    # the pipeline and the API are other MinIO accounts than root, and than each other
    shared = _preflight({**strong, "AWS_ACCESS_KEY_ID": strong["MINIO_ROOT_USER"]})
    assert "MINIO_ROOT_USER and AWS_ACCESS_KEY_ID name the same account" in shared.stderr
    shared = _preflight({**strong, "API_AWS_ACCESS_KEY_ID": strong["AWS_ACCESS_KEY_ID"]})
    assert "AWS_ACCESS_KEY_ID and API_AWS_ACCESS_KEY_ID name the same account" in shared.stderr


def test_preflight_refuses_a_signing_pair_that_does_not_pair() -> None:
    strong = _strong()
    other = Ed25519PrivateKey.generate()
    rsa = generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "CHURN_VERIFY_KEY is not the public half of CHURN_SIGNING_KEY": {
            "CHURN_VERIFY_KEY": _public_pem(other)
        },
        "CHURN_SIGNING_KEY is a RSAPrivateKey, not an Ed25519 key": {
            "CHURN_SIGNING_KEY": _pem(rsa)
        },
        "CHURN_VERIFY_KEY is a RSAPublicKey, not an Ed25519 key": {
            "CHURN_VERIFY_KEY": _public_pem(rsa)
        },
        "CHURN_VERIFY_KEY holds a private key": {"CHURN_VERIFY_KEY": strong["CHURN_SIGNING_KEY"]},
        "CHURN_SIGNING_KEY is not a readable PEM private key": {
            "CHURN_SIGNING_KEY": strong["CHURN_VERIFY_KEY"]
        },
        "CHURN_SIGNING_KEY must hold the PEM text itself": {
            "CHURN_SIGNING_KEY": "/run/secrets/churn-signing.pem"
        },
        "CHURN_VERIFY_KEY is not a readable PEM public key": {
            "CHURN_VERIFY_KEY": "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n"
        },
    }
    for message, change in cases.items():
        refused = _preflight({**strong, **change})
        assert refused.returncode == 1, message
        assert message in refused.stderr, (message, refused.stderr)
        assert "PRIVATE KEY" not in refused.stderr + refused.stdout  # a key is never printed


def test_preflight_reads_the_keys_from_an_env_file_as_env_example_shows(tmp_path: Path) -> None:
    """Double-quoted over several lines: how compose reads .env, and how python-dotenv does."""
    strong = _strong()
    text = "".join(
        f'{name}="{value}"\n' if "\n" in value else f"{name}={value}\n"
        for name, value in strong.items()
    )
    assert text.count("-----BEGIN") == 2 and '="-----BEGIN PRIVATE KEY-----\n' in text
    (tmp_path / ".env").write_text(text)
    accepted = _preflight({}, "--env-file", str(tmp_path / ".env"))
    assert accepted.returncode == 0, accepted.stderr
    mismatched = text.replace(strong["CHURN_VERIFY_KEY"], _public_pem(Ed25519PrivateKey.generate()))
    (tmp_path / ".env").write_text(mismatched)
    refused = _preflight({}, "--env-file", str(tmp_path / ".env"))
    assert "CHURN_VERIFY_KEY is not the public half" in refused.stderr
    example = (REPO / ".env.example").read_text()
    assert 'CHURN_SIGNING_KEY="-----BEGIN PRIVATE KEY-----' in example  # the shape it documents


def test_healthchecks_dependencies_restarts_and_volumes() -> None:
    long_running = set(SERVICES) - {"minio-init", "dagster-daemon", "preflight"}
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
    assert SERVICES["mlflow"]["depends_on"]["minio-init"]["condition"] == (
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
    assert "local/mlflow" in " ".join(SERVICES["minio-init"]["entrypoint"])


def test_every_connection_the_code_reads_is_provided() -> None:
    for name in (RUNS, "dask-worker", "api"):
        missing = CONNECTIONS - set(_env(name))
        assert not missing, (name, missing)
    for name in PIPELINE:
        assert set(_env(name)) >= DAGSTER_YAML_VARS, name
    assert _env(RUNS)["CHURN_DATA_PATH"].startswith("/data/")
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
    assert "--require-hashes --no-deps -r deploy/uv-bootstrap.txt" in makefile
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
def dagster_database(postgres: Postgres) -> Iterator[str]:
    with postgres.databases("churn_dagster") as (name,):
        yield name


def test_dagster_yaml_gives_postgres_storage_and_queued_runs(
    postgres: Postgres, dagster_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = yaml.safe_load((REPO / "deploy/dagster/dagster.yaml").read_text())
    database = config["storage"]["postgres"]["postgres_db"]
    assert database["port"] == 5432  # compose's; the test's own server listens elsewhere
    database["port"] = postgres.port
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    for key, value in {
        "DAGSTER_POSTGRES_HOST": postgres.host,
        "DAGSTER_POSTGRES_DB": dagster_database,
        "DAGSTER_POSTGRES_USER": postgres.user,
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


def _networks(service: str) -> set[str]:
    """The networks a service is on (compose's `default` when it names none)."""
    spec = SERVICES[service]
    if spec.get("network_mode") == "none":
        return set()
    return set(spec.get("networks") or {"default"})


def _reachable_from(service: str) -> set[str]:
    """Services that share a network with this one: all it can open a connection to."""
    mine = _networks(service)
    return {other for other in SERVICES if other != service and _networks(other) & mine}


def _interpolated(service: str) -> set[str]:
    """The .env variables a service's environment and command are built from."""
    command = SERVICES[service].get("command") or []
    values = " ".join([*_env(service).values(), *command])
    return set(re.findall(r"(?<!\$)\$\{(\w+)", values))


def test_the_api_reaches_only_the_read_only_mlflow_door_and_minio() -> None:
    declared = set(COMPOSE["networks"])
    for name in SERVICES:
        assert _networks(name) <= declared, name  # nobody on the implicit `default` network
    assert _reachable_from("api") == {"mlflow-read", "minio"}
    for name in ("postgres", "dask-scheduler", "dask-worker", "mlflow", "dagster-code"):
        assert name not in _reachable_from("api"), name
        # nothing on their networks leaves the host, nor reaches the API
        for network in _networks(name) - {"operator"}:
            assert COMPOSE["networks"][network].get("internal") is True, (name, network)
    assert not _networks("api") & (_networks("postgres") | _networks("dask-scheduler"))
    # the API's one network that is not internal (for publishing :8000) is its alone
    (edge,) = [n for n in _networks("api") if not COMPOSE["networks"][n].get("internal")]
    assert {s for s in SERVICES if edge in _networks(s)} == {"api"}
    # the door forwards to the server the pipeline writes to, and is the only way there
    assert _env("api")["MLFLOW_TRACKING_URI"] == "http://mlflow-read:5000"
    command = SERVICES["mlflow-read"]["command"]
    assert command[command.index("--upstream") + 1] == _env(RUNS)["MLFLOW_TRACKING_URI"]
    assert "/opt/churn/deploy/mlflow_read_proxy.py" in command
    assert "COPY deploy/preflight.py deploy/mlflow_read_proxy.py" in (
        (REPO / "Dockerfile").read_text()
    )
    assert _reachable_from("mlflow-read") == {"api", "console", "minio", "mlflow"}
    assert _networks("preflight") == set()


def test_the_api_holds_only_read_only_credentials() -> None:
    api = _env("api")
    assert _interpolated("api") == {
        "API_AWS_ACCESS_KEY_ID",
        "API_AWS_SECRET_ACCESS_KEY",
        "CHURN_MODEL_NAME",
        "CHURN_VERIFY_KEY",
        "CHURN_REFRESH_INTERVAL_S",
        "CHURN_API_KEY",
    }
    assert api["AWS_ACCESS_KEY_ID"].startswith("${API_AWS_ACCESS_KEY_ID:?")
    assert api["AWS_SECRET_ACCESS_KEY"].startswith("${API_AWS_SECRET_ACCESS_KEY:?")
    forbidden = {"POSTGRES_PASSWORD", "DAGSTER_POSTGRES_PASSWORD", "CHURN_REGISTRY_LOCK"}
    forbidden |= {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "CHURN_SIGNING_KEY"}
    assert not forbidden & set(api)

    def holders(variable: str) -> set[str]:
        return {name for name in SERVICES if variable in _interpolated(name)}

    assert holders("MINIO_ROOT_PASSWORD") == {"preflight", "minio", "minio-init"}
    assert holders("POSTGRES_PASSWORD") == {
        "preflight",
        "postgres",
        "mlflow",
        "dagster-code",
        "dagster-webserver",
        "dagster-daemon",
    }
    assert holders("CHURN_SIGNING_KEY") == {"preflight", "dagster-code"}
    assert holders("AWS_SECRET_ACCESS_KEY") == {
        "preflight",
        "minio-init",
        "mlflow",
        "dagster-code",
        "dask-worker",
    }
    assert holders("API_AWS_SECRET_ACCESS_KEY") == {"preflight", "minio-init", "api", "console"}
    assert holders("CHURN_VERIFY_KEY") == {
        "preflight",
        "api",
        "dagster-code",
        "dask-worker",
        "console",
    }
    assert holders("CHURN_CONSOLE_SECRET") == {"preflight", "console"}


def test_every_mlflow_user_refuses_pickles() -> None:
    users = {n for n in SERVICES if "MLFLOW_TRACKING_URI" in _env(n)} | {"mlflow"}
    assert users == {"api", "mlflow", "dagster-code", "dask-worker", "console"}
    for name in users:
        assert _env(name)["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false", name
    for dockerfile in ("Dockerfile", "serving/Dockerfile"):  # also where a deployment forgets
        assert "MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false" in (REPO / dockerfile).read_text()


def _policy_actions(policy: dict[str, Any]) -> dict[str, set[str]]:
    """Resource: the actions a MinIO policy allows on it."""
    allowed: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        for resource in statement["Resource"]:
            allowed.setdefault(resource, set()).update(statement["Action"])
    return allowed


def test_minio_init_gives_the_api_a_read_only_user() -> None:
    init = SERVICES["minio-init"]
    steps = [step.strip() for step in " ".join(init["entrypoint"][2:]).split("&&")]
    (mount,) = init["volumes"]
    source, target = mount.split(":")[:2]
    policies = {}
    for step in steps:
        if step.startswith("mc admin policy create"):
            _, _, _, _, _, name, path = step.split()
            assert path.startswith(target + "/")
            policies[name] = json.loads(
                (REPO / source / path.removeprefix(target + "/")).read_text()
            )

    def index(command: str) -> int:
        return steps.index(command)

    api_user = index(
        'mc admin user add local "$${API_AWS_ACCESS_KEY_ID}" "$${API_AWS_SECRET_ACCESS_KEY}"'
    )
    api_policy = index(
        'mc admin policy attach local churn-api-read --user "$${API_AWS_ACCESS_KEY_ID}"'
    )
    pipeline_user = index(
        'mc admin user add local "$${AWS_ACCESS_KEY_ID}" "$${AWS_SECRET_ACCESS_KEY}"'
    )
    pipeline_policy = index(
        'mc admin policy attach local churn-readwrite --user "$${AWS_ACCESS_KEY_ID}"'
    )
    assert steps[0].startswith('mc alias set local http://minio:9000 "$${MINIO_ROOT_USER}"')
    api_policy_made = index(
        "mc admin policy create local churn-api-read /policies/churn-api-read.json"
    )
    assert api_policy_made < api_policy and api_user < api_policy
    assert pipeline_user < pipeline_policy
    # the API may list and read the model bucket, nothing else: no write, no other bucket
    assert _policy_actions(policies["churn-api-read"]) == {
        "arn:aws:s3:::mlflow": {"s3:GetBucketLocation", "s3:ListBucket"},
        "arn:aws:s3:::mlflow/*": {"s3:GetObject"},
    }
    # the pipeline writes its two buckets (and may list which exist), and is not root
    pipeline = _policy_actions(policies["churn-readwrite"])
    assert pipeline.pop("arn:aws:s3:::*") == {"s3:ListAllMyBuckets", "s3:GetBucketLocation"}
    assert set(pipeline) == {
        f"arn:aws:s3:::{b}{suffix}" for b in ("mlflow", "churn") for suffix in ("", "/*")
    }
    assert not any(a.startswith("admin:") for actions in pipeline.values() for a in actions)
    for bucket in ("mlflow", "churn"):
        assert f"mc mb --ignore-existing local/{bucket}" in steps
    for name in ("mlflow", "api"):  # nobody uses a user before it exists
        condition = SERVICES[name]["depends_on"]["minio-init"]["condition"]
        assert condition == "service_completed_successfully", name


@pytest.mark.parametrize(
    ("method", "target", "passes"),
    [
        ("GET", "/api/2.0/mlflow/registered-models/alias?name=m&alias=production", True),
        ("GET", "/api/2.0/mlflow/model-versions/get?name=m&version=1", True),
        ("HEAD", "/health", True),
        ("POST", "/api/2.0/mlflow/runs/search", True),
        ("POST", "/api/2.0/mlflow/logged-models/search", True),
        ("POST", "/ajax-api/2.0/mlflow/experiments/search", True),
        ("POST", "/api/2.0/mlflow/registered-models/alias", False),
        ("DELETE", "/api/2.0/mlflow/registered-models/alias?name=m&alias=production", False),
        ("POST", "/api/2.0/mlflow/model-versions/set-tag", False),
        ("PATCH", "/api/2.0/mlflow/model-versions/update", False),
        ("POST", "/api/2.0/mlflow/runs/../registered-models/alias/search", False),
        ("POST", "/api/2.0/mlflow/registered-models/alias?x=/runs/search", False),
        ("POST", "/graphql", False),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/x", False),
    ],
)
def test_the_read_proxy_lets_only_reads_through(method: str, target: str, passes: bool) -> None:
    assert mlflow_read_proxy.allowed(method, target) is passes


def test_the_read_proxy_serves_mlflow_reads_and_refuses_its_writes(tmp_path: Path) -> None:
    """A real `mlflow server` behind the proxy, driven by MLflow's own client."""
    port, name = free_port(), "churn-classifier"
    server = [
        *mlflow_server_command(f"sqlite:///{tmp_path / 'mlflow.db'}", port),
        *("--default-artifact-root", str(tmp_path / "artifacts")),
    ]
    with running(
        server, base_env(), f"http://127.0.0.1:{port}/health", tmp_path / "mlflow.log", tmp_path
    ):
        direct = MlflowClient(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}")
        experiment = direct.create_experiment("churn")
        run = direct.create_run(experiment)
        direct.create_registered_model(name)
        for _ in range(2):
            direct.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
        direct.set_registered_model_alias(name, "production", "1")

        proxy = mlflow_read_proxy.serve(f"http://127.0.0.1:{port}", "127.0.0.1", 0)
        thread = threading.Thread(target=proxy.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{proxy.server_address[1]}"
            reader = MlflowClient(url, url)
            assert reader.get_model_version_by_alias(name, "production").version == "1"
            found = reader.search_model_versions(f"name = '{name}'")
            assert {v.version for v in found} == {"1", "2"}
            assert [r.info.run_id for r in reader.search_runs([experiment])] == [run.info.run_id]
            writes: list[Callable[[], object]] = [
                lambda: reader.set_registered_model_alias(name, "production", "2"),
                lambda: reader.delete_registered_model_alias(name, "production"),
                lambda: reader.set_model_version_tag(name, "2", "quality_gate", "passed"),
                lambda: reader.delete_model_version(name, "1"),
                lambda: reader.create_registered_model("another"),
            ]
            for write in writes:
                with pytest.raises(MlflowException) as refused:
                    write()
                assert refused.value.error_code == "PERMISSION_DENIED"
        finally:
            proxy.shutdown()
            proxy.server_close()
        assert direct.get_model_version_by_alias(name, "production").version == "1"
        assert "quality_gate" not in direct.get_model_version(name, "2").tags
        assert {v.version for v in direct.search_model_versions(f"name = '{name}'")} == {"1", "2"}


def test_compose_daemon_sees_the_run_workers() -> None:
    """The daemon's health check reads /proc: it must share dagster-code's PID namespace."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert compose["services"]["dagster-daemon"]["pid"] == "service:dagster-code"
    code_env = compose["services"]["dagster-code"]["environment"]
    assert code_env["CHURN_REGISTRY_LOCK"].startswith("postgresql://")


def test_github_workflow_runs_the_readme_test_command_alone() -> None:
    """`make test` needs only Python 3.11 and make: the tests start their own PostgreSQL."""
    workflow = yaml.safe_load((REPO / ".github/workflows/ci.yml").read_text())
    (job,) = workflow["jobs"].values()
    assert "services" not in job
    assert [s["run"] for s in job["steps"] if "run" in s] == ["make test"]
    assert "make test" in (REPO / "README.md").read_text()
    ci = (REPO / ".ci/run").read_text()
    assert "make test" in ci and "pg_ctl" not in ci


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


def test_the_console_reads_what_the_platform_keeps_and_nothing_else() -> None:
    """Read-only credentials (MinIO's read-only user, the read-only MLflow door), the scores
    folder mounted read-only, and no way to the API, the database or the Dask cluster."""
    console = SERVICES["console"]
    env = _env("console")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow-read:5000"
    assert env["AWS_ACCESS_KEY_ID"].startswith("${API_AWS_ACCESS_KEY_ID:?")
    forbidden = {"POSTGRES_PASSWORD", "CHURN_REGISTRY_LOCK", "CHURN_SIGNING_KEY", "CHURN_API_KEY"}
    assert not forbidden & (set(env) | _interpolated("console"))
    assert _reachable_from("console") == {"mlflow-read", "minio"}
    (edge,) = [n for n in _networks("console") if not COMPOSE["networks"][n].get("internal")]
    assert {s for s in SERVICES if edge in _networks(s)} == {"console"}
    volumes = {_published(v).split(":")[1]: _published(v) for v in console["volumes"]}
    assert volumes[env["CHURN_SCORES_DIR"]].endswith(":ro")
    assert volumes[env["CHURN_STATE_DIR"] + "/console"].startswith("console-state:")
    assert console["read_only"] is True and console["command"] == ["python", "-m", "console"]
    assert "COPY console console" in (REPO / "Dockerfile").read_text()
    # its volume's mount point exists in the image, owned by the user it runs as, so Docker
    # creates the volume writable
    assert "mkdir -p /opt/dagster/dagster_home /data/state/console" in (
        (REPO / "Dockerfile").read_text()
    )
    assert "/healthz" in " ".join(console["healthcheck"]["test"])
