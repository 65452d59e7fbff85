"""Which process runs a Dagster run, and a run launcher whose health check asks it.

Dagster's `DefaultRunLauncher` cannot tell whether a run's worker is alive, so run
monitoring never notices a worker killed with `kill -9` (or a `dagster job execute` / `dg
launch` process that died): the run stays STARTED, its MLflow run RUNNING, the landing sensor
waits on it and the queue's slot stays taken. Each run records its worker here (boot, PID
namespace, PID and the process's start time, so a reused PID is not mistaken for it), and
`MonitoredRunLauncher` answers the daemon's health check from that record. A worker on
another machine or PID namespace cannot be seen; those runs count as running and are bounded
by run monitoring's `max_runtime_seconds` instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher

WORKER_TAG = "churn/worker"
_PROC = Path("/proc")


def _start_time(pid: int) -> str | None:
    """The start time (clock ticks since boot, field 22 of /proc/PID/stat) of a live process.

    None for no process, and for a zombie: a killed worker whose parent has not reaped it
    yet still has a /proc entry, but it will never run again.
    """
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in {"Z", "X"} else fields[19]


def _machine() -> str | None:
    """Boot and PID namespace: processes that share both can see each other's PIDs."""
    try:
        boot = (_PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
        namespace = str((_PROC / "self" / "ns" / "pid").readlink())
    except OSError:
        return None
    return f"{boot}/{namespace}"


def worker_identity(pid: int | None = None) -> str | None:
    pid = os.getpid() if pid is None else pid
    machine, started = _machine(), _start_time(pid)
    if machine is None or started is None:
        return None
    return f"{machine}/{pid}/{started}"


def worker_alive(identity: str) -> bool | None:
    """True or False for a worker this process can see; None when it cannot tell."""
    machine, _, rest = identity.rpartition("/")  # rest: start time
    machine, _, pid = machine.rpartition("/")
    if not pid.isdigit() or machine != _machine():
        return None
    return _start_time(int(pid)) == rest


def record_worker(instance: dg.DagsterInstance, run_id: str) -> None:
    identity = worker_identity()
    if identity is None:
        return
    run = instance.get_run_by_id(run_id)
    if run is not None and run.tags.get(WORKER_TAG) != identity:
        instance.add_run_tags(run_id, {WORKER_TAG: identity})


class MonitoredRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher, plus a worker health check for run monitoring."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        identity = run.tags.get(WORKER_TAG)
        if identity is None:
            # Not recorded yet (the first step has not started): give it the benefit of the
            # doubt; start and run timeouts still bound it.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "worker not recorded yet")
        alive = worker_alive(identity)
        if alive is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "worker not visible from here")
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        pid = identity.split("/")[-2]
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker process {pid} is gone (killed or crashed)"
        )
