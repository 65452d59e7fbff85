"""Retrain a registered version from what it recorded, and say whether its metrics come back.

A version records its snapshot (tag `snapshot_id`), its split (`holdout_fraction`,
`split_seed`), its final hyperparameters and seed, and its calibration choice, all on its
MLflow run. Training is deterministic for the same data, parameters and code, so the same code
must give back the same holdout metrics to the last digit; different code (the version's
`git_sha` tag against this checkout) may not, and the report says which case it is.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, fields
from typing import Any

from churn_assets.ml.data import cleaning, point_in_time
from churn_assets.ml.data.splitting import (
    CustomerSplits,
    SplitCaps,
    features_and_target,
    split_customers,
)
from churn_assets.ml.evaluation import metrics
from churn_assets.ml.model import features, training
from churn_assets.ml.model.calibration_mode import CalibrationMode
from churn_assets.ml.model.hyperparameters import DEFAULTS, Hyperparameters
from churn_assets.ml.registry import artifacts, signing, tracking
from churn_assets.ml.registry import model_registry as registry
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store

#: Holdout metrics compared; what the evaluation logs as holdout_<name>.
COMPARED = ("auc", "accuracy", "f1", "precision", "recall", "brier", "log_loss")
#: Float metrics stored by MLflow come back as the same double; this only absorbs printing.
TOLERANCE = 1e-9


class ReproductionError(RuntimeError):
    """A version that cannot be retrained: no snapshot recorded, or its snapshot is gone."""


@dataclass(frozen=True)
class Reproduction:
    version: str
    snapshot_id: str
    recorded_git_sha: str
    current_git_sha: str
    recorded: dict[str, float]
    reproduced: dict[str, float]

    @property
    def differences(self) -> dict[str, float]:
        return {
            name: abs(self.reproduced[name] - value)
            for name, value in self.recorded.items()
            if not math.isclose(self.reproduced[name], value, rel_tol=0, abs_tol=TOLERANCE)
        }

    @property
    def matches(self) -> bool:
        return not self.differences

    @property
    def same_code(self) -> bool:
        return self.recorded_git_sha == self.current_git_sha and not self.current_git_sha.endswith(
            "-dirty"
        )


def _hyperparameters(params: dict[str, str]) -> Hyperparameters:
    values: dict[str, Any] = {}
    for field in fields(Hyperparameters):
        if field.name in params:
            kind = int if isinstance(getattr(DEFAULTS, field.name), int) else float
            values[field.name] = kind(params[field.name])
    return Hyperparameters(**values)


def reproduce(settings: ChurnSettings, version: str) -> Reproduction:
    """Retrain `version` of the configured model from its snapshot and compare its metrics."""
    opened = registry.open_registry(settings)
    model_version = opened.version(version)
    tags = model_version.tags or {}
    snapshot_id = tags.get(registry.SNAPSHOT_TAG)
    if not snapshot_id:
        raise ReproductionError(
            f"{settings.model_name} version {version} records no snapshot (it was trained "
            "before snapshots were kept), so its training data cannot be produced again"
        )
    run = tracking.client(settings).get_run(str(model_version.run_id))
    params = run.data.params
    store = snapshot_store(settings)
    # the contract the version was trained under, whatever CHURN_CONTRACT_PATH says today,
    # from the file its manifest signed
    verifier = signing.verifier(settings)
    store.contract = artifacts.verified_contract(verifier, model_version, settings.tracking_uri)
    contract = store.contract
    holdout_fraction, seed = float(params["holdout_fraction"]), int(params["split_seed"])
    # the caps the version was split under (none recorded: it was trained before caps)
    caps = SplitCaps(
        int(params.get("training_rows_cap", sys.maxsize)),
        int(params.get("holdout_rows_cap", sys.maxsize)),
    )

    def by_status() -> CustomerSplits:
        cleaned, _ = cleaning.clean_customers(store.read(snapshot_id, categorical=True), contract)
        return split_customers(cleaned, contract, holdout_fraction, seed, caps)

    splits = point_in_time.training_splits(
        store,
        snapshot_id,
        holdout_fraction,
        seed,
        int(params.get("outcome_window_days", settings.outcome_window_days)),
        caps,
        by_status,
    )
    train_features, _ = features_and_target(splits.train, contract)
    choices = training.TrainingChoices(
        calibration=CalibrationMode(params["calibration_mode"]),
        calibration_significance=float(params["calibration_significance"]),
        # the logged parameters are the search's winner: no search again
        tuning_budget_s=0.0,
        tuning_max_trials=1,
    )
    trained = training.train_churn_model(
        features.fit_preprocessor(train_features, contract),
        splits.train,
        contract,
        _hyperparameters(params),
        choices,
    )
    probability = training.churn_probability(trained.pipeline, splits.holdout)
    found = metrics.classification_metrics(
        splits.holdout[contract.target_column].to_numpy(), probability
    )
    recorded = {
        name: float(run.data.metrics[f"holdout_{name}"])
        for name in COMPARED
        if f"holdout_{name}" in run.data.metrics
    }
    return Reproduction(
        version=str(model_version.version),
        snapshot_id=snapshot_id,
        recorded_git_sha=tags.get("git_sha", "unknown"),
        current_git_sha=tracking.git_sha(settings),
        recorded=recorded,
        reproduced={name: found[name] for name in recorded},
    )
