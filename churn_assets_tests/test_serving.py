"""The API in process (TestClient, lifespan included) on a real MLflow store and model."""

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.model import reasons
from churn_assets_tests.conftest import PromotedStore, verified_pipeline
from serving.app import create_app
from serving.columns import BatchReader
from serving.model import FastScorer
from serving.schemas import SHIPPED
from serving.settings import Settings

TELCO = default_contract()


def customer_payloads(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Request bodies for cleaned customers, in the export's JSON types."""
    rows = frame[[TELCO.id_column, *TELCO.feature_columns]].astype(object)
    payloads = rows.to_dict(orient="records")
    for payload in payloads:
        for column in TELCO.categorical_features:
            payload[column] = str(payload[column])
    return payloads


def arrow_stream(table: pa.Table, **options: Any) -> bytes:
    """A table as an Arrow IPC stream body, as pandas or Polars callers write one (`options`:
    pyarrow's IpcWriteOptions, e.g. a compression)."""
    sink = pa.BufferOutputStream()
    written = pa.ipc.IpcWriteOptions(**options)
    with pa.ipc.new_stream(sink, table.schema, options=written) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


@pytest.fixture(scope="module")
def payloads(promoted_store: PromotedStore) -> list[dict[str, Any]]:
    return customer_payloads(promoted_store.holdout)


def _settings(store: PromotedStore, **overrides: Any) -> Settings:
    return Settings(state_dir=store.state_dir, refresh_interval_s=0.2, **overrides)


@pytest.fixture
def client(promoted_store: PromotedStore) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(promoted_store, max_batch_size=50))) as test_client:
        yield test_client


def test_fast_path_equals_logged_pipeline_on_whole_holdout(promoted_store: PromotedStore) -> None:
    """JSON, CSV and Arrow bodies read into columns score as the logged pipeline scores the
    frame."""
    pipeline = verified_pipeline(promoted_store.state_dir)
    holdout = promoted_store.holdout
    expected = pipeline.predict_proba(holdout[list(TELCO.feature_columns)])[:, 1]
    scorer = FastScorer(pipeline, TELCO)
    reader = BatchReader(SHIPPED, scorer.levels)
    payloads = customer_payloads(holdout)
    as_json = orjson.dumps({"customers": payloads})
    as_csv = pd.DataFrame(payloads).to_csv(index=False).encode()
    as_arrow = arrow_stream(pa.Table.from_pandas(pd.DataFrame(payloads), preserve_index=False))
    for columns in (
        reader.read_json(as_json, len(holdout)),
        reader.read_csv(as_csv, len(holdout)),
        reader.read_arrow(as_arrow, len(holdout)),
    ):
        fast = scorer.score(columns)
        assert len(fast) == len(holdout) > 1000
        np.testing.assert_allclose(fast, expected, rtol=0, atol=1e-9)
    one = reader.of_customers([SHIPPED.customer.model_validate(payloads[0])])
    np.testing.assert_allclose(scorer.score(one), expected[:1], rtol=0, atol=1e-9)


def test_blank_total_charges_is_billed_so_far(client: TestClient, payloads: list) -> None:
    new_customer = dict(payloads[0], tenure=0, TotalCharges=None)
    same_as_zero = dict(new_customer, TotalCharges=0.0)
    first = client.post("/predict", json=new_customer).json()["churn_probability"]
    assert first == client.post("/predict", json=same_as_zero).json()["churn_probability"]


def test_predict_one_customer(client: TestClient, payloads: list) -> None:
    response = client.post("/predict", json=payloads[0])
    assert response.status_code == 200
    body = response.json()
    assert body["customerID"] == payloads[0]["customerID"]
    assert 0 < body["churn_probability"] < 1
    threshold = client.get("/model").json()["decision_threshold"]
    assert body["churn"] == (body["churn_probability"] >= threshold)
    assert body["model_version"] == "1"
    assert "reasons" not in body  # the fast path: reasons only when asked for
    without_id = {k: v for k, v in payloads[0].items() if k != "customerID"}
    assert client.post("/predict", json=without_id).json()["customerID"] is None


def test_batch_keeps_request_order(client: TestClient, payloads: list) -> None:
    batch = payloads[:40]
    response = client.post("/predict/batch", json={"customers": batch})
    assert response.status_code == 200
    body = response.json()
    assert [p["customerID"] for p in body["predictions"]] == [c["customerID"] for c in batch]
    singles = [client.post("/predict", json=c).json()["churn_probability"] for c in batch[:5]]
    assert [p["churn_probability"] for p in body["predictions"][:5]] == singles


