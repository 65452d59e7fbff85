"""Batch bodies read straight into the model's columns: JSON, CSV and Arrow, the export's own
header names, and the request model as the final word on what is valid."""

import codecs
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from churn_assets.ml.data.contract import default_contract, load_contract
from churn_assets.ml.data.synthetic import generate_for_contract, write_customers
from churn_assets_tests.conftest import (
    ChurnEnv,
    PromotedStore,
    failure_messages,
    isolate_environment,
    materialize_graph,
    verified_pipeline,
)
from churn_assets_tests.test_serving import arrow_stream, customer_payloads
from serving.app import create_app
from serving.arrow import accepts
from serving.columns import BatchReader, Columns
from serving.errors import ApiError
from serving.schemas import SHIPPED, request_models
from serving.settings import Settings

TELCO = default_contract()
IBM_FILE = (
    Path(__file__).parents[1] / "churn_assets" / "ml" / "data" / "contracts" / "ibm_telco_33.yaml"
)
IBM = load_contract(IBM_FILE)
CSV = {"Content-Type": "text/csv"}
ARROW = {"Content-Type": "application/vnd.apache.arrow.stream"}
ACCEPT_ARROW = {"Accept": "application/vnd.apache.arrow.stream"}


@pytest.fixture(scope="module")
def payloads(promoted_store: PromotedStore) -> list[dict[str, Any]]:
    return customer_payloads(promoted_store.holdout)


@pytest.fixture
def client(promoted_store: PromotedStore) -> Any:
    limited = Settings(state_dir=promoted_store.state_dir, max_batch_size=50)
    with TestClient(create_app(limited)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def shared_client(promoted_store: PromotedStore) -> Any:
    """One API for many generated requests (each would otherwise load the model)."""
    with TestClient(create_app(Settings(state_dir=promoted_store.state_dir))) as test_client:
        yield test_client


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()["error"]


def _csv(rows: list[dict[str, Any]]) -> str:
    return pd.DataFrame(rows).to_csv(index=False)


def _same(plain: Columns, validated: Columns) -> None:
    assert plain.rows == validated.rows
    assert list(plain.ids) == list(validated.ids)
    for arrays in ("numbers", "codes"):
        mine, theirs = getattr(plain, arrays), getattr(validated, arrays)
        assert mine.keys() == theirs.keys()
        for column, values in mine.items():
            np.testing.assert_array_equal(values, theirs[column])
    assert plain.texts.keys() == validated.texts.keys()
    for column, texts in plain.texts.items():
        assert list(texts) == list(validated.texts[column]), column


def _judged(reader: BatchReader, rows: list[Any]) -> tuple[Columns | None, Columns | None]:
    """What the column checks make of parsed rows, and what the request model does."""
    plain = reader.plain_columns(orjson.dumps({"customers": rows}), len(rows))
    try:
        batch = reader.requests.batch.model_validate_json(orjson.dumps({"customers": rows}))
    except ValidationError:
        return plain, None
    return plain, reader.of_customers(batch.customers)  # type: ignore[attr-defined]


TELCO_ROW = {
    "customerID": "0001-A",
    "gender": "Female",
    "SeniorCitizen": 0,
    "Partner": "Yes",
    "Dependents": "No",
    "tenure": 5,
    "PhoneService": "Yes",
    "MultipleLines": "No",
    "InternetService": "Fiber optic",
    "OnlineSecurity": "No",
    "OnlineBackup": "No",
    "DeviceProtection": "No",
    "TechSupport": "No",
    "StreamingTV": "Yes",
    "StreamingMovies": "No",
    "Contract": "Month-to-month",
    "PaperlessBilling": "Yes",
    "PaymentMethod": "Electronic check",
    "MonthlyCharges": 80.5,
    "TotalCharges": 402.5,
}
_ABSENT = object()
HOSTILE: list[tuple[str, Any]] = [
    *(("tenure", v) for v in (0, 120, 121, -1, 12.0, 12.5, True, "12", None, " ", [], 2**63)),
    *(("SeniorCitizen", v) for v in (1, 2, False, 1.0)),
    *(("MonthlyCharges", v) for v in (0, 1000, 1000.001, -0.01, 70, "70", True, None, [1])),
    *(("TotalCharges", v) for v in (None, " ", "", "\t ", "\u00a0", "\u200b", "12", True, -1)),
    *(("TotalCharges", v) for v in (120_000, 120_001, 1e308, -0.0)),
    *(("gender", v) for v in ("Male", "male", " Male", "", None, 1, ["Male"], {"a": 1})),
    *(("customerID", v) for v in ("X" * 128, "X" * 129, None, 12, "", ["x"])),
    *((f, _ABSENT) for f in ("tenure", "TotalCharges", "customerID", "gender")),
    ("Plan", "gold"),
]


def _hostile_row(field: str, value: Any) -> dict[str, Any]:
    """TELCO_ROW with `field` set to `value` (left out, for _ABSENT)."""
    row = dict(TELCO_ROW)
    if value is _ABSENT:
        del row[field]
    else:
        row[field] = value
    return row


@pytest.mark.parametrize(("field", "value"), HOSTILE)
def test_column_checks_accept_nothing_the_request_model_refuses(field: str, value: Any) -> None:
    reader = BatchReader(SHIPPED)
    plain, validated = _judged(reader, [TELCO_ROW, _hostile_row(field, value)])
    if plain is not None:
        assert validated is not None, f"{field}={value!r} passed the column checks only"
        _same(plain, validated)


def _arrow_judged(reader: BatchReader, table: pa.Table) -> tuple[Any, Columns | None]:
    """What reading a table as an Arrow body makes of it (its columns, or the error it
    raised), and what the request model makes of the same rows."""
    try:
        read: Any = reader.read_arrow(arrow_stream(table), 100)
    except RequestValidationError as error:
        read = error
    try:
        batch = reader.requests.batch.model_validate({"customers": table.to_pylist()})
    except ValidationError:
        return read, None
    return read, reader.of_customers(batch.customers)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("field", "value"), HOSTILE)
