"""The API as deployed: a uvicorn process on a real MLflow store or `mlflow server`."""

import http.client
import json
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from churn_assets.ml.data.cleaning import clean_customers
from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.reading import read_customer_csv
from churn_assets_tests.conftest import ChurnEnv, PromotedStore, copied_store, materialize_graph
from churn_assets_tests.processes import (
    api_command,
    base_env,
    call_json,
    free_port,
    mlflow_server_command,
    running,
    stop,
    wait_until,
)
from churn_assets_tests.test_serving import customer_payloads
from serving.app import create_app
from serving.settings import Settings

TELCO = default_contract()

REFRESH_S = 1.0


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    return call_json(port, "GET", path)


class Load:
    """Clients posting /predict back to back on keep-alive connections, recording every answer."""

    def __init__(self, port: int, payload: dict[str, Any], clients: int = 4) -> None:
        self.port, self.body = port, json.dumps(payload).encode()
        self.answers: list[tuple[float, int, str | None]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        deadline = time.monotonic() + 120  # bounded even if never stopped
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                connection.request(
                    "POST", "/predict", self.body, {"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                body = json.loads(response.read())
                self.answers.append((time.time(), response.status, body.get("model_version")))
            except Exception as error:  # any failed request fails the test
                self.failures.append(f"{type(error).__name__}: {error}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        connection.close()

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def test_promotion_under_load_swaps_live_with_no_failed_request(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, tmp_path: Path, promoted_store: PromotedStore
) -> None:
    copied_store(promoted_store, churn_env.state_dir)  # v1 in production, as a first run leaves it
    payload = customer_payloads(churn_env_holdout(churn_env))[0]
    port = free_port()
    env = base_env(
        CHURN_STATE_DIR=str(churn_env.state_dir),
        CHURN_REFRESH_INTERVAL_S=str(REFRESH_S),
        CHURN_API_PORT=str(port),
    )
    with running(api_command(), env, f"http://127.0.0.1:{port}/health", tmp_path / "api.log"):
        assert _get(port, "/ready")[1]["model_version"] == "1"
        with Load(port, payload) as load:
            time.sleep(1.5)
            assert materialize_graph(churn_env, instance).success  # trains and promotes v2
            # How soon a swap lands is a figure for benchmarks; here: it lands, under load.
            wait_until(
                "answers from version 2",
                lambda: any(v == "2" for *_, v in load.answers),
                timeout=120,
                interval=0.1,
            )
            time.sleep(0.5)
        assert load.failures == []
        statuses = {status for _, status, _ in load.answers}
        assert statuses == {200}, statuses
        assert len(load.answers) > 100
        assert _get(port, "/model")[1]["version"] == "2"


def test_starts_without_production_and_serves_once_promoted(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    port = free_port()
    env = base_env(
        CHURN_STATE_DIR=str(churn_env.state_dir),
        CHURN_REFRESH_INTERVAL_S=str(REFRESH_S),
        CHURN_API_PORT=str(port),
    )
    payload = json.dumps(customer_payloads(churn_env_holdout(churn_env))[0])
    with running(api_command(), env, f"http://127.0.0.1:{port}/health", tmp_path / "api.log"):
        status, ready = _get(port, "/ready")
        assert (status, ready["ready"]) == (503, False)
        status, body = call_json(port, "POST", "/predict", payload)
        assert status == 503
        assert "has no 'production' version" in body["error"]["message"]

        assert materialize_graph(churn_env, instance).success  # the first promotion
        wait_until("the API to load it", lambda: _get(port, "/ready")[0] == 200, timeout=120)
        status, body = call_json(port, "POST", "/predict", payload)
        assert (status, body["model_version"]) == (200, "1")


def churn_env_holdout(env: ChurnEnv) -> pd.DataFrame:
    """A few cleaned customers of the test's data file, to build request bodies from."""
    cleaned, _ = clean_customers(read_customer_csv(env.data_path, "", TELCO), TELCO)
    return cleaned.head(5)


def test_slim_api_keeps_serving_when_mlflow_server_stops(
    promoted_store: PromotedStore, slim_python: Path, tmp_path: Path
) -> None:
    """The API image's runtime (no Dagster, MLflow skinny) against a real `mlflow server`."""
    mlflow_port, api_port = free_port(), free_port()
    server = mlflow_server_command(promoted_store.tracking_uri, mlflow_port)
    api_env = base_env(
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{mlflow_port}",
        # the public key training signed with: all the API needs to verify it
        CHURN_VERIFY_KEY=str(promoted_store.state_dir / "signing" / "verify-key.pem"),
        CHURN_REFRESH_INTERVAL_S="0.5",
        CHURN_API_PORT=str(api_port),
    )
    payload = customer_payloads(promoted_store.holdout.head(1))[0]
    with (
        running(
            server, base_env(), f"http://127.0.0.1:{mlflow_port}/health", tmp_path / "mlflow.log"
        ) as mlflow_process,
        running(
            [str(slim_python), "-m", "serving"],
            api_env,
            f"http://127.0.0.1:{api_port}/health",
            tmp_path / "api.log",
        ),
    ):
        status, ready = _get(api_port, "/ready")
        assert (status, ready["model_version"], ready["registry_reachable"]) == (200, "1", True)
        stop(mlflow_process)
        wait_until(
            "the API to notice the registry is gone",
            lambda: _get(api_port, "/ready")[1]["registry_reachable"] is False,
            timeout=120,
        )
        status, body = call_json(api_port, "POST", "/predict", json.dumps(payload))
        assert (status, body["model_version"]) == (200, "1")
        status, ready = _get(api_port, "/ready")
        assert status == 200
        assert ready["registry_reachable"] is False
        assert "registry unreachable" in ready["detail"]
        info = _get(api_port, "/model")[1]
        assert info["version"] == "1"
        assert info["registry_error"]


def test_fuzzed_requests_never_get_a_server_error(promoted_store: PromotedStore) -> None:
    """Every operation of the OpenAPI document, fuzzed; any 5xx fails (schemathesis)."""
    app = create_app(Settings(state_dir=promoted_store.state_dir, max_batch_size=20))
    with TestClient(app):  # runs the lifespan: the model is loaded before fuzzing starts
        api = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in api.get_all_operations()]
        assert len(operations) == 6
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=40,
                deadline=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: Any) -> None:
                case.call_and_validate(checks=[not_a_server_error])

            fuzz()


def test_python_m_serving_says_where_it_serves(tmp_path: Path) -> None:
    """`make serve` prints one line with the URL (before a model is loaded, here none)."""
    port = free_port()
    env = base_env(CHURN_STATE_DIR=str(tmp_path / "state"), CHURN_API_PORT=str(port))
    log = tmp_path / "api.log"
    with running(api_command(), env, f"http://127.0.0.1:{port}/health", log):
        pass
    assert f"churn API on http://127.0.0.1:{port} (docs: /docs)" in log.read_text().splitlines()
