"""Serving benchmark: this API against `mlflow models serve` on the same registered version.

Trains and promotes a model in a temporary store (or uses --state-dir), starts both servers
with one uvicorn worker each, drives them with the same asyncio load generator (raw
keep-alive HTTP/1.1, so the client is not the bottleneck), and prints throughput and latency
for single rows at 1 and 16 concurrent clients and for 1,000-row batches (as JSON and as CSV,
which both servers accept, and as an Arrow IPC stream answered in Arrow, which only this API
reads and writes), the ratios
between the two servers, the cost of asking this API for 3 reasons per customer
(`?reasons=3`, exact LightGBM contributions) in each scenario, and the in-process scoring
ceiling (the model's own speed on columns already read). Then, on this
API alone: how long after the production alias moves the API answers from the new version
(five swaps, in refresh intervals), and how fast `/health` answers while a 50 MB body is
refused and while a 10,000-customer batch with reasons is handled. Run: `make bench-serving`.

The model is trained into the store the environment names (MLFLOW_TRACKING_URI, else the state
folder's SQLite file), and both servers read that store, with the same signing keys.
"""

import argparse
import asyncio
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL = "churn-classifier"
BATCH_ROWS = 1000
REASONS = 3
#: The API's alias check in this benchmark: short, so five swaps take seconds, not minutes.
REFRESH_S = 2.0
SWAPS = 5
BATCH_JSON = f"{BATCH_ROWS}-row batch, 2 clients"
BATCH_CSV = f"{BATCH_ROWS}-row CSV batch, 2 clients"
BATCH_ARROW = f"{BATCH_ROWS}-row Arrow batch, 2 clients"


@dataclass
class Result:
    requests: int
    rows: int
    seconds: float
    latencies_ms: list[float]
    failures: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


JSON, CSV, ARROW = "application/json", "text/csv", "application/vnd.apache.arrow.stream"
#: How many lines of a server's log a failed start shows.
LOG_LINES = 30


def _request(port: int, path: str, body: bytes, media: str) -> bytes:
    # an Arrow body asks for an Arrow answer, as a bulk caller with a DataFrame would
    accept = ARROW if media == ARROW else JSON
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: {accept}\r\n"
        f"Content-Type: {media}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _client(port: int, request: bytes, rows: int, stop_at: float, result: Result) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            writer.write(request)
            headers = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in headers.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            elapsed = (time.perf_counter() - start) * 1000
            if headers.startswith(b"HTTP/1.1 200"):
                result.requests += 1
                result.rows += rows
                result.latencies_ms.append(elapsed)
            else:
                result.failures += 1
    finally:
        writer.close()


def drive(
    port: int, path: str, body: bytes, rows: int, clients: int, seconds: float, media: str = JSON
) -> Result:
    request = _request(port, path, body, media)

    async def run() -> Result:
        result = Result(0, 0, seconds, [], 0)
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(
            *(_client(port, request, rows, stop_at, result) for _ in range(clients))
        )
        return result

    return asyncio.run(run())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerStartError(RuntimeError):
    """A server exited, never answered, or answers without the promoted model; the message
    says why and shows the end of its log."""


