"""The quality gate: absolute thresholds and no meaningful loss against production."""

from __future__ import annotations

from dataclasses import dataclass

from churn_assets.ml.evaluation import EvaluationReport


@dataclass(frozen=True)
class GateThresholds:
    min_auc: float
    min_accuracy: float
    max_auc_drop: float
    #: Also require a higher holdout AUC than the logistic-regression baseline's.
    beat_baseline: bool = False


@dataclass(frozen=True)
class GateCriterion:
    """One comparison, shown beside its threshold in the check's metadata."""

    name: str
    value: float
    threshold: float
    passed: bool

    def describe(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return f"{self.name} {self.value:.4f} vs {self.threshold:.4f}: {verdict}"


@dataclass(frozen=True)
class GateResult:
    criteria: list[GateCriterion]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria)

    def summary(self) -> str:
        return "; ".join(c.describe() for c in self.criteria)


def evaluate_gate(report: EvaluationReport, thresholds: GateThresholds) -> GateResult:
    auc = report.candidate["auc"]
    accuracy = report.candidate["accuracy"]
    criteria = [
        GateCriterion("auc >= min_auc", auc, thresholds.min_auc, auc >= thresholds.min_auc),
        GateCriterion(
            "accuracy >= min_accuracy",
            accuracy,
            thresholds.min_accuracy,
            accuracy >= thresholds.min_accuracy,
        ),
    ]
    if report.production is not None:
        floor = report.production["auc"] - thresholds.max_auc_drop
        criteria.append(
            GateCriterion("auc >= production auc - max_auc_drop", auc, floor, auc >= floor)
        )
    if thresholds.beat_baseline and report.baseline is not None:
        reference = report.baseline["auc"]
        criteria.append(GateCriterion("auc > baseline auc", auc, reference, auc > reference))
    return GateResult(criteria)
