"""Pipeline benchmark: the whole asset graph against a plain script, from 7 thousand to 10 million.

For each size it generates customers (cached in <CHURN_STATE_DIR>/bench/, .churn/bench/ unless
set), then in separate processes:

- the graph as users run it, `churn run` (what `make run` runs; `--launcher dg-launch` for
  `dg launch --job churn_training`) on a new Dagster home
  and MLflow store (both created before timing starts): wall time, peak memory, and each
  step's time and peak memory (steps read from Dagster's event log, memory sampled from /proc
  every 20 ms);
- the baseline: the same steps (read, clean, split, fit the same sample, capped at
  CHURN_TRAIN_MAX_ROWS, with the same hyperparameters, score the holdout, score the active
  customers and write the ranked files as `churn_scores` does) as one Python script with no
  orchestration, no tracking and no I/O manager. From CHURN_LEARNING_CURVE_MIN_ROWS training
  rows on, the graph also fits its learning curve (about twice the main fit), which the
  baseline does not.

The fixed cost of a run (the command's wall time less its steps: starting Dagster, importing
the ML stack, opening the stores) is printed on its own line.

Each model is scored twice: on its own run's holdout, and on one common holdout of 200,000
customers generated apart from every size (no model trains on them). Own holdouts are
different samples (about 0.003 of AUC apart at 100k rows from sampling alone), so the
"more data is not worse" target is judged on the common holdout, where the models meet the
same customers.

It prints a line per stage as it starts (and its time when it ends), a table per size, a
summary with our time over the baseline's, and each target of the scale issue with its
measured figure and verdict. Run with `make bench` (all sizes) or
`python benchmarks/pipeline.py --sizes 7k,100k`; only `--write-readme`
(`make bench WRITE_README=1`) rewrites the README's table.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster_steps import step_windows
from proc_memory import descendants, rss_bytes
from progress import run_quietly, stage

REPO = Path(__file__).resolve().parents[1]
SIZES = {"7k": 7_043, "100k": 100_000, "1M": 1_000_000, "10M": 10_000_000}
SEED = 42
SAMPLE_S = 0.02
COMMON_ROWS, COMMON_SEED = 200_000, 2026
README_START = "<!-- pipeline-benchmark:start -->"
README_END = "<!-- pipeline-benchmark:end -->"


@dataclass
class Measured:
    wall_s: float
    peak_bytes: int
    samples: list[tuple[float, int]] = field(default_factory=list)
    stdout: str = ""

    def peak_between(self, start: float, end: float) -> int:
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return max(inside, default=0)


def measure(args: list[str], env: dict[str, str]) -> Measured:
    """Run a command, sampling the memory of its process tree; peak from the kernel's maxrss."""
    with tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        process = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        samples: list[tuple[float, int]] = []
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            samples.append((time.time(), sum(map(rss_bytes, descendants(process.pid)))))
            time.sleep(SAMPLE_S)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({process.returncode}):\n{text[-5000:]}")
    peak = max(usage.ru_maxrss * 1024, max((rss for _, rss in samples), default=0))
    return Measured(wall, peak, samples, text)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "MLFLOW_"))}
    # no reasons: the plain script computes none, and like is timed against like
    env.update(CHURN_SCORES_REASONS="0", **extra)
    return env


def dataset(label: str, rows: int, folder: Path) -> Path:
    path = folder / f"customers_{rows}_{SEED}.csv"
    if path.exists():
        print(f"{label}: data cached in {path}", flush=True)
        return path
    with stage(label, f"generating {rows:,} customers into {path}"):
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        generate = [str(Path(sys.executable).parent / "churn"), "generate-data"]
        run_quietly(
            [*generate, "--rows", str(rows), "--seed", str(SEED), "--out", str(partial), "--force"],
            REPO,
            _env(),
        )
        partial.rename(path)
    return path


def _steps(home: Path, measured: Measured) -> list[dict[str, Any]]:
    """Each step's wall time (Dagster's event log) and the peak memory sampled during it."""
    return [
        {"step": step, "seconds": end - start, "peak_bytes": measured.peak_between(start, end)}
        for step, start, end in step_windows(home)
    ]


