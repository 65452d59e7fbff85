"""Files other processes read while they are being replaced (the snapshot, the scores)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
