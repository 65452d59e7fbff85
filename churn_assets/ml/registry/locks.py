"""Locks that serialise registry writes across processes and machines.

MLflow has no compare-and-set on an alias: reading it and moving it are two calls, so two
promotions at once would both "win". Every alias move therefore happens under one lock that
every writer shares: a file lock beside a local store (all writers are on that machine), or a
PostgreSQL advisory lock when writers on several machines share a server. Both are released
by the operating system or the database when their holder dies, so a killed worker can never
leave the registry locked.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

_POLL_S = 0.05


class LockTimeoutError(RuntimeError):
    """Another writer held the lock for longer than we were willing to wait."""


class LockUnavailableError(RuntimeError):
    """No lock shared by every writer can be derived from the configuration."""


class RegistryLock(Protocol):
    def describe(self) -> str: ...

    def hold(self, timeout_s: float) -> AbstractContextManager[None]: ...


def _timed_out(what: str, timeout_s: float) -> LockTimeoutError:
    return LockTimeoutError(f"{what} still held by another writer after {timeout_s:g} s")


def _acquire(attempt: Callable[[], bool], what: str, timeout_s: float) -> None:
    """Try without blocking until `attempt` succeeds or `timeout_s` has passed: a bounded wait."""
    deadline = time.monotonic() + timeout_s
    while not attempt():
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout_s)
        time.sleep(_POLL_S)


@dataclass(frozen=True)
class FileLock:
    """An exclusive `flock` on a file (through filelock): shared by every process on the
    machine that holds the file."""

    path: Path

    def describe(self) -> str:
        return f"file lock {self.path}"

    @contextmanager
    def hold(self, timeout_s: float) -> Iterator[None]:
        import filelock  # training stack only: the API never moves the alias

        # flock or nothing: on a filesystem without flock, filelock would fall back to a
        # marker file, which the kernel does not free when its holder is killed.
        lock = filelock.FileLock(self.path, fallback_to_soft=False)
        try:
            held = lock.acquire(timeout=timeout_s)
        except filelock.Timeout:
            raise _timed_out(self.describe(), timeout_s) from None
        with held:
            yield


@dataclass(frozen=True)
class PostgresAdvisoryLock:
    """A session advisory lock in a PostgreSQL database every writer can reach."""

    dsn: str
    name: str

    def describe(self) -> str:
        parts = urlsplit(self.dsn)
        where = f"{parts.hostname}:{parts.port or 5432}{parts.path}"
        return f"PostgreSQL advisory lock {self.name!r} on {where}"

    @property
    def key(self) -> int:
        """A stable signed 64-bit key (Python's hash() changes between processes)."""
        digest = hashlib.sha256(self.name.encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    @contextmanager
    def hold(self, timeout_s: float) -> Iterator[None]:
        import psycopg2  # training stack only: the API never moves the alias

        connection = psycopg2.connect(self.dsn, connect_timeout=10)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:

                def attempt() -> bool:
                    cursor.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
                    row = cursor.fetchone()
                    return row is not None and bool(row[0])

                _acquire(attempt, self.describe(), timeout_s)
                try:
                    yield
                finally:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        finally:
            connection.close()  # also releases the lock if the unlock above never ran


@dataclass(frozen=True)
class UnavailableLock:
    """No shared lock is configured: reading the registry works, moving the alias refuses."""

    reason: str

    def describe(self) -> str:
        return "no registry lock"

    def hold(self, timeout_s: float) -> AbstractContextManager[None]:
        raise LockUnavailableError(self.reason)


def _postgres_dsn(uri: str) -> str | None:
    """A libpq URL for an SQLAlchemy-style PostgreSQL URI, or None for anything else."""
    scheme, _, rest = uri.partition("://")
    if scheme.split("+")[0] in {"postgresql", "postgres"}:
        return f"postgresql://{rest}"
    return None


def registry_lock(tracking_uri: str, configured: str | None, model_name: str) -> RegistryLock:
    """The lock every writer of this registry shares.

    `configured` (CHURN_REGISTRY_LOCK) wins: a PostgreSQL URL or a lock file path. Without it
    the store decides: SQLite and file stores get a file lock beside them, a database store an
    advisory lock in that database. A server (http) hides its database, so it needs the
    setting: refusing is safer than a lock the other writers would not see.
    """
    name = f"churn-registry:{model_name}"
    if configured:
        dsn = _postgres_dsn(configured)
        return PostgresAdvisoryLock(dsn, name) if dsn else FileLock(Path(configured).expanduser())
    dsn = _postgres_dsn(tracking_uri)
    if dsn is not None:
        return PostgresAdvisoryLock(dsn, name)
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        return FileLock(database.with_name(f".{database.name}.registry.lock"))
    if tracking_uri.startswith("file://") or "://" not in tracking_uri:
        folder = Path(urlsplit(tracking_uri).path if "://" in tracking_uri else tracking_uri)
        return FileLock(folder / ".registry.lock")
    return UnavailableLock(
        f"MLflow at {tracking_uri} is a server, so its registry has no lock this process can "
        "take on its own: set CHURN_REGISTRY_LOCK to the PostgreSQL database every writer can "
        "reach (postgresql://user@host:5432/db) or to a lock file they all share"
    )
