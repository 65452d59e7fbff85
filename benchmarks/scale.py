"""Scale benchmark: batch scoring in process and on a Dask LocalCluster of 1 and 2 workers,
against LightGBM's raw `Booster.predict` on the same rows and model, in the same run.

It generates `--rows` customers (default 10 million) in chunks of a million, cleans them as
the graph does, trains a model on 200,000 of them with the platform's defaults and logs it to
a throw-away MLflow store (the workers load it from there, as they do in a run), then scores
the active customers four ways:

- raw: `Booster.predict(raw_score=True)` on the prebuilt float matrix, all cores (the ceiling);
- in process: `churn_assets.ml.model.batch.churn_probability`, what `churn_scores` runs below
  CHURN_DASK_MIN_ROWS (matrix from the frame, then the booster);
- LocalCluster with 1 and with 2 single-threaded worker processes: `churn_probability_on_cluster`,
  what `churn_scores` runs on a cluster (Parquet partitions written, scored per partition,
  gathered in order), timed from the frame in memory to the probabilities back.

Every path's probabilities are checked equal (1e-9) to the in-process ones. Peak memory is
sampled from /proc for this process and every worker. It prints rows/s, each path's share of
the raw throughput, the 2-over-1-worker scaling ratio and the scale issue's scoring targets
with a verdict each.

Then the stages that already work a partition at a time, at `--out-of-core-rows` customers
(default 100 million): generated in chunks straight into a snapshot store (partitioned
Parquet, one partition in memory at a time), then verified and judged by the data checks on a
LocalCluster of 2 workers, with each stage's time and every process's peak memory.

`make bench-scale` runs both; `--rows 1M --out-of-core-rows 2M` for a quick look, 0 skips
either part.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from proc_memory import descendants, rss_bytes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLE_S = 0.05
CHUNK_ROWS = 1_000_000
TRAIN_ROWS = 200_000
SEED = 42


def parse_rows(text: str) -> int:
    factor = {"k": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if factor > 1 else text) * factor)


class PeakMemory:
    """Peak resident memory of this process and of each descendant, sampled from /proc."""

    def __init__(self) -> None:
        self.peaks: dict[int, tuple[str, int]] = {}
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
            for pid in descendants(os.getpid()):
                rss = rss_bytes(pid)
                name, peak = self.peaks.get(pid, (_name(pid), 0))
                self.peaks[pid] = (name, max(peak, rss))
            time.sleep(SAMPLE_S)

    def describe(self) -> str:
        ranked = sorted(self.peaks.items(), key=lambda item: -item[1][1])
        return ", ".join(f"{name} {peak / 2**30:.2f} GB" for _, (name, peak) in ranked[:4])

    def largest(self) -> int:
        return max((peak for _, peak in self.peaks.values()), default=0)


def _name(pid: int) -> str:
    if pid == os.getpid():
        return "driver"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid}"
    return "worker" if any(b"spawn" in part for part in command) else f"pid {pid}"


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


def customers(rows: int, contract: Any) -> pd.DataFrame:
    from churn_assets.ml.data.cleaning import clean_customers
    from churn_assets.ml.data.synthetic import generate_chunks

    parts = []
    for raw in generate_chunks(rows, SEED, CHUNK_ROWS):
        clean, _ = clean_customers(raw, contract, require_both_classes=False)
        parts.append(clean)
    return pd.concat(parts, ignore_index=True)


def trained_model(frame: pd.DataFrame, contract: Any, tracking_uri: str) -> tuple[str, Any]:
    import mlflow

    from churn_assets.ml.model.features import fit_preprocessor
    from churn_assets.ml.model.hyperparameters import DEFAULTS
    from churn_assets.ml.model.training import TrainingChoices, train_churn_model
    from churn_assets.ml.registry import tracking
    from churn_assets.ml.settings import ChurnSettings

    train = frame.sample(n=min(TRAIN_ROWS, len(frame)), random_state=SEED)
    preprocessor = fit_preprocessor(train, contract)
    choices = TrainingChoices.from_settings(ChurnSettings())
    trained = train_churn_model(preprocessor, train, contract, DEFAULTS, choices)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run():
        uri = tracking.log_model(trained.pipeline, tracking.input_example(train, contract))
    return uri, trained.pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10M", help="customers, e.g. 1M or 10M (default)")
    parser.add_argument("--partition-rows", type=int, default=500_000)
    parser.add_argument(
        "--out-of-core-rows",
        default="100M",
        help="customers for the out-of-core stages (default 100M; 0 skips them)",
    )
    args = parser.parse_args()
    rows = parse_rows(args.rows)
    out_of_core_rows = parse_rows(args.out_of_core_rows)

    from churn_assets.ml.data.contract import default_contract

    contract = default_contract()
    if rows:
        with tempfile.TemporaryDirectory(prefix="churn-scale-") as folder:
            run(rows, contract, Path(folder), args)
    if out_of_core_rows:
        with tempfile.TemporaryDirectory(prefix="churn-scale-ooc-") as folder:
            out_of_core(out_of_core_rows, contract, Path(folder), workers=2)


def run(rows: int, contract: Any, work: Path, args: argparse.Namespace) -> None:
    """Data, model and every scoring path, with the MLflow store and partitions in `work`."""
    from churn_assets.ml.model import scoring

    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    started = time.perf_counter()
    frame = customers(rows, contract)
    model_uri, pipeline = trained_model(frame, contract, tracking_uri)
    active = scoring.active_customers(frame, contract)
    del frame
    booster = pipeline.named_steps["model"].booster_
    print(
        f"{rows:,} customers generated and cleaned, model trained on {TRAIN_ROWS:,} in "
        f"{time.perf_counter() - started:.0f} s: {booster.num_trees()} trees; "
        f"{len(active):,} active customers to score",
        flush=True,
    )
    results = measure(active, pipeline, booster, model_uri, tracking_uri, work, args)
    report(results, len(active), booster.num_trees(), args.partition_rows)


def measure(
    active: pd.DataFrame,
    pipeline: Any,
    booster: Any,
    model_uri: str,
    tracking_uri: str,
    work: Path,
    args: argparse.Namespace,
) -> list[Result]:
    from churn_assets.ml.cluster import partitioned_scoring
    from churn_assets.ml.cluster.engine import ClusterSettings, open_client
    from churn_assets.ml.model import batch
    from churn_assets.ml.model.features import model_inputs

    results: list[Result] = []
    with PeakMemory() as memory:
        matrix = batch.model_matrix(pipeline, active)
        memory.reset()
        t = time.perf_counter()
        booster.predict(matrix, raw_score=True)
        results.append(
            Result(
                "raw Booster.predict (2 threads)",
                time.perf_counter() - t,
                len(active),
                memory.describe(),
                memory.largest(),
            )
        )
        del matrix

        memory.reset()
        t = time.perf_counter()
        expected = batch.churn_probability(pipeline, active)
        results.append(
            Result(
                "in process (churn_scores below CHURN_DASK_MIN_ROWS)",
                time.perf_counter() - t,
                len(active),
                memory.describe(),
                memory.largest(),
            )
        )

        for workers in (1, 2):
            cluster = ClusterSettings(
                scheduler=None,
                workers=workers,
                memory_limit="auto",
                min_rows=0,
                partition_rows=args.partition_rows,
                scratch=work / "dask",
                timeout_s=3600,
            )
            with open_client(cluster) as client:
                memory.reset()
                t = time.perf_counter()
                probability = partitioned_scoring.churn_probability_on_cluster(
                    client,
                    active,
                    model_inputs(pipeline),
                    model_uri,
                    tracking_uri,
                    cluster,
                    work / "dask" / f"w{workers}",
                )
                seconds = time.perf_counter() - t
                results.append(
                    Result(
                        f"LocalCluster, {workers} worker(s)",
                        seconds,
                        len(active),
                        memory.describe(),
                        memory.largest(),
                    )
                )
            difference = float(np.abs(probability - expected).max())
            if difference > 1e-9:
                raise SystemExit(f"{workers} worker(s) differ from in process by {difference}")

    return results


def report(results: list[Result], active: int, trees: int, partition_rows: int) -> None:
    raw = results[0].rows_per_s
    print(
        f"\nScoring {active:,} active customers, {trees} trees, "
        f"partitions of {partition_rows:,} rows"
    )
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
        f"  {'MET' if largest < 16 * 2**30 else 'MISSED':6} every process under 16 GB: "
        f"largest {largest / 2**30:.2f} GB"
    )
    # Said, not skipped in silence: the scale issue's target for the whole 10M graph.
    print("  see make bench: 10M customers through the whole graph in under 10 minutes")


def out_of_core(rows: int, contract: Any, work: Path, workers: int) -> None:
    """The stages that already run a partition at a time, at `rows` customers: generated in
    chunks straight into a snapshot (partitioned Parquet), then verified and judged by the
    data checks on a LocalCluster, as the graph's raw_customers and customer_data_contract do."""
    from churn_assets.ml.cluster.engine import ClusterSettings, open_client
    from churn_assets.ml.cluster.runners import OnCluster
    from churn_assets.ml.data import history, partitioned
    from churn_assets.ml.data.snapshots import PARTITION_ROWS, SnapshotStore
    from churn_assets.ml.data.synthetic import generate_chunks
    from churn_assets.ml.settings import ChurnSettings

    store = SnapshotStore.from_settings(ChurnSettings(CHURN_STATE_DIR=work / "state"))
    results = []
    with PeakMemory() as memory:
        t = time.perf_counter()
        with store.locked():
            info = store.write(
                generate_chunks(rows, SEED, PARTITION_ROWS),
                kind="file",
                source="bench-scale",
                source_sha256="",
                parent=None,
                as_of=history.today(),
            )
        name = "generated in chunks into a snapshot (driver only)"
        results.append(
            Result(name, time.perf_counter() - t, rows, memory.describe(), memory.largest())
        )
        cluster = ClusterSettings(
            scheduler=None,
            workers=workers,
            memory_limit="auto",
            min_rows=0,
            partition_rows=PARTITION_ROWS,
            scratch=work / "dask",
            timeout_s=7200,
        )
        with open_client(cluster) as client:
            memory.reset()
            t = time.perf_counter()
            table = partitioned.SnapshotTable.of(store, info.id)
            verdicts = partitioned.validate_table(table, OnCluster(client, cluster))
            name = f"verified and judged by the data checks, {workers} workers"
            results.append(
                Result(name, time.perf_counter() - t, rows, memory.describe(), memory.largest())
            )
    size = store.data_uri(info.id).removeprefix("file://")
    print(
        f"\n{rows:,} customers out of core: a snapshot of {table.partitions} partitions, "
        f"{Path(size).stat().st_size / 2**30:.2f} GB of Parquet"
    )
    print(f"{'stage':55} {'seconds':>8} {'rows/s':>11}  peak memory")
    for r in results:
        print(f"{r.name:55} {r.seconds:8.1f} {r.rows_per_s:11,.0f}  {r.peaks}")
    failed = [v.rule.name for v in verdicts if not v.passed]
    print(f"data checks: {'all passed' if not failed else 'FAILED ' + ', '.join(failed)}")
    largest = max(r.largest for r in results)
    print(
        f"  {'MET' if largest < 16 * 2**30 else 'MISSED':6} every process under 16 GB in "
        f"these stages: largest {largest / 2**30:.2f} GB"
    )
    print(
        f"  NOT RUN {rows:,} customers end to end: cleaning gathers the cleaned table into the "
        "run's process, and splitting, the training sample and drift work on it whole "
        "(README, Scaling out)"
    )


if __name__ == "__main__":
    main()
