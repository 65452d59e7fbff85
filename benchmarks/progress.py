"""A line per stage of a benchmark as it runs, so minutes of work at 10M are never silent."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def stage(label: str, what: str, chatty: bool = False) -> Iterator[None]:
    """`label: what...` when the stage starts, `done in N s` on the same line when it ends.

    Commands inside run through `run_quietly`, so their output does not split the line; a
    `chatty` stage (MLflow logging in this process) has the end on a line of its own.
    """
    print(f"{label}: {what}...", end="\n" if chatty else "", flush=True)
    ending = f"{label}: {what}:" if chatty else ""
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        print(f"{ending} failed after {time.perf_counter() - started:.1f} s", flush=True)
        raise
    print(f"{ending} done in {time.perf_counter() - started:.1f} s", flush=True)


def run_quietly(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Run a command with its output held back (it would split a progress line), shown if it
    fails."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-5000:]
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{output}")
