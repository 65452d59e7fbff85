"""Hostile and careless requests: each gets a clear 4xx naming the problem, and the service
keeps answering everyone else. The in-process cases use TestClient on the real model; the body
limit and the event loop are checked on a real uvicorn process."""

import http.client
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.limits import MAX_ID_CHARS
from churn_assets_tests.conftest import PromotedStore
from churn_assets_tests.processes import api_command, base_env, call_json, free_port, running
from churn_assets_tests.test_serving import customer_payloads
from serving.app import create_app
from serving.settings import Settings

TELCO = default_contract()

NAME = "churn-classifier"


@pytest.fixture(scope="module")
def payloads(promoted_store: PromotedStore) -> list[dict[str, Any]]:
    return customer_payloads(promoted_store.holdout)


def _client(store: PromotedStore, **overrides: Any) -> TestClient:
    return TestClient(create_app(Settings(state_dir=store.state_dir, **overrides)))


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()["error"]


@pytest.mark.parametrize(
    "key",
    [b"\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87", b"caf\xe9", b"let-me-in\xff", b" "],
    ids=["cyrillic-utf8", "latin-1", "trailing-byte", "blank"],
)
def test_a_malformed_api_key_is_a_401_not_a_500(
    promoted_store: PromotedStore, payloads: list, key: bytes
) -> None:
    with _client(promoted_store, api_key="let-me-in") as keyed:
        answer = keyed.post("/predict", json=payloads[0], headers={"X-API-Key": key})
        error = _error(answer, 401)
        assert error["details"][0]["field"] == "X-API-Key"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("TotalCharges", False),
        ("TotalCharges", "12.5"),
        ("MonthlyCharges", True),
        ("MonthlyCharges", "70"),
        ("tenure", "12"),
        ("tenure", True),
        ("tenure", 12.5),
        ("SeniorCitizen", False),
    ],
)
def test_booleans_and_strings_are_not_numbers(
    promoted_store: PromotedStore, payloads: list, field: str, value: Any
) -> None:
    with _client(promoted_store) as client:
        error = _error(client.post("/predict", json=dict(payloads[0], **{field: value})), 422)
    assert error["details"][0]["field"] == field


@pytest.mark.parametrize("blank", [" ", "", "   "])
def test_the_exports_blank_total_charges_means_not_billed_yet(
    promoted_store: PromotedStore, payloads: list, blank: str
) -> None:
    new_customer = dict(payloads[0], tenure=0, TotalCharges=None)
    with _client(promoted_store) as client:
        as_null = client.post("/predict", json=new_customer).json()["churn_probability"]
        answer = client.post("/predict", json=dict(new_customer, TotalCharges=blank))
    assert answer.status_code == 200, answer.text
    assert answer.json()["churn_probability"] == as_null


def test_a_customer_id_over_the_shared_limit_is_refused(
    promoted_store: PromotedStore, payloads: list
) -> None:
    with _client(promoted_store) as client:
        fits = dict(payloads[0], customerID="X" * MAX_ID_CHARS)
        assert client.post("/predict", json=fits).status_code == 200
        over = dict(payloads[0], customerID="X" * (MAX_ID_CHARS + 1))
        assert _error(client.post("/predict", json=over), 422)["details"][0]["field"] == (
            TELCO.id_column
        )


def test_contributions_over_the_budget_are_refused_naming_it(
    promoted_store: PromotedStore, payloads: list
) -> None:
    with _client(promoted_store, max_contributions=10) as client:
        within = client.post("/predict/batch?reasons=2", json={"customers": payloads[:5]})
        assert within.status_code == 200
        over = client.post("/predict/batch?reasons=2", json={"customers": payloads[:6]})
        error = _error(over, 413)
        assert error["code"] == "contributions_over_budget"
        assert error["details"][0]["field"] == "reasons"
        assert "CHURN_MAX_CONTRIBUTIONS" in error["message"]
        assert client.post("/predict/batch", json={"customers": payloads[:6]}).status_code == 200


