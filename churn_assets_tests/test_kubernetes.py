"""deploy/kubernetes, checked without a cluster.

Every manifest is validated against the Kubernetes API's own schemas (kubernetes-validate ships
them, strict: an unknown field fails); the Dagster instance in the ConfigMap is loaded by
Dagster with its Kubernetes run launcher, which renders the Job of a run, and that Job is
validated the same way. The rest checks what no schema knows: that names refer to objects that
exist, that Services reach their pods, that the pods get what compose gives its services, and,
with the Secrets deploy/kubernetes_secrets.py renders from an env file, that each pod (a run's
too) holds the credentials it needs and no other.
"""

import base64
import copy
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster._core.storage.dagster_run import DagsterRun
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import construct_dagster_k8s_job

from churn_assets_tests.processes import Postgres
from deploy import kubernetes_secrets

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "deploy/kubernetes"
#: The oldest minor release the major clouds still support, and the newest the schemas know.
VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
NAMESPACE = "churn"
#: Rendered from .env by deploy/kubernetes_secrets.py, never committed.
RENDERED_SECRETS = set(kubernetes_secrets.SECRETS)
RENDERED_CONFIG_MAPS = set(kubernetes_secrets.CONFIG_MAPS)
IMAGES = {"churn-platform:latest", "churn-api:latest"}


