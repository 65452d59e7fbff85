"""`kill -9` of run workers with the daemon running, as `make dev` runs it.

Before run monitoring a killed worker's run stayed STARTED for ever, its MLflow run RUNNING,
and the landing sensor waited on it for ever. Here: a training run launched from the shell is
killed mid-run, then a merge run the landing sensor started; both become FAILED, the failure
sensor ends the training's MLflow run, and the landing sensor merges the next extract.
"""

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import dagster as dg
from mlflow.tracking import MlflowClient

from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.reading import read_customer_csv
from churn_assets.ml.data.synthetic import generate_customers, write_customers
from churn_assets.run_workers import WORKER_TAG
from churn_assets_tests.processes import REPO, base_env, stop, wait_until

TELCO = default_contract()

T = TypeVar("T")
TIMEOUT_S = 300


def _wait(what: str, probe: Callable[[], T | None], timeout: float = TIMEOUT_S) -> T:
    return wait_until(what, probe, timeout)


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _run(home: Path, job: str) -> dg.DagsterRun | None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name=job))
    return runs[0] if runs else None


def _status(home: Path, run_id: str) -> dg.DagsterRunStatus:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


def test_killed_workers_fail_their_runs_and_the_sensor_moves_on(
    tmp_path: Path, sample_csv: Path
) -> None:
    home, incoming = tmp_path / "dagster_home", tmp_path / "incoming"
    home.mkdir()
    incoming.mkdir()
    shutil.copy(REPO / "deploy/dagster/local.yaml", home / "dagster.yaml")  # as `make dev`
    (home / "dagster.yaml").write_text(
        (home / "dagster.yaml")
        .read_text()
        .replace("poll_interval_seconds: 10", "poll_interval_seconds: 2")
    )
    snapshot = tmp_path / "telco_churn.csv"
    write_customers(read_customer_csv(sample_csv, "", TELCO).head(3000), snapshot)
    env = base_env(
        DAGSTER_HOME=str(home),
        CHURN_STATE_DIR=str(tmp_path / "state"),
        CHURN_DATA_PATH=str(snapshot),
        CHURN_INCOMING_DIR=str(incoming),
        CHURN_SENSOR_INTERVAL_S="1",
        CHURN_INCOMING_SETTLE_S="0",
    )
    with dg.DagsterInstance.from_config(str(home)):
        pass  # storage created once, before the daemon and the shell race to create it
    daemon = subprocess.Popen(
        [_bin("dagster-daemon"), "run", "-m", "churn_assets.definitions"],
        cwd=tmp_path,
        env=env,
        stdout=(tmp_path / "daemon.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # 1. a training run from the shell (`make run`), killed once its MLflow run exists
        training = subprocess.Popen(
            [_bin("dg"), "launch", "-m", "churn_assets.definitions", "--job", "churn_training"],
            cwd=tmp_path,
            env=env,
            stdout=(tmp_path / "training.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def mlflow_run_started() -> bool:
            # preprocessor logs to the run's MLflow run: once it is materialized, that run
            # exists (reading the MLflow store earlier would race its table creation)
            with dg.DagsterInstance.from_config(str(home)) as instance:
                event = instance.get_latest_materialization_event(dg.AssetKey("preprocessor"))
            return event is not None

        _wait("the training run's MLflow run", mlflow_run_started)
        run = _wait("the training run", lambda: _run(home, "churn_training"))
        _wait(
            "its worker record",
            lambda: (r := _run(home, "churn_training")) is not None and WORKER_TAG in r.tags,
        )
        os.killpg(training.pid, signal.SIGKILL)
        training.wait(timeout=30)
        # Without monitoring it would stay STARTED for good; with it, it fails on the next poll
        # (possibly before this line runs: the status right after the kill is not asserted).
        _wait(
            "run monitoring to fail the killed training run",
            lambda: _status(home, run.run_id) == dg.DagsterRunStatus.FAILURE,
        )
        with dg.DagsterInstance.from_config(str(home)) as instance:
            logs = instance.all_logs(run.run_id)
        said = " ".join(str(event.message) for event in logs)
        assert "is gone (killed or crashed)" in said  # monitoring's verdict, not a step error
        uri = f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
        client = MlflowClient(uri, uri)

        def mlflow_runs() -> dict[str, str]:
            found = client.search_runs(
                [e.experiment_id for e in client.search_experiments()],
                filter_string=f"tags.dagster_run_id = '{run.run_id}'",
            )
            return {r.info.run_id: r.info.status for r in found}

        assert mlflow_runs(), "the killed run had started its MLflow run"
        _wait(
            "the failure sensor to end its MLflow run",
            lambda: set(mlflow_runs().values()) == {"FAILED"},
        )

        # 2. a merge the landing sensor started, killed while it writes
        big = write_customers(generate_customers(300_000, 11), tmp_path / "big.csv")
        big.rename(incoming / "week1.csv")
        merge = _wait(
            "the merge run's worker",
            lambda: (r := _run(home, "merge_extract")) is not None and WORKER_TAG in r.tags and r,
        )
        pid = int(merge.tags[WORKER_TAG].split("/")[-2])
        os.kill(pid, signal.SIGKILL)
        write_customers(generate_customers(50, 12), tmp_path / "small.csv").rename(
            incoming / "week2.csv"
        )
        _wait(
            "the killed merge to fail",
            lambda: _status(home, merge.run_id) == dg.DagsterRunStatus.FAILURE,
        )

        def next_merged() -> bool:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                runs = instance.get_runs(dg.RunsFilter(job_name="merge_extract"))
            return any(
                r.tags.get("churn/extract") == "week2.csv"
                and r.status == dg.DagsterRunStatus.SUCCESS
                for r in runs
            )

        _wait("the sensor to merge the next extract", next_merged)
        assert not list(tmp_path.glob(".telco_churn.csv.*.tmp"))  # the killed merge's leftovers
    finally:
        stop(daemon)
