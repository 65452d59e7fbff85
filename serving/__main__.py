"""`python -m serving`: one uvicorn worker serving `create_app()`."""

import uvicorn

from serving.app import create_app
from serving.settings import Settings


def main() -> None:
    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=settings.access_log,
        server_header=False,
        log_level="info",
    )


if __name__ == "__main__":
    main()