def test_arrow_bodies_read_exactly_what_the_request_model_accepts(field: str, value: Any) -> None:
    reader = BatchReader(SHIPPED)
    try:
        table = pa.Table.from_pylist([TELCO_ROW, _hostile_row(field, value)])
    except (pa.ArrowException, OverflowError):
        return  # no Arrow column holds these two values: no caller can send them
    read, validated = _arrow_judged(reader, table)
    if validated is None:
        assert isinstance(read, RequestValidationError), f"{field}={value!r} was read"
    else:
        assert isinstance(read, Columns), f"{field}={value!r}: {read}"
        _same(read, validated)


@pytest.mark.parametrize("given", [b'5,"tenure":7', b'500,"tenure":7', b'7,"tenure":500'])
def test_a_field_given_twice_is_read_as_the_request_model_reads_it(given: bytes) -> None:
    """JSON leaves a repeated key to the reader: the fast path takes the last value, as the
    request model does, or leaves the body to it."""
    reader = BatchReader(SHIPPED)
    body = orjson.dumps({"customers": [TELCO_ROW]}).replace(b'"tenure":5', b'"tenure":' + given)
    assert body.count(b'"tenure"') == 2
    plain = reader.plain_columns(body, 10)
    try:
        batch = reader.requests.batch.model_validate_json(body)
    except ValidationError:
        assert plain is None
        return
    validated = reader.of_customers(batch.customers)  # type: ignore[attr-defined]
    assert reader.read_json(body, 10).numbers["tenure"] == validated.numbers["tenure"]
    if plain is not None:
        _same(plain, validated)


def test_arrow_types_a_caller_writes_read_as_the_request_model_reads_them() -> None:
    reader = BatchReader(SHIPPED)
    rows = [dict(TELCO_ROW, customerID=f"C-{i}", tenure=i) for i in range(1, 6)]
    rows[2]["TotalCharges"] = None  # a blank, read by its rule
    frame = pd.DataFrame(rows).astype(
        {"tenure": "int8", "MonthlyCharges": "float32", "gender": "category"}
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(
        table.column_names.index("Contract"),
        "Contract",
        table.column("Contract").cast(pa.large_string()),
    )
    assert pa.types.is_dictionary(table.schema.field("gender").type)
    read, validated = _arrow_judged(reader, table)
    assert isinstance(read, Columns) and validated is not None
    _same(read, validated)
    # split in two record batches, columns in another order: the same customers
    chunked = pa.Table.from_batches(table.select(list(reversed(table.column_names))).to_batches(3))
    _same(reader.read_arrow(arrow_stream(chunked), 100), validated)


def test_column_checks_take_plain_bodies_without_the_request_model() -> None:
    """The fast path is the path: valid bodies (blank numbers and left-out IDs included) never
    need the request model."""
    reader = BatchReader(SHIPPED)
    without_id = {k: v for k, v in TELCO_ROW.items() if k != "customerID"}
    rows = [TELCO_ROW, dict(TELCO_ROW, TotalCharges=" ", tenure=0), without_id]
    plain, validated = _judged(reader, rows)
    assert plain is not None and validated is not None
    _same(plain, validated)
    assert list(plain.ids) == ["0001-A", "0001-A", None]
    assert np.isnan(plain.numbers["TotalCharges"][1])
    for bad in ([1, 2], ["x"], [None], [TELCO_ROW, "x"], []):
        assert reader.plain_columns(orjson.dumps({"customers": bad}), 10) is None
    for body in (b"", b"{", b'{"customers": [], "x": 1}', orjson.dumps([TELCO_ROW])):
        assert reader.plain_columns(body, 10) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("tenure", 5), ("Tenure Months", 5), ("monthly_charges", 70.0), ("Monthly Charges", 70.0)],
)
def test_the_exports_header_is_accepted_for_a_renamed_field(field: str, value: Any) -> None:
    """Beside a customer by the contract's names: one name each way in one body is read (the
    request model's path takes it), as the request model reads it."""
    reader = BatchReader(request_models(IBM))
    row = _ibm_row()
    canonical = IBM.rename.get(field, field)
    del row[canonical]
    row[field] = value
    _, validated = _judged(reader, [_ibm_row(), row])
    read = reader.read_json(orjson.dumps({"customers": [_ibm_row(), row]}), 100)
    assert validated is not None
    _same(read, validated)
    assert read.numbers[canonical][1] == value


