"""A newcomer's path through the README: hand merges, busy ports, where MLflow keeps things."""

import re
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import dagster as dg
import mlflow
import pytest

from churn_assets.definitions import defs
from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.reading import read_customer_csv
from churn_assets.ml.data.synthetic import generate_customers, write_customers
from churn_assets.ml.registry import tracking
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store
from churn_assets_tests.conftest import PromotedStore
from churn_assets_tests.processes import REPO, call_json, free_port, run_command, running

TELCO = default_contract()

README = (REPO / "README.md").read_text()


@contextmanager
def _busy_port() -> Iterator[int]:
    """A port something else is already listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_make_merge_merges_a_file_by_hand(shell_env: dict[str, str], tmp_path: Path) -> None:
    snapshot = Path(shell_env["CHURN_DATA_PATH"])
    write_customers(generate_customers(500, 1), snapshot)
    extract = write_customers(generate_customers(40, 99), tmp_path / "by_hand.csv")

    usage = run_command(["make", "merge"], shell_env)
    assert usage.returncode == 2 and "usage: make merge FILE=" in usage.stdout
    missing = run_command(["make", "merge", f"FILE={tmp_path / 'nope.csv'}"], shell_env)
    assert missing.returncode == 2 and "is not a file" in missing.stdout

    done = run_command(["make", "merge", f"FILE={extract}"], shell_env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    store = snapshot_store(ChurnSettings(CHURN_STATE_DIR=shell_env["CHURN_STATE_DIR"]))
    seed, merged = store.all()  # the file at CHURN_DATA_PATH seeded the store, then the merge
    assert (seed.kind, seed.rows, merged.kind, merged.rows) == ("seed", 500, "merge", 540)
    assert store.current_id() == merged.id and merged.source == "by_hand.csv"
    assert (
        len(read_customer_csv(snapshot, "", TELCO)) == 500
    )  # the seed file itself is never written


@pytest.mark.parametrize("target", ["serve", "dev", "mlflow-ui"])
def test_servers_check_their_port_first_and_name_the_way_out(
    shell_env: dict[str, str], target: str
) -> None:
    write_customers(generate_customers(200, 1), Path(shell_env["CHURN_DATA_PATH"]))
    with _busy_port() as port:
        done = run_command(["make", target, f"PORT={port}"], shell_env, timeout=300)
    assert done.returncode != 0
    assert f"127.0.0.1:{port} cannot be used" in done.stderr
    assert f"make {target} PORT=" in done.stderr
    assert "Traceback" not in done.stderr


def test_mlflow_ui_opens_the_store_mlflow_tracking_uri_names(
    shell_env: dict[str, str], tmp_path: Path, promoted_store: PromotedStore
) -> None:
    server = run_command(
        [".venv/bin/churn", "mlflow-ui"], {**shell_env, "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    )
    assert server.returncode == 0 and "is a server: its UI is http://mlflow:5000" in server.stdout

    # a store of one's own, elsewhere than the state folder: a copy of a promoted one
    own = tmp_path / "own" / "store.db"
    own.parent.mkdir()
    # SQLite's own copy: the store keeps a write-ahead log, which a copy of the file alone misses
    with (
        closing(sqlite3.connect(promoted_store.state_dir / "mlflow.db")) as source,
        closing(sqlite3.connect(own)) as target,
    ):
        source.backup(target)
    port = free_port()
    env = {**shell_env, "MLFLOW_TRACKING_URI": f"sqlite:///{own}"}
    with running(
        ["make", "mlflow-ui", f"PORT={port}"],
        env,
        f"http://127.0.0.1:{port}/health",
        tmp_path / "ui.log",
        timeout=180,
    ):
        status, found = call_json(
            port, "GET", "/api/2.0/mlflow/registered-models/get?name=churn-classifier"
        )
        assert status == 200 and found["registered_model"]["name"] == "churn-classifier"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (None, "{state}/mlartifacts"),
        ("sqlite:///{tmp}/own/store.db", "{tmp}/own/mlartifacts"),
        ("postgresql://postgres@127.0.0.1:5432/mlflow", "{state}/mlartifacts"),
        ("http://mlflow:5000", None),
    ],
    ids=["unset", "own-sqlite", "database", "server"],
)
def test_every_tracking_uri_has_a_state_dir_rule(
    tmp_path: Path, uri: str | None, expected: str | None
) -> None:
    state = tmp_path / "state"
    values = {"CHURN_STATE_DIR": state}
    if uri:
        values["MLFLOW_TRACKING_URI"] = uri.format(tmp=tmp_path)
    location = ChurnSettings(**values).artifact_location  # type: ignore[arg-type]
    if expected is None:
        assert location is None
    else:
        assert location == Path(expected.format(state=state, tmp=tmp_path)).as_uri()


def test_artifacts_of_an_own_sqlite_store_never_land_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "checkout"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    own = tmp_path / "own" / "store.db"
    own.parent.mkdir()
    settings = ChurnSettings(MLFLOW_TRACKING_URI=f"sqlite:///{own}")
    experiment = tracking.ensure_experiment(settings)
    with mlflow.start_run(experiment_id=experiment):
        mlflow.log_text("hello", "note.txt")
    assert list((own.parent / "mlartifacts").rglob("note.txt"))
    assert not (workdir / "mlruns").exists()


def test_readme_selections_select_what_they_say() -> None:
    graph = defs.resolve_asset_graph()
    selections = re.findall(r"SELECT='?([^\s'`]+)'?", README)
    assert selections
    for selection in selections:
        for part in selection.split(","):  # the CLI's comma list: a union of selections
            assert dg.AssetSelection.from_string(part).resolve(graph), selection
    retrain = dg.AssetSelection.from_string("raw_customers*").resolve(graph)
    assert dg.AssetKey("production_promotion") in retrain
    # what the README says `+` does: one step only, so it would not retrain
    one_step = dg.AssetSelection.from_string("raw_customers+").resolve(graph)
    assert one_step == {dg.AssetKey("raw_customers"), dg.AssetKey("cleaned_customers")}
    assert "would only clean it" in README
