"""MLflow configuration from the environment and `.env`, and the clean-up of orphaned runs."""

import os
import warnings
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pytest
import skops.io
from lightgbm import LGBMClassifier
from mlflow.tracking import MlflowClient

from churn_assets.ml.data import cleaning, reading, synthetic
from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.model.calibration import CalibratedChurnClassifier
from churn_assets.ml.registry import tracking
from churn_assets.ml.settings import ChurnSettings
from churn_assets.resources import churn_resources
from churn_assets.sensors import failed_runs_mlflow_cleanup
from churn_assets_tests.conftest import ChurnEnv, failure_messages, materialize_graph


def test_embedded_default_is_sqlite_in_the_state_folder(churn_env: ChurnEnv) -> None:
    settings = ChurnSettings()
    assert settings.tracking_uri == f"sqlite:///{churn_env.state_dir / 'mlflow.db'}"
    experiment_id = tracking.ensure_experiment(settings)
    experiment = churn_env.client.get_experiment(experiment_id)
    assert experiment.name == "asfotec-churn"
    assert experiment.artifact_location == (churn_env.state_dir / "mlartifacts").as_uri()
    assert tracking.ensure_experiment(settings) == experiment_id


def test_dotenv_configures_a_remote_store_and_s3(
    churn_env: ChurnEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    (churn_env.root / ".env").write_text(
        "MLFLOW_TRACKING_URI=http://mlflow.internal:5000\n"
        "MLFLOW_S3_ENDPOINT_URL=http://minio:9000\n"
        "AWS_ACCESS_KEY_ID=churn\n"
        "AWS_SECRET_ACCESS_KEY=s3cret\n"
        "CHURN_MODEL_NAME=churn-test\n"
        "CHURN_MIN_AUC=0.9\n"
    )
    settings = ChurnSettings()
    assert settings.tracking_uri == "http://mlflow.internal:5000"
    assert not settings.uses_local_store
    assert settings.model_name == "churn-test"
    assert settings.min_auc == 0.9
    assert settings.ui_url == "http://mlflow.internal:5000"
    assert "s3cret" not in repr(settings)
    tracking.configure_mlflow(settings)
    assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "s3cret"


def test_invalid_threshold_is_rejected_with_its_name(
    churn_env: ChurnEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_MIN_AUC", "high")
    with pytest.raises(ValueError, match="CHURN_MIN_AUC"):
        ChurnSettings()


def test_git_sha_prefers_the_configured_value(
    churn_env: ChurnEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_GIT_SHA", "abc123")
    assert tracking.git_sha(ChurnSettings()) == "abc123"


def test_failure_sensor_ends_runs_a_dead_worker_left_running(
    churn_env: ChurnEnv, instance: dg.DagsterInstance
) -> None:
    churn_env.data_path.write_bytes(b"")
    failed = materialize_graph(churn_env, instance)
    assert "is empty" in failure_messages(failed)
    # what a worker killed mid-step leaves behind: a RUNNING run tagged with its Dagster run
    settings = churn_env.settings
    client: MlflowClient = churn_env.client
    experiment_id = tracking.ensure_experiment(settings)
    orphan = client.create_run(experiment_id, tags={"dagster_run_id": failed.run_id})
    unrelated = client.create_run(experiment_id, tags={"dagster_run_id": "another-run"})

    failure_event = failed.get_run_failure_event()
    with dg.build_run_status_sensor_context(
        sensor_name=failed_runs_mlflow_cleanup.name,
        dagster_event=failure_event,
        dagster_instance=instance,
        dagster_run=failed.dagster_run,
        resources={"registry": churn_resources()["registry"]},
    ) as context:
        failed_runs_mlflow_cleanup(context.for_run_failure())

    assert client.get_run(orphan.info.run_id).info.status == "FAILED"
    assert client.get_run(unrelated.info.run_id).info.status == "RUNNING"
    client.set_terminated(unrelated.info.run_id)


def test_a_calibrated_model_logged_before_the_move_still_loads(tmp_path: Path) -> None:
    """skops names classes by module path: one saved as churn_assets.ml.calibration (before
    ml/ was grouped by concern) loads through the trusted alias, so production still serves."""
    model = CalibratedChurnClassifier(LGBMClassifier(n_estimators=1), 1.5, -0.25)
    path = tmp_path / "old.skops"
    moved = CalibratedChurnClassifier.__module__
    CalibratedChurnClassifier.__module__ = "churn_assets.ml.calibration"  # as it was recorded
    try:
        skops.io.dump(model, path)
    finally:
        CalibratedChurnClassifier.__module__ = moved
    assert "churn_assets.ml.calibration.CalibratedChurnClassifier" in skops.io.get_untrusted_types(
        file=path
    )
    loaded = skops.io.load(path, trusted=tracking.SKOPS_TRUSTED_TYPES)
    assert isinstance(loaded, CalibratedChurnClassifier) and loaded.slope == 1.5


def test_the_training_dataset_has_mlflows_own_schema_without_visiting_every_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    contract = default_contract()
    path = synthetic.write_customers(
        synthetic.generate_customers(3_000, seed=5), tmp_path / "c.csv"
    )
    train, _ = cleaning.clean_customers(reading.read_customer_csv(path, None, contract), contract)
    # a value missing only past the rows the types come from must still make it optional
    monkeypatch.setattr(tracking, "SCHEMA_SAMPLE_ROWS", 100)
    train.loc[train.index[2_500], "MonthlyCharges"] = np.nan
    uri = (tmp_path / "snapshot.parquet").as_uri()
    ours = tracking.snapshot_dataset(train, contract.target_column, "abc123", uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's own hints on integer columns
        mlflows = mlflow.data.from_pandas(
            train, source=uri, targets=contract.target_column, name="snapshot-abc123"
        ).to_dict()
    assert ours.to_dict()["schema"] == mlflows["schema"]
    assert ours.to_dict()["profile"] == mlflows["profile"]
    optional = [spec.name for spec in ours.schema.inputs if not spec.required]
    assert optional == ["MonthlyCharges"]
