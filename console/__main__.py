"""`python -m console`: the retention console on CHURN_CONSOLE_HOST:CHURN_CONSOLE_PORT."""

import sys

import uvicorn

from churn_assets.ml.ports import port_in_use
from console.app import create_app
from console.settings import ConsoleSettings


def main() -> None:
    settings = ConsoleSettings()
    busy = port_in_use(settings.console_host, settings.console_port)
    if busy:
        print(
            f"churn console: {busy}; choose another with CHURN_CONSOLE_PORT "
            "(make console PORT=8051)",
            file=sys.stderr,
        )
        sys.exit(2)
    host = settings.console_host
    where = (
        f"http://[{host}]:{settings.console_port}"
        if ":" in host
        else (f"http://{host}:{settings.console_port}")
    )
    print(f"retention console on {where} (users: {settings.users_path})", flush=True)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=settings.console_port,
        server_header=False,
        # the peer is who connected: a trusted-header login trusts the proxy's own address,
        # never an X-Forwarded-For a client wrote
        proxy_headers=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
