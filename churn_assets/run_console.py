"""`churn run`: a job launched from a terminal, a line per step, the whole log in a file.

`dg launch` prints Dagster's every event, MLflow's and LightGBM's chatter and each library's
warnings: hundreds of lines in which a failure's one explaining sentence is buried. Here the
process's own stdout and stderr (file descriptors 1 and 2, so C libraries' output too) go to
`<state>/logs/<job>-<time>.log`, while a thread reads the run's events from the Dagster
instance and prints one line per step as it ends, then what the run left: the version, its
figures, the gate's verdict in words and the scores file, or the failure's message first.

The run itself is the one `dg launch` would make: the same job, instance (DAGSTER_HOME), run
monitoring, pools and tags, executed in this process (the code location's executor).
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import dagster as dg
import sqlalchemy

from churn_assets.ml.settings import ChurnSettings
from churn_assets.start_up import bulk_imports, shown_path

#: Run tag that lets the printing thread find the run this command started.
LAUNCH_TAG = "churn/console_launch"
#: Characters of an ID shown on the terminal (the log and the UIs have them whole).
SHORT_ID = 12
_POLL_S = 0.2
#: One criterion of the gate's recorded summary (GateCriterion.describe).
_CRITERION = re.compile(
    r"^(?P<name>.+) (?P<value>\S+) vs (?P<threshold>\S+): (?P<verdict>ok|FAILED)$"
)


def churn_training() -> dg.JobDefinition:
    """The job `make run` launches (module level, so Dagster can reconstruct it)."""
    from churn_assets.definitions import defs

    return defs.resolve_job_def("churn_training")


def merge_extract() -> dg.JobDefinition:
    from churn_assets.definitions import defs

    return defs.resolve_job_def("merge_extract")


def record_contacts() -> dg.JobDefinition:
    from churn_assets.definitions import defs

    return defs.resolve_job_def("record_contacts")


JOBS = {
    "churn_training": churn_training,
    "merge_extract": merge_extract,
    "record_contacts": record_contacts,
}


@dataclass
class StepLine:
    """What the terminal shows of one step."""

    key: str
    started: float | None = None
    seconds: float | None = None
    failed: str | None = None
    checks_failed: list[str] = field(default_factory=list)


def short(identifier: str | None) -> str:
    return "-" if not identifier else identifier[:SHORT_ID]


@contextmanager
def output_to(path: Path) -> Iterator[TextIO]:
    """Everything this process writes, Python's and C libraries', into `path`; yields the
    terminal that was stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            terminal.close()


def failure_message(event: dg.DagsterEvent) -> str:
    """The sentence that explains a step's failure: a `dg.Failure`'s description, else the
    innermost error's message (Dagster wraps the user's exception in its own)."""
    data = event.step_failure_data
    if data is None:
        return event.message or "failed"
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description.strip()
    error = data.error
    if error is None:
        return event.message or "failed"
    while error.cause is not None:
        error = error.cause
    message = error.message.strip()
    # "churn_assets.ml.data.reading.CustomerDataError: data/x.csv: ..." -> keep the text
    head, _, rest = message.partition(": ")
    return rest if rest and "." in head and " " not in head else message