def test_a_body_by_the_exports_headers_takes_the_fast_path() -> None:
    """Every renamed field by the export's header, as an export's rows come: the fast path
    reads it, as the request model does."""
    reader = BatchReader(request_models(IBM))
    headers = {name: header for header, name in IBM.rename.items()}
    rows = [
        {headers.get(k, k): v for k, v in dict(_ibm_row(), tenure=tenure).items()}
        for tenure in (1, 7)
    ]
    assert "Tenure Months" in rows[0] and "customer_id" not in rows[0]
    plain, validated = _judged(reader, rows)
    assert plain is not None and validated is not None
    _same(plain, validated)
    assert list(plain.numbers["tenure"]) == [1, 7]


def test_a_field_sent_under_both_names_is_refused_naming_both() -> None:
    reader = BatchReader(request_models(IBM))
    both = dict(_ibm_row(), **{"Tenure Months": 7})
    assert reader.plain_columns(orjson.dumps({"customers": [both]}), 1) is None
    with pytest.raises(RequestValidationError) as refused:
        reader.read_json(orjson.dumps({"customers": [_ibm_row(), both]}), 100)
    (error,) = refused.value.errors()
    assert error["loc"] == ("body", "customers", 1, "Tenure Months")
    assert "'tenure' and 'Tenure Months' name the same field" in error["msg"]


def test_an_infinite_number_is_refused_where_the_contract_sets_no_maximum() -> None:
    reader = BatchReader(request_models(IBM))
    body = orjson.dumps({"customers": [_ibm_row()]}).replace(b'"CLTV":4000', b'"CLTV":1e400')
    assert b"1e400" in body
    with pytest.raises(RequestValidationError) as refused:
        reader.read_json(body, 100)
    (error,) = refused.value.errors()
    assert error["loc"] == ("body", "customers", 0, "CLTV")
    assert "finite" in error["msg"]


def _ibm_row() -> dict[str, Any]:
    return {
        "customer_id": "C-1",
        "tenure": 5,
        "senior": "No",
        "Contract": "One year",
        "internet": "DSL",
        "payment": "Mailed check",
        "monthly_charges": 55.5,
        "total_charges": 277.5,
        "CLTV": 4000,
    }


# ---- through the API, on the real model -----------------------------------------------------


def test_a_csv_batch_scores_as_the_same_json_batch(client: TestClient, payloads: list) -> None:
    batch = [dict(p) for p in payloads[:40]]
    batch[3].update(tenure=0, TotalCharges=None)  # a blank number, read by its rule
    as_json = client.post("/predict/batch", json={"customers": batch})
    as_csv = client.post("/predict/batch?reasons=2", content=_csv(batch), headers=CSV)
    assert as_json.status_code == 200 and as_csv.status_code == 200, as_csv.text
    json_predictions = as_json.json()["predictions"]
    csv_predictions = as_csv.json()["predictions"]
    for from_json, from_csv in zip(json_predictions, csv_predictions, strict=True):
        assert from_csv.pop("reasons")
        assert from_csv == from_json
    reordered = pd.DataFrame(batch).iloc[:, ::-1].to_csv(index=False)  # any column order
    again = client.post(
        "/predict/batch", content=reordered, headers={"Content-Type": "text/csv; charset=utf-8"}
    )
    assert again.json()["predictions"] == json_predictions
    text = client.get("/metrics").text
    assert "churn_api_rows_scored_total 120.0" in text


NOT_A_CONTRACT = "Input should be 'Month-to-month', 'One year' or 'Two year' (got 'Monthly')"


def _columns_of(row: dict[str, Any], *fields: str) -> list[int]:
    """Each field's column in a body whose columns are `row`'s fields, counted from 1."""
    return [1 + list(row).index(field) for field in fields]


