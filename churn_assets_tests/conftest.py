"""Shared fixtures: a temporary MLflow store, Dagster instance and customer file per test."""

import contextlib
import fcntl
import functools
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mlflow.tracking import MlflowClient

from churn_assets.definitions import churn_assets, defs
from churn_assets.jobs import churn_training
from churn_assets.ml.cluster.runners import InProcess
from churn_assets.ml.data import partitioned, snapshots
from churn_assets.ml.data.contract import Contract
from churn_assets.ml.data.partitioned import CleanedTable
from churn_assets.ml.data.snapshots import SnapshotStore
from churn_assets.ml.data.synthetic import generate_customers, write_customers
from churn_assets.ml.files import file_sha256
from churn_assets.ml.registry import artifacts, signing, tracking
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import open_location, snapshot_store
from churn_assets.resources import RunScopedIOManager, churn_resources
from churn_assets_tests.processes import (
    POSTGRES_MISSING,
    REPO,
    Postgres,
    postgres_package,
    postgres_server,
    run_command,
    uv_executable,
)

#: What `churn_training` (make run, the weekly schedule) materializes, in graph order.
TRAINING_ASSETS = (
    "raw_customers",
    "cleaned_customers",
    "customer_splits",
    "preprocessor",
    "churn_model",
    "evaluation_report",
    "production_promotion",
    "churn_scores",
    "retention_campaign",
    "campaign_effect",
    "uplift_model",
    "realized_performance",
)
#: The lineage users expect: each asset and its upstream assets (in-process and over GraphQL).
EXPECTED_PARENTS: dict[str, set[str]] = {
    "incoming_extract": set(),
    "customer_snapshot": {"incoming_extract"},
    "raw_customers": {"customer_snapshot"},
    "cleaned_customers": {"raw_customers"},
    "customer_splits": {"cleaned_customers"},
    "preprocessor": {"customer_splits"},
    "churn_model": {"customer_splits", "preprocessor"},
    "evaluation_report": {"churn_model", "customer_splits"},
    "production_promotion": {"evaluation_report"},
    "churn_scores": {"production_promotion", "cleaned_customers"},
    "retention_campaign": {"churn_scores", "cleaned_customers"},
    "incoming_contact_log": set(),
    "contact_log": {"incoming_contact_log"},
    "campaign_effect": {"retention_campaign", "contact_log"},
    "uplift_model": {"campaign_effect"},
    "realized_performance": {"churn_scores"},
}

SAMPLE_ROWS = 7043
SAMPLE_SEED = 42

#: Every variable the platform reads; cleared so the developer's shell cannot leak into tests.
SETTINGS_ENV = [field.alias or name.upper() for name, field in ChurnSettings.model_fields.items()]


@functools.cache
def signing_key_pem() -> str:
    """One Ed25519 key for a test session's hand-made registries and the processes they start
    (as CHURN_SIGNING_KEY)."""
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def session_signer() -> signing.Signer:
    return signing.signer(ChurnSettings(CHURN_SIGNING_KEY=signing_key_pem()))


def verified_pipeline(state_dir: Path, version: str | None = None) -> Any:
    """A version's pipeline (production's by default) read as every consumer reads it: from
    the files its signed manifest lists, production's only with its gate attestation."""
    settings = ChurnSettings(CHURN_STATE_DIR=state_dir)
    client = tracking.client(settings)
    name = settings.model_name
    if version is None:
        found = client.get_model_version_by_alias(name, settings.production_alias)
    else:
        found = client.get_model_version(name, version)
    verifier = signing.verifier(settings)
    return artifacts.load_version(
        verifier, found, settings.tracking_uri, attested=version is None
    ).pipeline


@dataclass
class ChurnEnv:
    root: Path
    data_path: Path
    state_dir: Path
    storage_dir: Path

    @property
    def settings(self) -> ChurnSettings:
        return ChurnSettings()

    @property
    def client(self) -> MlflowClient:
        uri = self.settings.tracking_uri
        return MlflowClient(uri, uri)


def local_store(folder: Path) -> SnapshotStore:
    """A snapshot store in `folder`, as CHURN_STATE_DIR=folder would configure it."""
    return snapshot_store(ChurnSettings(CHURN_STATE_DIR=folder))