def _documents() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(FOLDER.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


DOCUMENTS = _documents()


def _named(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in DOCUMENTS if d["kind"] == kind}


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, deployment in _named("Deployment").items():
        yield name, deployment["spec"]["template"]["spec"]


def _containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in _pod_specs():
        for container in spec["containers"]:
            yield name, container


ENV = _named("ConfigMap")["churn-env"]["data"]
INSTANCE = _named("ConfigMap")["churn-dagster-instance"]["data"]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_passes_the_kubernetes_schemas_strictly(version: str) -> None:
    assert len(DOCUMENTS) >= 24
    for document in DOCUMENTS:
        kubernetes_validate.validate(document, version, strict=True)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    worker = copy.deepcopy(_named("Deployment")["churn-dask-worker"])
    worker["spec"]["replica"] = 4
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(worker, VERSIONS[0], strict=True)
    worker = copy.deepcopy(_named("Deployment")["churn-dask-worker"])
    worker["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = [5]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, VERSIONS[0], strict=True)


def test_everything_lives_in_one_namespace_and_runs_the_built_images() -> None:
    for document in DOCUMENTS:
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == NAMESPACE, document["metadata"]
    assert set(_named("Namespace")) == {NAMESPACE}
    assert {c["image"] for _, c in _containers()} == IMAGES
    assert _named("Deployment")["churn-api"]["spec"]["template"]["spec"]["containers"][0][
        "image"
    ] == ("churn-api:latest")


def test_every_name_a_pod_refers_to_exists() -> None:
    config_maps = set(_named("ConfigMap")) | RENDERED_CONFIG_MAPS
    claims = set(_named("PersistentVolumeClaim"))
    accounts = set(_named("ServiceAccount"))
    for name, spec in _pod_specs():
        assert spec.get("serviceAccountName", "default") in accounts | {"default"}, name
        # only the pods that launch and end runs hold a Kubernetes API token
        if spec.get("serviceAccountName") != "churn-dagster":
            assert spec["automountServiceAccountToken"] is False, name
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, name
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
        mounted = {v["name"] for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            assert {m["name"] for m in container.get("volumeMounts", [])} <= mounted, name
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps, name
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in RENDERED_SECRETS, name
    binding = _named("RoleBinding")["churn-dagster-runs"]
    assert binding["roleRef"]["name"] in _named("Role")
    assert {s["name"] for s in binding["subjects"]} <= accounts


def test_every_service_reaches_one_deployment_on_a_named_port() -> None:
    deployments = _named("Deployment")
    for name, service in _named("Service").items():
        selector = service["spec"]["selector"]
        targets = [
            d
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, name
        (target,) = targets
        assert target["spec"]["selector"]["matchLabels"].items() <= (
            target["spec"]["template"]["metadata"]["labels"].items()
        )
        ports = {
            p["name"]: p["containerPort"]
            for c in target["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (name, port)
            assert port["port"] == ports[port["targetPort"]], (name, port)


DASK_ACCESS = "churn/dask-access"


def test_only_the_dask_pods_and_the_runs_reach_the_dask_cluster() -> None:
    """A scheduler runs whatever a client sends it; the workers hold the store credentials."""
    policy = _named("NetworkPolicy")["churn-dask"]
    (expression,) = policy["spec"]["podSelector"]["matchExpressions"]
    assert expression["key"] == "app.kubernetes.io/name" and expression["operator"] == "In"
    assert set(expression["values"]) == {"churn-dask-scheduler", "churn-dask-worker"}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {DASK_ACCESS: "true"}}}]
    labelled = {
        name
        for name, deployment in _named("Deployment").items()
        if deployment["spec"]["template"]["metadata"]["labels"].get(DASK_ACCESS) == "true"
    }
    assert labelled == set(expression["values"])
    assert "churn-api" not in labelled


MLFLOW_ACCESS = "churn/mlflow-access"


def test_the_api_reaches_mlflow_only_through_the_read_only_door() -> None:
    """Whoever reaches the MLflow server can move the production alias: not the API."""
    policy = _named("NetworkPolicy")["churn-mlflow"]
    assert policy["spec"]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "churn-mlflow"}
    }
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {MLFLOW_ACCESS: "true"}}}]
    labelled = {
        name
        for name, deployment in _named("Deployment").items()
        if deployment["spec"]["template"]["metadata"]["labels"].get(MLFLOW_ACCESS) == "true"
    }
    assert labelled == {"churn-dagster-code", "churn-dask-worker", "churn-mlflow-read"}
    launcher = yaml.safe_load(INSTANCE["dagster.yaml"])["run_launcher"]["config"]
    assert launcher["labels"][MLFLOW_ACCESS] == "true"  # run pods
    (api,) = _named("Deployment")["churn-api"]["spec"]["template"]["spec"]["containers"]
    door = f"http://churn-mlflow-read:{_service_port('churn-mlflow-read', 'http')}"
    assert {"name": "MLFLOW_TRACKING_URI", "value": door} in api["env"]
    proxy = _named("Deployment")["churn-mlflow-read"]["spec"]["template"]["spec"]
    (container,) = proxy["containers"]
    assert container["command"][:2] == ["python", "/opt/churn/deploy/mlflow_read_proxy.py"]
    upstream = container["command"][container["command"].index("--upstream") + 1]
    assert upstream == ENV["MLFLOW_TRACKING_URI"]  # the server everyone else writes to
    assert "envFrom" not in container  # it holds no credential
    assert "deploy/mlflow_read_proxy.py" in (REPO / "Dockerfile").read_text()


def _service_port(name: str, port_name: str) -> int:
    ports = _named("Service")[name]["spec"]["ports"]
    return next(p["port"] for p in ports if p["name"] == port_name)


def test_components_find_each_other_by_service_name() -> None:
    workspace = yaml.safe_load(INSTANCE["workspace.yaml"])
    (server,) = [entry["grpc_server"] for entry in workspace["load_from"]]
    assert server["port"] == _service_port(server["host"], "grpc")
    scheduler = f"tcp://churn-dask-scheduler:{_service_port('churn-dask-scheduler', 'scheduler')}"
    assert ENV["CHURN_DASK_SCHEDULER"] == scheduler
    worker = _named("Deployment")["churn-dask-worker"]["spec"]["template"]["spec"]
    assert scheduler in worker["containers"][0]["command"]
    assert (
        ENV["MLFLOW_TRACKING_URI"] == f"http://churn-mlflow:{_service_port('churn-mlflow', 'http')}"
    )
    # runs keep their outputs and snapshots in S3, so another pod reads them
    assert ENV["CHURN_IO_URI"].startswith("s3://")
    assert ENV["CHURN_SNAPSHOT_URI"].startswith("s3://")
    # the partitions the Dask workers read and write are in S3, with the run pods' credentials
    worker_env = worker["containers"][0]["envFrom"]
    assert {"configMapRef": {"name": "churn-env"}} in worker_env
    assert {"secretRef": {"name": "churn-store-readwrite"}} in worker_env
    assert not worker.get("volumes")


