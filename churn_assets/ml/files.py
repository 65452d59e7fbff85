"""Files: the SHA-256 of their bytes, and replacing one that other processes read (the
snapshot, the scores)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

_HASH_CHUNK = 1 << 20


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return stream_sha256(handle)


def stream_sha256(handle: Readable, chunk: int = _HASH_CHUNK) -> str:
    """The SHA-256 of everything left in `handle`, read `chunk` bytes at a time."""
    digest = hashlib.sha256()
    while block := handle.read(chunk):
        digest.update(block)
    return digest.hexdigest()


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A hidden temporary sibling to write, renamed over `path` only if the block succeeds.

    The rename is atomic, so a reader sees the old file or the new one, never half of one,
    and a failure part-way leaves the old file untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Named by process and thread rather than made by mkstemp, which would create it 0600:
    # the file keeps the permissions a plain write would give it.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield temporary
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def keep_json(path: Path, figures: dict[str, object]) -> Path:
    """A small JSON record the console and the CLI read (the latest verdict, the latest drift
    check), replaced in one rename."""
    with replacing(path) as temporary:
        temporary.write_text(json.dumps(figures, indent=1, default=str))
    return path


def kept_json(path: Path) -> dict[str, object] | None:
    """What `keep_json` wrote; None before any, or if it is not a readable record."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None