def _sync_at_checkpoints(dbapi_connection: Any, _: Any) -> None:
    """SQLite files synced to disk when the write-ahead log is checkpointed, not at each of the
    run's hundreds of commits: SQLite's `synchronous=NORMAL`, its advice for write-ahead logs
    (a crash of this process loses nothing; a power cut may lose the last commits, never
    the file's consistency). Only this process's connections: the local instance and store."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute("pragma synchronous=normal")


class HeldLogs:
    """Read connections held open on the instance's SQLite files while a run writes them.

    Dagster opens and closes a connection for each write, and SQLite checkpoints its
    write-ahead log into the database, syncing both to disk, whenever the last connection to
    a file closes: 510 commits and 422 closes of a 7,043-customer run spent 7 s syncing here.
    While one idle connection stays open, a write is an append to the log; SQLite checkpoints
    it as usual when the log grows or this last connection closes.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._held: dict[Path, sqlite3.Connection] = {}

    def hold(self, path: Path) -> None:
        if path in self._held or not path.is_file():
            return
        connection = sqlite3.connect(
            f"{path.as_uri()}?mode=ro", uri=True, timeout=30, check_same_thread=False
        )
        try:
            connection.execute("select 1 from sqlite_master limit 1").fetchall()
        except sqlite3.Error:
            connection.close()
            return
        self._held[path] = connection

    def hold_all(self) -> None:
        for path in sorted(self.folder.rglob("*.db")) if self.folder.is_dir() else []:
            self.hold(path)

    def close(self) -> None:
        for connection in self._held.values():
            connection.close()
        self._held.clear()


#: The events `RunWatcher` reads.
_READ = {
    dg.DagsterEventType.STEP_START,
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.ASSET_MATERIALIZATION,
    dg.DagsterEventType.ASSET_CHECK_EVALUATION,
}


class RunWatcher:
    """Reads one run's events from the instance as they land and prints a line per step."""

    def __init__(self, instance: dg.DagsterInstance, token: str, terminal: TextIO) -> None:
        self.instance = instance
        self.logs = HeldLogs(Path(instance.root_directory) / "history")
        self.token = token
        self.terminal = terminal
        self.run_id: str | None = None
        self.steps: dict[str, StepLine] = {}
        self.failures: list[StepLine] = []
        self.materialized: dict[str, dict[str, Any]] = {}
        self._cursor: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="churn-run-watcher", daemon=True)

    def __enter__(self) -> RunWatcher:
        self.logs.hold_all()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.poll()  # whatever landed after the last poll
        self.logs.close()

    def _watch(self) -> None:
        while not self._stop.wait(_POLL_S):
            self.poll()

    def _find_run(self) -> str | None:
        if self.run_id is None:
            records = self.instance.get_run_records(
                dg.RunsFilter(tags={LAUNCH_TAG: self.token}), limit=1
            )
            if records:
                self.run_id = records[0].dagster_run.run_id
        if self.run_id is not None:  # the run's own event file, once Dagster made it
            self.logs.hold(self.logs.folder / "runs" / f"{self.run_id}.db")
        return self.run_id

    def poll(self) -> None:
        run_id = self._find_run()
        if run_id is None:
            return
        # only the kinds it reads: the rest (logs, inputs, outputs, engine events) are most of a
        # run's events, and decoding them in this thread slows the run in the other
        connection = self.instance.get_records_for_run(run_id, cursor=self._cursor, of_type=_READ)
        self._cursor = connection.cursor
        for record in connection.records:
            self._take(record.event_log_entry)

    def _take(self, entry: dg.EventLogEntry) -> None:
        event = entry.dagster_event
        if event is None or event.step_key is None:
            return
        step = self.steps.setdefault(event.step_key, StepLine(event.step_key))
        kind = event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            step.started = entry.timestamp
        elif kind == dg.DagsterEventType.STEP_SUCCESS:
            step.seconds = entry.timestamp - (step.started or entry.timestamp)
            self._print(step)
        elif kind == dg.DagsterEventType.STEP_FAILURE:
            step.seconds = entry.timestamp - (step.started or entry.timestamp)
            step.failed = failure_message(event)
            self.failures.append(step)
            self._print(step)
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = entry.asset_materialization
            if materialization is not None:
                self.materialized[materialization.asset_key.to_user_string()] = {
                    name: value.value for name, value in materialization.metadata.items()
                }
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.asset_check_evaluation_data
            if not evaluation.passed:
                step.checks_failed.append(evaluation.check_name)

    def _print(self, step: StepLine) -> None:
        took = f"{step.seconds:6.1f} s" if step.seconds is not None else "       "
        if step.failed is not None:  # its message leads what follows the steps
            line = f"  FAILED {step.key:<34}{took}"
        elif step.checks_failed:
            line = f"  ok     {step.key:<34}{took}  failed: {', '.join(step.checks_failed)}"
        else:
            line = f"  ok     {step.key:<34}{took}"
        print(line, file=self.terminal, flush=True)

    def not_run(self, planned: list[str]) -> list[str]:
        return [key for key in planned if key not in self.steps or self.steps[key].seconds is None]