def seeded_store(folder: Path, frame: pd.DataFrame) -> SnapshotStore:
    """A local store whose current snapshot is `frame`, imported as CHURN_DATA_PATH would be."""
    store = local_store(folder)
    seed = write_customers(frame, folder / "seed.csv")
    store.sync_seed(seed, ChurnSettings().extract_limits)
    return store


def cleaned_table(
    frame: pd.DataFrame,
    folder: Path,
    partition_rows: int,
    monkeypatch: pytest.MonkeyPatch,
    contract: Contract | None = None,
) -> CleanedTable:
    """`frame` as a snapshot of `partition_rows`-row partitions in a local store under
    `folder`, cleaned a partition at a time (in this process) into `folder`/cleaned."""
    monkeypatch.setattr(snapshots, "PARTITION_ROWS", partition_rows)
    store = local_store(folder)
    if contract is not None:
        store.contract = contract
    info = store.write(
        frame.astype(str),
        kind="file",
        source="test",
        source_sha256="0" * 64,
        parent=None,
        as_of=date(2026, 11, 1),
    )
    raw = partitioned.SnapshotTable.of(store, info.id, open_location)
    return partitioned.clean_table(raw, InProcess(), str(folder / "cleaned"))


def isolate_environment(patch: pytest.MonkeyPatch) -> None:
    """Clear every platform variable and restore it afterwards, even one MLflow sets itself
    (`mlflow.set_tracking_uri` exports MLFLOW_TRACKING_URI for child processes)."""
    for name in SETTINGS_ENV:
        patch.setenv(name, "")  # recorded, so teardown removes whatever is set later
        patch.delenv(name)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_environment(monkeypatch)


@pytest.fixture(autouse=True, scope="module")
def _module_environment() -> Iterator[None]:
    """The same around each module, so its module fixtures start clean too: a module fixture
    that loads a model (test_serving_columns' shared app) exports MLFLOW_TRACKING_URI, which
    the function-scoped isolation restores after each test, and which then outlived the module
    into the next one's fixtures (a worker's `ChurnSettings(CHURN_STATE_DIR=copy)` read the
    shared store instead: "database is locked", versions missing)."""
    with pytest.MonkeyPatch.context() as patch:
        isolate_environment(patch)
        yield


