"""Training: LightGBM fitted, logged as one MLflow model with its preprocessor, and registered."""

import time
from dataclasses import replace
from typing import Any

import dagster as dg
from dagster_mlflow.resources import MlFlow
from pydantic import Field
from sklearn.compose import ColumnTransformer

from churn_assets.assets.metadata import mlflow_links, model_links, retrain_asset, ui_metadata
from churn_assets.ml.data.snapshots import SHORT_ID
from churn_assets.ml.data.splitting import CustomerSplits
from churn_assets.ml.evaluation import drift, learning_curve, plots
from churn_assets.ml.model.calibration_mode import CalibrationMode
from churn_assets.ml.model.hyperparameters import DEFAULTS, Hyperparameters
from churn_assets.ml.model.training import TrainingChoices, train_churn_model
from churn_assets.ml.registry import model_registry as registry_tags
from churn_assets.ml.registry import tracking
from churn_assets.ml.registry.tracking import ModelCandidate
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store
from churn_assets.resources import ChurnSettingsResource, ModelRegistryResource


class ChurnModelConfig(dg.Config):
    """LightGBM hyperparameters and early stopping, tunable per run without code changes."""

    n_estimators: int = Field(DEFAULTS.n_estimators, gt=0, description="Most boosting rounds.")
    learning_rate: float = Field(DEFAULTS.learning_rate, gt=0, description="Shrinkage per round.")
    num_leaves: int = Field(DEFAULTS.num_leaves, gt=1, description="Leaves per tree.")
    min_child_samples: int = Field(
        DEFAULTS.min_child_samples, gt=0, description="Minimum customers per leaf."
    )
    subsample: float = Field(DEFAULTS.subsample, gt=0, le=1, description="Rows sampled per round.")
    colsample_bytree: float = Field(
        DEFAULTS.colsample_bytree, gt=0, le=1, description="Feature share per tree."
    )
    reg_lambda: float = Field(DEFAULTS.reg_lambda, ge=0, description="L2 regularisation.")
    validation_fraction: float = Field(
        DEFAULTS.validation_fraction,
        gt=0,
        lt=1,
        description="Share of training rows used only for early stopping.",
    )
    early_stopping_rounds: int = Field(
        DEFAULTS.early_stopping_rounds, gt=0, description="Rounds without improvement."
    )
    seed: int = Field(DEFAULTS.seed, description="Seed for the validation fold and LightGBM.")
    calibration: CalibrationMode | None = Field(
        None, description="auto, always or never; default CHURN_CALIBRATION (auto)."
    )
    tuning_budget_s: float | None = Field(
        None,
        ge=0,
        description="Seconds for a hyperparameter search (0: none); default CHURN_TUNING_BUDGET_S.",
    )

    def hyperparameters(self) -> Hyperparameters:
        return Hyperparameters(**self.model_dump(exclude={"calibration", "tuning_budget_s"}))

    def choices(self, settings: ChurnSettings) -> TrainingChoices:
        """The settings, with whatever this run's config sets instead."""
        choices = TrainingChoices.from_settings(settings)
        if self.calibration is not None:
            choices = replace(choices, calibration=self.calibration)
        if self.tuning_budget_s is not None:
            choices = replace(choices, tuning_budget_s=self.tuning_budget_s)
        return choices