def ensure_instance_home(settings: ChurnSettings) -> Path:
    """DAGSTER_HOME as `make` prepares it (default <state>/dagster_home), with the local
    instance's config (deploy/dagster/local.yaml) unless it has one of its own."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.local_state / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    config = Path(__file__).resolve().parents[1] / "deploy" / "dagster" / "local.yaml"
    if not (home / "dagster.yaml").exists() and config.is_file():
        (home / "dagster.yaml").write_text(config.read_text())
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    return home


def run(job: str, run_config: dict[str, Any] | None, path: Path, started: float) -> int:
    """Launch `job` on this machine's instance, its log in `path` (which `start_up.announce`
    named), and report it on the terminal; the exit status."""
    settings = ChurnSettings()
    ensure_instance_home(settings)
    with output_to(path) as terminal:
        try:
            return _launch(settings, job, run_config, terminal, started, path)
        except Exception as error:  # the whole traceback is in the log
            traceback.print_exc()
            print(
                f"{job} could not run: {type(error).__name__}: {error}\n"
                f"full log: {shown_path(path)}",
                file=terminal,
            )
            return 1


def _launch(
    settings: ChurnSettings,
    job: str,
    run_config: dict[str, Any] | None,
    terminal: TextIO,
    started: float,
    path: Path,
) -> int:
    token = uuid.uuid4().hex
    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", _sync_at_checkpoints)
    with dg.DagsterInstance.get() as instance:
        with bulk_imports():  # the code location: MLflow, scikit-learn, LightGBM
            recon = dg.reconstructable(JOBS[job])
            planned = [node.name for node in recon.get_definition().nodes_in_topological_order]
        print(
            f"  ok     {'start-up (imports, stores)':<34}{time.perf_counter() - started:6.1f} s",
            file=terminal,
            flush=True,
        )
        with RunWatcher(instance, token, terminal) as watcher:
            result = dg.execute_job(
                recon,
                instance=instance,
                run_config=run_config or {},
                tags={LAUNCH_TAG: token, "churn/launched_by": "churn run"},
                raise_on_error=False,
            )
        print(
            outcome(settings, job, result.success, result.run_id, watcher, planned, started),
            file=terminal,
        )
        print(f"full log: {shown_path(path)}", file=terminal, flush=True)
    return 0 if result.success and not watcher.failures else 1


def outcome(
    settings: ChurnSettings,
    job: str,
    success: bool,
    run_id: str,
    watcher: RunWatcher,
    planned: list[str],
    started: float,
) -> str:
    """The few lines that say what the run left, its failure's message first."""
    took = time.perf_counter() - started
    if watcher.failures:
        first = watcher.failures[0]
        lines = [f"{job} failed at {first.key}: {first.failed}"]
        skipped = watcher.not_run(planned)
        if skipped:
            lines.append(f"  not run (upstream failed): {', '.join(skipped)}")
        lines.append(f"  Dagster run {short(run_id)} ({took:.1f} s)")
        return "\n".join(lines)
    if job != "churn_training":
        state = "done" if success else "failed"
        return f"{job} {state} in {took:.1f} s (Dagster run {short(run_id)})"
    return _training_outcome(settings, run_id, watcher, took, success)


