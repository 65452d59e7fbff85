"""Promotion: the registry's production alias moves to a candidate that passed the gate."""

import dagster as dg

from churn_assets.assets.metadata import model_links, retrain_asset, ui_metadata
from churn_assets.ml.evaluation.report import EvaluationReport
from churn_assets.ml.registry.model_registry import WRITE_REFUSALS
from churn_assets.resources import ModelRegistryResource


@retrain_asset(kinds={"mlflow"})
def production_promotion(
    context: dg.AssetExecutionContext,
    registry: ModelRegistryResource,
    evaluation_report: EvaluationReport,
) -> dg.MaterializeResult:
    """Production alias on this run's candidate, if its gate passed against today's champion."""
    model_registry = registry.open()
    # The blocking check only guards the run it runs in; launched alone (UI, CLI, automation)
    # this asset must still refuse a candidate the gate rejected, so it reads the verdict the
    # gate wrote on the version itself. The move is a compare-and-set under the registry lock.
    try:
        move = model_registry.promote(evaluation_report.candidate_version, context.run_id)
    except WRITE_REFUSALS as refusal:
        raise dg.Failure(
            description=f"production not changed: {refusal}",
            metadata={"candidate_version": evaluation_report.candidate_version},
            allow_retries=False,
        ) from refusal
    return dg.MaterializeResult(
        metadata=ui_metadata(
            {
                **model_links(registry.settings.get(), move.model_name, move.version),
                "alias": move.alias,
                "production_version": move.version,
                "previous_production_version": move.previous_version or "none",
                "alias_moved": move.changed,
                "holdout_auc": evaluation_report.candidate["auc"],
                "holdout_accuracy": evaluation_report.candidate["accuracy"],
            }
        )
    )
