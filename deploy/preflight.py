"""Refuse to start the stack with the example secrets, empty secrets or an empty API key.

Compose's `${VAR:?}` only catches unset or empty values, so a `.env` copied from
`.env.example` and never edited would start with `change-me` passwords. Every service of
docker-compose.yml waits for this check (`preflight`) to succeed. Standard library only: it
runs in any Python image, and as `python deploy/preflight.py` on the host before a deploy.
Values are never printed, only the names of the variables to fix.
"""

from __future__ import annotations

import os
import sys

#: Variables that must hold a real secret: not empty, not an example, long enough.
SECRETS = (
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "AWS_SECRET_ACCESS_KEY",
    "CHURN_API_KEY",
)
#: Variables that must be set, but are names rather than secrets.
REQUIRED = ("POSTGRES_USER", "MINIO_ROOT_USER", "AWS_ACCESS_KEY_ID")
MIN_SECRET_CHARS = 16
#: What example files and tutorials put in place of a secret.
EXAMPLE_MARKERS = ("change-me", "changeme", "example", "password", "secret", "minioadmin")


def problems(environ: dict[str, str]) -> list[str]:
    """One line per variable that is not fit to start a shared stack with."""
    found = []
    for name in REQUIRED:
        if not environ.get(name, "").strip():
            found.append(f"{name} is empty")
    for name in SECRETS:
        value = environ.get(name, "")
        if not value.strip():
            found.append(f"{name} is empty")
        elif any(marker in value.lower() for marker in EXAMPLE_MARKERS):
            found.append(f"{name} still holds an example value")
        elif len(value) < MIN_SECRET_CHARS:
            found.append(f"{name} is shorter than {MIN_SECRET_CHARS} characters")
    return found


def main() -> int:
    found = problems(dict(os.environ))
    if found:
        print("preflight: refusing to start the churn platform:", file=sys.stderr)
        for line in found:
            print(f"  - {line}", file=sys.stderr)
        print(
            "Set each in .env to a long random value, e.g. `openssl rand -hex 24`.",
            file=sys.stderr,
        )
        return 1
    print("preflight: secrets and API key are set")
    return 0


if __name__ == "__main__":
    sys.exit(main())
