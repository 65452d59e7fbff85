"""Scale benchmark: batch scoring in process and on a Dask LocalCluster of 1 and 2 workers
against LightGBM's raw `Booster.predict` on the same rows and model, then the whole graph out of
core on 100 million customers.

Scoring: it generates `--rows` customers (default 10 million) in chunks straight into a
snapshot (partitioned Parquet), cleans it a partition at a time into files as
`cleaned_customers` does, trains a model on 200,000 of them with the platform's defaults and
logs it to a throw-away MLflow store (the workers load it from there, as they do in a run),
then scores the active customers four ways:

- raw: `Booster.predict(raw_score=True)` on the prebuilt float matrix, all cores (the ceiling);
- in process: `partitioned_scoring.score_table` with the in-process runner, what `churn_scores`
  runs below CHURN_DASK_MIN_ROWS (each cleaned partition read, its active customers scored,
  sorted and written as a run);
- LocalCluster with 1 and with 2 single-threaded worker processes: the same `score_table` on
  the cluster, what `churn_scores` runs from CHURN_DASK_MIN_ROWS on.

Every path's scores are checked equal (1e-9) to the in-process ones. Peak memory is sampled
from /proc for every process. It prints rows/s, each path's share of the raw throughput, the
2-over-1-worker scaling ratio and the scale issue's scoring targets with a verdict each; and,
on a line of its own, the rest of `churn_scores`: the runs merged into the ranked files.

Out of core, at `--out-of-core-rows` customers (default 100 million): generated in chunks
straight into a snapshot store (one partition in memory at a time), made the current
snapshot, then the whole `churn_training` job run on it with `dg launch` (data checks,
cleaning, splitting and scoring a partition at a time on a LocalCluster of 2 workers, the
model fitted on the capped sample), with each step's time from Dagster's event log and every
process's peak memory; verdict: every process under 16 GB, and a promoted model.

`make bench-scale` runs both; `--rows 1M --out-of-core-rows 2M` for a quick look, 0 skips
either part.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from dagster_steps import step_windows
from proc_memory import descendants, rss_bytes
from progress import run_quietly, stage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLE_S = 0.05
TRAIN_ROWS = 200_000
SEED = 42
GB16 = 16 * 2**30


def parse_rows(text: str) -> int:
    factor = {"k": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if factor > 1 else text) * factor)


class PeakMemory:
    """Peak resident memory of this process and of each descendant, sampled from /proc."""

    def __init__(self) -> None:
        self.peaks: dict[int, tuple[str, int]] = {}
        #: (time, process name, resident bytes) of every sample, for peaks per step
        self.timeline: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        self.peaks = {}

    def _sample(self) -> None:
        while not self._stop.is_set():
            for pid in [os.getpid(), *descendants(os.getpid())]:
                rss = rss_bytes(pid)
                name, peak = self.peaks.get(pid, (_name(pid), 0))
                self.peaks[pid] = (name, max(peak, rss))
                self.timeline.append((time.time(), name, rss))
            time.sleep(SAMPLE_S)

    def describe(self) -> str:
        ranked = sorted(self.peaks.items(), key=lambda item: -item[1][1])
        return ", ".join(f"{name} {peak / 2**30:.2f} GB" for _, (name, peak) in ranked[:4])

    def largest(self) -> int:
        return max((peak for _, peak in self.peaks.values()), default=0)

    def between(self, start: float, end: float, name: str) -> int:
        """The largest sample of processes called `name` from `start` to `end`."""
        inside = (rss for t, n, rss in self.timeline if start <= t <= end and n == name)
        return max(inside, default=0)


def _name(pid: int) -> str:
    if pid == os.getpid():
        return "driver"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid}"
    if any(b"spawn" in part for part in command):
        return "worker"
    if any(part.endswith(b"dg") for part in command):
        return "run"
    return f"pid {pid}"


@dataclass
class Result:
    name: str
    seconds: float
    rows: int
    peaks: str
    largest: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def generated_snapshot(rows: int, state: Path) -> tuple[Any, Any]:
    """`rows` customers generated in chunks into a new snapshot store under `state`, the
    snapshot its current one; the store and the snapshot's entry."""
    from churn_assets.ml.data import history
    from churn_assets.ml.data.snapshots import PARTITION_ROWS
    from churn_assets.ml.data.synthetic import generate_chunks
    from churn_assets.ml.settings import ChurnSettings
    from churn_assets.ml.stores import snapshot_store

    store = snapshot_store(ChurnSettings(CHURN_STATE_DIR=state))
    info = store.write(
        generate_chunks(rows, SEED, PARTITION_ROWS),
        kind="file",
        source="bench-scale",
        source_sha256="",
        parent=None,
        as_of=history.today(),
    )
    store.point_to(info.id, "bench-scale", replacing=store.pointer())
    return store, info