def test_a_body_over_the_limit_is_refused_declared_or_streamed(
    promoted_store: PromotedStore, payloads: list
) -> None:
    batch = json.dumps({"customers": payloads[:20]}).encode()
    with _client(promoted_store, max_body_bytes=4096) as client:
        declared = client.post(
            "/predict/batch", content=batch, headers={"Content-Type": "application/json"}
        )
        assert _error(declared, 413)["code"] == "body_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts as it reads
            for start in range(0, len(batch), 1000):
                yield batch[start : start + 1000]

        streamed = client.post(
            "/predict/batch", content=chunks(), headers={"Content-Type": "application/json"}
        )
        error = _error(streamed, 413)
        assert error["code"] == "body_too_large" and "CHURN_MAX_BODY_BYTES" in error["message"]
        small = client.post("/predict/batch", json={"customers": payloads[:2]})
        assert small.status_code == 200


@pytest.mark.parametrize("media", ["application/json", "text/csv"])
def test_a_declared_oversized_body_is_refused_before_anything_else_runs(
    promoted_store: PromotedStore, payloads: list, media: str
) -> None:
    """Before routing and the API-key check (Starlette's own limit runs after both), with our
    error body and the connection closed while the client may still be sending."""
    body = b"x" * 5000
    with _client(promoted_store, max_body_bytes=4096, api_key="let-me-in") as client:
        answer = client.post("/predict/batch", content=body, headers={"Content-Type": media})
        assert _error(answer, 413)["code"] == "body_too_large"  # not the 401 of a missing key
        assert answer.headers["connection"] == "close"
        assert _error(client.post("/nowhere", content=body), 413)["code"] == "body_too_large"


def test_many_invalid_rows_list_a_bounded_number_of_errors(
    promoted_store: PromotedStore, payloads: list
) -> None:
    bad = [dict(p, tenure=-1) for p in payloads[:500]]
    with _client(promoted_store, max_batch_size=1000) as client:
        error = _error(client.post("/predict/batch", json={"customers": bad}), 422)
    assert len(error["details"]) == 20
    assert "480 more error(s) not listed" in error["message"]