#: How the graph is launched: as `make run` does, or as Dagster's own CLI does (the screen
#: of every event, a second resource start after the run), for the difference between them.
LAUNCHERS = {
    "churn-run": ["churn", "run"],
    "dg-launch": ["dg", "launch", "-m", "churn_assets.definitions", "--job", "churn_training"],
}


def run_graph(
    label: str, csv: Path, work: Path, dask_env: dict[str, str], launcher: str = "churn-run"
) -> dict[str, Any]:
    home, state = work / "dagster_home", work / "state"
    home.mkdir(parents=True)
    env = _env(
        DAGSTER_HOME=str(home), CHURN_STATE_DIR=str(state), CHURN_DATA_PATH=str(csv), **dask_env
    )
    dagster = str(Path(sys.executable).parent / "dagster")
    # A platform runs against stores that exist: create the Dagster storage and the MLflow
    # database (schema migrations take seconds) before the clock starts.
    with stage(label, "graph 1/3, creating the Dagster and MLflow stores (not timed)"):
        warm = "from churn_assets.ml import settings; from churn_assets.ml.registry import "
        warm += "tracking; tracking.ensure_experiment(settings.ChurnSettings())"
        run_quietly([sys.executable, "-c", warm], REPO, env)
        run_quietly([dagster, "instance", "migrate"], REPO, env)
    program, *arguments = LAUNCHERS[launcher]
    command = [str(Path(dagster).parent / program), *arguments]
    with stage(label, f"graph 2/3, {program} {' '.join(arguments)}"):
        measured = measure(command, env)
    with stage(label, "graph 3/3, the promoted model on the common holdout"):
        from churn_assets.ml.registry import artifacts, signing, tracking
        from churn_assets.ml.settings import ChurnSettings

        settings = ChurnSettings(CHURN_STATE_DIR=state)
        version = tracking.client(settings).get_model_version("churn-classifier", "1")
        tags = version.tags
        verifier = signing.verifier(settings)
        model = artifacts.load_version(
            verifier, version, settings.tracking_uri, attested=False
        ).pipeline
        common_auc = common_holdout_auc(model)
    return {
        "seconds": measured.wall_s,
        "peak_bytes": measured.peak_bytes,
        "auc": float(tags["holdout_auc"]),
        "common_auc": common_auc,
        "steps": _steps(home, measured),
    }


_COMMON: list[Any] = []


def common_holdout_auc(model: Any) -> float:
    """AUC on the common holdout, the same customers for every size."""
    from sklearn.metrics import roc_auc_score

    from churn_assets.ml.data import cleaning, splitting, synthetic
    from churn_assets.ml.data.contract import default_contract
    from churn_assets.ml.model import training

    contract = default_contract()
    if not _COMMON:
        raw = synthetic.generate_customers(COMMON_ROWS, COMMON_SEED).astype(str)
        _COMMON.append(cleaning.clean_customers(raw, contract)[0])
    features, target = splitting.features_and_target(_COMMON[0], contract)
    return float(roc_auc_score(target, training.churn_probability(model, features)))


def run_baseline(label: str, csv: Path) -> dict[str, Any]:
    with stage(label, "baseline, the same work as one plain script"):
        measured = measure([sys.executable, __file__, "--baseline-child", str(csv)], _env())
    result = json.loads(measured.stdout.strip().splitlines()[-1])
    return {"seconds": measured.wall_s, "peak_bytes": measured.peak_bytes, **result}


