"""Slow, silent, oversized and vanishing clients against a real uvicorn process, on raw sockets.

Each is cut off within its configured deadline (short here, so the tests run in seconds), gets a
clear answer where it is still listening, and is counted in /metrics under its own status; the
server keeps answering everyone else. Waits are bounded and generous: they fail a test only when
a connection is never closed, not when a loaded machine is slow."""

import contextlib
import http.client
import json
import re
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from churn_assets_tests.conftest import PromotedStore
from churn_assets_tests.processes import (
    api_command,
    base_env,
    call_json,
    free_port,
    running,
    wait_until,
)
from churn_assets_tests.test_serving import customer_payloads

KEY = "let-me-in"
IDLE_S, HEADER_S, BODY_S = 2, 3.0, 3.0
MAX_HEADER_BYTES = 8192
#: How long a test waits for the server to act on a deadline of a few seconds: a bound for a
#: loaded machine, never the figure under test.
PATIENCE_S = 60.0


@dataclass
class Server:
    port: int
    log: Path

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=PATIENCE_S)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def requests_counted(self, route: str, status: int) -> float:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
        finally:
            connection.close()
        pattern = (
            rf'^churn_api_requests_total\{{route="{re.escape(route)}",status="{status}"\}} (\S+)$'
        )
        found = re.search(pattern, text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def payloads(promoted_store: PromotedStore) -> list[dict[str, Any]]:
    return customer_payloads(promoted_store.holdout)


@pytest.fixture(scope="module")
def server(
    promoted_store: PromotedStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    port = free_port()
    log = tmp_path_factory.mktemp("connections") / "api.log"
    env = base_env(
        CHURN_STATE_DIR=str(promoted_store.state_dir),
        CHURN_API_PORT=str(port),
        CHURN_API_KEY=KEY,
        CHURN_MAX_BATCH_SIZE="10000",
        CHURN_API_IDLE_TIMEOUT_S=str(IDLE_S),
        CHURN_API_HEADER_TIMEOUT_S=str(HEADER_S),
        CHURN_API_BODY_TIMEOUT_S=str(BODY_S),
        CHURN_API_MAX_HEADER_BYTES=str(MAX_HEADER_BYTES),
    )
    with running(api_command(), env, f"http://127.0.0.1:{port}/health", log):
        yield Server(port, log)


def _closed_by_server(sock: socket.socket, trickle: bytes = b"") -> bytes:
    """Everything the server sends until it closes the connection, sending `trickle` a byte at a
    time meanwhile (a slow client); fails if it is still open after PATIENCE_S."""
    received, deadline, pending = b"", time.monotonic() + PATIENCE_S, trickle
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.3)
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk
        elif pending:
            try:
                sock.sendall(pending[:1])
            except (BrokenPipeError, ConnectionResetError):
                return received
            pending = pending[1:]
    raise AssertionError(f"the server left the connection open for {PATIENCE_S} s: {received!r}")


def _status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response
    return int(response.split(b" ", 2)[1])


def _json_body(response: bytes) -> dict[str, Any]:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


def _head(path: str, length: int, *extra: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"X-API-Key: {KEY}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_connection_that_never_sends_a_request_is_closed(server: Server) -> None:
    with server.connect() as silent:
        assert _closed_by_server(silent) == b""


def test_a_keep_alive_connection_is_closed_once_idle(server: Server) -> None:
    with server.connect() as client:
        client.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = _closed_by_server(client)
    assert _status(answer) == 200 and b'"ok"' in answer


def test_blank_lines_do_not_keep_an_idle_connection_open(server: Server) -> None:
    with server.connect() as client:  # a CRLF is no request: it must not reset the idle clock
        assert _closed_by_server(client, trickle=b"\r\n" * 200) == b""


def test_headers_trickled_byte_by_byte_are_cut_off_with_408(server: Server) -> None:
    with server.connect() as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = _closed_by_server(slow, trickle=b"X-Slow: " + b"a" * 500)
    assert _status(answer) == 408
    error = _json_body(answer)["error"]
    assert error["code"] == "request_timeout" and "CHURN_API_HEADER_TIMEOUT_S" in error["message"]


def test_a_keyed_body_that_stalls_is_cut_off_with_408_and_counted(
    server: Server, payloads: list
) -> None:
    body = json.dumps(payloads[0]).encode()
    before = server.requests_counted("/predict", 408)
    with server.connect() as stalled:
        stalled.sendall(_head("/predict", len(body)) + body[:10])
        answer = _closed_by_server(stalled)
    assert _status(answer) == 408
    error = _json_body(answer)["error"]
    assert error["details"][0]["field"] == "body" and "CHURN_API_BODY_TIMEOUT_S" in error["message"]
    wait_until(
        "the 408 counted",
        lambda: server.requests_counted("/predict", 408) == before + 1,
        timeout=PATIENCE_S,
    )


def test_a_keyed_body_trickled_byte_by_byte_is_cut_off(server: Server, payloads: list) -> None:
    body = json.dumps(payloads[0]).encode()
    with server.connect() as slow:
        slow.sendall(_head("/predict", len(body)))
        answer = _closed_by_server(slow, trickle=body)
    assert _status(answer) == 408


def test_a_body_after_a_pause_within_the_deadline_is_scored(server: Server, payloads: list) -> None:
    body = json.dumps(payloads[0]).encode()
    with server.connect() as client:
        client.sendall(_head("/predict", len(body), "Connection: close") + body[:10])
        time.sleep(0.5)
        client.sendall(body[10:])
        answer = _closed_by_server(client)
    assert _status(answer) == 200, answer
    assert 0 <= _json_body(answer)["churn_probability"] <= 1


def test_a_1_mib_header_is_refused(server: Server) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 2**20 + b"\r\n\r\n"
    with server.connect() as client:
        # refused while still sending: the answer may be lost with the connection
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.sendall(head)
        answer = _closed_by_server(client)
    # never answered 200; a 431 when the client was still there to read it
    assert answer == b"" or _status(answer) == 431, answer[:200]
    assert call_json(server.port, "GET", "/health")[0] == 200


@pytest.mark.parametrize(
    ("size", "status"), [(MAX_HEADER_BYTES - 1024, 200), (MAX_HEADER_BYTES, 431)]
)
def test_headers_up_to_the_limit_pass_and_over_it_get_431(
    server: Server, size: int, status: int
) -> None:
    head = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {'a' * size}\r\n\r\n".encode()
    with server.connect() as client:
        client.sendall(head)
        answer = client.recv(65536)
    assert _status(answer) == status, answer[:200]
    if status == 431:
        error = _json_body(answer)["error"]
        assert error["code"] == "headers_too_large"
        assert "CHURN_API_MAX_HEADER_BYTES" in error["message"]


def _disconnect_lines(server: Server) -> list[str]:
    return [line for line in server.log_text().splitlines() if "went away" in line]


def _assert_one_disconnect(server: Server, route: str, before: int, lines_before: int) -> None:
    """The request left is counted once as 499, never 500, and logged as one line."""
    wait_until(
        "the disconnect counted",
        lambda: server.requests_counted(route, 499) == before + 1,
        timeout=PATIENCE_S,
    )
    assert server.requests_counted(route, 500) == 0
    lines = _disconnect_lines(server)[lines_before:]
    assert len(lines) == 1 and f"POST {route}" in lines[0], lines
    assert "Traceback" not in server.log_text()


def test_a_client_gone_mid_body_is_one_log_line_and_a_499(server: Server, payloads: list) -> None:
    body = json.dumps(payloads[0]).encode()
    before = server.requests_counted("/predict", 499)
    lines_before = len(_disconnect_lines(server))
    with server.connect() as leaving:
        leaving.sendall(_head("/predict", len(body)) + body[:10])
        time.sleep(0.3)  # the server has the headers and the route awaits the rest
    _assert_one_disconnect(server, "/predict", before, lines_before)


def test_a_client_gone_before_its_answer_is_one_log_line_and_a_499(
    server: Server, payloads: list
) -> None:
    rows = (payloads * (10_000 // len(payloads) + 1))[:10_000]
    body = json.dumps({"customers": rows}).encode()
    path = "/predict/batch?reasons=2"  # seconds of work: the client is gone long before it ends
    before = server.requests_counted("/predict/batch", 499)
    lines_before = len(_disconnect_lines(server))
    with server.connect() as leaving:
        leaving.sendall(_head(path, len(body)) + body)
    _assert_one_disconnect(server, "/predict/batch", before, lines_before)


def test_connections_over_the_limit_get_503(promoted_store: PromotedStore, tmp_path: Path) -> None:
    port = free_port()
    env = base_env(
        CHURN_STATE_DIR=str(promoted_store.state_dir),
        CHURN_API_PORT=str(port),
        CHURN_API_MAX_CONNECTIONS="3",
        CHURN_API_IDLE_TIMEOUT_S="300",  # held open by this test, not closed as idle
    )
    with running(api_command(), env, f"http://127.0.0.1:{port}/health", tmp_path / "api.log"):
        held = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(3)]
        try:
            assert _plain_status(port, "/health") == 503
        finally:
            for sock in held:
                sock.close()
        wait_until(
            "an answer once the held connections are gone",
            lambda: _plain_status(port, "/health") == 200,
            timeout=PATIENCE_S,
        )


def _plain_status(port: int, path: str) -> int:
    """The status of one GET, whatever its body (uvicorn's own 503 is plain text)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()
