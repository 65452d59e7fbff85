"""Start-up and exit of a process that loads the whole code location (`churn run`, and through
churn_assets/definitions.py every run worker, code server and daemon Dagster starts).

What the terminal shows first, the run's log file, is named before anything heavy is imported.

A run imports about 5,000 modules (Dagster, MLflow, scikit-learn, LightGBM) whose objects live
as long as the process. Two costs follow that are not work: the cyclic garbage collector walks
those objects again and again while they are being created, and CPython's finalization walks
them once more at exit (1.8-2.2 s on a 2-core machine, after everything is written). Both go
away by importing with the collector off and then freezing what was imported (`gc.freeze`, the
documented way to take long-lived objects out of collection); the run's own objects are still
collected as usual.

skops is imported first: at import it looks up each of NumPy's and SciPy's ufuncs in every
loaded module, so it costs 0.6 s less before MLflow and Dagster are loaded than after; the names
it finds, and so the types it trusts, are the same either way (a test compares them).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from churn_assets.ml.settings import ChurnSettings


def log_path(settings: ChurnSettings, job: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return settings.local_state / "logs" / f"{job}-{stamp}.log"


def shown_path(path: Path | str) -> str:
    """A path as the person typed their command: relative to here when it is below here."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


def announce(settings: ChurnSettings, job: str, out: TextIO) -> Path:
    """The run's log file, named on `out` at once."""
    path = log_path(settings, job)
    print(f"{job}: log in {shown_path(path)}", file=out, flush=True)
    return path


@contextmanager
def bulk_imports() -> Iterator[None]:
    """Imports for the rest of the process's life: no collection while they run, their
    objects frozen after (also when they fail, so the collector is never left off)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        import skops.io  # noqa: F401  (first: see the module's docstring)

        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def before_exit() -> None:
    """Spare the interpreter's finalization a walk over every object: call last, when all is
    written (exit handlers and stream flushes still run as usual)."""
    gc.freeze()
