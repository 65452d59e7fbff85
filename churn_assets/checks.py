"""Asset checks: data quality, the blocking quality gate, and drift of incoming extracts."""

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from churn_assets.assets.campaigns import campaign_effect, uplift_model
from churn_assets.assets.evaluation import evaluation_report
from churn_assets.assets.ingest import raw_customers
from churn_assets.assets.landing import customer_snapshot
from churn_assets.assets.metadata import table_metadata, ui_metadata
from churn_assets.assets.monitoring import realized_performance
from churn_assets.ml.campaigns import effect, uplift
from churn_assets.ml.cluster.runners import ClusterError
from churn_assets.ml.data import partitioned, validation
from churn_assets.ml.data.partitioned import SnapshotTable
from churn_assets.ml.evaluation import drift, realized
from churn_assets.ml.evaluation.gate import (
    GateConfigError,
    GateOverride,
    GateThresholds,
    applied_thresholds,
    evaluate_gate,
)
from churn_assets.ml.evaluation.report import EvaluationReport
from churn_assets.ml.files import keep_json
from churn_assets.ml.registry import tracking
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store
from churn_assets.resources import (
    ChurnSettingsResource,
    DaskResource,
    ModelRegistryResource,
    deployment_floor,
)

RAW_CUSTOMERS = raw_customers.key
#: Figures of the data contract's rules that are the contract's own requirements, the same in
#: every run (the rest describe the data judged): shown as one entry, never plotted.
CONTRACT_FIGURES = frozenset(
    {"columns_required", "numeric_features", "categorical_features", "min", "max"}
)


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            rule.name, asset=raw_customers, blocking=True, description=rule.description
        )
        for rule in validation.RULES
    ],
    description="The data contract's rules on the export as read; a failure stops training.",
)
def customer_data_contract(
    context: dg.AssetCheckExecutionContext, dask: DaskResource, raw_customers: SnapshotTable
) -> Iterator[dg.AssetCheckResult]:
    """Each rule is its own check, failing on its own with the column, value, line and count
    of what broke it (the first violation in the metadata, all of them in a table).

    The snapshot is judged a partition at a time (on the Dask cluster for big tables) and the
    verdicts merged into what one pass over the whole table gives.
    """
    with dask.runner(raw_customers.rows) as runner:
        context.log.info(f"judging {raw_customers.partitions} partition(s) in {runner.describe()}")
        try:
            results = partitioned.validate_table(raw_customers, runner)
        except ClusterError as error:
            raise dg.Failure(description=str(error), allow_retries=False) from error
    for result in results:
        first = result.violations[0] if result.violations else None
        found: dict[str, Any] = {}
        if first is not None:
            found = {
                "column": first.column,
                "value": first.value,
                "line": first.line,
                "rows": first.count,
                "violations": table_metadata(pd.DataFrame([v.as_row() for v in result.violations])),
            }
        yield dg.AssetCheckResult(
            asset_key=RAW_CUSTOMERS,
            check_name=result.rule.name,
            passed=result.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=result.summary(),
            metadata=ui_metadata(
                {
                    **found,
                    "violated_columns": len({v.column for v in result.violations}),
                    **{k: v for k, v in result.figures.items() if k not in CONTRACT_FIGURES},
                    "contract_digest": raw_customers.contract.digest[:12],
                },
                contract={k: v for k, v in result.figures.items() if k in CONTRACT_FIGURES},
            ),
        )


class GateOverrideConfig(dg.Config):
    """A deliberate gate below the deployment's floor: named, justified, and recorded."""

    min_auc: float = Field(ge=0, le=1, description="Minimum holdout AUC for this run.")
    min_accuracy: float = Field(ge=0, le=1, description="Minimum holdout accuracy for this run.")
    max_auc_drop: float = Field(
        ge=0, le=1, description="AUC loss allowed against the best recent production version."
    )
    beat_baseline: bool = Field(False, description="Require beating the baseline's AUC.")
    max_plausible_auc: float = Field(
        0.99,
        gt=0.5,
        le=1,
        description="AUC (of the model, or of its strongest feature alone) above which the "
        "target is taken to have leaked; 1 lets a perfect model through.",
    )
    reason: str = Field(min_length=10, description="Why this model may pass a looser gate.")
    requested_by: str = Field(min_length=1, description="Who asked for the override.")