#: The files that take longest here (they start servers, CLIs and whole graph runs), longest
#: first. `make test` runs two xdist workers, each taking whole files (a file's module fixtures
#: start its servers once) in collection order (`--no-loadscope-reorder`; by default xdist sends
#: the files with the most tests first, which left these for the end and one worker running the
#: last of them alone for a minute or more). Longest first, the short files even out the end.
SLOWEST_FIRST = (
    "test_automation_e2e.py",
    "test_graph.py",
    "test_console_browser.py",
    "test_serving_e2e.py",
    "test_cluster.py",
    "test_cli_stages.py",
    "test_uplift_production.py",
    "test_run_monitoring_e2e.py",
    "test_production_config.py",
    "test_concurrent_runs.py",
    "test_point_in_time.py",
    "test_retraining.py",
    "test_promotion_race.py",
    "test_serving_connections.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest files first, the rest in their order (see SLOWEST_FIRST)."""
    rank = {name: position for position, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def sample_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "telco_churn.csv"
    write_customers(generate_customers(SAMPLE_ROWS, SAMPLE_SEED), path)
    return path


@pytest.fixture
def churn_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_csv: Path
) -> Iterator[ChurnEnv]:
    monkeypatch.chdir(tmp_path)  # no stray .env, ./mlruns or data/ from the checkout
    data = tmp_path / "data" / "telco_churn.csv"
    data.parent.mkdir()
    shutil.copy(sample_csv, data)
    monkeypatch.setenv("CHURN_DATA_PATH", str(data))
    monkeypatch.setenv("CHURN_STATE_DIR", str(tmp_path / "state"))
    yield ChurnEnv(tmp_path, data, tmp_path / "state", tmp_path / "storage")
    if mlflow.active_run() is not None:  # a leaked run would poison the next test
        mlflow.end_run("FAILED")
        pytest.fail("an MLflow run was left active after the test")


def user_shell(folder: Path) -> dict[str, str]:
    """A user's shell for make and the CLIs: a state folder, data path and Dagster home."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    env.update(
        CHURN_STATE_DIR=str(folder / "state"),
        CHURN_DATA_PATH=str(folder / "data" / "telco_churn.csv"),
        DAGSTER_HOME=str(folder / "dagster_home"),
    )
    return env


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    return user_shell(tmp_path)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as dagster_instance:
        yield dagster_instance


def materialize_graph(
    env: ChurnEnv,
    instance: dg.DagsterInstance,
    selection: str | list[str] | None = None,
    run_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    io_base: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize the real assets and checks with the real resources; never raises.

    Run outputs go to the test's storage folder, or to `io_base` (e.g. an s3:// prefix)."""
    return dg.materialize(
        [*churn_assets, *(defs.asset_checks or [])],  # every check the code location has
        instance=instance,
        selection=selection or churn_training.selection,
        run_config=run_config,
        tags=tags,
        resources={
            **churn_resources(),
            "io_manager": RunScopedIOManager(base_dir=io_base or str(env.storage_dir)),
        },
        raise_on_error=False,
    )


def merge_through_graph(
    env: ChurnEnv, instance: dg.DagsterInstance, extract: Path, **config: str
) -> dg.ExecuteInProcessResult:
    """The merge_extract job's asset on one file, as the landing sensor configures it."""
    settings = {"extract_path": str(extract), "extract_sha256": file_sha256(extract), **config}
    return materialize_graph(
        env,
        instance,
        selection="customer_snapshot",
        run_config={"ops": {"customer_snapshot": {"config": settings}}},
    )


def gate_config(**thresholds: Any) -> dict[str, Any]:
    return {"ops": {"evaluation_report_quality_gate": {"config": thresholds}}}


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    """Every step failure's error text, causes included."""
    texts = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            texts.append(event.step_failure_data.error.to_string())
    return "\n".join(texts)


def mlflow_runs(env: ChurnEnv) -> list[Any]:
    experiment = env.client.get_experiment_by_name(env.settings.experiment_name)
    if experiment is None:
        return []
    return env.client.search_runs([experiment.experiment_id])


def assert_no_mlflow_run_left_running(env: ChurnEnv) -> None:
    running = [r.info.run_id for r in mlflow_runs(env) if r.info.status == "RUNNING"]
    assert not running, f"MLflow runs left RUNNING: {running}"


@dataclass
class PromotedStore:
    """A store holding one promoted model, shared by the serving tests that only read it."""

    state_dir: Path
    holdout: Any  # pandas.DataFrame of cleaned holdout customers

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.state_dir / 'mlflow.db'}"


def copied_store(store: PromotedStore, folder: Path) -> PromotedStore:
    """A copy of the promoted store, artifacts included, that a test may tamper with.

    MLflow's database names each artifact by its absolute path, so a copy of the folder alone
    would still read (and a tampering test write) the shared store's files: every path under
    the old folder is moved to the copy.
    """
    # The database through SQLite's backup API, not as files: the shared store is in WAL mode
    # and may be open in this process, so its -wal and -shm files are live (a copy of them read
    # as "disk I/O error" under load).
    shutil.copytree(store.state_dir, folder, ignore=shutil.ignore_patterns("mlflow.db*"))
    with (
        contextlib.closing(sqlite3.connect(store.state_dir / "mlflow.db")) as source,
        contextlib.closing(sqlite3.connect(folder / "mlflow.db")) as target,
    ):
        source.backup(target)
    moves = {str(store.state_dir): str(folder), str(store.state_dir.resolve()): str(folder)}
    # closed, not only committed: a connection left to the collector keeps the file open (and
    # its WAL shared memory mapped) in a test worker that runs hundreds of tests
    with contextlib.closing(sqlite3.connect(folder / "mlflow.db")) as database, database:
        tables = database.execute("select name from sqlite_master where type = 'table'")
        for (table,) in tables.fetchall():
            for _, column, kind, *_ in database.execute(f"pragma table_info('{table}')"):
                if kind.upper().startswith(("VARCHAR", "TEXT")):
                    for old, new in moves.items():
                        database.execute(
                            f'update "{table}" set "{column}" = replace("{column}", ?, ?)',
                            (old, new),
                        )
    return PromotedStore(folder, store.holdout)