def trained_model(frame: pd.DataFrame, contract: Any, work: Path) -> tuple[Any, Any]:
    """A model fitted on a sample of `frame`, registered, signed and promoted in the embedded
    store of `work`, as scoring loads it."""
    import mlflow

    from churn_assets.ml.cluster.partitioned_scoring import ScoringModel
    from churn_assets.ml.evaluation.gate import GateResult, GateThresholds
    from churn_assets.ml.evaluation.metrics import DECISION_THRESHOLD
    from churn_assets.ml.model.features import fit_preprocessor
    from churn_assets.ml.model.hyperparameters import DEFAULTS
    from churn_assets.ml.model.training import TrainingChoices, train_churn_model
    from churn_assets.ml.registry import model_registry, signing, tracking
    from churn_assets.ml.settings import ChurnSettings

    train = frame.sample(n=min(TRAIN_ROWS, len(frame)), random_state=SEED)
    preprocessor = fit_preprocessor(train, contract)
    choices = TrainingChoices.from_settings(ChurnSettings())
    trained = train_churn_model(preprocessor, train, contract, DEFAULTS, choices)
    settings = ChurnSettings(CHURN_STATE_DIR=work)
    tracking.configure_mlflow(settings)
    with mlflow.start_run() as run:
        uri = tracking.log_model(trained.pipeline, tracking.input_example(train, contract))
    registry = model_registry.open_registry(settings)
    version = str(registry.register(uri, {}).version)
    # The benchmark measures scoring, not the gate: a verdict with no criteria passes, and
    # promotion signs the attestation every scoring task checks.
    registry.record_verdict(version, GateResult([], GateThresholds.from_settings(settings)), None)
    registry.promote(version)
    verify_key = signing.verifier(settings).pem()
    model = ScoringModel(
        settings.tracking_uri,
        settings.model_name,
        version,
        run.info.run_id,
        DECISION_THRESHOLD,
        verify_key,
    )
    return model, trained.pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10M", help="customers, e.g. 1M or 10M (default)")
    parser.add_argument(
        "--out-of-core-rows",
        default="100M",
        help="customers for the graph out of core (default 100M; 0 skips it)",
    )
    args = parser.parse_args()
    rows = parse_rows(args.rows)
    out_of_core_rows = parse_rows(args.out_of_core_rows)
    if rows:
        with tempfile.TemporaryDirectory(prefix="churn-scale-") as folder:
            run(args.rows, rows, Path(folder))
    if out_of_core_rows:
        with tempfile.TemporaryDirectory(prefix="churn-scale-ooc-") as folder:
            out_of_core(f"{args.out_of_core_rows} out of core", out_of_core_rows, Path(folder), 2)


def run(label: str, rows: int, work: Path) -> None:
    """Data, model and every scoring path, with the stores and partitions in `work`."""
    from churn_assets.ml.cluster.runners import InProcess
    from churn_assets.ml.data import partitioned
    from churn_assets.ml.model import scoring
    from churn_assets.ml.stores import open_location

    started = time.perf_counter()
    with stage(label, f"generating {rows:,} customers into a snapshot"):
        store, info = generated_snapshot(rows, work / "state")
    with stage(label, "cleaning the snapshot a partition at a time"):
        raw = partitioned.SnapshotTable.of(store, info.id, open_location)
        table = partitioned.clean_table(raw, InProcess(), str(work / "cleaned"))
    with stage(label, f"training a model on {TRAIN_ROWS:,} of them, registering it", chatty=True):
        frame = table.read()
        model, pipeline = trained_model(frame, table.contract, work)
    active = scoring.active_customers(frame, table.contract)
    del frame
    booster = pipeline.named_steps["model"].booster_
    print(
        f"{rows:,} customers generated into a snapshot of {table.partitions} partitions and "
        f"cleaned, model trained on {TRAIN_ROWS:,} in {time.perf_counter() - started:.0f} s: "
        f"{booster.num_trees()} trees; {len(active):,} active customers to score",
        flush=True,
    )
    results, merging = measure(label, table, active, pipeline, booster, model, work)
    report(results, len(active), booster.num_trees(), table.partitions)
    print(
        f"\nruns merged into the ranked Parquet and CSV files: {merging.seconds:.1f} s "
        f"({merging.rows_per_s:,.0f} rows/s), peak {merging.peaks}"
    )


