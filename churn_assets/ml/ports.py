"""Is a port free? Asked before a server spends a minute loading, not after."""

from __future__ import annotations

import socket


def port_in_use(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on, or None when it can.

    Bound with SO_REUSEADDR as uvicorn, Dagster and MLflow bind theirs, so a port held only
    by connections closing down (TIME_WAIT) counts as free, as it is for them.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return f"{host}:{port} cannot be used: {error.strerror or error}"
    return None
