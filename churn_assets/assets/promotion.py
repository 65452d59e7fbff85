"""Promotion: the registry's production alias moves to a candidate that passed the gate."""

import dagster as dg

from churn_assets.assets.metadata import model_links, retrain_asset
from churn_assets.ml import registry, tracking
from churn_assets.ml.evaluation import EvaluationReport
from churn_assets.ml.settings import ChurnSettings


@retrain_asset(kinds={"mlflow"})
def production_promotion(evaluation_report: EvaluationReport) -> dg.MaterializeResult:
    """Production alias on the evaluated candidate, if its gate passed against today's champion."""
    settings = ChurnSettings()
    client = tracking.client(settings)
    # The blocking check only guards the run it runs in; launched alone (UI, CLI, automation)
    # this asset must still refuse a candidate the gate rejected, so it reads the verdict the
    # gate wrote on the version itself.
    try:
        move = registry.promote(
            client,
            evaluation_report.model_name,
            evaluation_report.candidate_version,
            settings.production_alias,
        )
    except registry.PromotionRefusedError as refusal:
        raise dg.Failure(
            description=str(refusal),
            metadata={"candidate_version": evaluation_report.candidate_version},
            allow_retries=False,
        ) from refusal
    return dg.MaterializeResult(
        metadata={
            **model_links(settings, move.model_name, move.version),
            "alias": move.alias,
            "production_version": move.version,
            "previous_production_version": move.previous_version or "none",
            "alias_moved": move.changed,
            "holdout_auc": evaluation_report.candidate["auc"],
            "holdout_accuracy": evaluation_report.candidate["accuracy"],
        }
    )