def measure(
    label: str,
    table: Any,
    active: pd.DataFrame,
    pipeline: Any,
    booster: Any,
    model: Any,
    work: Path,
) -> tuple[list[Result], Result]:
    from churn_assets.ml.cluster import partitioned_scoring
    from churn_assets.ml.cluster.engine import ClusterSettings, open_client
    from churn_assets.ml.cluster.runners import InProcess, OnCluster
    from churn_assets.ml.model import batch, scoring

    results: list[Result] = []
    rows = len(active)
    with PeakMemory() as memory:
        with stage(label, "scoring with raw Booster.predict"):
            matrix = batch.model_matrix(pipeline, active)
            del active
            memory.reset()
            t = time.perf_counter()
            booster.predict(matrix, raw_score=True)
            name = "raw Booster.predict (2 threads, matrix prebuilt)"
            results.append(
                Result(name, time.perf_counter() - t, rows, memory.describe(), memory.largest())
            )
            del matrix

        with stage(label, "scoring in process"):
            memory.reset()
            t = time.perf_counter()
            runs = str(work / "runs")
            in_process = partitioned_scoring.score_table(table, InProcess(), model, runs)
            name = "in process (churn_scores below CHURN_DASK_MIN_ROWS)"
            results.append(
                Result(name, time.perf_counter() - t, rows, memory.describe(), memory.largest())
            )
        with stage(label, "merging the runs into the ranked files"):
            memory.reset()
            t = time.perf_counter()
            scoring.write_scores(in_process.batches(), work / "scores")
            name = "runs merged into the files"
            merging = Result(
                name, time.perf_counter() - t, rows, memory.describe(), memory.largest()
            )
            expected = in_process.read()

        for workers in (1, 2):
            cluster = ClusterSettings(
                scheduler=None, workers=workers, memory_limit="auto", min_rows=0, timeout_s=3600
            )
            with (
                stage(label, f"scoring on a LocalCluster of {workers} worker(s)"),
                open_client(cluster) as client,
            ):
                memory.reset()
                t = time.perf_counter()
                on_cluster = partitioned_scoring.score_table(
                    table, OnCluster(client, cluster), model, str(work / f"runs-{workers}")
                )
                seconds = time.perf_counter() - t
                name = f"LocalCluster, {workers} worker(s)"
                results.append(Result(name, seconds, rows, memory.describe(), memory.largest()))
            scores = on_cluster.read()
            same = scores["customerID"].equals(expected["customerID"])
            difference = float(
                np.abs(scores["churn_probability"] - expected["churn_probability"]).max()
            )
            if not same or difference > 1e-9:
                raise SystemExit(f"{workers} worker(s) differ from in process by {difference}")
            del scores
    return results, merging


def report(results: list[Result], active: int, trees: int, partitions: int) -> None:
    raw = results[0].rows_per_s
    print(f"\nScoring {active:,} active customers, {trees} trees, {partitions} partitions")
    print(f"{'path':55} {'seconds':>8} {'rows/s':>11} {'of raw':>7}  peak memory")
    for r in results:
        print(
            f"{r.name:55} {r.seconds:8.1f} {r.rows_per_s:11,.0f} {r.rows_per_s / raw:7.2f}  "
            f"{r.peaks}"
        )
    in_process, one, two = results[1], results[2], results[3]
    scaling = two.rows_per_s / one.rows_per_s
    print(f"\n2 workers over 1 worker: {scaling:.2f}x")
    targets = [
        ("in-process scoring >= 0.5 of raw Booster.predict", in_process.rows_per_s / raw, 0.5),
        ("cluster scoring (2 workers) >= 0.5 of raw Booster.predict", two.rows_per_s / raw, 0.5),
        ("2 workers >= 1.6x one worker on scoring", scaling, 1.6),
    ]
    for name, value, target in targets:
        verdict = "MET" if value >= target else "MISSED"
        print(f"  {verdict:6} {name}: {value:.2f}")
    largest = max(r.largest for r in results)
    print(
        f"  {'MET' if largest < GB16 else 'MISSED':6} every process under 16 GB: "
        f"largest {largest / 2**30:.2f} GB"
    )
    # Said, not skipped in silence: the scale issue's target for the whole 10M graph.
    print("  see make bench: 10M customers through the whole graph in under 10 minutes")