def _log_tail(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()[-LOG_LINES:]
    return f"last {len(lines)} lines of {log}:\n" + "\n".join(f"  {line}" for line in lines)


def _wait(url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Until `url` answers 200; a server that exits or never answers fails with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError(
                f"{' '.join(map(str, process.args[:3]))} exited with {process.returncode}; "
                + _log_tail(log)
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise ServerStartError(f"{url} did not answer within {timeout:g} s; " + _log_tail(log))


def _wait_ready(port: int, process: subprocess.Popen, log: Path) -> None:
    """Until this API serves the promoted version. It checks the registry before it answers
    at all, so once /health answers, /ready says within a few alias checks whether it will:
    a version it cannot serve (another store, other keys) fails now, with the API's reason
    and its log, rather than after minutes of waiting."""
    _wait(f"http://127.0.0.1:{port}/health", process, log)
    deadline = time.monotonic() + 3 * REFRESH_S
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5):
                return
        except urllib.error.HTTPError as answer:  # 503: not ready, and why
            detail = json.loads(answer.read()).get("detail", "")
        if time.monotonic() > deadline:
            raise ServerStartError(f"the API is not ready: {detail}; " + _log_tail(log))
        time.sleep(0.2)


def _train(state_dir: Path) -> None:
    """Run the whole asset graph once so the store holds a promoted model."""
    env = {**os.environ, "CHURN_STATE_DIR": str(state_dir)}
    data = state_dir / "customers.csv"
    env["CHURN_DATA_PATH"] = str(data)
    env["DAGSTER_HOME"] = str(state_dir / "dagster_home")
    (state_dir / "dagster_home").mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    subprocess.run(
        [str(bin_dir / "churn"), "generate-data", "--out", str(data)], env=env, check=True
    )
    subprocess.run(
        [
            *(str(bin_dir / "dg"), "launch"),
            *("-m", "churn_assets.definitions", "--job", "churn_training"),
        ],
        env=env,
        check=True,
        capture_output=True,
    )


def _payloads(state_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from churn_assets.ml.data.cleaning import clean_customers
    from churn_assets.ml.data.contract import default_contract
    from churn_assets.ml.data.reading import read_customer_csv

    contract = default_contract()
    raw = read_customer_csv(state_dir / "customers.csv", "", contract)
    cleaned, _ = clean_customers(raw, contract)
    frame = cleaned[[contract.id_column, *contract.feature_columns]].head(BATCH_ROWS)
    records = []
    for row in frame.astype(object).to_dict(orient="records"):
        records.append(
            {k: (str(v) if k in contract.categorical_features else v) for k, v in row.items()}
        )
    return records[0], records


def _csv(rows: list[dict[str, Any]]) -> bytes:
    """Rows as a CSV body: a header line, a line each (a blank cell for a missing number)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return text.getvalue().encode()


def _arrow(rows: list[dict[str, Any]]) -> bytes:
    """Rows as an Arrow IPC stream body, as a pandas caller writes one."""
    import pandas as pd
    import pyarrow as pa

    table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _ceiling(state_dir: Path, records: list[dict[str, Any]]) -> tuple[float, float]:
    """In-process rows/s: the model's own speed (the fast path on columns already read from
    a body, which is what the API adds its parsing and HTTP to), and the logged sklearn
    pipeline on a DataFrame."""
    import pandas as pd

    from churn_assets.ml.data.contract import default_contract
    from churn_assets.ml.registry import artifacts, signing
    from churn_assets.ml.settings import ChurnSettings
    from serving.columns import BatchReader
    from serving.model import FastScorer
    from serving.schemas import SHIPPED

    settings = ChurnSettings(CHURN_STATE_DIR=state_dir)
    version = _registry_client(state_dir).get_model_version_by_alias(MODEL, "production")
    verifier = signing.verifier(settings)
    pipeline = artifacts.load_version(
        verifier, version, settings.tracking_uri, attested=True
    ).pipeline
    contract = default_contract()
    scorer = FastScorer(pipeline, contract)
    body = json.dumps({"customers": records}).encode()
    columns = BatchReader(SHIPPED, scorer.levels).read_json(body, len(records))
    frame = pd.DataFrame(records)[list(contract.feature_columns)]

    def rate(fn: Any) -> float:
        fn()
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < 2:
            fn()
            runs += 1
        return runs * len(records) / (time.perf_counter() - start)

    return rate(lambda: scorer.score(columns)), rate(lambda: pipeline.predict_proba(frame))


def _ready_version(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as answer:
            return json.loads(answer.read())["model_version"]
    except OSError:
        return None


def _second_version(state_dir: Path) -> tuple[Any, Any]:
    """Production, and a second version of its files, registered, gated and promoted the way
    the graph does it (signed manifest, verdict and attestation), so the API serves either."""
    from churn_assets.ml.evaluation.gate import GateResult, GateThresholds
    from churn_assets.ml.registry import model_registry
    from churn_assets.ml.settings import ChurnSettings

    settings = ChurnSettings(CHURN_STATE_DIR=state_dir)
    opened = model_registry.open_registry(settings)
    first = opened.production()
    facts = {k: v for k, v in first.tags.items() if not k.startswith("churn.")}
    second = opened.register(first.source, facts)
    # the benchmark measures swaps, not the gate: a verdict with no criteria passes
    verdict = GateResult([], GateThresholds.from_settings(settings))
    opened.record_verdict(str(second.version), verdict, str(first.version))
    opened.promote(str(second.version))
    opened.client.set_registered_model_alias(MODEL, "production", str(first.version))
    return first, second


def measure_swaps(port: int, state_dir: Path) -> list[float]:
    """Seconds from each alias move until /ready reports the version it moved to.

    A second, attested version of the production version's files is registered, and the alias
    moves back and forth between the two, as promotions and rollbacks would.
    """
    first, second = _second_version(state_dir)
    client = _registry_client(state_dir)
    deadline = time.perf_counter() + 20 * REFRESH_S
    while _ready_version(port) != str(first.version) and time.perf_counter() < deadline:
        time.sleep(0.02)
    seconds = []
    for swap in range(SWAPS):
        target = second if swap % 2 == 0 else first
        client.set_registered_model_alias(MODEL, "production", target.version)
        moved = time.perf_counter()
        deadline = moved + 20 * REFRESH_S  # bounded; a miss is reported, not waited out
        while _ready_version(port) != str(target.version) and time.perf_counter() < deadline:
            time.sleep(0.02)
        seconds.append(time.perf_counter() - moved)
    client.set_registered_model_alias(MODEL, "production", first.version)
    return seconds


def _tracking_uri(state_dir: Path) -> str:
    """The store training wrote to: MLFLOW_TRACKING_URI when set, else the state folder's."""
    from churn_assets.ml.settings import ChurnSettings

    return ChurnSettings(CHURN_STATE_DIR=state_dir).tracking_uri


def _registry_client(state_dir: Path) -> Any:
    from mlflow.tracking import MlflowClient

    uri = _tracking_uri(state_dir)
    return MlflowClient(uri, uri)


def measure_loads(state_dir: Path, times: int = 10) -> tuple[float, float]:
    """Median milliseconds to load the production version: MLflow's own loader (what the API
    called before versions were signed, pickle allowed) and the signed path (manifest and
    attestation verified, files copied and hashed, skops with the pinned types)."""
    import mlflow

    from churn_assets.ml.registry import artifacts, signing
    from churn_assets.ml.settings import ChurnSettings

    settings = ChurnSettings(CHURN_STATE_DIR=state_dir)
    uri = settings.tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    version = _registry_client(state_dir).get_model_version_by_alias(MODEL, "production")
    verifier = signing.verifier(settings)
    before, after = [], []
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"  # MLflow's loader, as it was
    for _ in range(times):  # interleaved, so a busy moment costs both alike
        start = time.perf_counter()
        mlflow.sklearn.load_model(f"models:/{MODEL}/{version.version}")
        before.append(time.perf_counter() - start)
        start = time.perf_counter()
        artifacts.load_version(verifier, version, uri, attested=True)
        after.append(time.perf_counter() - start)
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    return float(np.median(before)) * 1000, float(np.median(after)) * 1000


def health_during(port: int, path: str, body: bytes | None, chunks: list[bytes] | None) -> dict:
    """/health latencies (ms) while one large request is sent and handled."""
    import http.client
    import threading

    outcome: dict[str, Any] = {}

    def send() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        started = time.perf_counter()
        try:
            if chunks is not None:
                connection.request("POST", path, iter(chunks), encode_chunked=True)
            else:
                connection.request("POST", path, body, {"Content-Type": "application/json"})
            outcome["status"] = connection.getresponse().status
        except (ConnectionError, http.client.HTTPException) as error:
            outcome["status"] = f"connection closed ({type(error).__name__})"
        outcome["seconds"] = time.perf_counter() - started
        connection.close()

    thread = threading.Thread(target=send)
    thread.start()
    latencies = []
    while thread.is_alive():
        sent = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=60):
            latencies.append((time.perf_counter() - sent) * 1000)
        time.sleep(0.005)
    thread.join()
    return {**outcome, "health_ms": latencies}


def report(
    results: dict[tuple[str, str], Result], scenarios: list[str], fast: float, pipeline: float
) -> None:
    print()
    print("one uvicorn worker each, same registered version, same load generator")
    header = f"{'scenario':<32}{'server':<8}{'req/s':>9}{'rows/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
    print(header + f"{'failed':>8}")
    for (name, server), r in sorted(results.items(), key=lambda item: scenarios.index(item[0][0])):
        print(
            f"{name:<32}{server:<8}{r.rps:>9.0f}{r.rows_per_s:>11.0f}"
            f"{r.percentile(50):>9.2f}{r.percentile(99):>9.2f}{r.failures:>8}"
        )
    print()
    for name in scenarios:
        if (name, "mlflow") in results:
            ours, theirs = results[(name, "ours")], results[(name, "mlflow")]
            print(f"{name}: {ours.rps / theirs.rps:.1f}x mlflow models serve throughput")
    for name in scenarios:
        plain, explained = results[(name, "ours")], results[(name, "reasons")]
        print(
            f"{name}: {REASONS} reasons per customer cost "
            f"{plain.rows_per_s / explained.rows_per_s:.2f}x the time per row "
            f"(p50 {plain.percentile(50):.2f} -> {explained.percentile(50):.2f} ms)"
        )
    print(
        f"in-process ceiling: fast path {fast:,.0f} rows/s, logged pipeline {pipeline:,.0f} rows/s"
    )
    single_ratio = (
        results[("single row, 16 clients", "ours")].rps
        / results[("single row, 16 clients", "mlflow")].rps
    )
    p99 = results[("single row, 16 clients", "ours")].percentile(99)
    batch_rows = results[(BATCH_JSON, "ours")].rows_per_s
    csv_rows = results[(BATCH_CSV, "ours")].rows_per_s
    arrow_rows = results[(BATCH_ARROW, "ours")].rows_per_s
    print()
    print(f"target single-row throughput >= 25x mlflow: {single_ratio:.1f}x")
    print(f"target p99 at 16 clients < 15 ms: {p99:.2f} ms")
    print(
        f"target 1,000-row batches >= 100,000 rows/s, half the in-process ceiling: "
        f"{batch_rows:,.0f} rows/s, {batch_rows / fast:.2f} of the ceiling"
    )
    print(
        f"target 1,000-row columnar (Arrow) batches within 0.8 of the in-process ceiling: "
        f"{arrow_rows:,.0f} rows/s, {arrow_rows / fast:.2f} of the ceiling "
        f"(CSV: {csv_rows:,.0f} rows/s, {csv_rows / fast:.2f})"
    )


Request = tuple[str, bytes, str]  # path, body, media type
Scenario = tuple[Request, Request | None, int, int]  # ours, mlflow's, rows, clients


def _drive_all(
    scenarios: dict[str, Scenario], ports: dict[str, int], seconds: float
) -> dict[tuple[str, str], Result]:
    """Each scenario on each server (a second of warm-up first), then on this API with
    reasons (opt-in, ?reasons=3: their cost, against the same scenario without)."""
    results: dict[tuple[str, str], Result] = {}
    for name, (ours, theirs, rows, clients) in scenarios.items():
        explained = (f"{ours[0]}?reasons={REASONS}", *ours[1:])
        for server, port, request in (
            ("ours", ports["ours"], ours),
            ("mlflow", ports["mlflow"], theirs),
            ("reasons", ports["ours"], explained),
        ):
            if request is None:  # MLflow's server reads JSON and CSV only
                continue
            path, body, media = request
            drive(port, path, body, rows, clients, 1.0, media)
            results[(name, server)] = drive(port, path, body, rows, clients, seconds, media)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per scenario")
    parser.add_argument("--state-dir", type=Path, help="existing store with a promoted model")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="churn-bench-"))
    state_dir = args.state_dir or workdir / "state"
    sys.path.insert(0, str(REPO))  # the platform's modules, as `make` runs this script
    tracking_uri = _tracking_uri(state_dir)
    if args.state_dir is None:
        print(f"training a model in {state_dir} (MLflow store {tracking_uri}) ...", flush=True)
        _train(state_dir)
    single, batch = _payloads(state_dir)
    bin_dir = Path(sys.executable).parent
    ours_port, mlflow_port = _free_port(), _free_port()
    # The store and signing keys training used: the environment's, with the same state folder.
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "CHURN_API_PORT": str(ours_port),
        "CHURN_STATE_DIR": str(state_dir),
        "CHURN_REFRESH_INTERVAL_S": str(REFRESH_S),
        "CHURN_MAX_BATCH_SIZE": "10000",
        # `mlflow models serve` starts `uvicorn` by name: find it beside this interpreter.
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    logs = workdir / "logs"
    logs.mkdir()
    servers = {
        "ours": subprocess.Popen(
            [sys.executable, "-m", "serving"],
            cwd=REPO,
            env={**env, "PYTHONWARNINGS": "ignore"},
            stdout=(logs / "ours.log").open("w"),
            stderr=subprocess.STDOUT,
        ),
        "mlflow": subprocess.Popen(
            [
                *(str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@production"),
                *("--env-manager", "local", "--host", "127.0.0.1", "-p", str(mlflow_port)),
                *("--workers", "1"),
            ],
            # the reference server loads through MLflow's own loader, which must be let
            # deserialize (every process of ours turns it off: tracking.NO_PICKLE)
            env={**env, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"},
            stdout=(logs / "mlflow.log").open("w"),
            stderr=subprocess.STDOUT,
        ),
    }
    try:
        _wait_ready(ours_port, servers["ours"], logs / "ours.log")
        _wait(f"http://127.0.0.1:{mlflow_port}/ping", servers["mlflow"], logs / "mlflow.log")
        columns = [k for k in single if k != "customerID"]

        def mlflow_body(rows: list[dict[str, Any]]) -> bytes:
            data = [[r[c] for c in columns] for r in rows]
            return json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode()

        scenarios: dict[str, Scenario] = {
            "single row, 1 client": (
                ("/predict", json.dumps(single).encode(), JSON),
                ("/invocations", mlflow_body([single]), JSON),
                1,
                1,
            ),
            "single row, 16 clients": (
                ("/predict", json.dumps(single).encode(), JSON),
                ("/invocations", mlflow_body([single]), JSON),
                1,
                16,
            ),
            BATCH_JSON: (
                ("/predict/batch", json.dumps({"customers": batch}).encode(), JSON),
                ("/invocations", mlflow_body(batch), JSON),
                len(batch),
                2,
            ),
            BATCH_CSV: (
                ("/predict/batch", _csv(batch), CSV),
                ("/invocations", _csv([{c: r[c] for c in columns} for r in batch]), CSV),
                len(batch),
                2,
            ),
            BATCH_ARROW: (("/predict/batch", _arrow(batch), ARROW), None, len(batch), 2),
        }
        results = _drive_all(scenarios, {"ours": ours_port, "mlflow": mlflow_port}, args.seconds)
        swaps = measure_swaps(ours_port, state_dir)
        fifty_mb = b'{"customers": [' + b" " * (50 * 2**20) + b"]}"
        big = json.dumps({"customers": (batch * 10)[:10_000]}).encode()
        during = {
            "a 50 MB body, declared": health_during(ours_port, "/predict/batch", fifty_mb, None),
            "a 50 MB body, streamed": health_during(
                ours_port,
                "/predict/batch",
                None,
                [fifty_mb[i : i + 2**20] for i in range(0, len(fifty_mb), 2**20)],
            ),
            f"10,000 customers, {REASONS - 1} reasons ({len(big) / 2**20:.1f} MB)": health_during(
                ours_port, f"/predict/batch?reasons={REASONS - 1}", big, None
            ),
        }
    finally:
        for process in servers.values():
            process.terminate()
            process.wait(timeout=30)

    fast, pipeline = _ceiling(state_dir, batch)
    report(results, list(scenarios), fast, pipeline)
    mlflow_load, signed_load = measure_loads(state_dir)
    print(
        f"model load, median of 10: MLflow's loader {mlflow_load:.1f} ms, signed path "
        f"{signed_load:.1f} ms ({signed_load - mlflow_load:+.1f} ms; target under +20 ms)"
    )
    print()
    print(
        f"promotion to live answers ({SWAPS} alias moves, refresh every {REFRESH_S:g} s): "
        + ", ".join(f"{s:.2f} s" for s in swaps)
        + f"; at most {max(swaps) / REFRESH_S:.2f} refresh intervals"
    )
    for what, measured in during.items():
        health = measured["health_ms"] or [float("nan")]
        print(
            f"/health during {what}: answered {measured['status']} in "
            f"{measured['seconds']:.2f} s; {len(measured['health_ms'])} /health calls, "
            f"p50 {np.percentile(health, 50):.1f} ms, max {max(health):.1f} ms"
        )
    if args.state_dir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except ServerStartError as error:
        sys.exit(f"bench-serving: {error}")