def test_csv_errors_name_line_column_field_and_value(client: TestClient, payloads: list) -> None:
    rows = [dict(p) for p in payloads[:4]]
    rows[1]["tenure"] = "ten"
    rows[2]["Contract"] = "Monthly"
    rows[3]["TotalCharges"] = 12.5
    rows[3]["tenure"] = 1.5
    text = _csv(rows)
    error = _error(client.post("/predict/batch", content=text, headers=CSV), 422)
    tenure, contract = _columns_of(rows[0], "tenure", "Contract")
    assert error["details"] == [
        {
            "field": f"line 3, column {tenure} (tenure)",
            "problem": "Input should be a valid integer (got 'ten')",
        },
        {"field": f"line 4, column {contract} (Contract)", "problem": NOT_A_CONTRACT},
        {
            "field": f"line 5, column {tenure} (tenure)",
            "problem": "Input should be a valid integer, got a number with a fractional part "
            "(got '1.5')",
        },
    ]
    # a quoted line break counts as the line it is: the errors name the lines a person sees
    quoted = _csv([dict(rows[0], customerID="two\nlines"), rows[1]])
    error = _error(client.post("/predict/batch", content=quoted, headers=CSV), 422)
    assert error["details"][0]["field"] == f"line 4, column {tenure} (tenure)"


@pytest.mark.parametrize(
    ("change", "status", "field", "words"),
    [
        (lambda t: t.replace("tenure", "Plan", 1), 422, "line 1, column 6 (Plan)", "Extra inputs"),
        (lambda t: t.replace(",TotalCharges", ",tenure", 1), 422, "column 20 (tenure)", "'tenure'"),
        (lambda t: t.replace("gender,", "", 1), 400, "body", "line 2 has 20 field(s)"),
        (lambda t: t.replace(",Female,", ",,", 1), 422, "(gender)", "'Female' or 'Male'"),
        (lambda t: t.replace(",5,", ", ,", 1), 422, "(tenure)", "no blank rule"),
        (lambda t: t.replace(",80.5,", ",-1,", 1), 422, "(MonthlyCharges)", "greater than"),
        (lambda t: t.replace(",80.5,", ",nan,", 1), 422, "(MonthlyCharges)", "valid number"),
        (lambda t: t.replace(",80.5,", ",1e999,", 1), 422, "(MonthlyCharges)", "finite"),
        (lambda t: t.split("\n")[0], 422, "body", "header but no customers"),
        (lambda t: "", 400, "body", "it is empty"),
        (lambda t: "\n\n", 400, "body", "it is empty"),
        (lambda t: t.replace("Female", "F\xe9male"), 422, "(gender)", "'F\xe9male'"),
        (lambda t: t + "\n" + "\n".join(t.split("\n")[1:] * 60), 413, "body", "limit of 50"),
    ],
    ids=[
        "unknown-column",
        "column-twice",
        "short-line",
        "blank-level",
        "blank-integer",
        "below-minimum",
        "nan-text",
        "infinite",
        "no-customers",
        "empty",
        "blank-lines",
        "accent",
        "too-many",
    ],
)
def test_hostile_csv_gets_a_4xx_naming_where(
    client: TestClient, change: Any, status: int, field: str, words: str
) -> None:
    text = _csv([TELCO_ROW])
    error = _error(client.post("/predict/batch", content=change(text), headers=CSV), status)
    assert field in error["details"][0]["field"]
    assert words in error["message"]


def test_csv_that_is_not_utf8_is_refused_naming_line_and_byte(client: TestClient) -> None:
    text = _csv([TELCO_ROW, TELCO_ROW]).encode().replace(b"Female", b"F\xe9male", 2)
    error = _error(client.post("/predict/batch", content=text, headers=CSV), 400)
    assert error["code"] == "malformed_csv"
    assert "not UTF-8: line 2, byte 9 is 0xe9" in error["message"]


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)


def test_an_arrow_batch_scores_as_the_same_json_batch(client: TestClient, payloads: list) -> None:
    batch = [dict(p) for p in payloads[:40]]
    batch[3].update(tenure=0, TotalCharges=None)  # a blank number, read by its rule
    as_json = client.post("/predict/batch", json={"customers": batch})
    as_arrow = client.post(
        "/predict/batch?reasons=2", content=arrow_stream(_table(batch)), headers=ARROW
    )
    assert as_json.status_code == 200 and as_arrow.status_code == 200, as_arrow.text
    for from_json, from_arrow in zip(
        as_json.json()["predictions"], as_arrow.json()["predictions"], strict=True
    ):
        assert from_arrow.pop("reasons")
        assert from_arrow == from_json


def _arrow_answer(response: Any) -> pa.Table:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == ARROW["Content-Type"]
    assert response.headers["vary"] == "Accept"
    return pa.ipc.open_stream(response.content).read_all()


