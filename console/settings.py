"""Console settings from the environment (and `.env`), on top of the platform's own."""

from pathlib import Path

from pydantic import Field, SecretStr

from churn_assets.ml.settings import ChurnSettings


class ConsoleSettings(ChurnSettings):
    """Where the console serves, who may log in, and how its sessions are signed."""

    console_host: str = Field("127.0.0.1", alias="CHURN_CONSOLE_HOST")
    console_port: int = Field(8050, alias="CHURN_CONSOLE_PORT")
    users_file: Path | None = Field(
        None,
        alias="CHURN_CONSOLE_USERS",
        description="YAML of users: name -> {password_hash (argon2), role (viewer or lead)}; "
        "unset: <state>/console/users.yaml (`churn console-user NAME` adds one).",
    )
    session_secret: SecretStr | None = Field(
        None,
        alias="CHURN_CONSOLE_SECRET",
        description="Signs session cookies; unset: a random key kept in <state>/console/.",
    )
    session_hours: float = Field(8.0, alias="CHURN_CONSOLE_SESSION_HOURS", gt=0)
    #: Cookies only over HTTPS: on behind a TLS proxy (the deployed stack), off on a laptop.
    secure_cookies: bool = Field(False, alias="CHURN_CONSOLE_SECURE_COOKIES")
    page_rows: int = Field(50, alias="CHURN_CONSOLE_PAGE_ROWS", ge=10, le=500)

    @property
    def console_folder(self) -> Path:
        return self.state_dir.expanduser().resolve() / "console"

    @property
    def users_path(self) -> Path:
        return self.users_file or self.console_folder / "users.yaml"

    @property
    def audit_log(self) -> Path:
        """Who downloaded which list, a JSON line each."""
        return self.console_folder / "audit.log"
