"""A read-only door to the MLflow server for the API: reads pass, every write is refused.

MLflow's server has no login of its own: whoever reaches it can move the `production` alias,
retag or delete versions. The API only reads (the alias, the version, its run, where its
artifacts are), so it is given this proxy's address instead of the server's and shares no
network with the server itself (docker-compose.yml, and a NetworkPolicy in deploy/kubernetes).
Reads are GET and HEAD, and POST to MLflow's `<resource>/search` endpoints (searches are POSTs
in MLflow's REST API, and change nothing). Anything else is answered 403 with MLflow's own
error body, so an MLflow client raises PERMISSION_DENIED. Standard library only.

    python deploy/mlflow_read_proxy.py --upstream http://mlflow:5000 --port 5000
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

READ_METHODS = frozenset({"GET", "HEAD"})
#: One resource name, then `search`: runs/search, experiments/search, logged-models/search.
SEARCH = re.compile(r"/(?:ajax-)?api/[23]\.0/mlflow/[a-z-]+/search")
#: A search body is a filter and a page token; nothing the API sends comes near this.
MAX_BODY_BYTES = 1 << 20
#: Connection-level headers, and those this proxy sets itself.
NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
UPSTREAM_TIMEOUT_S = 60


def allowed(method: str, target: str) -> bool:
    """Whether a request only reads: GET or HEAD anything, POST to a search endpoint."""
    if method in READ_METHODS:
        return True
    return method == "POST" and SEARCH.fullmatch(urlsplit(target).path) is not None


class ReadOnlyProxy(BaseHTTPRequestHandler):
    """Forwards reads to `upstream` (host, port), refuses the rest."""

    upstream: tuple[str, int] = ("mlflow", 5000)

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._error(411, "INVALID_PARAMETER_VALUE", "send a Content-Length")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._error(413, "INVALID_PARAMETER_VALUE", "request body too large")
            return
        # read before answering, refusals too: a client still sending would see a reset
        body = self.rfile.read(length) if length else None
        if not allowed(self.command, self.path):
            print(f"refused {self.command} {urlsplit(self.path).path}", file=sys.stderr)
            self._error(403, "PERMISSION_DENIED", "this MLflow address is read-only")
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in NOT_FORWARDED}
        host, port = self.upstream
        headers["Host"] = f"{host}:{port}"  # what the server's --allowed-hosts lists
        connection = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT_S)
        try:
            connection.request(self.command, self.path, body, headers)
            response = connection.getresponse()
            payload = response.read()
        except OSError as error:
            print(f"MLflow at {host}:{port}: {type(error).__name__}: {error}", file=sys.stderr)
            self._error(502, "TEMPORARILY_UNAVAILABLE", f"MLflow at {host}:{port} is unreachable")
            return
        finally:
            connection.close()
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in NOT_FORWARDED and name.lower() not in {"server", "date"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, status: int, code: str, message: str) -> None:
        payload = json.dumps({"error_code": code, "message": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the API polls every few seconds; refusals and failures are printed above."""


def serve(upstream: str, host: str, port: int) -> ThreadingHTTPServer:
    """A server (not yet serving) that forwards reads to the MLflow server at `upstream`."""
    parts = urlsplit(upstream)
    if parts.scheme != "http" or not parts.hostname:
        raise SystemExit(f"--upstream must be http://host:port, got {upstream!r}")
    handler = type("Handler", (ReadOnlyProxy,), {"upstream": (parts.hostname, parts.port or 80)})
    return ThreadingHTTPServer((host, port), handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="the MLflow server, http://host:port")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    server = serve(args.upstream, args.host, args.port)
    print(f"read-only MLflow on {args.host}:{args.port}, forwarding reads to {args.upstream}")
    with server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