def _training_outcome(
    settings: ChurnSettings, run_id: str, watcher: RunWatcher, took: float, success: bool
) -> str:
    from churn_assets.ml.registry import model_registry as registry

    opened = registry.open_registry(settings)
    version = next(reversed(opened.versions_of_run(run_id)), None)
    production = opened.production()
    if version is None:
        state = "finished" if success else "failed"
        return f"churn_training {state} in {took:.1f} s with no new version"
    tags = version.tags or {}
    verdict = tags.get(registry.GATE_TAG, "not judged")
    promoted = production is not None and production.version == version.version
    where = f"{settings.model_name} version {version.version}"
    if promoted:
        head = f"{where} is in production ({took:.1f} s)"
    else:
        current = "nothing" if production is None else f"version {production.version}"
        head = f"{where} was NOT promoted: production stays {current} ({took:.1f} s)"
    lines = [
        head,
        f"  holdout AUC {_figure(tags.get('holdout_auc'))}, "
        f"accuracy {_figure(tags.get('holdout_accuracy'))}",
        f"  gate {verdict}:",
        *(f"    {criterion}" for criterion in gate_criteria(tags.get(registry.GATE_REASON_TAG))),
    ]
    refused = tags.get(registry.PROMOTION_REFUSED_TAG)
    if refused:
        lines.append(f"  promotion refused: {refused}")
    scores = watcher.materialized.get("churn_scores", {})
    if "csv" in scores:
        offers = scores.get("customers_to_offer")
        count = f" ({int(offers):,} customers to offer)" if isinstance(offers, int | float) else ""
        lines.append(f"  scores: {shown_path(str(scores['csv']))}{count}")
    campaign = watcher.materialized.get("retention_campaign", {})
    if "offers" in campaign:
        lines.append(f"  campaign {campaign['campaign']}: {campaign_counts(campaign)}")
        lines.append(f"    offers for the CRM: {shown_path(str(campaign['offers']))}")
    uplift = watcher.materialized.get("uplift_model", {})
    if "difference_per_1000" in uplift:  # fitted: enough outcomes per arm
        low, high = uplift["difference_low"], uplift["difference_high"]
        lines.append(
            f"  uplift model: {uplift['verdict']} ({uplift['difference_per_1000']:+,.0f} per "
            f"1,000 customers [{low:+,.0f}, {high:+,.0f}])"
        )
    lines.append(
        f"  snapshot {short(tags.get(registry.SNAPSHOT_TAG))} · Dagster run {short(run_id)}"
        f" · MLflow run {short(version.run_id)}"
    )
    return "\n".join(lines)


def campaign_counts(figures: dict[str, Any]) -> str:
    """A campaign's arms in words: `1,197 offered, 132 held back as control, ...`."""
    words = [
        ("arm_treatment", "offered"),
        ("arm_control", "held back as control"),
        ("arm_explore", "explored below the threshold"),
        ("arm_held", "left to a running campaign"),
    ]
    counts = [(int(figures.get(key, 0)), said) for key, said in words]
    return ", ".join(f"{n:,} {said}" for n, said in counts if n or said == "offered")


def gate_criteria(reason: str | None) -> list[str]:
    """The gate's recorded summary a criterion a line: `ok     auc >= min_auc: 0.8676 vs 0.8200`."""
    if not reason:
        return ["no verdict recorded"]
    lines = []
    for part in reason.split("; "):
        match = _CRITERION.match(part)
        lines.append(
            f"{match['verdict']:<6} {match['name']}: {match['value']} vs {match['threshold']}"
            if match
            else part
        )
    return lines


def _figure(text: str | None) -> str:
    try:
        return f"{float(text):.3f}" if text is not None else "-"
    except ValueError:
        return text or "-"


def load_run_config(path: Path | None) -> dict[str, Any] | None:
    """A run config file (YAML or JSON), as `dg launch --config` takes it."""
    if path is None:
        return None
    import yaml

    loaded: dict[str, Any] = yaml.safe_load(path.read_text())  # YAML reads JSON too
    return loaded