@retrain_asset(kinds={"lightgbm", "mlflow"})
def churn_model(
    context: dg.AssetExecutionContext,
    mlflow: dg.ResourceParam[MlFlow],
    config: ChurnModelConfig,
    settings: ChurnSettingsResource,
    registry: ModelRegistryResource,
    customer_splits: CustomerSplits,
    preprocessor: ColumnTransformer,
) -> dg.Output:
    """LightGBM churn classifier, early-stopped on a training fold and registered in MLflow."""
    # Past CHURN_TRAIN_MAX_ROWS training customers it is fitted on the stratified sample of
    # that size customer_splits drew; from CHURN_LEARNING_CURVE_MIN_ROWS on, the learning
    # curve (holdout AUC at 1/8, 1/4, 1/2 and all of the rows fitted) shows whether more rows
    # would help.
    churn_settings = settings.get()
    choices = config.choices(churn_settings)
    contract = customer_splits.contract
    available = customer_splits.train_available
    train = customer_splits.train
    started = time.perf_counter()
    trained = train_churn_model(
        preprocessor,
        train,
        contract,
        config.hyperparameters(),
        choices,
        on_trial=tracking.log_tuning_trial,
    )
    fit_seconds = time.perf_counter() - started
    hyperparameters = trained.hyperparameters
    curve_metadata: dict[str, Any] = {}
    if available >= churn_settings.learning_curve_min_rows:
        points = learning_curve.learning_curve(
            preprocessor,
            train,
            customer_splits.holdout,
            contract,
            hyperparameters,
            choices,
            (trained.pipeline, trained.best_iteration, fit_seconds),
        )
        for point in points:
            mlflow.log_metric("learning_curve_holdout_auc", point.holdout_auc, step=point.rows)
        mlflow.log_dict(
            {"available_rows": available, "points": learning_curve.table(points)},
            "training/learning_curve.json",
        )
        curve_png = plots.learning_curve_plot(
            [p.rows for p in points], [p.holdout_auc for p in points], available
        )
        tracking.log_png(curve_png, "training/learning_curve.png")
        gain = learning_curve.last_gain(points)
        curve_metadata = {
            "learning_curve": dg.MetadataValue.md(
                plots.markdown_image(curve_png, "learning curve")
            ),
            "learning_curve_points": dg.MetadataValue.json(learning_curve.table(points)),
            **({"learning_curve_last_doubling_auc_gain": gain} if gain is not None else {}),
        }
    calibration = trained.calibration
    mlflow.log_params(
        {
            **hyperparameters.lightgbm_params(),
            "validation_fraction": hyperparameters.validation_fraction,
            "early_stopping_rounds": hyperparameters.early_stopping_rounds,
            "seed": hyperparameters.seed,
            "best_iteration": trained.best_iteration,
            "training_rows": trained.training_rows,
            "training_rows_available": available,
            "training_rows_cap": churn_settings.train_max_rows,
            "holdout_rows": len(customer_splits.holdout),
            "holdout_rows_available": customer_splits.holdout_available,
            "holdout_rows_cap": churn_settings.holdout_max_rows,
            "validation_rows": trained.validation_rows,
            "calibration_mode": calibration.mode.value,
            "calibration_applied": calibration.applied,
            "calibration_slope": calibration.slope,
            "calibration_intercept": calibration.intercept,
            "calibration_p_value": calibration.p_value,
            "calibration_significance": choices.calibration_significance,
            "tuning_budget_s": choices.tuning_budget_s,
            "holdout_fraction": customer_splits.holdout_fraction,
            "split_seed": customer_splits.seed,
            "outcome_window_days": churn_settings.outcome_window_days,
            "label": customer_splits.basis,
        }
    )
    # The exact rows behind this version: `churn reproduce` retrains from this snapshot.
    store = snapshot_store(churn_settings)
    snapshot_id = customer_splits.snapshot_id
    tracking.log_snapshot_input(
        train,
        contract.target_column,
        snapshot_id[:SHORT_ID],
        store.data_uri(snapshot_id),
    )
    mlflow.log_metrics({f"validation_{k}": v for k, v in trained.validation_metrics.items()})
    mlflow.log_metrics(
        {
            "validation_calibration_error_before": calibration.validation_ece_before,
            "validation_calibration_error_after": calibration.validation_ece_after,
        }
    )
    tuning_metadata = {}
    if trained.tuning is not None:
        tuning = trained.tuning
        mlflow.log_metrics({"tuning_trials": len(tuning.trials), "tuning_seconds": tuning.seconds})
        mlflow.log_dict(tuning.table(), "training/tuning_trials.json")
        tuning_metadata = {
            "tuning_trials": len(tuning.trials),
            "tuning_seconds": tuning.seconds,
            "tuning_best_trial": tuning.best.number,
            "tuning_best_validation_log_loss": tuning.best.validation_log_loss,
        }
    importance_png = plots.feature_importance_plot(trained.feature_importance)
    run = mlflow.active_run()
    mlflow.log_dict(trained.feature_importance, "training/feature_importance.json")
    # What drift checks on later extracts compare with, kept with the model's run.
    mlflow.log_dict(drift.profile_features(customer_splits.train, contract), drift.PROFILE_ARTIFACT)
    # The contract the version reads its inputs by, kept with it (see registry.CONTRACT_TAG).
    mlflow.log_text(contract.to_yaml(), tracking.CONTRACT_ARTIFACT)
    tracking.log_png(importance_png, "training/feature_importance.png")
    # input_example takes the feature columns of its first rows itself
    example = tracking.input_example(customer_splits.train, contract)
    model_uri = tracking.log_model(trained.pipeline, example)
    # The version this run evaluates, gates and promotes: carried to them as this output.
    # Its manifest is signed only once the pipeline read back from the store scores the
    # example exactly as the one fitted here (skops files are not byte-reproducible).
    version = registry.open().register(
        model_uri,
        tags={
            "git_sha": tracking.git_sha(churn_settings),
            registry_tags.SNAPSHOT_TAG: customer_splits.snapshot_id,
            registry_tags.CONTRACT_TAG: contract.digest,
            registry_tags.CONTRACT_VERSION_TAG: str(contract.version),
            registry_tags.DAGSTER_RUN_TAG: context.run_id,
        },
        check=tracking.same_predictions(trained.pipeline, example),
    )
    candidate = ModelCandidate(churn_settings.model_name, str(version.version), run.info.run_id)
    return dg.Output(
        candidate,
        metadata=ui_metadata(
            {
                **model_links(churn_settings, candidate.name, candidate.version),
                **mlflow_links(churn_settings, run.info.experiment_id, run.info.run_id),
                **{f"validation_{k}": v for k, v in trained.validation_metrics.items()},
                "best_iteration": trained.best_iteration,
                "training_customers": len(train),
                "training_customers_available": available,
                "fit_seconds": fit_seconds,
                **curve_metadata,
                "calibration_applied": calibration.applied,
                "validation_calibration_error_before": calibration.validation_ece_before,
                "validation_calibration_error_after": calibration.validation_ece_after,
                **tuning_metadata,
                "git_sha": version.tags["git_sha"],
                "snapshot_id": customer_splits.snapshot_id,
                "contract_digest": contract.digest[:12],
                "contract_version": str(contract.version),  # an identifier: text, never plotted
                "feature_importance": dg.MetadataValue.md(
                    plots.markdown_image(importance_png, "feature importance")
                ),
            }
        ),
    )