def test_ready_is_degraded_while_production_cannot_be_loaded(
    promoted_store: PromotedStore, payloads: list, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    shutil.copytree(promoted_store.state_dir, state)
    uri = f"sqlite:///{state / 'mlflow.db'}"
    registry = MlflowClient(uri, uri)
    broken = tmp_path / "lost-artifact"
    broken.mkdir()
    with TestClient(create_app(Settings(state_dir=state, refresh_interval_s=3600))) as client:
        watcher = client.app.state.watcher  # type: ignore[attr-defined]
        assert client.get("/ready").json()["ready"] is True
        # production moves to a version whose artifact is gone (a bucket lost, say)
        version = registry.create_model_version(NAME, source=broken.as_uri()).version
        registry.set_registered_model_alias(NAME, "production", version)
        watcher.refresh()

        ready = client.get("/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert (body["ready"], body["degraded"]) == (False, True)
        assert (body["model_version"], body["production_version"]) == ("1", str(version))
        # a version registered by hand carries no signed manifest: refused before any read
        assert (
            f"production is version {version} and this API refuses to serve it" in (body["detail"])
        )
        assert "manifest is not signed" in body["detail"]
        info = client.get("/model").json()
        assert (info["version"], info["production_version"]) == ("1", str(version))
        assert info["load_error"]
        # the previous version keeps answering meanwhile
        answer = client.post("/predict", json=payloads[0])
        assert (answer.status_code, answer.json()["model_version"]) == (200, "1")

        registry.set_registered_model_alias(NAME, "production", "1")  # the rollback
        watcher.refresh()
        healed = client.get("/ready").json()
        assert (healed["ready"], healed["degraded"], healed["production_version"]) == (
            True,
            False,
            "1",
        )
        assert client.get("/model").json()["load_error"] is None


def test_docs_are_served_without_internet(promoted_store: PromotedStore) -> None:
    with _client(promoted_store) as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page)
            assert html.status_code == 200
            assert "cdn." not in html.text and "https://" not in html.text.split("<body")[1]
            scripts = [
                part.split('"')[0] for part in html.text.split('src="')[1:] if part.startswith("/")
            ]
            assert scripts, html.text
            for script in scripts:
                assert client.get(script).status_code == 200, script


def _post_in_background(
    port: int, body: bytes | Iterator[bytes], path: str, outcome: dict[str, Any]
) -> threading.Thread:
    def send() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            chunked = not isinstance(body, bytes)
            connection.request(
                "POST",
                path,
                body,
                {"Content-Type": "application/json"},
                encode_chunked=chunked,
            )
            response = connection.getresponse()
            outcome["status"] = response.status
            outcome["body"] = json.loads(response.read())
        except (ConnectionError, http.client.HTTPException) as error:
            # the server may close the connection after its 413 while the client still sends
            outcome["error"] = error
        finally:
            outcome["done_at"] = time.monotonic()
            connection.close()

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def _health_while(thread: threading.Thread, port: int) -> list[tuple[float, float]]:
    """(answered at, latency) of /health requests sent while `thread` runs."""
    answers = []
    started = time.monotonic()
    while thread.is_alive() and time.monotonic() - started < 120:
        sent = time.monotonic()
        status, _ = call_json(port, "GET", "/health")
        assert status == 200
        answers.append((time.monotonic(), time.monotonic() - sent))
        time.sleep(0.01)  # a probe, not a load test: leave the CPU to the request under test
    thread.join(timeout=120)
    return answers


def _report(during: str, answers: list[tuple[float, float]]) -> None:
    """The figure, for the record; benchmarks/serving.py measures it, tests never assert it."""
    worst = max((latency for _, latency in answers), default=0.0)
    print(f"/health during {during}: {len(answers)} answers, slowest {worst * 1000:.1f} ms")


def test_a_real_server_refuses_50_mb_and_stays_responsive_during_a_large_batch(
    promoted_store: PromotedStore, payloads: list, tmp_path: Path
) -> None:
    port = free_port()
    env = base_env(
        CHURN_STATE_DIR=str(promoted_store.state_dir),
        CHURN_API_PORT=str(port),
        CHURN_MAX_BATCH_SIZE="10000",
    )
    fifty_mb = b'{"customers": [' + b" " * (50 * 2**20) + b"]}"
    rows = (payloads * (10_000 // len(payloads) + 1))[:10_000]
    batch = json.dumps({"customers": rows}).encode()
    with running(api_command(), env, f"http://127.0.0.1:{port}/health", tmp_path / "api.log"):
        # declared: refused from the header, before a byte of the body is read
        declared: dict[str, Any] = {}
        _post_in_background(port, fifty_mb, "/predict/batch", declared).join(timeout=120)
        assert declared.get("status") == 413 or "error" in declared, declared

        # streamed without a length: refused once the limit is crossed
        streamed: dict[str, Any] = {}

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(fifty_mb), 2**20):
                yield fifty_mb[start : start + 2**20]

        thread = _post_in_background(port, chunks(), "/predict/batch", streamed)
        latencies = _health_while(thread, port)
        assert streamed.get("status") == 413 or "error" in streamed, streamed
        _report("the 50 MB stream", latencies)

        # a large valid batch (10,000 customers, ~5 MB) is parsed and scored off the event
        # loop: /health answers while it is still being handled
        valid: dict[str, Any] = {}
        thread = _post_in_background(port, batch, "/predict/batch?reasons=2", valid)
        answers = _health_while(thread, port)
        assert valid.get("status") == 200, valid
        assert len(valid["body"]["predictions"]) == 10_000
        answered_during = [at for at, _ in answers if at < valid["done_at"]]
        assert answered_during, "no /health answer while the batch was handled"
        _report("the 10,000-customer batch", answers)
        status, ready = call_json(port, "GET", "/ready")
        assert (status, ready["model_version"]) == (200, "1")
