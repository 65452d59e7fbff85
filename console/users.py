"""Who may log in: a YAML file of users with argon2 password hashes and a role.

    alice:
      password_hash: $argon2id$v=19$m=65536,t=3,p=4$...
      role: lead

Hashes are argon2id through argon2-cffi (its defaults: the RFC 9106 low-memory profile); the
file is never written by the console itself, only by `churn console-user`, which keeps it
readable by its owner alone. A `viewer` reads every page; only a `lead` downloads full lists.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from churn_assets.ml.files import replacing

_HASHER = PasswordHasher()
#: Checked when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY = _HASHER.hash("not a password anyone has")
MAX_NAME = 64


class Role(enum.StrEnum):
    viewer = "viewer"
    lead = "lead"


@dataclass(frozen=True)
class User:
    name: str
    role: Role


class UsersFileError(ValueError):
    """The users file cannot be read as users; the message names the entry, never a hash."""


def load(path: Path) -> dict[str, tuple[str, Role]]:
    """Each user's hash ("" for a user who signs in only through the trusted proxy) and role;
    an absent file is no users (nobody can log in)."""
    if not path.exists():
        return {}
    try:
        found = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UsersFileError(f"{path}: not a readable YAML file ({type(error).__name__})") from None
    if not isinstance(found, dict):
        raise UsersFileError(f"{path}: expected a mapping of user names")
    users = {}
    for name, entry in found.items():
        if not isinstance(entry, dict):
            raise UsersFileError(f"{path}: user {str(name)[:MAX_NAME]!r} is not a mapping")
        if not isinstance(entry.get("password_hash", ""), str):
            raise UsersFileError(
                f"{path}: user {str(name)[:MAX_NAME]!r}'s password_hash is not text"
            )
        try:
            role = Role(entry.get("role", Role.viewer.value))
        except ValueError:
            raise UsersFileError(
                f"{path}: user {str(name)[:MAX_NAME]!r} has role {str(entry.get('role'))[:20]!r};"
                " use viewer or lead"
            ) from None
        users[str(name)] = (entry.get("password_hash", ""), role)
    return users


def verify(path: Path, name: str, password: str) -> User | None:
    """The user, if `password` is theirs."""
    known = load(path).get(name)
    try:
        _HASHER.verify(known[0] if known and known[0] else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        return None
    return User(name, known[1]) if known and known[0] else None


def add(path: Path, name: str, password: str | None, role: Role) -> None:
    """Add or replace a user (owner-only file, replaced in one rename); without a password,
    one who signs in only through the trusted proxy (CHURN_CONSOLE_TRUSTED_HEADER)."""
    if (
        not name
        or len(name) > MAX_NAME
        or not name.replace("-", "").replace("_", "").replace(".", "").replace("@", "").isalnum()
    ):
        raise UsersFileError(
            f"user name {name[:MAX_NAME]!r}: letters, digits, - _ . @ only (an e-mail address "
            "is a name, as an authenticating proxy may send it)"
        )
    if password is not None and len(password) < 12:
        raise UsersFileError("a password needs at least 12 characters")
    entries = {n: {"password_hash": h, "role": r.value} for n, (h, r) in load(path).items()}
    entries[name] = {"role": role.value}
    if password is not None:
        entries[name]["password_hash"] = _HASHER.hash(password)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as temporary:
        temporary.write_text(yaml.safe_dump(entries, sort_keys=True))
        temporary.chmod(0o600)
