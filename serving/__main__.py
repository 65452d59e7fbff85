"""`python -m serving`: one uvicorn worker serving `create_app()`, with bounded connections."""

import sys

import uvicorn

from churn_assets.ml.ports import port_in_use
from serving.app import create_app
from serving.protocol import LimitedHttpToolsProtocol
from serving.settings import Settings


def main() -> None:
    settings = Settings()
    # Before the model is loaded (up to a minute from a remote store), not after.
    busy = port_in_use(settings.host, settings.port)
    if busy:
        print(
            f"churn API: {busy}; choose another with CHURN_API_PORT (make serve PORT=8001)",
            file=sys.stderr,
        )
        sys.exit(2)
    # What serves there and where its docs are, before the model loads (a minute, remotely).
    print(f"churn API on {url(settings.host, settings.port)} (docs: /docs)", flush=True)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        # httptools with deadlines and a header ceiling (serving/protocol.py), never h11
        http=LimitedHttpToolsProtocol.configured(settings),
        timeout_keep_alive=settings.idle_timeout_s,
        limit_concurrency=settings.max_connections,
        access_log=settings.access_log,
        server_header=False,
        log_level="info",
    )


def url(host: str, port: int) -> str:
    """The address the API serves on (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


if __name__ == "__main__":
    main()
