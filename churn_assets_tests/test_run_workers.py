"""Run worker records against real processes: alive, killed (reaped or not), elsewhere."""

import signal
import subprocess
import sys
import time

from churn_assets.run_workers import worker_alive, worker_identity


def _child() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def test_a_running_worker_is_alive_and_a_killed_one_is_not_even_before_it_is_reaped() -> None:
    child = _child()
    identity = worker_identity(child.pid)
    assert identity is not None
    assert worker_alive(identity) is True
    child.send_signal(signal.SIGKILL)
    time.sleep(0.5)  # dead, not yet reaped: a zombie still has its /proc entry
    assert worker_alive(identity) is False
    child.wait(timeout=30)
    assert worker_alive(identity) is False


def test_a_reused_pid_is_not_the_same_worker() -> None:
    identity = worker_identity()
    assert identity is not None
    machine, pid, started = identity.rsplit("/", 2)
    assert worker_alive(identity) is True
    assert worker_alive(f"{machine}/{pid}/{int(started) + 1}") is False


def test_a_worker_on_another_machine_cannot_be_judged() -> None:
    identity = worker_identity()
    assert identity is not None
    _, pid, started = identity.rsplit("/", 2)
    assert worker_alive(f"other-boot/pid:[1]/{pid}/{started}") is None