def test_pods_get_what_compose_gives_the_same_services() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    code_env = set(compose["services"]["dagster-code"]["environment"])
    from_secret = {
        key
        for items in (
            *kubernetes_secrets.SECRETS.values(),
            *kubernetes_secrets.CONFIG_MAPS.values(),
        )
        for key in items
    }
    # compose's DAGSTER_POSTGRES_* are POSTGRES_* from the secret and CHURN_POSTGRES_HOST here
    renamed = {n for n in code_env if n.startswith("DAGSTER_POSTGRES_")}
    set_per_pod = {"CHURN_REGISTRY_LOCK"}
    assert code_env - renamed - from_secret - set_per_pod <= set(ENV)
    code = _named("Deployment")["churn-dagster-code"]["spec"]["template"]["spec"]
    assert {e["name"] for e in code["containers"][0]["env"]} >= set_per_pod


def test_the_rendered_secrets_hold_every_variable_the_manifests_refer_to() -> None:
    provided = {key for items in kubernetes_secrets.SECRETS.values() for key in items}
    referenced = set(re.findall(r"\$\((\w+)\)", (FOLDER / "30-dagster.yaml").read_text()))
    referenced |= set(re.findall(r"\$\((\w+)\)", (FOLDER / "50-mlflow-api.yaml").read_text()))
    referenced |= set(re.findall(r"env: (\w+)", INSTANCE["dagster.yaml"]))
    assert referenced <= provided | set(ENV)
    launcher = yaml.safe_load(INSTANCE["dagster.yaml"])["run_launcher"]["config"]
    assert set(launcher["env_secrets"]) <= RENDERED_SECRETS
    assert set(launcher["env_config_maps"]) <= set(_named("ConfigMap")) | RENDERED_CONFIG_MAPS


def _key_pair() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    return (
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
    )


def _sample_env() -> dict[str, str]:
    """What an operator's .env holds for Kubernetes: every secret its own random value."""
    signing, verify = _key_pair()
    env = {
        "POSTGRES_USER": "churn",
        "AWS_ACCESS_KEY_ID": "churn-pipeline",
        "API_AWS_ACCESS_KEY_ID": "churn-api",
        "CHURN_SIGNING_KEY": signing,
        "CHURN_VERIFY_KEY": verify,
    }
    for name in (
        "POSTGRES_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "API_AWS_SECRET_ACCESS_KEY",
        "CHURN_API_KEY",
        "CHURN_CONSOLE_SECRET",
    ):
        env[name] = secrets.token_hex(24)
    return env


def _render(env: dict[str, str], path: Path) -> subprocess.CompletedProcess[str]:
    # written as the README tells operators to: PEM keys double-quoted over several lines
    path.write_text("".join(f'{name}="{value}"\n' for name, value in env.items()))
    return subprocess.run(
        [sys.executable, "-m", "deploy.kubernetes_secrets", "--env-file", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], list[Any]]:
    """The sample env and the objects rendered from it."""
    env = _sample_env()
    done = _render(env, tmp_path_factory.mktemp("env") / ".env")
    assert done.returncode == 0, done.stderr
    return env, [d for d in yaml.safe_load_all(done.stdout) if d]


