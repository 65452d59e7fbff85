"""The graph on a real Dask cluster: the same decision and scores as in process, and a
worker killed mid-computation survived."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from churn_assets.ml.cluster import partitioned_scoring
from churn_assets.ml.cluster.engine import ClusterSettings, open_client
from churn_assets.ml.cluster.partitioned_scoring import ScoringModel
from churn_assets.ml.cluster.runners import ClusterError, OnCluster
from churn_assets.ml.data import snapshots
from churn_assets.ml.data.synthetic import generate_customers
from churn_assets.ml.evaluation.decision import THRESHOLD_TAG
from churn_assets.ml.model import scoring, training
from churn_assets.ml.registry import signing
from churn_assets.ml.registry.model_registry import GATE_TAG
from churn_assets.ml.settings import ChurnSettings
from churn_assets_tests.conftest import (
    ChurnEnv,
    PromotedStore,
    cleaned_table,
    failure_messages,
    materialize_graph,
    verified_pipeline,
)
from churn_assets_tests.processes import wait_until

MODEL = "churn-classifier"


def _production_model(store: PromotedStore) -> tuple[ScoringModel, Any]:
    """The production version as the scoring tasks load it, and its pipeline."""
    production = _production(store.tracking_uri)
    verify_key = signing.verifier(ChurnSettings(CHURN_STATE_DIR=store.state_dir)).pem()
    model = ScoringModel(
        store.tracking_uri, MODEL, production.version, production.run_id, 0.5, verify_key
    )
    return model, verified_pipeline(store.state_dir)


def _cluster(scheduler: str | None, workers: int, timeout_s: float) -> ClusterSettings:
    return ClusterSettings(
        scheduler=scheduler, workers=workers, memory_limit="2GiB", min_rows=0, timeout_s=timeout_s
    )


def _by_id(scores: pd.DataFrame) -> pd.Series:
    return scores.set_index("customerID")["churn_probability"].sort_index()


def _production(tracking_uri: str) -> Any:
    return MlflowClient(tracking_uri, tracking_uri).get_model_version_by_alias(MODEL, "production")


def test_graph_on_a_local_cluster_decides_and_scores_as_in_process(
    churn_env: ChurnEnv,
    instance: dg.DagsterInstance,
    promoted_store: PromotedStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Same sample and seed as promoted_store, which ran the graph in process on a snapshot
    # of one partition; here the snapshot has eight, judged and cleaned on two workers.
    _on_a_local_cluster(monkeypatch)
    result = materialize_graph(churn_env, instance)
    assert result.success, failure_messages(result)
    raw = result.asset_materializations_for_node("raw_customers")[-1].metadata
    assert raw["partitions"].value == 8 and raw["dagster/row_count"].value == 7043
    assert all(check.passed for check in result.get_asset_check_evaluations())
    scored = result.asset_materializations_for_node("churn_scores")[-1].metadata
    assert scored["scored_on"].value == "a LocalCluster of 2 worker process(es)"
    assert scored["partitions"].value > 1

    on_cluster = _production(churn_env.settings.tracking_uri)
    alone = _production(promoted_store.tracking_uri)
    assert on_cluster.version == alone.version
    assert on_cluster.tags[GATE_TAG] == alone.tags[GATE_TAG]
    assert on_cluster.tags[THRESHOLD_TAG] == alone.tags[THRESHOLD_TAG]

    mine = pd.read_parquet(churn_env.settings.scores_folder / "churn_scores.parquet")
    theirs = pd.read_parquet(promoted_store.state_dir / "scores" / "churn_scores.parquet")
    assert len(mine) == len(theirs) > 1000
    assert mine["customerID"].tolist() == theirs["customerID"].tolist()
    assert np.abs(mine["churn_probability"] - theirs["churn_probability"]).max() <= 1e-9
    assert (mine["offer"] == theirs["offer"]).all()


def _on_a_local_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step's partitions on a LocalCluster of two workers; snapshots of 1,000-row
    partitions (the run's process writes them: Dagster executes in this one)."""
    monkeypatch.setenv("CHURN_DASK_MIN_ROWS", "0")
    monkeypatch.setenv("CHURN_DASK_WORKERS", "2")
    monkeypatch.setattr(snapshots, "PARTITION_ROWS", 1000)


