"""Two writers on one snapshot store, each with its own state folder (CI and a cluster): real
processes race their merges on a local folder and on S3 (moto's standalone server), and every
merge either lands in the final history or is refused by name; none is lost."""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pandas as pd
import pytest

from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.landing import merge_extract
from churn_assets.ml.data.snapshots import SnapshotStore
from churn_assets.ml.data.synthetic import generate_customers, write_customers
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store
from churn_assets_tests.processes import REPO, base_env, free_port, running, stop, wait_until

TELCO = default_contract()
KEYS = {"AWS_ACCESS_KEY_ID": "churn-test", "AWS_SECRET_ACCESS_KEY": "churn-test-secret"}
WRITERS = ("ci", "cluster")
MERGES = 4

# moto checks a conditional PUT's If-Match and then stores the object as two steps, so on its
# threaded server two conditional PUTs can both pass the check; S3 and MinIO decide the
# condition and the write as one. Served a request at a time, moto decides them as one too.
MOTO_SERIAL = """
import os, sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app,
)
port = int(sys.argv[1])
os.environ["MOTO_PORT"] = str(port)
run_simple("127.0.0.1", port, DomainDispatcherApplication(create_backend_app),
           threaded=False, request_handler=MotoRequestHandler)
"""

# A writer: says it is ready, waits for the start signal, merges its extracts in order and
# prints what became of each, one JSON line per extract.
WRITER = """
import json, sys, time
from pathlib import Path
from churn_assets.ml.data.landing import merge_extract
from churn_assets.ml.data.reading import CustomerDataError
from churn_assets.ml.data.snapshots import SnapshotError
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store

ready, go, *extracts = sys.argv[1:]
store = snapshot_store(ChurnSettings())
Path(ready).touch()
for _ in range(6000):
    if Path(go).exists():
        break
    time.sleep(0.01)
for name in extracts:
    try:
        report, _ = merge_extract(store, Path(name))
        print(json.dumps({"extract": name, "landed": report.snapshot.id}), flush=True)
    except (CustomerDataError, SnapshotError) as error:
        print(json.dumps({"extract": name, "refused": str(error)}), flush=True)
"""


@pytest.fixture(params=["folder", "s3"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The variables that point a process at one shared store (its state folder aside)."""
    if request.param == "folder":
        yield {"CHURN_SNAPSHOT_URI": str(tmp_path / "shared" / "snapshots")}
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    moto = [sys.executable, "-c", MOTO_SERIAL, str(port)]
    with running(moto, base_env(), f"{url}/moto-api/", tmp_path / "s3.log"):
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", **_boto_keys()).create_bucket(
            Bucket="churn"
        )
        yield {**KEYS, "MLFLOW_S3_ENDPOINT_URL": url, "CHURN_SNAPSHOT_URI": "s3://churn/snapshots"}


def _boto_keys() -> dict[str, str]:
    return {
        "aws_access_key_id": KEYS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": KEYS["AWS_SECRET_ACCESS_KEY"],
    }


def _extract(path: Path, rows: int, seed: int, prefix: str) -> Path:
    """An extract of new customers only, their IDs unique to this extract."""
    frame = generate_customers(rows, seed)
    frame[TELCO.id_column] = [f"{prefix}-{i:04d}" for i in range(len(frame))]
    return write_customers(frame, path)


def _store(env: dict[str, str], state: Path) -> SnapshotStore:
    return snapshot_store(ChurnSettings(**env, CHURN_STATE_DIR=state))


def test_two_writers_with_their_own_state_folders_lose_no_merge(
    tmp_path: Path, store_env: dict[str, str]
) -> None:
    setup = _store(store_env, tmp_path / "setup-state")
    merge_extract(setup, _extract(tmp_path / "base.csv", 40, 1, "base"))
    extracts = {
        writer: [
            _extract(tmp_path / f"{writer}-{n}.csv", 15, 10 * w + n, f"{writer}{n}")
            for n in range(MERGES)
        ]
        for w, writer in enumerate(WRITERS)
    }
    processes: dict[str, subprocess.Popen[str]] = {}
    go = tmp_path / "go"
    try:
        for writer in WRITERS:
            env = base_env(**store_env, CHURN_STATE_DIR=str(tmp_path / f"{writer}-state"))
            argv = [str(tmp_path / f"{writer}.ready"), str(go), *map(str, extracts[writer])]
            processes[writer] = subprocess.Popen(
                [sys.executable, "-c", WRITER, *argv],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        wait_until(
            "both writers to start",
            lambda: all((tmp_path / f"{w}.ready").exists() for w in WRITERS),
            timeout=120,
        )
        go.touch()
        outcomes = []
        for process in processes.values():
            out, err = process.communicate(timeout=600)
            assert process.returncode == 0, err[-3000:]
            outcomes += [json.loads(line) for line in out.splitlines()]
    finally:
        for process in processes.values():
            if process.poll() is None:
                stop(process)

    assert len(outcomes) == MERGES * len(WRITERS)
    landed = [o for o in outcomes if "landed" in o]
    for refused in (o for o in outcomes if "refused" in o):
        assert Path(refused["extract"]).name in refused["refused"], refused
        assert "CURRENT.json" in refused["refused"], refused
    assert landed, outcomes  # the race refuses at most a few; most merges land

    # one history: the current snapshot was built on every merge that said it landed
    reader = _store(store_env, tmp_path / "reader-state")
    current = reader.current_id()
    assert current is not None
    lineage = [s.id for s in reader.lineage(current)]
    assert {o["landed"] for o in landed} <= set(lineage), (outcomes, lineage)
    assert len(lineage) == 1 + len(landed)  # the base, then each merge once, in some order
    # and it holds every customer those merges brought, none of the refused ones'
    ids = set(reader.read(current, columns=[TELCO.id_column])[TELCO.id_column])
    for outcome in outcomes:
        brought = set(pd.read_csv(outcome["extract"], dtype=str)[TELCO.id_column])
        assert (brought <= ids) == ("landed" in outcome), outcome["extract"]
