"""`dagster dev` as users run it: lineage over GraphQL, and files dropped into the landing folder.

One `dagster dev` (webserver, daemon, code server) and one API process serve every test in this
module, in order: the lineage as the UI sees it; a good extract retrains and promotes, and the
running API switches to the new version; a malformed file is rejected and changes nothing; an
extract that ruins the labels fails the gate and production stays.
"""

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.reading import read_customer_csv
from churn_assets.ml.data.snapshots import SnapshotStore
from churn_assets.ml.data.synthetic import generate_customers, write_customers
from churn_assets.ml.registry import model_registry as registry
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store
from churn_assets_tests.conftest import EXPECTED_PARENTS
from churn_assets_tests.processes import (
    REPO,
    api_command,
    base_env,
    call_json,
    free_port,
    running,
    wait_until,
)

TELCO = default_contract()

NAME = "churn-classifier"
#: A run takes about 20 s here (a fresh process importing Dagster, MLflow and LightGBM);
#: a drop goes through a sensor tick, the merge run, an automation tick and the retrain run.
PIPELINE_TIMEOUT_S = 300
INITIAL_ROWS = 3000
T = TypeVar("T")


@dataclass
class DevStack:
    root: Path
    env: dict[str, str]
    webserver_port: int
    api_port: int

    @property
    def incoming(self) -> Path:
        return Path(self.env["CHURN_INCOMING_DIR"])

    @property
    def snapshots(self) -> SnapshotStore:
        state = Path(self.env["CHURN_STATE_DIR"])
        return snapshot_store(ChurnSettings(CHURN_STATE_DIR=state))

    def snapshot(self) -> pd.DataFrame:
        """The current training snapshot, the export's columns."""
        current = self.snapshots.current_id()
        assert current is not None
        return self.snapshots.read(current)[list(TELCO.columns)]

    @property
    def client(self) -> MlflowClient:
        uri = f"sqlite:///{self.env['CHURN_STATE_DIR']}/mlflow.db"
        return MlflowClient(uri, uri)

    def production(self) -> str | None:
        current = registry.production_version(self.client, NAME, "production")
        return None if current is None else str(current.version)

    def served_version(self) -> str | None:
        status, ready = call_json(self.api_port, "GET", "/ready")
        return ready.get("model_version") if status == 200 else None

    def graphql(self, query: str) -> dict[str, Any]:
        response = httpx.post(
            f"http://127.0.0.1:{self.webserver_port}/graphql", json={"query": query}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body
        return dict(body["data"])

    def runs(self) -> list[dict[str, Any]]:
        data = self.graphql(
            "{ runsOrError { ... on Runs { results { runId jobName status "
            "tags { key value } } } } }"
        )
        runs = data["runsOrError"]["results"]
        for run in runs:
            run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
        return list(runs)

    def drop(self, frame: pd.DataFrame, name: str) -> Path:
        """Write the way a careful uploader does: a temporary name, then a rename."""
        partial = write_customers(frame, self.incoming / f"{name}.part")
        return partial.rename(self.incoming / name)


def _dagster(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _wait(what: str, probe: Callable[[], T | None], timeout: float = PIPELINE_TIMEOUT_S) -> T:
    return wait_until(what, probe, timeout, interval=1.0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sample_csv: Path) -> Iterator[DevStack]:
    root = tmp_path_factory.mktemp("dagster_dev")
    (root / "dagster_home").mkdir()
    # as `make dev`: run monitoring and the retrain pool
    shutil.copy(REPO / "deploy/dagster/local.yaml", root / "dagster_home" / "dagster.yaml")
    (root / "incoming").mkdir()
    env = base_env(
        DAGSTER_HOME=str(root / "dagster_home"),
        CHURN_STATE_DIR=str(root / "state"),
        CHURN_DATA_PATH=str(root / "data" / "telco_churn.csv"),
        CHURN_INCOMING_DIR=str(root / "incoming"),
        CHURN_SENSOR_INTERVAL_S="2",
        CHURN_INCOMING_SETTLE_S="1",
        CHURN_REFRESH_INTERVAL_S="0.5",
    )
    initial = read_customer_csv(sample_csv, "", TELCO).head(INITIAL_ROWS)
    write_customers(initial, root / "data" / "telco_churn.csv")
    module = ["-m", "churn_assets.definitions"]
    first = subprocess.run(
        [_dagster("dg"), "launch", *module, "--job", "churn_training"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    webserver_port, api_port = free_port(), free_port()
    dev = [_dagster("dagster"), "dev", *module, "-p", str(webserver_port)]
    with (
        running(
            dev,
            env,
            f"http://127.0.0.1:{webserver_port}/server_info",
            root / "dagster_dev.log",
            cwd=root,
            timeout=180,
        ),
        running(
            api_command(),
            {**env, "CHURN_API_PORT": str(api_port)},
            f"http://127.0.0.1:{api_port}/health",
            root / "api.log",
            cwd=root,
        ),
    ):
        yield DevStack(root, env, webserver_port, api_port)


LINEAGE_QUERY = """
{
  assetNodes {
    assetKey { path } description isExecutable
    dependencyKeys { path } dependedByKeys { path } jobNames
    assetChecksOrError { ... on AssetChecks { checks { name blocking description } } }
  }
  repositoriesOrError { ... on RepositoryConnection { nodes {
    sensors { name description sensorState { status } targets { pipelineName } }
    schedules { name description cronSchedule scheduleState { status } }
    pipelines { name description }
  } } }
}
"""


def test_the_ui_shows_the_lineage_checks_sensors_and_jobs(stack: DevStack) -> None:
    data = stack.graphql(LINEAGE_QUERY)
    nodes = {node["assetKey"]["path"][0]: node for node in data["assetNodes"]}

    upstream = {
        name: {key["path"][0] for key in node["dependencyKeys"]} for name, node in nodes.items()
    }
    assert upstream == EXPECTED_PARENTS
    downstream = {key["path"][0] for key in nodes["incoming_extract"]["dependedByKeys"]}
    assert downstream == {"customer_snapshot"}
    assert nodes["incoming_extract"]["isExecutable"] is False
    assert "churn_training" in nodes["production_promotion"]["jobNames"]
    assert "merge_extract" in nodes["customer_snapshot"]["jobNames"]
    assert all(node["description"] for node in nodes.values())

    checks = {
        (asset, check["name"]): check
        for asset, node in nodes.items()
        for check in node["assetChecksOrError"]["checks"]
    }
    assert checks[("evaluation_report", "quality_gate")]["blocking"] is True
    assert checks[("customer_snapshot", "extract_drift")]["blocking"] is False
    assert len([key for key in checks if key[0] == "raw_customers"]) == 7
    assert all(check["description"] for check in checks.values())

    (repository,) = data["repositoriesOrError"]["nodes"]
    sensors = {sensor["name"]: sensor for sensor in repository["sensors"]}
    assert set(sensors) == {
        "incoming_extracts",
        "incoming_contact_logs",
        "churn_automation",
        "failed_runs_mlflow_cleanup",
        "realized_retrain",
    }
    on = {name for name, s in sensors.items() if s["sensorState"]["status"] == "RUNNING"}
    assert on == set(sensors) - {"realized_retrain"}  # opt-in: CHURN_REALIZED_RETRAIN
    assert all(s["description"] for s in sensors.values())
    assert sensors["incoming_extracts"]["targets"] == [{"pipelineName": "merge_extract"}]
    assert sensors["incoming_contact_logs"]["targets"] == [{"pipelineName": "record_contacts"}]
    (schedule,) = repository["schedules"]
    assert (schedule["name"], schedule["scheduleState"]["status"]) == ("weekly_retrain", "STOPPED")
    assert schedule["description"]
    jobs = {job["name"]: job for job in repository["pipelines"] if not job["name"].startswith("__")}
    assert set(jobs) == {"churn_training", "merge_extract", "record_contacts"}
    assert all(job["description"] for job in jobs.values())


def _runs_for(
    stack: DevStack, extract: str, count: int
) -> Callable[[], list[dict[str, Any]] | None]:
    """The merge run of `extract` and the runs after it, once `count` of them have finished."""

    def probe() -> list[dict[str, Any]] | None:
        runs = list(reversed(stack.runs()))  # oldest first
        start = next(
            (i for i, r in enumerate(runs) if r["tags"].get("churn/extract") == extract), None
        )
        if start is None:
            return None
        after = runs[start:]
        finished = all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in after)
        return after if finished and len(after) >= count else None

    return probe


def test_a_new_extract_retrains_promotes_and_is_served(stack: DevStack) -> None:
    assert stack.production() == "1"
    _wait("the API to serve version 1", lambda: stack.served_version() == "1", 30)
    newcomers = generate_customers(6000, 2024)

    stack.drop(newcomers, "week48.csv")

    _wait("production to move to version 2", lambda: stack.production() == "2")
    _wait("the API to serve version 2", lambda: stack.served_version() == "2", 30)
    runs = _wait("the runs of week48.csv", _runs_for(stack, "week48.csv", 2))
    merge, *automation = runs
    assert (merge["jobName"], merge["status"]) == ("merge_extract", "SUCCESS")
    assert automation and all(r["status"] == "SUCCESS" for r in automation)
    assert all(r["tags"].get("churn/trigger") == "automation" for r in automation)
    assert len(stack.snapshot()) == INITIAL_ROWS + 6000
    tags = stack.client.get_model_version(NAME, "2").tags
    assert tags[registry.GATE_TAG] == registry.GATE_PASSED
    assert tags[registry.COMPARED_WITH_TAG] == "1"
    scores = pd.read_csv(Path(stack.env["CHURN_STATE_DIR"]) / "scores" / "churn_scores.csv")
    assert (scores["model_version"] == 2).all()  # scored in the run that promoted
    assert set(newcomers.query("Churn == 'No'")["customerID"]) <= set(scores["customerID"])


def test_a_malformed_extract_is_rejected_and_changes_nothing(stack: DevStack) -> None:
    before = stack.snapshots.current_id()
    broken = generate_customers(100, 99)
    broken.loc[41, "Contract"] = "Bi-annual"

    stack.drop(broken, "broken.csv")

    (merge,) = _wait("the merge of broken.csv", _runs_for(stack, "broken.csv", 1), 120)
    assert (merge["jobName"], merge["status"]) == ("merge_extract", "FAILURE")
    log = stack.graphql(
        f'{{ logsForRun(runId: "{merge["runId"]}") {{ ... on EventConnection {{ '
        "events { ... on ExecutionStepFailureEvent { error { message } } } } } }"
    )
    messages = " ".join(
        e["error"]["message"] for e in log["logsForRun"]["events"] if e.get("error")
    )
    assert "extract broken.csv rejected: column 'Contract'" in messages
    assert "'Bi-annual' at line 43" in messages
    assert stack.snapshots.current_id() == before
    assert stack.production() == "2"


def test_an_extract_that_fails_the_gate_leaves_production_alone(stack: DevStack) -> None:
    current = stack.snapshot()
    scrambled = current.assign(Churn=current["Churn"].sample(frac=1, random_state=3).to_numpy())

    stack.drop(scrambled, "relabelled.csv")

    runs = _wait("the runs of relabelled.csv", _runs_for(stack, "relabelled.csv", 2))
    merge, *automation = runs
    assert (merge["jobName"], merge["status"]) == ("merge_extract", "SUCCESS")
    assert [r["status"] for r in automation] == ["FAILURE"]
    assert stack.client.get_model_version(NAME, "3").tags[registry.GATE_TAG] == "failed"
    assert stack.production() == "2"
    time.sleep(2)  # a few refreshes of the API
    assert stack.served_version() == "2"
