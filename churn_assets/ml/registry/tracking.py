"""MLflow connection, experiment, model logging and provenance (git SHA, data hash)."""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

from churn_assets.ml.data.contract import Contract
from churn_assets.ml.settings import ChurnSettings

if TYPE_CHECKING:  # scikit-learn alone is 2 s of imports that `churn production` never uses
    from sklearn.pipeline import Pipeline

    from churn_assets.ml.model.tuning import Trial

MODEL_ARTIFACT = "model"
#: The uplift model's name in its run, beside the churn model's.
UPLIFT_ARTIFACT = "uplift"
#: The data contract a version was trained under, as a run artifact beside its model.
CONTRACT_ARTIFACT = "contract/contract.yaml"


@dataclass(frozen=True)
class ModelCandidate:
    """A registered model version and the MLflow run that produced it."""

    name: str
    version: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


# Types skops must trust to load the pipeline beyond sklearn's own; pinned so a new, unknown
# type in a logged model fails loudly instead of being trusted silently.
SKOPS_TRUSTED_TYPES = [
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "churn_assets.ml.model.calibration.CalibratedChurnClassifier",
    # the uplift model's (churn_assets.ml.campaigns.learner)
    "churn_assets.ml.campaigns.learner.UpliftTLearner",
    # the same class as versions logged before ml/ was grouped by concern name it
    "churn_assets.ml.calibration.CalibratedChurnClassifier",
]
#: What loading the logged pipeline needs. Listed rather than inferred: MLflow's inference
#: re-loads the model in a subprocess, which costs seconds per training run.
MODEL_REQUIREMENTS = ("lightgbm", "scikit-learn", "skops", "pandas", "numpy", "scipy")


#: MLflow's own switch for its loaders' pickle and skops paths, off in every process of ours:
#: models are read only through churn_assets.ml.registry.artifacts (signed, skops, pinned types).
NO_PICKLE = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
#: A signed version's few files are copied on every load: no progress bars on stderr for that.
_QUIET = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


class _NoPipVersionNotice(logging.Filter):
    """MLflow warns on each logged model that it cannot find pip's version: uv environments
    have no pip, and the model's requirements are pinned explicitly (MODEL_REQUIREMENTS)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to resolve installed pip version" not in record.getMessage()


_PIP_NOTICE = _NoPipVersionNotice()


_WAL_SET: set[str] = set()


def write_ahead_log(uri: str) -> None:
    """A SQLite store in write-ahead-log mode (once per file; the mode stays with the file).

    MLflow commits each tag, parameter and metric on its own, hundreds per training run, and
    SQLite's default rollback journal syncs the disk on each: 10.6 ms a commit on this
    machine's disk against 0.19 ms with the log (measured: 200 single-row commits). Readers
    (the UI, the API) and the writer no longer wait for each other either. A local file only:
    the log needs shared memory, which network filesystems do not give."""
    if not uri.startswith("sqlite:///") or uri in _WAL_SET:
        return
    path = Path(uri.removeprefix("sqlite:///")).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path, timeout=30)) as database:
        database.execute("pragma journal_mode=wal")
    _WAL_SET.add(uri)


def configure_mlflow(settings: ChurnSettings) -> str:
    """Point this process's MLflow client at the configured store; returns the tracking URI."""
    os.environ.update(settings.mlflow_environment() | NO_PICKLE | _QUIET)
    logging.getLogger("mlflow.utils.environment").addFilter(_PIP_NOTICE)
    write_ahead_log(settings.tracking_uri)
    if settings.uses_local_store:
        settings.local_artifact_root.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return settings.tracking_uri


def client(settings: ChurnSettings) -> MlflowClient:
    configure_mlflow(settings)
    return MlflowClient(settings.tracking_uri, settings.tracking_uri)


def ensure_experiment(settings: ChurnSettings) -> str:
    """Create the experiment with its artifacts where `settings.artifact_location` says."""
    mlflow_client = client(settings)
    existing = mlflow_client.get_experiment_by_name(settings.experiment_name)
    if existing is not None:
        return existing.experiment_id
    location = settings.artifact_location
    try:
        return mlflow_client.create_experiment(settings.experiment_name, location)
    except MlflowException as error:  # another process created it first
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        experiment = mlflow_client.get_experiment_by_name(settings.experiment_name)
        if experiment is None:
            raise
        return experiment.experiment_id


def git_sha(settings: ChurnSettings) -> str:
    """The commit the code came from: CHURN_GIT_SHA (images), else git, else 'unknown'.

    A checkout with uncommitted changes gets a '-dirty' suffix, so a model is never tagged
    with a commit that does not contain the code that trained it.
    """
    if settings.git_sha:
        return settings.git_sha
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def input_example(features: pd.DataFrame, contract: Contract, rows: int = 5) -> pd.DataFrame:
    """Rows as a caller sends them: categorical levels as plain strings (the first rows are
    taken before the columns, so a frame of millions is not copied for five of them)."""
    example = features.head(rows)[list(contract.feature_columns)].copy()
    for column in contract.categorical_features:
        example[column] = example[column].astype(str)
    return example