def test_the_rendered_secrets_are_valid_objects_and_hold_no_more(
    rendered: tuple[dict[str, str], list[Any]],
) -> None:
    env, objects = rendered
    for document in objects:
        for version in VERSIONS:
            kubernetes_validate.validate(document, version, strict=True)
        assert document["metadata"]["namespace"] == NAMESPACE
    secrets_ = {d["metadata"]["name"]: d for d in objects if d["kind"] == "Secret"}
    assert set(secrets_) == RENDERED_SECRETS
    readonly = _decoded(secrets_["churn-store-readonly"])
    assert readonly == {
        "AWS_ACCESS_KEY_ID": env["API_AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": env["API_AWS_SECRET_ACCESS_KEY"],
    }
    assert _decoded(secrets_["churn-signing-key"]) == {
        "CHURN_SIGNING_KEY": env["CHURN_SIGNING_KEY"]
    }
    (verify,) = [d for d in objects if d["kind"] == "ConfigMap"]
    assert verify["data"] == {"CHURN_VERIFY_KEY": env["CHURN_VERIFY_KEY"]}
    assert "PRIVATE KEY" not in yaml.safe_dump(verify)


def test_nothing_is_rendered_from_a_weak_or_unpaired_env(tmp_path: Path) -> None:
    env = _sample_env()
    weak = {
        **env,
        "POSTGRES_PASSWORD": "aaaaaaaaaaaaaaaa",
        "CHURN_API_KEY": env["API_AWS_SECRET_ACCESS_KEY"],
        "CHURN_VERIFY_KEY": _key_pair()[1],
    }
    done = _render(weak, tmp_path / ".env")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "POSTGRES_PASSWORD has fewer than 8 different characters" in done.stderr
    assert "API_AWS_SECRET_ACCESS_KEY and CHURN_API_KEY hold the same value" in done.stderr
    assert "CHURN_VERIFY_KEY is not the public half of CHURN_SIGNING_KEY" in done.stderr
    for name in (*kubernetes_secrets.preflight.SECRETS, "CHURN_SIGNING_KEY", "CHURN_VERIFY_KEY"):
        if name in weak:
            assert weak[name] not in done.stderr, name  # names, never values


def _decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def _environment(container: dict[str, Any], objects: list[Any]) -> dict[str, str]:
    """What a container's processes see, as the kubelet builds it: envFrom in order, then env
    (which wins), with `$(NAME)` expanded from what came before."""
    config_maps = {d["metadata"]["name"]: d["data"] for d in DOCUMENTS if d["kind"] == "ConfigMap"}
    config_maps |= {d["metadata"]["name"]: d["data"] for d in objects if d["kind"] == "ConfigMap"}
    secrets_ = {d["metadata"]["name"]: _decoded(d) for d in objects if d["kind"] == "Secret"}
    found: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            found |= config_maps[source["configMapRef"]["name"]]
        else:
            found |= secrets_[source["secretRef"]["name"]]
    for item in container.get("env", []):
        assert "valueFrom" not in item, item  # every credential comes in through envFrom
        found[item["name"]] = re.sub(
            r"\$\((\w+)\)", lambda m: found.get(m[1], m[0]), item.get("value", "")
        )
    return found


def _secrets_of(container: dict[str, Any]) -> set[str]:
    return {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}


@pytest.fixture
def kubernetes_instance(
    postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """The ConfigMap's Dagster instance on a real PostgreSQL, its launcher pointed at a
    kubeconfig instead of the in-cluster service account (nothing here calls the API)."""
    config = yaml.safe_load(INSTANCE["dagster.yaml"])
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    config["run_launcher"]["config"].update(
        load_incluster_config=False, kubeconfig_file=str(kubeconfig)
    )
    with postgres.databases("churn_k8s_dagster") as (database,):
        storage = config["storage"]["postgres"]["postgres_db"]
        assert storage["port"] == 5432  # the cluster's; the test's own server listens elsewhere
        storage.update(db_name=database, port=postgres.port)
        (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
        for key, value in {
            "CHURN_POSTGRES_HOST": postgres.host,
            "POSTGRES_USER": postgres.user,
            "POSTGRES_PASSWORD": "",
        }.items():
            monkeypatch.setenv(key, value)
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            yield instance


def _run_job(launcher: K8sRunLauncher) -> tuple[dict[str, Any], str | None]:
    """The Job the launcher submits for a run, built by dagster-k8s itself, and its namespace."""
    context = K8sContainerContext.create_for_run(
        DagsterRun(job_name="__ASSET_JOB", run_id="0f1e2d3c"), launcher, include_run_tags=False
    )
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(
            job_image="churn-platform:latest", run_launcher=launcher
        ),
        args=["dagster", "api", "execute_run", "{}"],
        job_name="dagster-run-0f1e2d3c",
        pod_name="dagster-run-0f1e2d3c",
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/run-id": "0f1e2d3c"},
    )
    manifest = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    manifest["metadata"]["namespace"] = context.namespace
    return manifest, context.namespace


def test_the_instance_launches_each_run_as_a_valid_job(kubernetes_instance: Any) -> None:
    instance = kubernetes_instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    assert instance.run_monitoring_enabled
    launcher = instance.run_launcher
    assert isinstance(launcher, K8sRunLauncher)
    assert launcher.supports_check_run_worker_health
    manifest, namespace = _run_job(launcher)
    for version in VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)

    assert namespace == NAMESPACE
    assert launcher.instance_config_map in _named("ConfigMap")
    pod = manifest["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] in _named("ServiceAccount")
    assert pod["automountServiceAccountToken"] is False
    # the same user as every pod that writes to the shared volume
    code = _named("Deployment")["churn-dagster-code"]["spec"]["template"]["spec"]
    assert pod["securityContext"] == code["securityContext"]
    (container,) = pod["containers"]
    assert container["envFrom"] == [
        {"configMapRef": {"name": "churn-env"}},
        {"configMapRef": {"name": "churn-verify-key"}},
        {"secretRef": {"name": "churn-postgres"}},
        {"secretRef": {"name": "churn-store-readwrite"}},
        {"secretRef": {"name": "churn-signing-key"}},
    ]
    assert {e["name"] for e in container["env"]} >= {"CHURN_REGISTRY_LOCK", "DAGSTER_HOME"}
    # the run pod sees the landing folder and the scores the code server does
    (volume,) = pod["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] in _named("PersistentVolumeClaim")
    data = [m for m in code["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert container["volumeMounts"] == data
    # run pods are the Dask clients the network policy lets in
    assert manifest["spec"]["template"]["metadata"]["labels"][DASK_ACCESS] == "true"
    # every process under 16 GB: the run pod's limit
    assert container["resources"]["limits"]["memory"] == "16Gi"


#: Who holds what: the secrets each pod's envFrom names. The API holds the read-only store
#: account and its key only; the signing key is the pipeline's (code server and run pods).
EXPECTED_SECRETS = {
    "churn-api": {"churn-store-readonly", "churn-api-key"},
    "churn-dagster-code": {"churn-postgres", "churn-store-readwrite", "churn-signing-key"},
    "run": {"churn-postgres", "churn-store-readwrite", "churn-signing-key"},
    "churn-dagster-webserver": {"churn-postgres"},
    "churn-dagster-daemon": {"churn-postgres"},
    "churn-mlflow": {"churn-postgres", "churn-store-readwrite"},
    "churn-mlflow-read": set(),
    "churn-dask-scheduler": set(),
    "churn-dask-worker": {"churn-store-readwrite"},
    "churn-console": {"churn-store-readonly", "churn-console-secret"},
}


def test_each_pod_holds_the_credentials_it_needs_and_no_other(
    kubernetes_instance: Any, rendered: tuple[dict[str, str], list[Any]]
) -> None:
    env, objects = rendered
    (run,) = _run_job(kubernetes_instance.run_launcher)[0]["spec"]["template"]["spec"]["containers"]
    containers = {**dict(_containers()), "run": run}
    assert {name: _secrets_of(c) for name, c in containers.items()} == EXPECTED_SECRETS
    seen = {name: _environment(c, objects) for name, c in containers.items()}

    def holders(variable: str) -> set[str]:
        # by value, so a secret passed on under another name (or inside a URL) still counts
        return {n for n, e in seen.items() if any(env[variable] in v for v in e.values())}

    assert holders("POSTGRES_PASSWORD") == {
        "churn-dagster-code",
        "run",
        "churn-dagster-webserver",
        "churn-dagster-daemon",
        "churn-mlflow",
    }
    assert holders("AWS_SECRET_ACCESS_KEY") == {
        "churn-dagster-code",
        "run",
        "churn-mlflow",
        "churn-dask-worker",
    }
    assert holders("CHURN_SIGNING_KEY") == {"churn-dagster-code", "run"}
    assert holders("API_AWS_SECRET_ACCESS_KEY") == {"churn-api", "churn-console"}
    assert holders("CHURN_API_KEY") == {"churn-api"}
    assert holders("CHURN_CONSOLE_SECRET") == {"churn-console"}
    # every loader verifies: the API, the code server, run pods and the Dask workers, and the
    # console its attestations
    loaders = {"churn-api", "churn-dagster-code", "run", "churn-dask-worker", "churn-console"}
    assert {n for n, e in seen.items() if e.get("CHURN_VERIFY_KEY") == env["CHURN_VERIFY_KEY"]} == (
        loaders
    )
    api = seen["churn-api"]
    assert api["AWS_ACCESS_KEY_ID"] == env["API_AWS_ACCESS_KEY_ID"]
    assert api["AWS_SECRET_ACCESS_KEY"] == env["API_AWS_SECRET_ACCESS_KEY"]
    assert api["MLFLOW_TRACKING_URI"] == "http://churn-mlflow-read:5000"
    assert seen["churn-console"]["MLFLOW_TRACKING_URI"] == "http://churn-mlflow-read:5000"
    # the registry lock's URL carries the database password: run pods and the code server only
    assert env["POSTGRES_PASSWORD"] in seen["run"]["CHURN_REGISTRY_LOCK"]
    for name, environment in seen.items():
        if "MLFLOW_TRACKING_URI" in environment or name == "churn-mlflow":
            assert environment["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false", name


def test_the_console_reads_the_scores_read_only_and_writes_only_its_folder() -> None:
    console = _named("Deployment")["churn-console"]["spec"]["template"]["spec"]
    (container,) = console["containers"]
    assert container["command"] == ["python", "-m", "console"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[ENV["CHURN_SCORES_DIR"]]["readOnly"] is True
    assert mounts[ENV["CHURN_SCORES_DIR"]]["subPath"] == "scores"
    # its own folder under the state folder: the audit log and the users file
    writable = [m for m in mounts.values() if not m.get("readOnly") and m["name"] == "churn-data"]
    assert [(m["mountPath"], m["subPath"]) for m in writable] == [
        (ENV["CHURN_STATE_DIR"] + "/console", "console")
    ]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert (
        "churn/mlflow-access"
        not in _named("Deployment")["churn-console"]["spec"]["template"]["metadata"]["labels"]
    )
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["CHURN_CONSOLE_PORT"]) == port == _service_port("churn-console", "http")
    # probes that answer in either login mode (/login redirects behind a trusted proxy)
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert console["securityContext"]["fsGroup"] == console["securityContext"]["runAsUser"]
    # only pods labelled for it (the ingress controller) reach it
    policy = _named("NetworkPolicy")["churn-console"]["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "churn-console"}}
    (rule,) = policy["ingress"]
    assert rule["from"][0]["podSelector"] == {"matchLabels": {"churn/console-access": "true"}}
