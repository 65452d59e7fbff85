"""The API's slim runtime: the `serving` group alone, no Dagster, no training stack."""

import subprocess
from pathlib import Path

TRAINING_ONLY = ("dagster", "dagster_mlflow", "matplotlib", "sqlalchemy", "duckdb", "flask")


def test_serving_imports_and_builds_with_dagster_absent(slim_python: Path, tmp_path: Path) -> None:
    # serving.protocol is what `python -m serving` runs: httptools must be in the group too
    code = (
        "import importlib.util, sys\n"
        f"absent = [m for m in {TRAINING_ONLY!r} if importlib.util.find_spec(m)]\n"
        "assert not absent, absent\n"
        "from serving.app import create_app\n"
        "from serving.protocol import LimitedHttpToolsProtocol\n"
        "app = create_app()\n"
        "assert 'dagster' not in sys.modules\n"
        "print(sorted(app.openapi()['paths']))\n"
    )
    done = subprocess.run(
        [str(slim_python), "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "/predict/batch" in done.stdout


def test_dockerfile_builds_the_slim_group_from_the_lock() -> None:
    dockerfile = (Path(__file__).resolve().parents[1] / "serving" / "Dockerfile").read_text()
    assert "uv sync --frozen --no-default-groups --group serving" in dockerfile
    assert "uv.lock" in dockerfile
    assert 'CMD ["python", "-m", "serving"]' in dockerfile
