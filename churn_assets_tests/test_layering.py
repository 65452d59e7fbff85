"""Inside churn_assets/ml, imports run downhill: the data layer imports nothing above it."""

import ast
import sys
from collections.abc import Iterator

import pytest

from churn_assets_tests.processes import REPO, base_env, run_command

DATA = REPO / "churn_assets" / "ml" / "data"
DATA_PACKAGE = "churn_assets.ml.data"
#: What the data layer must not import: the layers above it, and the settings that read the
#: environment (callers pass what it needs as arguments).
ABOVE = (
    "churn_assets.ml.model",
    "churn_assets.ml.evaluation",
    "churn_assets.ml.registry",
    "churn_assets.ml.settings",
)


def imported(source: str, package: str) -> Iterator[tuple[int, str]]:
    """Every module an import statement anywhere in `source` names (also under
    TYPE_CHECKING or inside a function), with its line; relative imports resolved from
    `package`, and `from a import b` counted as a.b too (b may be a module)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def uphill(source: str, package: str = DATA_PACKAGE) -> list[str]:
    return sorted(
        {
            f"line {line}: {name}"
            for line, name in imported(source, package)
            if any(name == above or name.startswith(f"{above}.") for above in ABOVE)
        }
    )


@pytest.mark.parametrize(
    "source",
    [
        "from churn_assets.ml.settings import ChurnSettings",
        "from churn_assets.ml import settings",
        "import churn_assets.ml.registry.tracking",
        "from ..model import sampling",
        "from ..evaluation.drift import psi",
        "if TYPE_CHECKING:\n    from churn_assets.ml import model",
        "def later():\n    from churn_assets.ml.registry.tracking import git_sha",
    ],
)
def test_the_check_sees_every_way_of_importing_uphill(source: str) -> None:
    assert uphill(source), source


def test_the_check_lets_the_data_layer_import_its_own_and_what_lies_below() -> None:
    source = (
        "from churn_assets.ml import files, storage\n"
        "from churn_assets.ml.data import history\n"
        "from . import reading\n"
        "from .contract import Contract\n"
        "import churn_assets.ml.models_of_customers\n"
    )
    assert uphill(source) == []


def test_no_module_of_the_data_layer_imports_model_evaluation_registry_or_settings() -> None:
    modules = sorted(DATA.glob("*.py"))
    assert len(modules) > 10, f"the data layer's modules are not in {DATA}"
    found = {
        path.name: problems
        for path in modules
        if (problems := uphill(path.read_text(encoding="utf-8")))
    }
    assert found == {}


def test_importing_the_whole_data_layer_loads_nothing_above_it() -> None:
    # what the modules it imports (storage, files) import in turn counts too
    code = (
        "import importlib, pkgutil, sys\n"
        "import churn_assets.ml.data as data\n"
        "for module in pkgutil.iter_modules(data.__path__):\n"
        "    importlib.import_module(f'churn_assets.ml.data.{module.name}')\n"
        f"above = {ABOVE!r}\n"
        "print(sorted(m for m in sys.modules if m.startswith(above)))\n"
    )
    done = run_command([sys.executable, "-c", code], base_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