def test_health_ready_model_and_metrics(client: TestClient, payloads: list) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["model_version"] == "1"
    info = client.get("/model").json()
    assert info["name"] == "churn-classifier"
    assert info["alias"] == "production"
    assert info["version"] == "1"
    assert info["run_id"]
    assert info["git_sha"]
    assert info["holdout_metrics"]["auc"] >= 0.82
    assert info["loaded_at"] and info["registry_checked_at"]
    assert info["registry_reachable"] is True
    client.post("/predict", json=payloads[0])
    client.post("/predict/batch", json={"customers": payloads[:3]})
    client.post("/predict", json={})
    text = client.get("/metrics").text
    assert 'churn_api_requests_total{route="/predict",status="200"}' in text
    assert 'churn_api_requests_total{route="/predict",status="422"}' in text
    assert "churn_api_request_seconds_bucket" in text
    assert 'churn_api_errors_total{route="/predict"}' in text
    assert "churn_api_rows_scored_total 4.0" in text
    assert "churn_api_model_version 1.0" in text


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_bad_inputs_get_4xx_naming_field_and_problem(client: TestClient, payloads: list) -> None:
    good = payloads[0]
    missing = {k: v for k, v in good.items() if k != "tenure"}
    error = _error(client.post("/predict", json=missing), 422)
    assert error["details"] == [{"field": "tenure", "problem": "Field required"}]

    error = _error(client.post("/predict", json=dict(good, tenure="ten")), 422)
    assert error["details"][0]["field"] == "tenure"
    assert "integer" in error["details"][0]["problem"]

    error = _error(client.post("/predict", json=dict(good, Contract="Monthly")), 422)
    assert error["details"][0]["field"] == "Contract"
    assert "'Month-to-month', 'One year' or 'Two year'" in error["details"][0]["problem"]
    assert "'Monthly'" in error["details"][0]["problem"]

    error = _error(client.post("/predict", json=dict(good, MonthlyCharges=-5)), 422)
    assert error["details"][0]["field"] == "MonthlyCharges"
    assert "greater than or equal to 0" in error["details"][0]["problem"]

    error = _error(client.post("/predict", json=dict(good, Plan="gold")), 422)
    assert error["details"][0]["field"] == "Plan"

    error = _error(client.post("/predict/batch", json={"customers": []}), 422)
    assert error["details"][0]["field"] == "customers"

    error = _error(client.post("/predict/batch", json={"customers": [good] * 51}), 413)
    assert error["details"][0]["field"] == "customers"
    assert "limit of 50" in error["message"]

    bad_row = dict(good, gender="x")
    error = _error(client.post("/predict/batch", json={"customers": [good, bad_row]}), 422)
    assert error["details"][0]["field"] == "customers.1.gender"

    malformed = client.post(
        "/predict", content=b'{"gender": ', headers={"content-type": "application/json"}
    )
    assert _error(malformed, 400)["code"] == "malformed_json"
    assert _error(client.get("/nope"), 404)["code"] == "not_found"


def test_api_key_is_required_when_configured(promoted_store: PromotedStore, payloads: list) -> None:
    settings = _settings(promoted_store, api_key="let-me-in")
    with TestClient(create_app(settings)) as keyed:
        assert _error(keyed.post("/predict", json=payloads[0]), 401)["code"] == "unauthorized"
        wrong = keyed.post("/predict", json=payloads[0], headers={"X-API-Key": "nope"})
        assert _error(wrong, 401)["details"][0]["field"] == "X-API-Key"
        right = keyed.post("/predict", json=payloads[0], headers={"X-API-Key": "let-me-in"})
        assert right.status_code == 200
        assert keyed.get("/health").status_code == 200  # probes stay open
        assert keyed.get("/ready").status_code == 200


def test_no_production_version_answers_503_until_one_is_promoted(tmp_path, payloads) -> None:
    settings = Settings(state_dir=tmp_path / "empty", refresh_interval_s=0.2)
    with TestClient(create_app(settings)) as empty:
        error = _error(empty.post("/predict", json=payloads[0]), 503)
        assert "has no 'production' version" in error["message"]
        ready = empty.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        assert empty.get("/model").json()["version"] is None
        time.sleep(0.5)  # the watcher keeps polling without errors
        assert empty.get("/health").status_code == 200


def test_openapi_documents_every_route_with_a_response_model(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths) == {"/predict", "/predict/batch", "/health", "/ready", "/model", "/metrics"}
    for path, operations in paths.items():
        for operation in operations.values():
            assert "200" in operation["responses"], path
    customer = spec["components"]["schemas"]["Customer"]
    assert customer["properties"]["Contract"]["enum"] == list(TELCO.listed_levels["Contract"])


