"""Platform settings from the environment (and `.env`): every default is written here once."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from churn_assets.ml.data.contract import Contract, load_contract
from churn_assets.ml.data.history import ExtractKind
from churn_assets.ml.data.limits import (
    DEFAULT_MAX_EXTRACT_BYTES,
    DEFAULT_MAX_LINE_BYTES,
    ExtractLimits,
)
from churn_assets.ml.data.splitting import SplitCaps
from churn_assets.ml.evaluation.drift import MIN_ROWS_PER_BIN
from churn_assets.ml.model.calibration_mode import CalibrationMode
from churn_assets.ml.model.reasons import MAX_REASONS

SQLITE_FILE = "mlflow.db"
ARTIFACTS_FOLDER = "mlartifacts"
LOCAL_UI_URL = "http://127.0.0.1:5000"
#: Where `churn mlflow-ui` records the URL it serves, in the state folder, while it runs.
UI_URL_FILE = "mlflow-ui.url"


class ChurnSettings(BaseSettings):
    """Where the data and MLflow live, what the model is called, and the quality gate.

    With nothing set, everything lives in one local state folder: MLflow on SQLite with its
    artifacts beside it. Pointing MLFLOW_TRACKING_URI at a server (and the S3 variables at its
    artifact store) is all it takes to run the same code against production services.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    data_path: Path = Field(Path("data/telco_churn.csv"), alias="CHURN_DATA_PATH")
    contract_path: Path | None = Field(None, alias="CHURN_CONTRACT_PATH")
    incoming_dir: Path = Field(Path("data/incoming"), alias="CHURN_INCOMING_DIR")
    incoming_settle_s: float = Field(10.0, alias="CHURN_INCOMING_SETTLE_S", ge=0)
    max_extract_mb: float = Field(
        DEFAULT_MAX_EXTRACT_BYTES / 2**20, alias="CHURN_MAX_EXTRACT_MB", gt=0
    )
    max_line_bytes: int = Field(DEFAULT_MAX_LINE_BYTES, alias="CHURN_MAX_LINE_BYTES", ge=1024)
    sensor_interval_s: int = Field(30, alias="CHURN_SENSOR_INTERVAL_S", ge=1)
    scores_dir: Path | None = Field(None, alias="CHURN_SCORES_DIR")
    drift_psi_warn: float = Field(0.2, alias="CHURN_DRIFT_PSI_WARN", gt=0)
    drift_unseen_warn: float = Field(0.01, alias="CHURN_DRIFT_UNSEEN_WARN", ge=0, le=1)
    drift_min_rows_per_bin: int = Field(
        MIN_ROWS_PER_BIN, alias="CHURN_DRIFT_MIN_ROWS_PER_BIN", ge=1
    )
    extract_kind: ExtractKind = Field(ExtractKind.delta, alias="CHURN_EXTRACT_KIND")
    outcome_window_days: int = Field(90, alias="CHURN_OUTCOME_WINDOW_DAYS", ge=1)
    realized_auc_drop: float = Field(0.1, alias="CHURN_REALIZED_AUC_DROP", ge=0, le=1)
    realized_retrain: bool = Field(False, alias="CHURN_REALIZED_RETRAIN")
    state_dir: Path = Field(Path(".churn"), alias="CHURN_STATE_DIR")
    snapshot_dir_uri: str | None = Field(None, alias="CHURN_SNAPSHOT_URI")
    snapshot_keep: int = Field(52, alias="CHURN_SNAPSHOT_KEEP", ge=1)
    io_uri: str | None = Field(None, alias="CHURN_IO_URI")
    mlflow_tracking_uri: str | None = Field(None, alias="MLFLOW_TRACKING_URI")
    mlflow_s3_endpoint_url: str | None = Field(None, alias="MLFLOW_S3_ENDPOINT_URL")
    aws_access_key_id: str | None = Field(None, alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: SecretStr | None = Field(None, alias="AWS_SECRET_ACCESS_KEY")
    model_name: str = Field("churn-classifier", alias="CHURN_MODEL_NAME")
    experiment_name: str = Field("asfotec-churn", alias="CHURN_EXPERIMENT_NAME")
    production_alias: str = Field("production", alias="CHURN_PRODUCTION_ALIAS")
    min_auc: float = Field(0.82, alias="CHURN_MIN_AUC", ge=0, le=1)
    min_accuracy: float = Field(0.78, alias="CHURN_MIN_ACCURACY", ge=0, le=1)
    max_auc_drop: float = Field(0.01, alias="CHURN_MAX_AUC_DROP", ge=0, le=1)
    gate_beat_baseline: bool = Field(False, alias="CHURN_GATE_BEAT_BASELINE")
    gate_history: int = Field(3, alias="CHURN_GATE_HISTORY", ge=1, le=20)
    registry_lock: SecretStr | None = Field(None, alias="CHURN_REGISTRY_LOCK")
    registry_lock_timeout_s: float = Field(60.0, alias="CHURN_REGISTRY_LOCK_TIMEOUT_S", gt=0)
    calibration: CalibrationMode = Field(CalibrationMode.auto, alias="CHURN_CALIBRATION")
    calibration_significance: float = Field(
        0.01, alias="CHURN_CALIBRATION_SIGNIFICANCE", gt=0, lt=1
    )
    offer_cost: float = Field(100.0, alias="CHURN_OFFER_COST", gt=0)
    saved_customer_value: float = Field(500.0, alias="CHURN_SAVED_CUSTOMER_VALUE", gt=0)
    # Each campaign holds this share of the customers it targets back, at random, to measure
    # its offers; and offers to this share of those below the threshold (ml/campaigns).
    control_fraction: float = Field(0.1, alias="CHURN_CONTROL_FRACTION", ge=0, le=0.5)
    explore_fraction: float = Field(0.02, alias="CHURN_EXPLORE_FRACTION", ge=0, le=0.5)
    # A challenger for campaigns (ml/campaigns/assignment): a registered version the gate
    # attested (default: production's), under its own threshold (default: its version's), whose
    # policy gets this share of each campaign's customers at random, beside production's.
    challenger_version: str | None = Field(None, alias="CHURN_CHALLENGER_VERSION")
    challenger_threshold: float | None = Field(None, alias="CHURN_CHALLENGER_THRESHOLD", gt=0, lt=1)
    challenger_share: float = Field(0.5, alias="CHURN_CHALLENGER_SHARE", gt=0, lt=1)
    # Customers with a closed campaign window needed in each arm (treated, untreated) before an
    # uplift model is fitted (ml/campaigns/uplift).
    uplift_min_outcomes: int = Field(1000, alias="CHURN_UPLIFT_MIN_OUTCOMES", ge=50)
    # The uplift model's registered name; its `production_alias` version, when there is one,
    # decides who gets offers (by expected incremental value) and the API returns its uplift.
    uplift_model_name: str = Field("churn-uplift", alias="CHURN_UPLIFT_MODEL_NAME")
    # Complete campaigns after which offers whose effect is still indistinguishable from none
    # are warned about (the offers_work check).
    effect_min_campaigns: int = Field(3, alias="CHURN_EFFECT_MIN_CAMPAIGNS", ge=1)
    # Training rows past which the model is fitted on a stratified sample (ml/model/sampling),
    # and from which churn_model draws the learning curve that justifies it; holdout rows past
    # which evaluation scores a stratified sample (ml/data/splitting).
    train_max_rows: int = Field(1_000_000, alias="CHURN_TRAIN_MAX_ROWS", ge=1_000)
    holdout_max_rows: int = Field(4_000_000, alias="CHURN_HOLDOUT_MAX_ROWS", ge=1_000)
    learning_curve_min_rows: int = Field(1_000_000, alias="CHURN_LEARNING_CURVE_MIN_ROWS", ge=0)
    tuning_budget_s: float = Field(0.0, alias="CHURN_TUNING_BUDGET_S", ge=0)
    tuning_max_trials: int = Field(50, alias="CHURN_TUNING_MAX_TRIALS", ge=1)
    # Each customer's three strongest reasons in the scores: what the retention team calls with
    # (about 0.08 ms a customer on 2 cores; 0 for a base of tens of millions on few cores).
    scores_reasons: int = Field(3, alias="CHURN_SCORES_REASONS", ge=0, le=MAX_REASONS)
    # Dask (churn_assets/ml/cluster): no scheduler means a LocalCluster on this machine, used
    # only from CHURN_DASK_MIN_ROWS customers on (below it, the in-process path is faster).
    dask_scheduler: str | None = Field(None, alias="CHURN_DASK_SCHEDULER")
    dask_workers: int | None = Field(None, alias="CHURN_DASK_WORKERS", ge=1)
    dask_memory_limit: str = Field("auto", alias="CHURN_DASK_MEMORY_LIMIT")
    dask_min_rows: int = Field(2_000_000, alias="CHURN_DASK_MIN_ROWS", ge=0)
    dask_timeout_s: float = Field(3600.0, alias="CHURN_DASK_TIMEOUT_S", gt=0)
    # Signed artifacts and verdicts (churn_assets/ml/registry/signing.py): the Ed25519 private
    # key only training holds, and the public key every loader verifies with. Each is a PEM
    # file's path or the PEM text itself; unset, both live in <state>/signing, made on first use.
    signing_key: SecretStr | None = Field(None, alias="CHURN_SIGNING_KEY")
    verify_key: str | None = Field(None, alias="CHURN_VERIFY_KEY")
    max_plausible_auc: float = Field(0.99, alias="CHURN_MAX_PLAUSIBLE_AUC", gt=0.5, le=1)
    max_extract_ahead_days: int = Field(1, alias="CHURN_MAX_EXTRACT_AHEAD_DAYS", ge=0)
    git_sha: str | None = Field(None, alias="CHURN_GIT_SHA")
    mlflow_ui_url: str | None = Field(None, alias="CHURN_MLFLOW_UI_URL")

    @field_validator("signing_key", "verify_key", mode="before")
    @classmethod
    def _blank_key_means_none(cls, value: object) -> object:
        """CHURN_SIGNING_KEY= (as compose passes an unset variable) is no key, not an empty one."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def ui_url(self) -> str:
        """Where people open MLflow, for every link we write: CHURN_MLFLOW_UI_URL, else the
        tracking server's own UI, else the one `churn mlflow-ui` (`make mlflow-ui PORT=...`)
        serves now on the local store, else its default address."""
        if self.mlflow_ui_url:
            return self.mlflow_ui_url
        # A server comes first: a UI still recorded from a local store shows the wrong runs.
        if self.mlflow_tracking_uri and self.mlflow_tracking_uri.startswith("http"):
            return self.mlflow_tracking_uri
        try:
            recorded = self.ui_url_file.read_text().strip()
        except OSError:  # none running: nothing recorded (or no state folder yet)
            recorded = ""
        return recorded or LOCAL_UI_URL

    @property
    def ui_url_file(self) -> Path:
        """<state>/mlflow-ui.url: the URL `churn mlflow-ui` serves, removed when it stops."""
        return self.local_state / UI_URL_FILE

    def contract(self) -> Contract:
        """The data contract at CHURN_CONTRACT_PATH, else the shipped telco contract."""
        return load_contract(self.contract_path)

    @property
    def split_caps(self) -> SplitCaps:
        return SplitCaps(self.train_max_rows, self.holdout_max_rows)

    @property
    def extract_limits(self) -> ExtractLimits:
        return ExtractLimits(int(self.max_extract_mb * 2**20), self.max_line_bytes)

    @property
    def local_state(self) -> Path:
        return self.state_dir.expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        """The configured MLflow server, or the SQLite store in the local state folder."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.local_state / SQLITE_FILE}"

    @property
    def scores_folder(self) -> Path:
        """Where `churn_scores` writes its ranked files: CHURN_SCORES_DIR or <state>/scores."""
        return (self.scores_dir or self.state_dir / "scores").expanduser().resolve()

    @property
    def snapshot_uri(self) -> str:
        """Where training snapshots are kept: CHURN_SNAPSHOT_URI or <state>/snapshots."""
        if self.snapshot_dir_uri:
            return self.snapshot_dir_uri
        return (self.local_state / "snapshots").as_uri()

    @property
    def uses_server(self) -> bool:
        """MLFLOW_TRACKING_URI names a server, which keeps its own artifacts and has its UI."""
        return self.tracking_uri.startswith(("http://", "https://", "databricks"))

    @property
    def uses_local_store(self) -> bool:
        return self.mlflow_tracking_uri is None

    @property
    def local_artifact_root(self) -> Path:
        return self.local_state / ARTIFACTS_FOLDER

    @property
    def artifact_location(self) -> str | None:
        """Where a new experiment keeps its artifacts; None lets an MLflow server decide.

        Without it MLflow writes local artifacts to ./mlruns of whatever directory a process
        runs in. The state-dir rule, for every tracking URI: unset, <state>/mlartifacts beside
        <state>/mlflow.db; a SQLite file of your own, mlartifacts beside that file; another
        database URI, <state>/mlartifacts; a server (http, https), the server's own root.
        """
        uri = self.tracking_uri
        if self.uses_server:
            return None
        if uri.startswith("sqlite:///"):
            database = Path(uri.removeprefix("sqlite:///")).expanduser()
            return (database.resolve().parent / ARTIFACTS_FOLDER).as_uri()
        return self.local_artifact_root.as_uri()

    def mlflow_environment(self) -> dict[str, str]:
        """Variables MLflow's S3 client reads from the process environment."""
        values = {
            "MLFLOW_S3_ENDPOINT_URL": self.mlflow_s3_endpoint_url,
            "AWS_ACCESS_KEY_ID": self.aws_access_key_id,
            "AWS_SECRET_ACCESS_KEY": (
                self.aws_secret_access_key.get_secret_value()
                if self.aws_secret_access_key
                else None
            ),
        }
        return {k: v for k, v in values.items() if v}
