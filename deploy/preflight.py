"""Refuse to deploy with weak, reused or example secrets, or signing keys that do not pair.

Compose's `${VAR:?}` only catches unset or empty values, so a `.env` copied from
`.env.example` and never edited would start with `change-me` passwords. Every service of
docker-compose.yml waits for this check (`preflight`, run in the training image, which has
`cryptography`); on the host, `python deploy/preflight.py --env-file .env` checks a file before
a deploy, and `python -m deploy.kubernetes_secrets` runs the same checks before it renders the
Kubernetes secrets. Values are never printed, only the names of the variables to fix.

How strong a secret is, is estimated, not known: a value must have `MIN_SECRET_CHARS`
characters, `MIN_DISTINCT_CHARS` different ones, and an estimated `MIN_ENTROPY_BITS` bits,
where the estimate is the value's length times the lower of two Shannon entropies measured on
the value itself: of its characters (low for repeats and small alphabets: `aaaa`, `abab`) and
of the steps between neighbouring characters (low for runs: `abcd`, `1234`). It knows no
dictionary: the example markers below catch the usual placeholders, and a random value
(`openssl rand -hex 24`: 48 characters, about 180 bits by this estimate) passes with room.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

#: Variables that must hold a real secret: set, not an example, long and varied enough, and
#: each its own (no two the same).
SECRETS = (
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "AWS_SECRET_ACCESS_KEY",
    "API_AWS_SECRET_ACCESS_KEY",
    "CHURN_API_KEY",
    "CHURN_CONSOLE_SECRET",
)
#: Variables that must be set, but are names rather than secrets.
REQUIRED = ("POSTGRES_USER", "MINIO_ROOT_USER", "AWS_ACCESS_KEY_ID", "API_AWS_ACCESS_KEY_ID")
#: Accounts that must be different ones: MinIO's root, the pipeline's read-write user and the
#: API's read-only user (minio-init creates the two users; one of them cannot be root).
DISTINCT_ACCOUNTS = ("MINIO_ROOT_USER", "AWS_ACCESS_KEY_ID", "API_AWS_ACCESS_KEY_ID")
#: The Ed25519 pair models and gate verdicts are signed with: the private key only training
#: holds, and the public key every loader verifies with. Both are the PEM text itself.
SIGNING_KEY = "CHURN_SIGNING_KEY"
VERIFY_KEY = "CHURN_VERIFY_KEY"
MIN_SECRET_CHARS = 16
MIN_DISTINCT_CHARS = 8
MIN_ENTROPY_BITS = 40
#: What example files and tutorials put in place of a secret.
EXAMPLE_MARKERS = ("change-me", "changeme", "example", "password", "secret", "minioadmin")
MAKE_KEYS = (
    "openssl genpkey -algorithm ed25519 -out churn-signing.pem && "
    "openssl pkey -in churn-signing.pem -pubout -out churn-verify.pem"
)


def _shannon(symbols: Sequence[Hashable]) -> float:
    """Bits per symbol of the symbols' own frequencies."""
    counts = Counter(symbols)
    total = len(symbols)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


def entropy_bits(value: str) -> float:
    """Length times the lower of the entropies of the characters and of their steps."""
    if len(value) < 2:
        return 0.0
    steps = [ord(after) - ord(before) for before, after in itertools.pairwise(value)]
    return len(value) * min(_shannon(value), _shannon(steps))


def _weakness(value: str) -> str | None:
    if any(marker in value.lower() for marker in EXAMPLE_MARKERS):
        return "still holds an example value"
    if len(value) < MIN_SECRET_CHARS:
        return f"is shorter than {MIN_SECRET_CHARS} characters"
    if len(set(value)) < MIN_DISTINCT_CHARS:
        return f"has fewer than {MIN_DISTINCT_CHARS} different characters"
    if entropy_bits(value) < MIN_ENTROPY_BITS:
        return (
            f"is too predictable (under {MIN_ENTROPY_BITS} bits estimated: repeats or runs "
            "of characters)"
        )
    return None


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _shared(environ: Mapping[str, str], names: Iterable[str]) -> list[list[str]]:
    """Groups of two or more of these variables that hold one value."""
    holders: dict[str, list[str]] = defaultdict(list)
    for name in names:
        if environ.get(name, "").strip():
            holders[environ[name]].append(name)
    return [group for group in holders.values() if len(group) > 1]