def test_reasons_on_request_equal_the_pipelines_exact_contributions(
    client: TestClient, payloads: list, promoted_store: PromotedStore
) -> None:
    pipeline = verified_pipeline(promoted_store.state_dir)
    holdout = promoted_store.holdout.head(20)
    expected = reasons.frame_reasons(pipeline, holdout, 3)

    one = client.post("/predict?reasons=3", json=payloads[0]).json()
    plain = client.post("/predict", json=payloads[0]).json()
    assert one["churn_probability"] == plain["churn_probability"]
    batch = client.post("/predict/batch?reasons=3", json={"customers": payloads[:20]}).json()
    assert batch["predictions"][0] == one
    for prediction, want in zip(batch["predictions"], expected, strict=True):
        got = prediction["reasons"]
        assert [r["feature"] for r in got] == [r["feature"] for r in want]
        assert [r["value"] for r in got] == [r["value"] for r in want]
        for g, w in zip(got, want, strict=True):
            assert g["contribution"] == pytest.approx(w["contribution"], abs=1e-9)
            assert g["text"] == f"{g['feature']} = {g['value']}: {g['contribution']:+.2f}"

    blank = client.post("/predict?reasons=19", json=dict(payloads[0], TotalCharges=None)).json()
    (total,) = [r for r in blank["reasons"] if r["feature"] == "TotalCharges"]
    assert float(total["value"]) >= 0  # the billed-so-far value the model scored

    error = _error(client.post("/predict?reasons=99", json=payloads[0]), 422)
    assert error["details"][0]["field"] == "query.reasons"
    assert "less than or equal to 19" in error["details"][0]["problem"]


def _logged_input_example(store: PromotedStore) -> list[dict[str, Any]]:
    """The customers training logged as version 1's MLflow input example."""
    uri = store.tracking_uri
    root = MlflowClient(uri, uri).get_model_version_download_uri("churn-classifier", "1")
    with tempfile.TemporaryDirectory() as folder:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{root}/input_example.json", dst_path=folder, tracking_uri=uri
        )
        example = json.loads(Path(path).read_text())
    return [dict(zip(example["columns"], row, strict=True)) for row in example["data"]]


def test_openapi_examples_are_the_versions_logged_input_example(
    client: TestClient, promoted_store: PromotedStore
) -> None:
    logged = _logged_input_example(promoted_store)[:3]
    paths = client.get("/openapi.json").json()["paths"]
    single = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["example"]
    batch = paths["/predict/batch"]["post"]["requestBody"]["content"]
    assert single == logged[0]  # real customers, not the schema's maxima
    assert batch["application/json"]["example"] == {"customers": logged}
    # each example is a request the API answers, and the CSV one is the same customers
    assert client.post("/predict", json=single).status_code == 200
    from_json = client.post("/predict/batch", json=batch["application/json"]["example"])
    from_csv = client.post(
        "/predict/batch",
        content=batch["text/csv"]["example"],
        headers={"Content-Type": "text/csv"},
    )
    assert from_json.status_code == 200
    assert from_csv.json() == from_json.json()


def test_the_api_key_is_a_security_scheme_the_docs_authorize_with(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ((name, scheme),) = spec["components"]["securitySchemes"].items()
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-API-Key")
    for path, method in (("/predict", "post"), ("/predict/batch", "post"), ("/model", "get")):
        operation = spec["paths"][path][method]
        assert operation["security"] == [{name: []}], path
        assert all(p["name"] != "x-api-key" for p in operation.get("parameters", []))
    for path in ("/health", "/ready", "/metrics"):
        assert "security" not in spec["paths"][path]["get"], path


def test_the_docs_own_scripts_are_counted_under_their_route(client: TestClient) -> None:
    html = client.get("/docs").text
    scripts = [part.split('"')[0] for part in html.split('src="')[1:] if part.startswith("/")]
    assert scripts
    for script in scripts:
        assert client.get(script).status_code == 200
    assert client.get("/static-offline-docs/missing.js").status_code == 404
    assert client.get("/nowhere").status_code == 404
    text = client.get("/metrics").text
    route = 'route="/static-offline-docs/{path}"'
    assert f'churn_api_requests_total{{{route},status="200"}} {len(scripts)}.0' in text
    assert f'churn_api_requests_total{{{route},status="404"}} 1.0' in text
    assert 'churn_api_requests_total{route="unmatched",status="404"} 1.0' in text