def test_a_bad_value_deep_in_a_partition_on_a_worker_is_named_by_its_line(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    _on_a_local_cluster(monkeypatch)
    frame = pd.read_csv(churn_env.data_path, dtype=str, keep_default_na=False)
    frame.loc[5300, "tenure"] = "ten"  # row 5300 of partition 5: line 5302 of the export
    frame.loc[6100, "tenure"] = "-3"
    frame.to_csv(churn_env.data_path, index=False, lineterminator="\r\n")
    result = materialize_graph(churn_env, instance)
    assert not result.success
    failed = {e.check_name: e for e in result.get_asset_check_evaluations() if not e.passed}
    assert set(failed) == {"value_types", "value_ranges"}
    types = failed["value_types"].metadata
    assert (types["line"].value, types["value"].value, types["rows"].value) == (5302, "'ten'", 1)
    assert failed["value_ranges"].metadata["line"].value == 6102
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"raw_customers"}
    assert churn_env.client.search_registered_models() == []


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def test_a_worker_killed_mid_scoring_is_survived(
    promoted_store: PromotedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real scheduler and two real workers (`dask` CLI); one gets kill -9 while it scores."""
    dask = str(Path(sys.executable).with_name("dask"))
    scheduler_file = tmp_path / "scheduler.json"
    scheduler = _start(
        [
            dask,
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        ],
        tmp_path / "scheduler.log",
    )
    workers = None
    try:
        wait_until("the scheduler file", scheduler_file.is_file, timeout=120)
        workers = _start(
            [
                dask,
                "worker",
                "--scheduler-file",
                str(scheduler_file),
                "--nworkers",
                "2",
                "--nthreads",
                "1",
                "--no-dashboard",
                "--memory-limit",
                "2GiB",
            ],
            tmp_path / "workers.log",
        )
        model, pipeline = _production_model(promoted_store)
        table = cleaned_table(generate_customers(60_000, seed=11), tmp_path, 500, monkeypatch)
        active = scoring.active_customers(table.read(), table.contract)
        expected = pd.Series(
            training.churn_probability(pipeline, active), index=active["customerID"]
        ).sort_index()

        address = json.loads(scheduler_file.read_text())["address"]
        cluster = _cluster(address, 2, timeout_s=600)
        with open_client(cluster) as client:
            wait_until(
                "two workers", lambda: len(client.scheduler_info()["workers"]) == 2, timeout=180
            )
            outcome: dict[str, Any] = {}

            def score() -> None:
                try:
                    outcome["scores"] = partitioned_scoring.score_table(
                        table, OnCluster(client, cluster), model, str(tmp_path / "runs")
                    ).read()
                except Exception as error:  # reported by the assertion below
                    outcome["error"] = error

            scoring_thread = threading.Thread(target=score)
            scoring_thread.start()
            busy = wait_until(
                "a worker scoring a partition",
                lambda: next((w for w, keys in client.processing().items() if keys), None),
                timeout=180,
                interval=0.05,
            )
            pids = client.run(os.getpid)
            os.kill(pids[busy], signal.SIGKILL)
            killed_mid_run = scoring_thread.is_alive()
            scoring_thread.join(timeout=600)
            assert "error" not in outcome, outcome.get("error")
        assert killed_mid_run
        scored = _by_id(outcome["scores"])
        assert scored.index.tolist() == expected.index.tolist()
        assert np.abs(scored.to_numpy() - expected.to_numpy()).max() <= 1e-9
    finally:
        for process in (workers, scheduler):
            if process is not None:
                _stop(process)


def test_a_cluster_past_its_timeout_fails_cleanly(
    promoted_store: PromotedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hung or slow cluster fails the step with the setting to change."""
    model, _ = _production_model(promoted_store)
    table = cleaned_table(generate_customers(2_000, seed=3), tmp_path, 100, monkeypatch)
    # loading MLflow and the model in the worker alone takes seconds
    cluster = _cluster(None, 1, timeout_s=0.2)
    with (
        open_client(cluster) as client,
        pytest.raises(ClusterError, match=r"scoring .* longer than 0.2 s \(CHURN_DASK_TIMEOUT_S\)"),
    ):
        partitioned_scoring.score_table(
            table, OnCluster(client, cluster), model, str(tmp_path / "runs")
        )