def test_a_bulk_caller_gets_arrow_back_with_what_json_says(
    client: TestClient, payloads: list
) -> None:
    """Asked for by Accept: the JSON answer's predictions as columns, in request order, and
    its once-per-answer fields in the schema's metadata, reasons included."""
    batch = [dict(p) for p in payloads[:40]]
    batch[5].pop("customerID")  # an ID is optional: a null in its column
    as_json = client.post("/predict/batch?reasons=2", json={"customers": batch})
    assert as_json.status_code == 200 and as_json.headers["vary"] == "Accept"
    said = as_json.json()
    for body, media in (
        (arrow_stream(_table(batch)), ARROW),
        (orjson.dumps({"customers": batch}), {}),
    ):
        table = _arrow_answer(
            client.post("/predict/batch?reasons=2", content=body, headers={**media, **ACCEPT_ARROW})
        )
        assert table.column_names == ["customerID", "churn_probability", "churn", "reasons"]
        assert table.schema.metadata == {
            b"model_version": said["model_version"].encode(),
            b"threshold": str(said["threshold"]).encode(),
        }
        rows = table.to_pylist()
        for row, prediction in zip(rows, said["predictions"], strict=True):
            assert row == {k: v for k, v in prediction.items() if k != "model_version"}
        assert rows[5]["customerID"] is None
    # without reasons there is no reasons column; an error is JSON whatever was accepted
    plain = _arrow_answer(
        client.post("/predict/batch", json={"customers": batch}, headers=ACCEPT_ARROW)
    )
    assert plain.column_names == ["customerID", "churn_probability", "churn"]
    batch[0]["tenure"] = 121
    refused = client.post("/predict/batch", json={"customers": batch}, headers=ACCEPT_ARROW)
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("accept", "arrow"),
    [
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("application/vnd.apache.arrow.stream", True),
        ("application/vnd.apache.arrow.stream;q=0", False),
        ("application/json;q=0.9, application/vnd.apache.arrow.stream", True),
        ("application/json, application/vnd.apache.arrow.stream;q=0.5", False),
        ("*/*;q=0.1, Application/Vnd.Apache.Arrow.Stream ; q=0.8", True),
        ("application/vnd.apache.arrow.stream;q=high", False),
    ],
)
def test_the_answer_is_arrow_only_when_the_caller_prefers_it(accept: str, arrow: bool) -> None:
    assert accepts(accept) is arrow


def test_arrow_errors_name_row_column_field_and_value(client: TestClient, payloads: list) -> None:
    rows = [dict(p) for p in payloads[:4]]
    rows[1]["tenure"] = 121
    rows[2]["Contract"] = "Monthly"
    error = _error(
        client.post("/predict/batch", content=arrow_stream(_table(rows)), headers=ARROW), 422
    )
    tenure, contract = _columns_of(rows[0], "tenure", "Contract")
    assert error["details"] == [
        {
            "field": f"row 1, column {tenure} (tenure)",
            "problem": "Input should be less than or equal to 120 (got 121)",
        },
        {"field": f"row 2, column {contract} (Contract)", "problem": NOT_A_CONTRACT},
    ]


def _with_column(name: str, values: pa.Array) -> bytes:
    """One customer whose column `name` is `values`, as an Arrow stream."""
    table = _table([TELCO_ROW])
    return arrow_stream(table.set_column(table.column_names.index(name), name, values))


def _in_batches(rows: list[dict[str, Any]], size: int) -> bytes:
    """Rows as a stream of record batches of `size` rows each."""
    return arrow_stream(pa.Table.from_batches(_table(rows).to_batches(max_chunksize=size)))


def _v4_stream() -> bytes:
    """A stream in Arrow's metadata V4, whose batches could name a codec in custom metadata."""
    return arrow_stream(_table([TELCO_ROW]), metadata_version=pa.ipc.MetadataVersion.V4)