def _graph_env(work: Path, workers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "MLFLOW_"))}
    env.update(
        DAGSTER_HOME=str(work / "dagster_home"),
        CHURN_STATE_DIR=str(work / "state"),
        CHURN_DASK_WORKERS=str(workers),
        # no reasons, as measured before they were on by default (100M would take hours more)
        CHURN_SCORES_REASONS="0",
    )
    return env


def out_of_core(label: str, rows: int, work: Path, workers: int) -> None:
    """The whole graph on `rows` customers generated in chunks into a snapshot: every step
    that touches all customers works a partition at a time on a LocalCluster of `workers`."""
    env = _graph_env(work, workers)
    (work / "dagster_home").mkdir(parents=True)
    with PeakMemory() as memory:
        t = time.perf_counter()
        with stage(label, f"generating {rows:,} customers into a snapshot, in chunks"):
            store, info = generated_snapshot(rows, work / "state")
        generation = Result(
            "generated in chunks into a snapshot, one process",
            time.perf_counter() - t,
            rows,
            memory.describe(),
            memory.largest(),
        )
        # A platform runs against stores that exist: create the Dagster storage and the
        # MLflow database before the clock starts.
        warm = "from churn_assets.ml import settings; from churn_assets.ml.registry import "
        warm += "tracking; tracking.ensure_experiment(settings.ChurnSettings())"
        dagster = Path(sys.executable).parent
        with stage(label, "creating the Dagster and MLflow stores (not timed)"):
            run_quietly([sys.executable, "-c", warm], REPO, env)
            run_quietly([str(dagster / "dagster"), "instance", "migrate"], REPO, env)
        config = {"ops": {"raw_customers": {"config": {"snapshot": info.id}}}}
        command = [
            str(dagster / "dg"),
            "launch",
            "-m",
            "churn_assets.definitions",
            "--job",
            "churn_training",
            "--config-json",
            json.dumps(config),
        ]
        memory.reset()
        t = time.perf_counter()
        what = f"dg launch --job churn_training, {workers} Dask workers (log: {work / 'run.log'})"
        with stage(label, what), (work / "run.log").open("wb") as log:
            finished = subprocess.run(
                command, check=False, cwd=REPO, env=env, stdout=log, stderr=log
            )
        graph = Result(
            f"churn_training end to end, {workers} Dask workers",
            time.perf_counter() - t,
            rows,
            memory.describe(),
            memory.largest(),
        )
    size = store.data_uri(info.id).removeprefix("file://")
    print(
        f"\n{rows:,} customers out of core: a snapshot of {store.partitions(info.id)} "
        f"partitions, {Path(size).stat().st_size / 2**30:.2f} GB of Parquet"
    )
    print(f"{'stage':55} {'seconds':>8} {'rows/s':>11}  peak memory")
    for r in (generation, graph):
        print(f"{r.name:55} {r.seconds:8.1f} {r.rows_per_s:11,.0f}  {r.peaks}")
    print("\nsteps of the run (Dagster's event log; peak memory sampled from /proc):")
    print(f"  {'step':45} {'seconds':>8} {'run process':>12} {'largest worker':>15}")
    for step, start, end in step_windows(work / "dagster_home"):
        run_peak, worker_peak = (memory.between(start, end, n) / 2**30 for n in ("run", "worker"))
        print(f"  {step:45} {end - start:8.1f} {run_peak:9.2f} GB {worker_peak:12.2f} GB")
    promoted = _promoted(work / "state")
    if finished.returncode != 0:
        print((work / "run.log").read_text()[-4000:])
    largest = max(generation.largest, graph.largest)
    print(
        f"  {'MET' if largest < GB16 else 'MISSED':6} every process under 16 GB: largest "
        f"{largest / 2**30:.2f} GB"
    )
    verdict = "MET" if finished.returncode == 0 and promoted else "MISSED"
    print(f"  {verdict:6} {rows:,} customers end to end out of core: {promoted or 'no model'}")


def _promoted(state: Path) -> str | None:
    """The production version and its holdout AUC, if the run promoted one."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = f"sqlite:///{state}/mlflow.db"
    try:
        version = MlflowClient(uri, uri).get_model_version_by_alias(
            "churn-classifier", "production"
        )
    except MlflowException:
        return None
    auc = version.tags.get("holdout_auc", "?")
    return f"version {version.version} promoted, holdout AUC {auc}"


if __name__ == "__main__":
    main()
