"""`make dev`'s command (dg dev on workspace.yaml): the UI and the daemon start, and SIGTERM to
the process make starts stops it and every process under it.

A real dev server (webserver, daemon, code server) on a free port; its own file, because it is
the slowest kind of test there is.
"""

import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest

from churn_assets_tests.processes import REPO, base_env, free_port, running, uv_executable

#: As the Makefile's `dev:` recipe runs it, less the port.
DEV = ["run", "--frozen", "--no-sync", "dg", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1"]
#: Starting three Python processes that import Dagster takes a while on a shared 2-core box.
START_TIMEOUT_S = 300
#: Idle, it stops in about 6 s here; generous, as every bound in these tests.
STOP_TIMEOUT_S = 120


def session_processes(session: int) -> list[str]:
    """Command lines of the live processes of a session (what a start_new_session
    process and everything it started share), zombies left out."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
        except (OSError, ProcessLookupError):
            continue  # gone meanwhile
    return found


def wait_until_gone(session: int, timeout: float) -> float:
    """Seconds until no process of `session` is left; fails naming what outlived `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not session_processes(session):
            return time.monotonic() - started
        time.sleep(0.2)
    left = "\n".join(session_processes(session))
    pytest.fail(f"still running {timeout} s after SIGTERM:\n{left}")


def _graphql(port: int, query: str) -> dict:
    response = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=30)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return dict(body["data"])


def _daemons_healthy(port: int) -> bool:
    data = _graphql(
        port, "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"
    )
    statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
    return {s["daemonType"] for s in statuses if s["healthy"]} >= {"SENSOR", "ASSET"}


def test_dg_dev_serves_ui_and_daemon_and_stops_on_sigterm(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy/dagster/local.yaml", home / "dagster.yaml")  # as `make instance`
    (tmp_path / "incoming").mkdir()
    env = base_env(
        DAGSTER_HOME=str(home),
        CHURN_STATE_DIR=str(tmp_path / "state"),
        CHURN_DATA_PATH=str(tmp_path / "telco_churn.csv"),
        CHURN_INCOMING_DIR=str(tmp_path / "incoming"),
    )
    port = free_port()
    command = [uv_executable(), *DEV, "-p", str(port)]
    with running(
        command,
        env,
        f"http://127.0.0.1:{port}/server_info",
        tmp_path / "dev.log",
        timeout=START_TIMEOUT_S,
    ) as dev:
        locations = _graphql(
            port,
            "{ workspaceOrError { ... on Workspace { locationEntries { name "
            "locationOrLoadError { __typename } } } } }",
        )["workspaceOrError"]["locationEntries"]
        # the same code location name as before: schedules' and sensors' state carry over
        assert [(e["name"], e["locationOrLoadError"]["__typename"]) for e in locations] == [
            ("churn_assets", "RepositoryLocation")
        ]
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _daemons_healthy(port):
            assert time.monotonic() < deadline, "the daemon never reported healthy"
            time.sleep(1)
        assert len(session_processes(dev.pid)) >= 4  # uv, dg, webserver, daemon, code server

        # what `make` does with the SIGTERM it gets: it passes it to the command it started
        dev.send_signal(signal.SIGTERM)
        seconds = wait_until_gone(dev.pid, STOP_TIMEOUT_S)
        print(f"dg dev and its children stopped {seconds:.1f} s after SIGTERM")
        assert dev.wait(timeout=5) == 0, (tmp_path / "dev.log").read_text()[-3000:]
    log = (tmp_path / "dev.log").read_text()
    assert "SupersessionWarning" not in log
    assert "Dagster services shut down." in log
