"""One MLflow UI address for every link: CHURN_MLFLOW_UI_URL, else the tracking server, else the
UI `churn mlflow-ui` serves now (whatever its port), else the default."""

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from churn_assets.ml.settings import LOCAL_UI_URL, ChurnSettings
from churn_assets_tests.processes import base_env, free_port, stop, wait_until
from churn_assets_tests.test_ui_dev import session_processes, wait_until_gone


def test_ui_url_follows_the_setting_then_the_server_then_the_running_ui(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    monkeypatch.setenv("CHURN_STATE_DIR", str(tmp_path))
    assert ChurnSettings().ui_url == LOCAL_UI_URL  # nothing recorded: the default

    (tmp_path / "mlflow-ui.url").write_text("http://127.0.0.1:15000\n")
    assert ChurnSettings().ui_url == "http://127.0.0.1:15000"

    # a UI of the local store is not the server's, whatever is still recorded
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert ChurnSettings().ui_url == "http://mlflow.internal:5000"

    monkeypatch.setenv("CHURN_MLFLOW_UI_URL", "https://mlflow.example.com")
    assert ChurnSettings().ui_url == "https://mlflow.example.com"


def test_mlflow_ui_records_and_prints_its_url_and_forgets_it_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    churn = str(Path(sys.executable).parent / "churn")
    ui = subprocess.Popen(
        [churn, "mlflow-ui", "--port", str(port)],
        cwd=tmp_path,  # no .env of the checkout
        env=base_env(CHURN_STATE_DIR=str(state)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert ui.stdout is not None
        first = ui.stdout.readline().strip()
        assert first.startswith(f"MLflow UI on {url} (store sqlite:///"), first
        assert "\n" not in first

        def answers() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(f"the MLflow UI on {url}", answers, timeout=180)
        assert (state / "mlflow-ui.url").read_text().strip() == url
        # every link written from now on opens this port
        assert ChurnSettings(CHURN_STATE_DIR=state).ui_url == url

        ui.send_signal(signal.SIGTERM)  # as make passes it on
        wait_until_gone(ui.pid, timeout=60)
        assert ui.wait(timeout=5) == 128 + signal.SIGTERM
        assert not (state / "mlflow-ui.url").exists()
        assert ChurnSettings(CHURN_STATE_DIR=state).ui_url == LOCAL_UI_URL
    finally:
        if session_processes(ui.pid):
            stop(ui)