def _valid_arrow() -> bytes:
    return arrow_stream(_table([TELCO_ROW, TELCO_ROW]))


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        (lambda: b"", 400, "body", "not a valid Arrow IPC stream"),
        (lambda: b"customerID,gender\n", 400, "body", "not a valid Arrow IPC stream"),
        (lambda: _valid_arrow()[:-40], 400, "body", "not a valid Arrow IPC stream"),
        (lambda: arrow_stream(_table([TELCO_ROW]), compression="zstd"), 400, "body", "compressed"),
        (lambda: arrow_stream(_table([TELCO_ROW]), compression="lz4"), 400, "body", "compressed"),
        (lambda: arrow_stream(_table([TELCO_ROW]).slice(0, 0)), 422, "body", "no customers"),
        (lambda: arrow_stream(_table([dict(TELCO_ROW, Plan="gold")])), 422, "(Plan)", "Extra"),
        (
            lambda: arrow_stream(_table([TELCO_ROW]).drop_columns(["tenure"])),
            422,
            "schema, tenure",
            "Field required",
        ),
        (
            lambda: arrow_stream(_table([TELCO_ROW]).append_column("tenure", pa.array([5]))),
            422,
            "column 21 (tenure)",
            "name the same field",
        ),
        (
            lambda: arrow_stream(_table([dict(TELCO_ROW, tenure=[1, 2])])),
            422,
            "schema, column 6 (tenure)",
            "list<item: int64> column is not read",
        ),
        (
            lambda: arrow_stream(_table([dict(TELCO_ROW, tenure=True)])),
            422,
            "row 0, column 6 (tenure)",
            "valid integer",
        ),
        (lambda: arrow_stream(_table([TELCO_ROW] * 51)), 413, "body", "limit per request"),
        (lambda: _in_batches([TELCO_ROW] * 60, 7), 413, "body", "more than 50 customers"),
        (_v4_stream, 400, "body", "metadata V4"),
        (
            lambda: _with_column("gender", pa.array(["Female"], pa.string_view())),
            422,
            "(gender)",
            "string_view",
        ),
        (
            lambda: _with_column("customerID", pa.RunEndEncodedArray.from_arrays([1], ["C-1"])),
            422,
            "(customerID)",
            "run_end_encoded",
        ),
        (
            lambda: _with_column("tenure", pa.array([{"a": 5}])),
            422,
            "column 6 (tenure)",
            "struct<a: int64> column is not read",
        ),
        (
            lambda: _with_column("customerID", pa.array(["x" * 2**20]).dictionary_encode()),
            422,
            "(customerID)",
            "a dictionary value of 1048576 bytes",
        ),
    ],
    ids=[
        "empty",
        "csv-sent-as-arrow",
        "truncated",
        "zstd",
        "lz4",
        "no-customers",
        "unknown-column",
        "missing-column",
        "column-twice",
        "nested-list",
        "boolean-number",
        "too-many",
        "too-many-in-batches",
        "metadata-v4",
        "string-view",
        "run-end-encoded",
        "struct",
        "dictionary-value-too-long",
    ],
)
def test_hostile_arrow_gets_a_4xx_naming_where(
    client: TestClient, body: Any, status: int, field: str, words: str
) -> None:
    error = _error(client.post("/predict/batch", content=body(), headers=ARROW), status)
    assert field in error["details"][0]["field"]
    assert words in error["message"]


@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6))
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_corrupted_arrow_stream_gets_an_answer_not_a_server_error(
    shared_client: TestClient, flips: list[tuple[int, int]]
) -> None:
    """Bytes of a valid stream overwritten anywhere (headers, offsets, data): a 4xx or the
    scores, never a crash or a 500 (the data is validated before it is read)."""
    body = bytearray(_valid_arrow())
    for at, value in flips:
        body[at % len(body)] = value
    answer = shared_client.post("/predict/batch?reasons=1", content=bytes(body), headers=ARROW)
    assert answer.status_code in {200, 400, 422}, answer.text
    assert "error" in answer.json() or answer.status_code == 200


# ---- a version trained under a contract that renames the export's columns -----------------


