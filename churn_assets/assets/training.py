"""Training: LightGBM fitted, logged as one MLflow model with its preprocessor, and registered."""

import dagster as dg
from pydantic import Field
from sklearn.compose import ColumnTransformer

from churn_assets.assets.metadata import mlflow_links, model_links, retrain_asset
from churn_assets.ml import drift, plots, tracking
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.splitting import CustomerSplits, features_and_target
from churn_assets.ml.tracking import ModelCandidate
from churn_assets.ml.training import train_churn_model


class ChurnModelConfig(dg.Config):
    """LightGBM hyperparameters and early stopping, tunable per run without code changes."""

    n_estimators: int = Field(2000, gt=0, description="Upper bound on boosting rounds.")
    learning_rate: float = Field(0.03, gt=0, description="Shrinkage per boosting round.")
    num_leaves: int = Field(7, gt=1, description="Leaves per tree.")
    min_child_samples: int = Field(50, gt=0, description="Minimum customers per leaf.")
    subsample: float = Field(0.8, gt=0, le=1, description="Row share sampled per round.")
    colsample_bytree: float = Field(0.8, gt=0, le=1, description="Feature share per tree.")
    reg_lambda: float = Field(1.0, ge=0, description="L2 regularisation.")
    validation_fraction: float = Field(
        0.15, gt=0, lt=1, description="Share of training rows used only for early stopping."
    )
    early_stopping_rounds: int = Field(50, gt=0, description="Rounds without improvement.")
    seed: int = Field(42, description="Seed for the validation fold and LightGBM.")

    def lightgbm_params(self) -> dict[str, float | int]:
        return {
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "subsample": self.subsample,
            "subsample_freq": 1,
            "colsample_bytree": self.colsample_bytree,
            "reg_lambda": self.reg_lambda,
        }


@retrain_asset(kinds={"lightgbm", "mlflow"}, required_resource_keys={"mlflow"})
def churn_model(
    context: dg.AssetExecutionContext,
    config: ChurnModelConfig,
    customer_splits: CustomerSplits,
    preprocessor: ColumnTransformer,
) -> dg.Output:
    """LightGBM churn classifier, early-stopped on a training fold and registered in MLflow."""
    settings = ChurnSettings()
    mlf = context.resources.mlflow
    trained = train_churn_model(
        preprocessor,
        customer_splits.train,
        config.lightgbm_params(),
        config.validation_fraction,
        config.early_stopping_rounds,
        config.seed,
    )
    mlf.log_params(
        {
            **config.lightgbm_params(),
            "validation_fraction": config.validation_fraction,
            "early_stopping_rounds": config.early_stopping_rounds,
            "seed": config.seed,
            "best_iteration": trained.best_iteration,
            "training_rows": trained.training_rows,
            "validation_rows": trained.validation_rows,
        }
    )
    mlf.log_metrics({f"validation_{k}": v for k, v in trained.validation_metrics.items()})
    importance_png = plots.feature_importance_plot(trained.feature_importance)
    run = mlf.active_run()
    mlf.log_dict(trained.feature_importance, "training/feature_importance.json")
    # What drift checks on later extracts compare with, kept with the model's run.
    mlf.log_dict(drift.profile_features(customer_splits.train), drift.PROFILE_ARTIFACT)
    tracking.log_png(importance_png, "training/feature_importance.png")
    train_features, _ = features_and_target(customer_splits.train)
    version = tracking.log_and_register_model(
        trained.pipeline,
        tracking.input_example(train_features),
        settings.model_name,
        tags={
            "git_sha": tracking.git_sha(settings),
            "data_sha256": customer_splits.data_sha256,
            "dagster_run_id": context.run_id,
        },
    )
    candidate = ModelCandidate(settings.model_name, str(version.version), run.info.run_id)
    return dg.Output(
        candidate,
        metadata={
            **model_links(settings, candidate.name, candidate.version),
            **mlflow_links(settings, run.info.experiment_id, run.info.run_id),
            **{f"validation_{k}": v for k, v in trained.validation_metrics.items()},
            "best_iteration": trained.best_iteration,
            "git_sha": version.tags["git_sha"],
            "data_sha256": customer_splits.data_sha256,
            "feature_importance": dg.MetadataValue.md(
                plots.markdown_image(importance_png, "feature importance")
            ),
        },
    )