def _text_problem(text: str, private: bool) -> str | None:
    """What is wrong with a key variable before its PEM is even parsed, or None."""
    if not text.strip():
        return f"is empty (make the pair: {MAKE_KEYS})"
    if "-----BEGIN" not in text:
        return "must hold the PEM text itself (-----BEGIN ...), not a file name"
    if not private and "PRIVATE KEY-----" in text:
        return (
            "holds a private key: every loader gets it and it is not kept secret; put only "
            "the public key there (openssl pkey -pubout)"
        )
    return None


def _load_key(environ: Mapping[str, str], name: str, found: list[str]) -> object | None:
    """The key a variable's PEM text holds, or None with the reason added to `found`."""
    text = environ.get(name, "")
    private = name == SIGNING_KEY
    problem = _text_problem(text, private)
    if problem is None:
        try:
            key: object = (
                serialization.load_pem_private_key(text.encode(), password=None)
                if private
                else serialization.load_pem_public_key(text.encode())
            )
        except TypeError:
            problem = "is encrypted with a password: the pipeline cannot open it"
        except (ValueError, UnsupportedAlgorithm):
            problem = f"is not a readable PEM {'private' if private else 'public'} key"
        else:
            if isinstance(key, Ed25519PrivateKey if private else Ed25519PublicKey):
                return key
            problem = f"is a {type(key).__name__.lstrip('_')}, not an Ed25519 key"
    found.append(f"{name} {problem}")
    return None


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_problems(environ: Mapping[str, str]) -> list[str]:
    """One line per problem with the signing pair: missing, unreadable, not Ed25519, unpaired."""
    found: list[str] = []
    private = _load_key(environ, SIGNING_KEY, found)
    public = _load_key(environ, VERIFY_KEY, found)
    if (
        isinstance(private, Ed25519PrivateKey)
        and isinstance(public, Ed25519PublicKey)
        and _raw(private.public_key()) != _raw(public)
    ):
        found.append(
            f"{VERIFY_KEY} is not the public half of {SIGNING_KEY}: loaders would refuse "
            "every model training signs"
        )
    return found


def problems(
    environ: Mapping[str, str],
    secrets: Sequence[str] = SECRETS,
    required: Sequence[str] = REQUIRED,
) -> list[str]:
    """One line per variable that is not fit to start a shared stack with."""
    found = []
    for name in required:
        if not environ.get(name, "").strip():
            found.append(f"{name} is empty")
    for name in secrets:
        value = environ.get(name, "")
        if not value.strip():
            found.append(f"{name} is empty")
        elif weakness := _weakness(value):
            found.append(f"{name} {weakness}")
    # a secret reused (or used as an account name) falls with the first place it leaks from
    for group in _shared(environ, (*secrets, *required)):
        if set(group) & set(secrets):
            found.append(f"{_names(group)} hold the same value: give each secret its own")
    accounts = [name for name in DISTINCT_ACCOUNTS if name in required]
    for group in _shared(environ, accounts):
        found.append(f"{_names(group)} name the same account: each needs its own")
    return found + key_problems(environ)


def read_env_file(path: Path) -> dict[str, str]:
    """A `.env` file as compose reads it (quoted values may span lines: the PEM keys do)."""
    from dotenv import dotenv_values

    if not path.is_file():
        raise SystemExit(f"preflight: {path} does not exist")
    return {name: value or "" for name, value in dotenv_values(path).items()}


def report(found: list[str], what: str) -> int:
    """Print the problems for people (names only) and return the exit status."""
    if found:
        print(f"preflight: refusing to {what}:", file=sys.stderr)
        for line in found:
            print(f"  - {line}", file=sys.stderr)
        print(
            "Set each secret to a long random value of its own, e.g. `openssl rand -hex 24`.",
            file=sys.stderr,
        )
        return 1
    print("preflight: secrets, accounts and the signing key pair are fit to deploy")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--env-file", type=Path, help="check this file instead of the environment (e.g. .env)"
    )
    args = parser.parse_args(argv)
    environ = read_env_file(args.env_file) if args.env_file else dict(os.environ)
    return report(problems(environ), "start the churn platform")


if __name__ == "__main__":
    sys.exit(main())
