"""Console settings from the environment (and `.env`), on top of the platform's own."""

import ipaddress
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, model_validator

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
    query_memory: str = Field(
        "1GB",
        alias="CHURN_CONSOLE_QUERY_MEMORY",
        pattern=r"^\d+(\.\d+)?\s?(MB|GB|MiB|GiB)$",
        description="What DuckDB may hold in memory before it spills to the temporary folder "
        "(its own default is 80% of the machine's: a pod's limit is smaller).",
    )
    query_spill: str = Field(
        "4GB",
        alias="CHURN_CONSOLE_QUERY_SPILL",
        pattern=r"^\d+(\.\d+)?\s?(MB|GB|MiB|GiB)$",
        description="What DuckDB may write to its temporary folder once a query outgrows "
        "CHURN_CONSOLE_QUERY_MEMORY; past it the query fails, and the console with it never "
        "fills the disk (DuckDB's own default is 90% of the free disk, which a node shares).",
    )
    trusted_header: str | None = Field(
        None,
        alias="CHURN_CONSOLE_TRUSTED_HEADER",
        description="Off by default. Behind an authenticating proxy (oauth2-proxy, an SSO "
        "gateway): the header it sets to the signed-in user's name, e.g. X-Forwarded-User. "
        "The name must be in the users file, which gives the role; the login form is off.",
    )
    trusted_proxies: str = Field(
        "",
        alias="CHURN_CONSOLE_TRUSTED_PROXIES",
        description="With CHURN_CONSOLE_TRUSTED_HEADER: the proxy's addresses or networks, "
        "comma-separated (10.0.0.5,10.1.0.0/16); a request from anywhere else is refused, "
        "so nobody sets the header by reaching the console directly.",
    )

    @model_validator(mode="after")
    def _proxy_named(self) -> Self:
        if self.trusted_header and not self.proxy_networks:
            raise ValueError(
                "CHURN_CONSOLE_TRUSTED_HEADER needs CHURN_CONSOLE_TRUSTED_PROXIES: the addresses "
                "the authenticating proxy connects from"
            )
        return self

    @property
    def proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The proxy's networks, written exactly (10.0.0.5/8, with host bits, is refused: it
        would trust all of 10.0.0.0/8); a network of the whole internet is refused."""
        networks = [
            ipaddress.ip_network(part.strip())
            for part in self.trusted_proxies.split(",")
            if part.strip()
        ]
        for network in networks:
            if network.prefixlen == 0:
                raise ValueError(
                    f"CHURN_CONSOLE_TRUSTED_PROXIES: {network} trusts every address; name the "
                    "proxy's own"
                )
        return networks

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
