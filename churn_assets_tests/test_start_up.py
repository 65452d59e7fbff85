"""`churn run`'s start-up and exit: imports without the collector, skops first, MLflow quiet."""

import gc
import json
import os
import subprocess
import sys

import pytest

from churn_assets import start_up
from churn_assets_tests.processes import REPO, base_env, run_command

#: skops's trusted names, printed by a fresh interpreter after `PRELUDE` ran.
_TRUSTED = """
import json
from skops.io import _trusted_types as trusted
print(json.dumps({name: sorted(value) for name, value in vars(trusted).items()
                  if name.endswith("_TYPE_NAMES")}))
"""


def _trusted_after(prelude: str) -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", prelude + _TRUSTED],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_skops_trusts_the_same_types_whatever_was_imported_before_it() -> None:
    first = _trusted_after("import skops.io\n")
    last = _trusted_after("import mlflow, dagster, pandas, sklearn.metrics\nimport skops.io\n")
    assert first["SCIPY_UFUNC_TYPE_NAMES"]  # the names that skops finds by scanning modules
    assert first == last


#: Made under bulk_imports in a fresh interpreter: how many more objects are frozen after it.
_FROZEN = """
import gc
from churn_assets import start_up
before = gc.get_freeze_count()
with start_up.bulk_imports():
    assert not gc.isenabled()
    kept = [[] for _ in range(1000)]
assert gc.isenabled()
print(gc.get_freeze_count() - before)
"""


def test_bulk_imports_freeze_what_they_import_and_leave_the_collector_as_it_was() -> None:
    # counted in a process of its own: here, another test's threads free frozen objects
    # meanwhile, and the count drops by as many
    done = run_command([sys.executable, "-c", _FROZEN], base_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 1000  # the lists made inside, tracked, now frozen
    assert gc.isenabled()
    try:
        with pytest.raises(ImportError), start_up.bulk_imports():
            import churn_assets.no_such_module  # noqa: F401
        assert gc.isenabled()

        gc.disable()
        with start_up.bulk_imports():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def _telemetry_client(imports: str, **env: str) -> bool:
    """Whether MLflow set up its usage reporting in a fresh process (an environment with no CI
    or test markers, which MLflow would take as a reason of its own not to report)."""
    script = f"{imports}\nfrom mlflow.telemetry import get_telemetry_client\n"
    script += "print(get_telemetry_client() is not None)"
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stdout.split()[-1] == "True"


def test_mlflow_reports_nothing_to_its_vendor_unless_asked() -> None:
    assert _telemetry_client("import mlflow")  # MLflow's own default
    assert not _telemetry_client("import churn_assets, mlflow")
    assert _telemetry_client("import churn_assets, mlflow", MLFLOW_DISABLE_TELEMETRY="false")
