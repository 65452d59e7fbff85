"""API settings from the environment (and `.env`), on top of the platform's own settings."""

from pydantic import Field, SecretStr, field_validator

from churn_assets.ml.settings import ChurnSettings


class Settings(ChurnSettings):
    """MLflow location, model name and alias come from `ChurnSettings`, written once there."""

    refresh_interval_s: float = Field(
        10.0, alias="CHURN_REFRESH_INTERVAL_S", gt=0, description="How often to check the alias."
    )
    threshold: float | None = Field(
        None,
        alias="CHURN_DECISION_THRESHOLD",
        gt=0,
        lt=1,
        description=(
            "Churn if probability >= this. Unset: the served version's own cost-based "
            "threshold (its decision_threshold tag), or 0.5 for versions without one."
        ),
    )
    max_batch_size: int = Field(10_000, alias="CHURN_MAX_BATCH_SIZE", gt=0)
    max_body_bytes: int = Field(
        16 * 2**20,
        alias="CHURN_MAX_BODY_BYTES",
        ge=1024,
        description="Request bodies over this are refused with 413 before they are read.",
    )
    max_contributions: int = Field(
        20_000,
        alias="CHURN_MAX_CONTRIBUTIONS",
        ge=1,
        description="Rows x reasons one request may ask for; more is refused with 413.",
    )
    api_key: SecretStr | None = Field(
        None,
        alias="CHURN_API_KEY",
        description="When set, predict and model routes need X-API-Key.",
    )
    access_log: bool = Field(
        False,
        alias="CHURN_API_ACCESS_LOG",
        description="Log every request; off by default: /metrics counts them far more cheaply.",
    )
    host: str = Field("127.0.0.1", alias="CHURN_API_HOST")
    port: int = Field(8000, alias="CHURN_API_PORT")

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_means_none(cls, value: object) -> object:
        """CHURN_API_KEY= (as compose passes an unset variable) leaves the API open."""
        return None if value == "" else value

    @field_validator("threshold", mode="before")
    @classmethod
    def _blank_threshold_means_none(cls, value: object) -> object:
        return None if value == "" else value

    # Connections (serving/protocol.py): how long a client may take, and how much it may send
    # before its body, so slow or silent clients cannot hold connections open.
    idle_timeout_s: int = Field(
        5,
        alias="CHURN_API_IDLE_TIMEOUT_S",
        ge=1,
        description=(
            "Close a connection that starts no request for this long: a new one, or a "
            "keep-alive one between requests (uvicorn's timeout_keep_alive)."
        ),
    )
    header_timeout_s: float = Field(
        10.0,
        alias="CHURN_API_HEADER_TIMEOUT_S",
        gt=0,
        description="A request's headers must arrive within this long of its first byte, else 408.",
    )
    body_timeout_s: float = Field(
        60.0,
        alias="CHURN_API_BODY_TIMEOUT_S",
        gt=0,
        description=(
            "A request's whole body must arrive within this long of its headers, else 408 "
            "(the default: a 16 MiB body at 280 KB/s)."
        ),
    )
    max_header_bytes: int = Field(
        16 * 1024,
        alias="CHURN_API_MAX_HEADER_BYTES",
        ge=1024,
        description="A request line and headers over this are refused with 431.",
    )
    max_connections: int = Field(
        1000,
        alias="CHURN_API_MAX_CONNECTIONS",
        ge=1,
        description=(
            "Requests are answered 503 once this many connections are open or requests in "
            "flight (uvicorn's limit_concurrency)."
        ),
    )
