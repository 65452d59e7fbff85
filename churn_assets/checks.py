"""Asset checks: data quality, the blocking quality gate, and drift of incoming extracts."""

from collections.abc import Iterator
from dataclasses import asdict

import dagster as dg
import pandas as pd
from pydantic import Field

from churn_assets.assets.evaluation import evaluation_report
from churn_assets.assets.ingest import cleaned_customers
from churn_assets.assets.landing import customer_snapshot
from churn_assets.assets.metadata import table_metadata
from churn_assets.ml import drift, quality, registry, tracking
from churn_assets.ml.evaluation import EvaluationReport
from churn_assets.ml.gate import GateThresholds, evaluate_gate
from churn_assets.ml.settings import ChurnSettings

CLEANED_CUSTOMERS = cleaned_customers.key


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            rule.__name__, asset=cleaned_customers, blocking=True, description=rule.__doc__
        )
        for rule in quality.RULES
    ],
    description="Data-quality rules on cleaned customers; a failure stops training.",
)
def customer_data_quality(cleaned_customers: pd.DataFrame) -> Iterator[dg.AssetCheckResult]:
    for result in quality.evaluate_rules(cleaned_customers):
        yield dg.AssetCheckResult(
            asset_key=CLEANED_CUSTOMERS,
            check_name=result.name,
            passed=result.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=result.description,
            metadata=result.metadata,
        )


class QualityGateConfig(dg.Config):
    """Leave a field unset to use its environment variable (CHURN_MIN_AUC, ...) or default."""

    min_auc: float | None = Field(None, ge=0, le=1, description="Minimum holdout AUC.")
    min_accuracy: float | None = Field(None, ge=0, le=1, description="Minimum holdout accuracy.")
    max_auc_drop: float | None = Field(
        None, ge=0, le=1, description="Largest AUC loss allowed against production."
    )
    beat_baseline: bool | None = Field(
        None, description="Require a higher AUC than the logistic-regression baseline."
    )

    def thresholds(self, settings: ChurnSettings) -> GateThresholds:
        return GateThresholds(
            min_auc=settings.min_auc if self.min_auc is None else self.min_auc,
            min_accuracy=settings.min_accuracy if self.min_accuracy is None else self.min_accuracy,
            max_auc_drop=settings.max_auc_drop if self.max_auc_drop is None else self.max_auc_drop,
            beat_baseline=(
                settings.gate_beat_baseline if self.beat_baseline is None else self.beat_baseline
            ),
        )


@dg.asset_check(
    asset=evaluation_report,
    blocking=True,
    description="Candidate meets minimum AUC and accuracy and is no worse than production.",
)
def quality_gate(
    config: QualityGateConfig, evaluation_report: EvaluationReport
) -> dg.AssetCheckResult:
    settings = ChurnSettings()
    thresholds = config.thresholds(settings)
    result = evaluate_gate(evaluation_report, thresholds)
    # The verdict goes on the model version so promotion can verify it in any later run.
    registry.record_gate(
        tracking.client(settings),
        evaluation_report.model_name,
        evaluation_report.candidate_version,
        passed=result.passed,
        compared_with=evaluation_report.production_version,
    )
    metadata: dict[str, float | str] = {"candidate_version": evaluation_report.candidate_version}
    for criterion in result.criteria:
        metadata[criterion.name] = dg.MetadataValue.md(
            f"**{criterion.value:.4f}** (threshold {criterion.threshold:.4f}): "
            f"{'passed' if criterion.passed else 'FAILED'}"
        )
    return dg.AssetCheckResult(
        passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=result.summary(),
        metadata=metadata,
    )


@dg.asset_check(
    asset=customer_snapshot,
    description=(
        "Drift of the merged extract from the production model's training data: PSI per "
        "feature and the share of category levels training never saw. Warns (does not block) "
        "at PSI >= CHURN_DRIFT_PSI_WARN (0.2) or unseen share >= CHURN_DRIFT_UNSEEN_WARN (1%)."
    ),
)
def extract_drift(customer_snapshot: pd.DataFrame) -> dg.AssetCheckResult:
    settings = ChurnSettings()
    client = tracking.client(settings)
    production = registry.production_version(client, settings.model_name, settings.production_alias)
    profile = (
        None
        if production is None or production.run_id is None
        else tracking.load_run_dict(production.run_id, drift.PROFILE_ARTIFACT)
    )
    if production is None or profile is None:
        reason = (
            "no production model yet"
            if production is None
            else f"production v{production.version} was trained without a data profile"
        )
        return dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"drift not measured: {reason}",
            metadata={"extract_rows": len(customer_snapshot)},
        )
    report = drift.compare(
        profile, customer_snapshot, settings.drift_psi_warn, settings.drift_unseen_warn
    )
    table = pd.DataFrame(
        [{**asdict(f), "unseen_levels": ", ".join(f.unseen_levels)} for f in report.features]
    ).rename(columns={"warn": "drifted"})
    return dg.AssetCheckResult(
        passed=not report.drifted,
        severity=dg.AssetCheckSeverity.WARN,
        description=report.summary(),
        metadata={
            "features": table_metadata(table),
            "max_psi": max(f.psi for f in report.features),
            "drifted_features": ", ".join(f.feature for f in report.drifted) or "none",
            "production_version": str(production.version),
            "training_rows": report.training_rows,
            "extract_rows": report.rows,
            "psi_warn": report.psi_warn,
            "unseen_warn": report.unseen_warn,
        },
    )