def baseline_child(csv: Path) -> None:
    """The same work as the graph, as a plain script: no Dagster, no MLflow, no I/O manager."""
    import hashlib

    from sklearn.metrics import roc_auc_score

    from churn_assets.ml.data import cleaning, reading, splitting
    from churn_assets.ml.evaluation import decision, metrics
    from churn_assets.ml.model import batch, features, hyperparameters, scoring, training
    from churn_assets.ml.settings import ChurnSettings

    contract = ChurnSettings().contract()
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def lap(name: str) -> None:
        timings[name] = time.perf_counter() - started - sum(timings.values())

    with csv.open("rb") as data:
        sha256 = hashlib.file_digest(data, "sha256").hexdigest()
    raw = reading.read_customer_csv(csv, sha256, contract)
    lap("read")
    customers, _ = cleaning.clean_customers(raw, contract)
    del raw
    lap("clean")
    settings = ChurnSettings()
    # the same capped samples customer_splits draws (the learning curve is the graph's extra)
    splits = splitting.split_customers(
        customers, contract, splitting.HOLDOUT_FRACTION, splitting.SPLIT_SEED, settings.split_caps
    )
    lap("split")
    train = splits.train
    train_x, _ = splitting.features_and_target(train, contract)
    preprocessor = features.fit_preprocessor(train_x, contract)
    trained = training.train_churn_model(
        preprocessor,
        train,
        contract,
        hyperparameters.DEFAULTS,
        training.TrainingChoices.from_settings(settings),
    )
    lap("fit")
    holdout_x, holdout_y = splitting.features_and_target(splits.holdout, contract)
    probability = training.churn_probability(trained.pipeline, holdout_x)
    auc = float(roc_auc_score(holdout_y, probability))
    decision.value_curve(
        holdout_y.to_numpy(),
        probability,
        decision.Economics(settings.offer_cost, settings.saved_customer_value),
    )
    lap("score holdout")
    active = scoring.active_customers(customers, contract)
    active_x, _ = splitting.features_and_target(active, contract)
    active_probability = batch.churn_probability(trained.pipeline, active_x)
    ranked = scoring.rank_customers(
        active, contract, active_probability, "1", metrics.DECISION_THRESHOLD
    )
    with tempfile.TemporaryDirectory(prefix="bench_scores_") as folder:
        scoring.write_scores(ranked, Path(folder))
    lap("score base")
    print(json.dumps({"auc": auc, "timings": timings}))


def _gb(value: int) -> str:
    return f"{value / 2**30:.2f} GB"


def report(label: str, rows: int, graph: dict[str, Any], baseline: dict[str, Any]) -> None:
    print(f"\n## {label}: {rows:,} customers")
    print(f"{'step':<34} {'seconds':>9} {'peak memory':>12}")
    for step in graph["steps"]:
        print(f"{step['step']:<34} {step['seconds']:>9.2f} {_gb(step['peak_bytes']):>12}")
    print(f"{'graph, whole command':<34} {graph['seconds']:>9.2f} {_gb(graph['peak_bytes']):>12}")
    print(f"{'fixed cost (command - its steps)':<34} {fixed_cost(graph):>9.2f}")
    baseline_steps = ", ".join(f"{k} {v:.1f} s" for k, v in baseline["timings"].items())
    print(
        f"{'baseline script':<34} {baseline['seconds']:>9.2f} "
        f"{_gb(baseline['peak_bytes']):>12}   ({baseline_steps})"
    )
    print(
        f"ratio graph/baseline {graph['seconds'] / baseline['seconds']:.2f}x; "
        f"holdout AUC graph {graph['auc']:.4f}, baseline {baseline['auc']:.4f}; "
        f"AUC on the common holdout {graph['common_auc']:.4f}"
    )


def fixed_cost(graph: dict[str, Any]) -> float:
    """What a run costs besides its steps: starting Dagster, imports, opening the stores."""
    return float(graph["seconds"] - sum(step["seconds"] for step in graph["steps"]))


