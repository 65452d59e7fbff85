"""Two `churn_training` runs started at the same moment on one instance, as two shells would.

Before run-scoped storage both runs read one shared pickle per asset: one of them trained
version 3 but evaluated, gated and promoted version 4, and version 3 never got a verdict.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
from mlflow.tracking import MlflowClient

from churn_assets.ml.registry import model_registry as registry
from churn_assets_tests.conftest import PromotedStore, copied_store
from churn_assets_tests.processes import REPO, base_env

NAME = "churn-classifier"


def _launch(env: dict[str, str], log: Path) -> subprocess.Popen:
    dg_cli = str(Path(sys.executable).parent / "dg")
    return subprocess.Popen(
        [dg_cli, "launch", "-m", "churn_assets.definitions", "--job", "churn_training"],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def test_two_cli_runs_at_once_each_gate_their_own_version(
    tmp_path: Path, sample_csv: Path, promoted_store: PromotedStore
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy/dagster/local.yaml", home / "dagster.yaml")  # as `make run`
    with dg.DagsterInstance.from_config(str(home)):
        pass  # storage created once, before the two runs race to create it
    data = tmp_path / "telco_churn.csv"
    shutil.copy(sample_csv, data)
    env = base_env(
        DAGSTER_HOME=str(home), CHURN_STATE_DIR=str(tmp_path / "state"), CHURN_DATA_PATH=str(data)
    )
    # The experiment and the registered model exist before the race, as on any live instance:
    # the session's store, trained on the same file, with version 1 in production.
    copied_store(promoted_store, tmp_path / "state")

    runs = [_launch(env, tmp_path / f"run{i}.log") for i in range(2)]
    codes = [run.wait(timeout=900) for run in runs]
    logs = [(tmp_path / f"run{i}.log").read_text() for i in range(2)]
    assert 0 in codes, logs[0][-3000:] + logs[1][-3000:]

    uri = f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    versions = {str(v.version): v.tags for v in client.search_model_versions(f"name='{NAME}'")}
    assert set(versions) == {"1", "2", "3"}
    for version, tags in versions.items():
        assert tags[registry.GATE_TAG] in {"passed", "failed", "refused"}, (version, tags)
    production = client.get_model_version_by_alias(NAME, "production")
    assert production.tags[registry.GATE_TAG] == "passed"
    assert str(production.version) in {"2", "3"}

    # each run evaluated, gated and promoted the very version its own churn_model registered
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records()
        assert len(records) == 2
        for record in records:
            run_id = record.dagster_run.run_id
            by_asset = {
                entry.asset_materialization.asset_key.to_user_string(): (
                    entry.asset_materialization.metadata
                )
                for entry in instance.all_logs(
                    run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
                )
                if entry.asset_materialization is not None
            }
            trained = by_asset["churn_model"]["model_uri"].value
            assert by_asset["evaluation_report"]["model_uri"].value == trained
            version = trained.rsplit("/", 1)[1]
            assert versions[version][registry.DAGSTER_RUN_TAG] == run_id
            if "production_promotion" in by_asset:
                assert by_asset["production_promotion"]["production_version"].value == version
