"""`churn run` (what `make run` runs): a line per step, the failure's message first, the log
in a file. The successful run's screen is checked where `make run` runs whole (test_cli)."""

import re
from pathlib import Path

from mlflow.tracking import MlflowClient

import churn_assets.ml.data
from churn_assets.run_console import gate_criteria
from churn_assets_tests.processes import REPO, run_command

CHURN = ".venv/bin/churn"
SHIPPED_CONTRACT = Path(churn_assets.ml.data.__file__).parent / "contracts" / "telco.yaml"


def test_a_failed_run_shows_its_reason_first_and_keeps_the_log(
    tmp_path: Path, shell_env: dict[str, str]
) -> None:
    data = Path(shell_env["CHURN_DATA_PATH"])
    generated = run_command([CHURN, "generate-data", "--out", str(data)], shell_env)
    assert generated.returncode == 0, generated.stderr
    contract = tmp_path / "misspelled.yaml"
    text = SHIPPED_CONTRACT.read_text()
    assert "column: Churn," in text
    contract.write_text(text.replace("column: Churn,", "column: Churnn,"))

    done = run_command([CHURN, "run"], {**shell_env, "CHURN_CONTRACT_PATH": str(contract)})

    assert done.returncode == 1
    screen = (done.stdout + done.stderr).splitlines()
    assert len(screen) < 40, screen
    failed = next(i for i, line in enumerate(screen) if line.strip().startswith("FAILED"))
    assert screen[failed].split()[1] == "raw_customers"
    reason = screen[failed + 1]
    assert reason.startswith("churn_training failed at raw_customers: customer file ")
    assert "missing required column(s) 'Churnn'" in reason
    assert "not run (upstream failed): customer_data_contract" in screen[failed + 2]
    assert not any("Traceback" in line or "ERROR" in line for line in screen)
    (logged,) = re.findall(r"^full log: (\S+)$", done.stdout, re.MULTILINE)
    log = Path(logged) if Path(logged).is_absolute() else REPO / logged
    assert log.parent == Path(shell_env["CHURN_STATE_DIR"]).resolve() / "logs"
    assert "STEP_FAILURE" in log.read_text()
    store = f"sqlite:///{shell_env['CHURN_STATE_DIR']}/mlflow.db"
    assert MlflowClient(store, store).search_model_versions() == []


def test_the_gate_verdict_reads_a_criterion_a_line() -> None:
    recorded = (
        "auc >= min_auc 0.8676 vs 0.8200: ok; accuracy >= min_accuracy 0.7700 vs 0.7800: "
        "FAILED; auc of 'tenure' alone <= max_plausible_auc 0.7639 vs 0.9900: ok"
    )
    assert gate_criteria(recorded) == [
        "ok     auc >= min_auc: 0.8676 vs 0.8200",
        "FAILED accuracy >= min_accuracy: 0.7700 vs 0.7800",
        "ok     auc of 'tenure' alone <= max_plausible_auc: 0.7639 vs 0.9900",
    ]
    assert gate_criteria(None) == ["no verdict recorded"]
