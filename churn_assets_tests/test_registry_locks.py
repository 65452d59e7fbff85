"""The registry's file lock against another real process: held, timed out, freed by a kill."""

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from churn_assets.ml.registry.locks import (
    FileLock,
    LockTimeoutError,
    PostgresAdvisoryLock,
    registry_lock,
)
from churn_assets_tests.processes import REPO, base_env, run_command, wait_until

NAME = "churn-classifier"
HOLDER = """
import pathlib, sys, time
from churn_assets.ml.registry.locks import FileLock
with FileLock(pathlib.Path(sys.argv[1])).hold(30):
    pathlib.Path(sys.argv[2]).touch()
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[FileLock, subprocess.Popen[bytes]]]:
    """A lock in a folder that does not exist yet, held by another process until killed."""
    lock = FileLock(tmp_path / "not-yet" / ".mlflow.db.registry.lock")
    held = tmp_path / "held"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock.path), str(held)], cwd=REPO, env=base_env()
    )
    try:
        wait_until("the other process to hold the lock", held.exists, timeout=60)
        yield lock, process
    finally:
        process.kill()
        process.wait(timeout=30)


def test_a_held_lock_times_out_with_the_lock_and_the_wait_named(
    holder: tuple[FileLock, subprocess.Popen[bytes]],
) -> None:
    lock, _ = holder
    started = time.monotonic()
    with pytest.raises(LockTimeoutError) as refused, lock.hold(0.5):
        pytest.fail("the lock another process holds was taken")
    assert time.monotonic() - started >= 0.5
    assert str(refused.value) == (f"file lock {lock.path} still held by another writer after 0.5 s")


def test_a_killed_holder_leaves_the_lock_free(
    holder: tuple[FileLock, subprocess.Popen[bytes]],
) -> None:
    lock, process = holder
    process.kill()
    process.wait(timeout=30)
    started = time.monotonic()
    with lock.hold(5):
        waited = time.monotonic() - started
    assert waited < 2, f"the operating system did not release a dead holder's lock ({waited} s)"


def test_the_lock_is_released_when_the_block_fails(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "registry.lock")
    with pytest.raises(ValueError, match="inside"), lock.hold(1):
        raise ValueError("inside")
    # a second holder, in another process, gets it at once
    taken = run_command(
        [
            sys.executable,
            "-c",
            "import pathlib, sys\n"
            "from churn_assets.ml.registry.locks import FileLock\n"
            "with FileLock(pathlib.Path(sys.argv[1])).hold(1): print('taken')",
            str(lock.path),
        ],
        base_env(),
        timeout=120,
    )
    assert taken.returncode == 0, taken.stderr[-3000:]
    assert taken.stdout.strip() == "taken"


@pytest.mark.parametrize(
    ("uri", "configured", "expected"),
    [
        ("sqlite:////srv/state/mlflow.db", None, Path("/srv/state/.mlflow.db.registry.lock")),
        ("file:///srv/mlruns", None, Path("/srv/mlruns/.registry.lock")),
        ("/srv/mlruns", None, Path("/srv/mlruns/.registry.lock")),
        ("http://mlflow:5000", "/shared/registry.lock", Path("/shared/registry.lock")),
    ],
)
def test_a_local_store_or_a_configured_path_gets_a_file_lock(
    uri: str, configured: str | None, expected: Path
) -> None:
    assert registry_lock(uri, configured, NAME) == FileLock(expected)


def test_a_postgresql_store_or_setting_gets_an_advisory_lock() -> None:
    lock = registry_lock("postgresql+psycopg2://churn@db:5432/mlflow", None, NAME)
    assert lock == PostgresAdvisoryLock(
        "postgresql://churn@db:5432/mlflow", f"churn-registry:{NAME}"
    )
    configured = registry_lock("http://mlflow:5000", "postgres://churn@db/locks", NAME)
    assert configured == PostgresAdvisoryLock(
        "postgresql://churn@db/locks", f"churn-registry:{NAME}"
    )