def summary_table(results: list[tuple[str, int, dict[str, Any], dict[str, Any]]]) -> str:
    lines = [
        "| customers | graph (s) | graph peak memory | baseline (s) | baseline peak memory "
        "| graph / baseline | own holdout AUC | common holdout AUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, rows, graph, baseline in results:
        lines.append(
            f"| {rows:,} | {graph['seconds']:.1f} | {_gb(graph['peak_bytes'])} "
            f"| {baseline['seconds']:.1f} | {_gb(baseline['peak_bytes'])} "
            f"| {graph['seconds'] / baseline['seconds']:.2f}x | {graph['auc']:.4f} "
            f"| {graph['common_auc']:.4f} |"
        )
    return "\n".join(lines)


def targets(results: list[tuple[str, int, dict[str, Any], dict[str, Any]]]) -> list[str]:
    """The scale issue's targets, each with its measured figure, for the sizes that ran."""
    by_label = {label: (graph, baseline) for label, _, graph, baseline in results}
    lines = []

    def verdict(name: str, measured: str, met: bool) -> None:
        lines.append(f"{'met' if met else 'NOT MET':<8} {name}: {measured}")

    if "7k" in by_label:
        seconds = by_label["7k"][0]["seconds"]
        verdict("7k rows under 30 s", f"{seconds:.1f} s", seconds < 30)
        verdict(
            "7k rows under 12 s",
            f"{seconds:.1f} s, of which {fixed_cost(by_label['7k'][0]):.1f} s fixed cost",
            seconds < 12,
        )
    if "1M" in by_label:
        graph, baseline = by_label["1M"]
        verdict("1M rows under 3 min", f"{graph['seconds']:.1f} s", graph["seconds"] < 180)
        peak = graph["peak_bytes"] / 2**30
        verdict("1M rows under 4 GB", f"{peak:.2f} GB", peak < 4)
        ratio = graph["seconds"] / baseline["seconds"]
        verdict("1M rows at most 1.5x the baseline", f"{ratio:.2f}x", ratio <= 1.5)
    if "10M" in by_label:
        graph = by_label["10M"][0]
        verdict("10M rows under 10 minutes", f"{graph['seconds']:.1f} s", graph["seconds"] < 600)
        peak = graph["peak_bytes"] / 2**30
        verdict("10M rows complete under 16 GB", f"{peak:.2f} GB", peak < 16)
    if "100k" in by_label and "1M" in by_label:
        small, large = by_label["100k"][0]["common_auc"], by_label["1M"][0]["common_auc"]
        verdict(
            "AUC at 1M at least AUC at 100k (common holdout)",
            f"{large:.4f} vs {small:.4f}",
            large >= small,
        )
    return lines


def write_readme(table: str) -> None:
    readme = REPO / "README.md"
    text = readme.read_text()
    block = f"{README_START}\n{table}\n{README_END}"
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md lacks the {README_START} ... {README_END} markers")
    readme.write_text(pattern.sub(lambda _: block, text))
    print("README.md table updated")


def _state_dir() -> Path:
    """CHURN_STATE_DIR (environment or .env), as every churn command reads it."""
    from churn_assets.ml.settings import ChurnSettings

    return ChurnSettings().local_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated: 7k,100k,1M,10M")
    parser.add_argument(
        "--data-dir", type=Path, help="cache of generated customers (<CHURN_STATE_DIR>/bench)"
    )
    parser.add_argument(
        "--write-readme", action="store_true", help="rewrite the README's table (off by default)"
    )
    parser.add_argument(
        "--dask-workers",
        default="0",
        help="the graph's scoring: 0 in process (default), N on a LocalCluster of N workers, "
        "'default' by CHURN_DASK_MIN_ROWS",
    )
    parser.add_argument(
        "--launcher",
        choices=sorted(LAUNCHERS),
        default="churn-run",
        help="how the graph is launched: `churn run` as make run does (default), or dg launch",
    )
    parser.add_argument("--baseline-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child:
        baseline_child(args.baseline_child)
        return
    # in process unless asked: a LocalCluster of N workers for every size, or the default rule
    dask_env = {"CHURN_DASK_MIN_ROWS": str(10**12)}
    if args.dask_workers == "default":
        dask_env = {}
    elif args.dask_workers != "0":
        dask_env = {"CHURN_DASK_MIN_ROWS": "0", "CHURN_DASK_WORKERS": args.dask_workers}
    data_dir = args.data_dir or _state_dir() / "bench"
    results = []
    for label in args.sizes.split(","):
        rows = SIZES[label]
        csv = dataset(label, rows, data_dir)
        with tempfile.TemporaryDirectory(prefix=f"bench_{label}_") as work:
            graph = run_graph(label, csv, Path(work), dask_env, args.launcher)
        baseline = run_baseline(label, csv)
        report(label, rows, graph, baseline)
        results.append((label, rows, graph, baseline))
    table = summary_table(results)
    print("\n" + table)
    print("\n" + "\n".join(targets(results)))
    if args.write_readme:
        write_readme(table)


if __name__ == "__main__":
    main()