@pytest.fixture(scope="module")
def ibm_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose production version was trained under the IBM contract (renamed headers,
    a category whose levels are learned)."""
    root = tmp_path_factory.mktemp("ibm")
    with pytest.MonkeyPatch.context() as patch:
        isolate_environment(patch)
        patch.chdir(root)
        data = write_customers(generate_for_contract(IBM, 2000, seed=3), root / "ibm.csv")
        patch.setenv("CHURN_DATA_PATH", str(data))
        patch.setenv("CHURN_STATE_DIR", str(root / "state"))
        patch.setenv("CHURN_CONTRACT_PATH", str(IBM_FILE))
        env = ChurnEnv(root, data, root / "state", root / "storage")
        (root / "home").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "home")) as instance:
            result = materialize_graph(env, instance)
            assert result.success, failure_messages(result)
    return root / "state"


def test_a_renamed_contracts_api_takes_the_exports_headers(ibm_store: Path) -> None:
    pipeline = verified_pipeline(ibm_store)
    row = _ibm_row()
    exported = {IBM.export_names[k]: v for k, v in row.items()}  # "Tenure Months", "CustomerID"
    assert "Tenure Months" in exported and "CustomerID" in exported
    with TestClient(create_app(Settings(state_dir=ibm_store))) as api:
        plain = api.post("/predict", json=row).json()
        assert api.post("/predict", json=exported).json() == plain
        batch = api.post("/predict/batch", json={"customers": [row, exported]}).json()
        assert batch["predictions"] == [plain, plain]
        assert plain["customerID"] == "C-1"
        as_csv = api.post("/predict/batch", content=_csv([exported]), headers=CSV).json()
        assert as_csv["predictions"] == [plain]
        as_arrow = api.post(
            "/predict/batch", content=arrow_stream(_table([exported])), headers=ARROW
        ).json()
        assert as_arrow["predictions"] == [plain]

        both = dict(exported, tenure=5)
        error = _error(api.post("/predict", json=both), 422)
        assert error["details"][0]["field"] == "Tenure Months"
        assert "'tenure' and 'Tenure Months' name the same field" in error["message"]
        error = _error(api.post("/predict/batch", json={"customers": [row, both]}), 422)
        assert error["details"][0]["field"] == "customers.1.Tenure Months"
        error = _error(api.post("/predict/batch", content=_csv([both]), headers=CSV), 422)
        assert "'Tenure Months' (column 2) and 'tenure' name the same field" in error["message"]

        # payment's levels were learned in training: one it never saw is read as missing,
        # as the logged pipeline reads it (it was a KeyError, a 500, on the fast path)
        unseen = dict(row, payment="Carrier pigeon")
        answer = api.post("/predict/batch", json={"customers": [unseen]})
        assert answer.status_code == 200, answer.text
        frame = pd.DataFrame([unseen])[list(IBM.feature_columns)]
        expected = float(pipeline.predict_proba(frame)[0, 1])
        assert answer.json()["predictions"][0]["churn_probability"] == pytest.approx(
            expected, abs=1e-9
        )


#: Cells a hostile or careless CSV holds: blanks, quotes, line breaks, NUL, not-quite numbers.
_CELLS = st.sampled_from(["", " ", "5", "-1", "1.5", "1e999", "nan", "Male", '"', "a\nb", "\x00"])


@given(
    header=st.lists(st.sampled_from([*TELCO_ROW, "Plan", "", "tenure"]), max_size=24),
    lines=st.lists(st.lists(st.one_of(_CELLS, st.text(max_size=6)), max_size=22), max_size=4),
    raw=st.binary(max_size=40),
)
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_csv_body_gets_an_answer_not_a_server_error(
    shared_client: TestClient, header: list[str], lines: list[list[str]], raw: bytes
) -> None:
    text = "\n".join(",".join(cells) for cells in [header or list(TELCO_ROW), *lines])
    for body in (text.encode(), raw, _csv([TELCO_ROW]).encode() + raw):
        answer = shared_client.post("/predict/batch?reasons=1", content=body, headers=CSV)
        assert answer.status_code in {200, 400, 422}, answer.text
        assert "error" in answer.json() or answer.status_code == 200


#: Cells the two CSV readings might read apart: blanks around values, numbers as other
#: languages and exports write them, text where a number goes, and the characters that split
#: cells and lines.
_NEAR = st.sampled_from(
    [
        *("", " ", "\t", "\u00a0", " 5", "5 ", "5.0", "+5", "-0", "007", "1e3", "1E3", ".5"),
        *("5.", "inf", "-inf", "nan", "NaN", "1_000", "0x10", "\u0663", "1e999", "9" * 20, "-"),
        *("e5", "N/A", "NA", "null", "true", "Male", " Male", "Male ", "\tYes", "Yes\u00a0"),
        *("\x1fYes", "Yes\x1f", "One year", "Credit card", " Credit card", ",", '"', "\r", "\x00"),
    ]
)


def _near(row: dict[str, Any]) -> Any:
    """A CSV line's cells: `row`'s values as an export writes them, up to three replaced (so
    that a near-valid cell is often the only one: the two readings must agree on it)."""
    cells = {field: str(value) for field, value in row.items()}
    changes = st.lists(st.tuples(st.sampled_from(list(row)), _NEAR), max_size=3)
    return changes.map(lambda pairs: {**cells, **dict(pairs)})


def _csv_body(header: list[str], rows: list[dict[str, str]], ending: str, bom: bool) -> bytes:
    text = ending.join([",".join(header), *(",".join(row.values()) for row in rows)]) + ending
    return (codecs.BOM_UTF8 if bom else b"") + text.encode()


def _csv_judged(reader: BatchReader, body: bytes) -> tuple[Columns | None, Columns | None]:
    """What Arrow's CSV reader makes of a body, and what the csv module's reading does."""
    plain = reader.plain_csv(body, 100)
    try:
        return plain, reader.judged_csv(body, 100)
    except (RequestValidationError, ApiError):
        return plain, None


@given(
    rows=st.lists(_near(TELCO_ROW), min_size=1, max_size=3),
    ending=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_csv_read_by_arrow_is_read_as_the_csv_module_reads_it(
    rows: list[dict[str, str]], ending: str, bom: bool
) -> None:
    reader = BatchReader(SHIPPED)
    plain, judged = _csv_judged(reader, _csv_body(list(TELCO_ROW), rows, ending, bom))
    if plain is not None:
        assert judged is not None, rows
        _same(plain, judged)


@given(rows=st.lists(_near(_ibm_row()), min_size=1, max_size=3), exported=st.booleans())
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_learned_level_in_csv_is_read_by_arrow_as_the_csv_module_reads_it(
    rows: list[dict[str, str]], exported: bool
) -> None:
    """A level learned in training (IBM's `payment`) is any text: blanks around it are the
    csv module's to strip, so such a body is its to read."""
    reader = BatchReader(request_models(IBM))
    headers = {name: header for header, name in IBM.rename.items()} if exported else {}
    header = [headers.get(field, field) for field in _ibm_row()]
    plain, judged = _csv_judged(reader, _csv_body(header, rows, "\n", False))
    if plain is not None:
        assert judged is not None, rows
        _same(plain, judged)


def test_a_plain_csv_body_is_read_by_arrow() -> None:
    """The fast path is the path for what exports write: blank numbers, absent IDs, CRLF
    lines, a byte-order mark, the export's headers."""
    reader = BatchReader(SHIPPED)
    rows = [
        {k: str(v) for k, v in TELCO_ROW.items()},
        {k: "" if k in ("TotalCharges", "customerID") else str(v) for k, v in TELCO_ROW.items()},
    ]
    for ending, bom in (("\n", False), ("\r\n", True)):
        plain, judged = _csv_judged(reader, _csv_body(list(TELCO_ROW), rows, ending, bom))
        assert plain is not None and judged is not None
        _same(plain, judged)
        assert list(plain.ids) == ["0001-A", None]
        assert np.isnan(plain.numbers["TotalCharges"][1])
    ibm = BatchReader(request_models(IBM))
    headers = {name: header for header, name in IBM.rename.items()}
    row = {k: str(v) for k, v in _ibm_row().items()}
    plain, judged = _csv_judged(
        ibm, _csv_body([headers.get(k, k) for k in row], [row], "\n", False)
    )
    assert plain is not None and judged is not None
    _same(plain, judged)
    # what the csv module alone reads: quotes, blanks around a learned level
    quoted = _csv_body(list(row), [dict(row, payment='"Mailed check"')], "\n", False)
    padded = _csv_body(list(row), [dict(row, payment=" Mailed check")], "\n", False)
    for body in (quoted, padded):
        assert ibm.plain_csv(body, 100) is None
        assert ibm.read_csv(body, 100).texts["payment"] == ["Mailed check"]
    # and what neither reads: the csv module's reading says what is wrong
    for body, problem in ((b"\x80tenure\n1\n", "not UTF-8"), (b"tenure\n\x95\n", "not UTF-8")):
        assert reader.plain_csv(body, 100) is None
        with pytest.raises(ApiError) as refused:
            reader.read_csv(body, 100)
        assert problem in refused.value.message


def test_what_arrow_reads_and_the_csv_module_refuses_is_left_to_the_csv_module() -> None:
    """Arrow's integer parser takes hexadecimal, and its reader skips a byte-order mark: a
    hex integer, or a second mark before the header, is the csv module's to refuse; a whole
    float in an integer field is read as it reads it; a batch over the limit is its to say."""
    reader = BatchReader(SHIPPED)
    row = {k: str(v) for k, v in TELCO_ROW.items()}
    for tenure in ("0x10", "0X5", " 0x10", "5.5"):
        body = _csv_body(list(row), [dict(row, tenure=tenure)], "\n", False)
        assert reader.plain_csv(body, 100) is None, tenure
        with pytest.raises(RequestValidationError):
            reader.read_csv(body, 100)
    for tenure, read in (("5.0", 5), ("1e1", 10), ("+7", 7), (" 8 ", 8)):
        body = _csv_body(list(row), [dict(row, tenure=tenure)], "\n", False)
        plain, judged = _csv_judged(reader, body)
        assert plain is not None and judged is not None, tenure
        _same(plain, judged)
        assert plain.numbers["tenure"][0] == read
    twice = codecs.BOM_UTF8 + _csv_body(list(row), [row], "\n", True)
    assert reader.plain_csv(twice, 100) is None
    with pytest.raises(RequestValidationError):
        reader.read_csv(twice, 100)
    three = _csv_body(list(row), [row] * 3, "\n", False)
    assert reader.plain_csv(three, 2) is None
    with pytest.raises(ApiError) as refused:
        reader.read_csv(three, 2)
    assert refused.value.status == 413


def test_a_listed_level_the_encoder_never_saw_is_read_as_unseen() -> None:
    """A level the contract lists but the fitted encoder lacks reads as NaN (missing, as the
    logged pipeline reads it), in every body, as the request model's path reads it."""
    levels = {**TELCO.listed_levels, "MultipleLines": ["No", "Yes"]}
    reader = BatchReader(SHIPPED, levels)
    rows = [TELCO_ROW, dict(TELCO_ROW, MultipleLines="No phone service")]
    plain, validated = _judged(reader, rows)
    assert plain is not None and validated is not None
    _same(plain, validated)
    assert np.isnan(plain.codes["MultipleLines"][1])
    from_csv = reader.read_csv(_csv(rows).encode(), 100)
    from_arrow = reader.read_arrow(arrow_stream(pa.Table.from_pylist(rows)), 100)
    for read in (from_csv, from_arrow):
        _same(read, validated)