def log_model(
    pipeline: Pipeline,
    example: pd.DataFrame,
    name: str = MODEL_ARTIFACT,
    predict: str = "predict_proba",
) -> str:
    """Log preprocessor+model as one MLflow model named `name` in the active run; returns
    its URI.

    The pyfunc flavor calls `predict` (the churn model's probabilities, the uplift model's
    uplift), so `mlflow models serve` and our API agree. Registering it is the registry's job
    (`ModelRegistry.register`).
    """
    with warnings.catch_warnings():
        # the contract's integers are never blank (cleaning refuses them), so
        # MLflow's hint about integer columns that might hold missing values does not apply.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = infer_signature(example, getattr(pipeline, predict)(example))
    with _own_model_loadable():
        info = mlflow.sklearn.log_model(
            sk_model=pipeline,
            name=name,
            signature=signature,
            input_example=example,
            pyfunc_predict_fn=predict,
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=[f"{name}=={metadata.version(name)}" for name in MODEL_REQUIREMENTS],
        )
    return str(info.model_uri)


@contextmanager
def _own_model_loadable() -> Iterator[None]:
    """MLflow checks a model it logs by loading its own temporary copy of it (the serving
    input example is scored); that copy is this process's bytes, so its loader may run."""
    switch = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
    before = os.environ.get(switch)
    os.environ[switch] = "true"
    try:
        yield
    finally:
        if before is None:
            del os.environ[switch]
        else:
            os.environ[switch] = before


def same_predictions(
    pipeline: Pipeline, example: pd.DataFrame, predict: str = "predict_proba"
) -> Callable[[Any], None]:
    """A check that a pipeline read back from the store is `pipeline`: the same predictions
    (`predict`: probabilities, or an uplift model's uplift) on the logged example, to the last
    bit."""
    expected = getattr(pipeline, predict)(example)

    def check(stored: Any) -> None:
        if not np.array_equal(getattr(stored, predict)(example), expected):
            raise RuntimeError(
                "the logged pipeline does not score the input example as the fitted one did: "
                "the artifact store holds something else; not signing it"
            )

    return check


def load_run_dict(run_id: str, artifact_file: str) -> dict[str, Any] | None:
    """A JSON artifact of a run, or None when the run never logged it."""
    try:
        return dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact_file}"))
    except (MlflowException, OSError):
        return None


#: Rows the training dataset's column types are inferred from (see SnapshotDataset).
SCHEMA_SAMPLE_ROWS = 1_000


class SnapshotDataset(PandasDataset):
    """MLflow's pandas dataset, with its schema inferred without visiting every value.

    MLflow infers a dataset's schema by checking the type of each value of each column: 24 s
    per million training rows here, over three minutes of a ten-million-customer run. Cleaned
    columns hold one type each, so the types come from the first rows, and whether a column
    may be missing (`required`) from the whole column, which pandas answers vectorised. A
    test holds the result equal to MLflow's own inference. MLflow asks for the schema more than
    once per logged dataset, so it is worked out once.
    """

    @functools.cached_property
    def schema(self) -> Schema:
        with warnings.catch_warnings():
            # the contract's integers are never blank (cleaning refuses them)
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            sampled = infer_signature(self.df.head(SCHEMA_SAMPLE_ROWS)).inputs
        missing = self.df.isna().any()
        return Schema(
            [
                ColSpec(spec.type, spec.name, required=not bool(missing[spec.name]))
                for spec in sampled.inputs
            ]
        )


def log_snapshot_input(train: pd.DataFrame, target: str, short_id: str, snapshot_uri: str) -> None:
    """Record the training rows as the run's MLflow dataset input, named by their snapshot.

    The digest is the snapshot's short ID (MLflow's dataset table holds 36 characters), so the
    UI's dataset column tells which snapshot a run was trained on, and the source is where
    that snapshot's Parquet file lives.
    """
    mlflow.log_input(snapshot_dataset(train, target, short_id, snapshot_uri), context="training")


def snapshot_dataset(
    train: pd.DataFrame, target: str, short_id: str, snapshot_uri: str
) -> SnapshotDataset:
    """The dataset `log_snapshot_input` records (see there)."""
    with warnings.catch_warnings():
        # a file:// URI matches two of MLflow's local source types, which are the same class
        warnings.filterwarnings("ignore", message="The specified dataset source can be")
        source = resolve_dataset_source(snapshot_uri)
    return SnapshotDataset(
        df=train, source=source, targets=target, name=f"snapshot-{short_id}", digest=short_id
    )


def log_png(png: bytes, artifact_file: str) -> None:
    """Log PNG bytes as an artifact of the active run."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(artifact_file).name
        path.write_bytes(png)
        mlflow.log_artifact(str(path), artifact_path=str(Path(artifact_file).parent))


def end_runs_left_running(settings: ChurnSettings, dagster_run_id: str) -> list[str]:
    """Mark FAILED the MLflow runs of a Dagster run that are still RUNNING; returns their IDs.

    Runs end themselves when their resource is released; this is for run workers that died
    without releasing it (killed process, lost machine).
    """
    mlflow_client = client(settings)
    experiment = mlflow_client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        return []
    runs = mlflow_client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.dagster_run_id = '{dagster_run_id}' and attributes.status = 'RUNNING'",
    )
    for run in runs:
        mlflow_client.set_terminated(run.info.run_id, status="FAILED")
    return [run.info.run_id for run in runs]


def log_tuning_trial(trial: Trial) -> None:
    """One search trial as a child run of the active run: the MLflow UI lists them nested
    under the training run, sortable by validation log loss."""
    with mlflow.start_run(run_name=f"tuning-trial-{trial.number:03d}", nested=True):
        mlflow.set_tag("churn.tuning_trial", str(trial.number))
        mlflow.log_params(trial.params())
        mlflow.log_metrics(trial.scores())