class QualityGateConfig(dg.Config):
    """Leave a field unset to apply the deployment's value (CHURN_MIN_AUC, ...), its floor."""

    min_auc: float | None = Field(None, ge=0, le=1, description="Minimum holdout AUC (raise only).")
    min_accuracy: float | None = Field(
        None, ge=0, le=1, description="Minimum holdout accuracy (raise only)."
    )
    max_auc_drop: float | None = Field(
        None, ge=0, le=1, description="AUC loss allowed against recent production (lower only)."
    )
    beat_baseline: bool | None = Field(
        None, description="Require a higher AUC than the logistic-regression baseline."
    )
    max_plausible_auc: float | None = Field(
        None,
        gt=0.5,
        le=1,
        description="AUC above which the target has leaked (model or one feature; lower only).",
    )
    override: GateOverrideConfig | None = Field(
        None,
        description="Gate below the deployment's floor on purpose; recorded on the version.",
    )

    def requested(self, settings: ChurnSettings) -> GateThresholds:
        """What this run asks for: its config, else the settings resource's values."""
        return GateThresholds.from_settings(settings).with_changes(
            min_auc=self.min_auc,
            min_accuracy=self.min_accuracy,
            max_auc_drop=self.max_auc_drop,
            beat_baseline=self.beat_baseline,
            max_plausible_auc=self.max_plausible_auc,
        )

    def gate_override(self, run_id: str) -> GateOverride | None:
        if self.override is None:
            return None
        o = self.override
        return GateOverride(
            GateThresholds(
                o.min_auc, o.min_accuracy, o.max_auc_drop, o.beat_baseline, o.max_plausible_auc
            ),
            reason=o.reason,
            requested_by=o.requested_by,
            dagster_run_id=run_id,
        )


def _shown(thresholds: GateThresholds) -> dict[str, float | bool]:
    return {
        "min_auc": thresholds.min_auc,
        "min_accuracy": thresholds.min_accuracy,
        "max_auc_drop": thresholds.max_auc_drop,
        "beat_baseline": thresholds.beat_baseline,
        "max_plausible_auc": thresholds.max_plausible_auc,
    }


@dg.asset_check(
    asset=evaluation_report,
    blocking=True,
    description=(
        "Candidate meets the deployment's minimum AUC and accuracy (a floor run config cannot "
        "lower) and stays within max_auc_drop of the best recent production version."
    ),
)
def quality_gate(
    context: dg.AssetCheckExecutionContext,
    config: QualityGateConfig,
    settings: ChurnSettingsResource,
    registry: ModelRegistryResource,
    evaluation_report: EvaluationReport,
) -> dg.AssetCheckResult:
    model_registry = registry.open()
    version = evaluation_report.candidate_version
    floor = deployment_floor()
    override = config.gate_override(context.op_execution_context.run_id)
    try:
        thresholds = applied_thresholds(floor, config.requested(settings.get()), override)
    except GateConfigError as refusal:
        # The version gets a verdict all the same: refused, with the reason.
        model_registry.refuse(version, str(refusal))
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"refused: {refusal}",
            metadata=ui_metadata(
                {"candidate_version": version}, thresholds={"floor": _shown(floor)}
            ),
        )
    result = evaluate_gate(evaluation_report, thresholds, override)
    # The verdict goes on the model version so promotion can verify it in any later run.
    model_registry.record_verdict(version, result, evaluation_report.production_version)
    metadata: dict[str, Any] = {
        "candidate_version": version,
        "reference_version": result.reference_version or "none",
        "overridden": override is not None,
    }
    if override is not None:
        metadata["override_reason"] = override.reason
        metadata["override_requested_by"] = override.requested_by
    for criterion in result.criteria:
        metadata[criterion.name] = dg.MetadataValue.md(
            f"**{criterion.value:.4f}** (threshold {criterion.threshold:.4f}): "
            f"{'passed' if criterion.passed else 'FAILED'}"
        )
    return dg.AssetCheckResult(
        passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=result.summary(),
        metadata=ui_metadata(
            metadata, thresholds={"applied": _shown(thresholds), "floor": _shown(floor)}
        ),
    )


@dg.asset_check(
    asset=customer_snapshot,
    description=(
        "Drift of the merged extract's active customers from the production model's active "
        "training customers: PSI per feature and the share of category levels training never "
        "saw. Warns (does not block) at PSI >= CHURN_DRIFT_PSI_WARN (0.2) or unseen share >= "
        "CHURN_DRIFT_UNSEEN_WARN (1%); a feature with fewer than CHURN_DRIFT_MIN_ROWS_PER_BIN "
        "(20) rows per bin is 'too few rows to judge'."
    ),
)
def extract_drift(
    settings: ChurnSettingsResource,
    registry: ModelRegistryResource,
    customer_snapshot: pd.DataFrame,
) -> dg.AssetCheckResult:
    churn_settings = settings.get()
    production = registry.open().production()
    profile = (
        None
        if production is None or production.run_id is None
        else tracking.load_run_dict(production.run_id, drift.PROFILE_ARTIFACT)
    )
    kept = churn_settings.scores_folder / drift.KEPT
    snapshot = snapshot_store(churn_settings).current_id()  # the one the extract made
    if production is None or profile is None:
        reason = (
            "no production model yet"
            if production is None
            else f"production v{production.version} was trained without a data profile"
        )
        version = None if production is None else str(production.version)
        why = f"drift not measured: {reason}"
        keep_json(kept, drift.kept_record(None, version, why, snapshot))
        return dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"drift not measured: {reason}",
            metadata=ui_metadata({"extract_rows": len(customer_snapshot)}),
        )
    report = drift.compare(
        profile,
        customer_snapshot,
        churn_settings.contract(),
        churn_settings.drift_psi_warn,
        churn_settings.drift_unseen_warn,
        churn_settings.drift_min_rows_per_bin,
    )
    keep_json(kept, drift.kept_record(report, str(production.version), "", snapshot))
    table = pd.DataFrame(
        [{**asdict(f), "unseen_levels": ", ".join(f.unseen_levels)} for f in report.features]
    ).rename(columns={"warn": "drifted"})
    return dg.AssetCheckResult(
        passed=not report.drifted,
        severity=dg.AssetCheckSeverity.WARN,
        description=report.summary(),
        metadata=ui_metadata(
            {
                "features": table_metadata(table),
                "max_psi": report.max_psi,
                "drifted_features": ", ".join(f.feature for f in report.drifted) or "none",
                "features_judged": len(report.judged),
                "production_version": str(production.version),
                "population": drift.POPULATION,
                "training_rows": report.training_rows,
                "extract_rows": report.extract_rows,
                "compared_rows": report.rows,
            },
            thresholds={"psi_warn": report.psi_warn, "unseen_warn": report.unseen_warn},
        ),
    )