@contextmanager
def built_once(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[tuple[Path, bool]]:
    """A folder shared by every xdist worker of this test session, and whether to build it.

    The first worker to get here builds it while holding a lock; the others wait and reuse it,
    so session fixtures that only read what they build (a promoted store, a venv) cost once
    per session instead of once per worker (pytest-xdist's documented recipe).
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / name
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = folder / ".built"
        build = not done.exists()
        if build:
            shutil.rmtree(folder, ignore_errors=True)  # a worker that died mid-build
            folder.mkdir(parents=True)
        yield folder, build
        done.touch()


@dataclass(frozen=True)
class CampaignsDemo:
    """`churn demo-campaigns` as a user runs it: its folder, exit code and output."""

    out: Path
    returncode: int
    stdout: str
    stderr: str
    #: the MLflow store the caller's environment named, which the demo must leave alone
    callers_store: Path


@pytest.fixture(scope="session")
def campaigns_demo(tmp_path_factory: pytest.TempPathFactory) -> CampaignsDemo:
    """Four weeks of campaigns on 2,000 customers, version 1 challenging from week 1, once per
    session: test_demo_campaigns checks it against the world's truth, the console's browser
    test walks it as a lead."""
    with built_once(tmp_path_factory, "campaigns-demo") as (root, build):
        callers = root / "elsewhere.db"
        if build:
            # a caller's store must not leak into the demo
            env = {**user_shell(root), "MLFLOW_TRACKING_URI": f"sqlite:///{callers}"}
            command = [".venv/bin/churn", "demo-campaigns", "--weeks", "4", "--customers", "2000"]
            command += ["--start", "2026-11-06"]  # its draws carry the dates: any day alike
            command += ["--challenger-from", "1", "--out", str(root / "campaigns")]
            done = run_command(command, env, timeout=900)
            (root / "stdout.txt").write_text(done.stdout)
            (root / "stderr.txt").write_text(done.stderr)
            (root / "returncode.txt").write_text(str(done.returncode))
    return CampaignsDemo(
        root / "campaigns",
        int((root / "returncode.txt").read_text()),
        (root / "stdout.txt").read_text(),
        (root / "stderr.txt").read_text(),
        callers,
    )


@pytest.fixture(scope="session")
def promoted_store(tmp_path_factory: pytest.TempPathFactory, sample_csv: Path) -> PromotedStore:
    """Read-only for the tests that use it; a test that writes copies `state_dir` first."""
    with built_once(tmp_path_factory, "promoted") as (root, build):
        holdout_file = root / "holdout.pkl"
        if build:
            _promote_once(root, sample_csv).to_pickle(holdout_file)
    return PromotedStore(root / "state", pd.read_pickle(holdout_file))


def _promote_once(root: Path, sample_csv: Path) -> Any:
    """The whole graph on the sample, in `root`; returns the cleaned holdout customers."""
    with pytest.MonkeyPatch.context() as patch:
        isolate_environment(patch)
        patch.chdir(root)
        data = root / "telco_churn.csv"
        shutil.copy(sample_csv, data)
        patch.setenv("CHURN_DATA_PATH", str(data))
        patch.setenv("CHURN_STATE_DIR", str(root / "state"))
        env = ChurnEnv(root, data, root / "state", root / "storage")
        (root / "home").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "home")) as dagster_instance:
            result = materialize_graph(env, dagster_instance)
            assert result.success, failure_messages(result)
            return result.output_for_node("customer_splits").holdout


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """This session's own PostgreSQL (one per xdist worker, started by the first test that
    asks), from the dev group's wheel: no system server, nothing on port 5432."""
    package = postgres_package()
    if package is None:
        pytest.fail(POSTGRES_MISSING, pytrace=False)
    with postgres_server(package) as server:
        yield server


@pytest.fixture(scope="session")
def slim_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python of a venv holding only the project and its `serving` group, as the API image."""
    with built_once(tmp_path_factory, "slim") as (root, build):
        venv = root / "venv"
        if build:
            env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
            subprocess.run(
                [uv_executable(), "sync", "--frozen", "--no-default-groups", "--group", "serving"],
                cwd=REPO,
                env=env,
                check=True,
                capture_output=True,
                timeout=600,
            )
    return venv / "bin" / "python"