@dg.asset_check(
    asset=realized_performance,
    description=(
        "Warns (does not block) when the newest complete outcome window's realized AUC falls "
        "below the gate's floor (CHURN_MIN_AUC) or more than CHURN_REALIZED_AUC_DROP (0.1) below "
        "the version's holdout AUC. With CHURN_REALIZED_RETRAIN=true the realized_retrain "
        "sensor retrains when it warns."
    ),
)
def realized_auc(
    settings: ChurnSettingsResource,
    registry: ModelRegistryResource,
    realized_performance: pd.DataFrame,
) -> dg.AssetCheckResult:
    churn_settings = settings.get()
    latest = realized.latest_complete(realized_performance)
    if latest is None:
        return dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description="no complete outcome window yet: realized AUC not judged",
        )
    version = str(latest["model_version"])
    tags = registry.open().version(version).tags or {}
    holdout = float(tags["holdout_auc"]) if "holdout_auc" in tags else None
    floor = deployment_floor().min_auc
    warning = realized.alert(latest, floor, holdout, churn_settings.realized_auc_drop)
    return dg.AssetCheckResult(
        passed=warning is None,
        severity=dg.AssetCheckSeverity.WARN,
        description=warning
        or (
            f"realized AUC {float(latest['realized_auc']):.3f} of v{version} (scored "
            f"{latest['scoring_date']}) is within bounds"
        ),
        metadata=ui_metadata(
            {
                "realized_auc": float(latest["realized_auc"]),
                "model_version": version,
                "scoring_date": str(latest["scoring_date"]),
                "holdout_auc": holdout,
            },
            thresholds={"min_auc": floor, "max_drop": churn_settings.realized_auc_drop},
        ),
    )


@dg.asset_check(
    asset=campaign_effect,
    description=(
        "Warns (does not block) when a campaign whose window closed shows offers pushing "
        "customers out (the interval of its churn reduction below zero), or when, after "
        "CHURN_EFFECT_MIN_CAMPAIGNS (3) closed campaigns, their pooled effect is still not "
        "distinguishable from none."
    ),
)
def offers_work(
    settings: ChurnSettingsResource, campaign_effect: pd.DataFrame
) -> dg.AssetCheckResult:
    churn_settings = settings.get()
    verdict = effect.offers_verdict(campaign_effect, churn_settings.effect_min_campaigns)
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=verdict.description,
        metadata=ui_metadata(
            {
                "closed_campaigns": verdict.closed,
                "pooled_reduction": verdict.pooled.reduction if verdict.pooled else None,
                "pooled_reduction_low": verdict.pooled.reduction_low if verdict.pooled else None,
                "pooled_reduction_high": verdict.pooled.reduction_high if verdict.pooled else None,
            },
            thresholds={"min_campaigns": churn_settings.effect_min_campaigns},
        ),
    )


@dg.asset_check(
    asset=uplift_model,
    description=(
        "Warns (does not block) when the uplift version in production, judged again on the "
        "held-out customers of every closed campaign, targets clearly worse than the "
        "campaigns' probability targeting (the whole 95% interval of the difference below 0) "
        "and the run promoted no better version: `churn rollback --uplift` moves it back."
    ),
)
def uplift_pays(
    settings: ChurnSettingsResource, registry: ModelRegistryResource
) -> dg.AssetCheckResult:
    verdict = uplift.latest_verdict(settings.get().scores_folder) or {}
    warning = uplift.production_alert(verdict, lambda: registry.open_uplift().production_number())
    shown = {
        key: value
        for key, value in verdict.items()
        if key.startswith("production_") and isinstance(value, int | float | str)
    }
    return dg.AssetCheckResult(
        passed=warning is None,
        severity=dg.AssetCheckSeverity.WARN,
        description=warning
        or (
            "production's uplift targeting is not measurably worse than probability targeting"
            if "production_minus_probability_high" in verdict
            else "production's uplift targeting was not judged against probability targeting "
            "(no uplift version in production, or it could not be compared: see the run's log)"
        ),
        metadata=ui_metadata(shown),
    )
