"""The quality gate: a floor the deployment sets, and no slide against recent production.

The deployment's environment (CHURN_MIN_AUC, ...) is a floor: a run may ask for a stricter
gate, never a looser one. The one way below it is a `GateOverride`, which names who asked and
why and is written on the version with the verdict, so the registry says how it got there.

No slide: each retrain is compared with the *best* holdout AUC among the last N promoted
versions, all scored on the candidate's holdout, not only with today's production. A chain of
retrains each a little worse than the last would otherwise pass every step while losing
`max_auc_drop` per step; measured against the best recent model, the step that takes the
total loss past the allowance fails.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from churn_assets.ml.evaluation.report import EvaluationReport
from churn_assets.ml.settings import ChurnSettings


class GateConfigError(ValueError):
    """The run asked for a gate looser than the deployment's floor without an override."""


@dataclass(frozen=True)
class GateThresholds:
    min_auc: float
    min_accuracy: float
    max_auc_drop: float
    #: Also require a higher holdout AUC than the logistic-regression baseline's.
    beat_baseline: bool = False
    #: Above this AUC, for the candidate or its strongest feature alone, the target has
    #: leaked (see churn_assets.ml.evaluation.leakage); lowering it is the stricter way.
    max_plausible_auc: float = 0.99

    @classmethod
    def from_settings(cls, settings: ChurnSettings) -> GateThresholds:
        return cls(
            settings.min_auc,
            settings.min_accuracy,
            settings.max_auc_drop,
            settings.gate_beat_baseline,
            settings.max_plausible_auc,
        )

    def with_changes(self, **changes: Any) -> GateThresholds:
        """These thresholds with every change that is not None applied."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def looser_than(self, floor: GateThresholds) -> list[str]:
        """Each threshold that would let through a model the floor refuses, with both values."""
        looser = []
        if self.min_auc < floor.min_auc:
            looser.append(f"min_auc {self.min_auc:g} < floor {floor.min_auc:g}")
        if self.min_accuracy < floor.min_accuracy:
            looser.append(f"min_accuracy {self.min_accuracy:g} < floor {floor.min_accuracy:g}")
        if self.max_auc_drop > floor.max_auc_drop:
            looser.append(f"max_auc_drop {self.max_auc_drop:g} > floor {floor.max_auc_drop:g}")
        if floor.beat_baseline and not self.beat_baseline:
            looser.append("beat_baseline off < floor on")
        if self.max_plausible_auc > floor.max_plausible_auc:
            looser.append(
                f"max_plausible_auc {self.max_plausible_auc:g} > floor {floor.max_plausible_auc:g}"
            )
        return looser


@dataclass(frozen=True)
class GateOverride:
    """A deliberate, recorded exception to the floor."""

    thresholds: GateThresholds
    reason: str
    requested_by: str
    dagster_run_id: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def applied_thresholds(
    floor: GateThresholds, requested: GateThresholds, override: GateOverride | None
) -> GateThresholds:
    """What the gate applies: the request if it is at least the floor, else the override."""
    if override is not None:
        return override.thresholds
    looser = requested.looser_than(floor)
    if looser:
        raise GateConfigError(
            "run config may raise the deployment's quality gate, never lower it: "
            + "; ".join(looser)
            + ". To gate below the floor on purpose, set the quality_gate check's `override` "
            "(thresholds, reason, requested_by); it is recorded on the model version"
        )
    return requested


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
    #: The churn model's thresholds; None for a verdict judged by its criteria alone (the
    #: uplift model's: beat probability targeting).
    thresholds: GateThresholds | None
    #: The recent production version whose holdout AUC the candidate had to stay near.
    reference_version: str | None = None
    reference_auc: float | None = None
    override: GateOverride | None = None
    #: What the figures are of: the out-of-time window when history allows, else the holdout.
    judged_on: str = "holdout"

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria)

    def summary(self) -> str:
        text = "; ".join(c.describe() for c in self.criteria)
        if self.judged_on.startswith("out of time"):
            text = f"judged on {self.judged_on}: {text}"
        if self.override is not None:
            text += f" (gate override by {self.override.requested_by}: {self.override.reason})"
        return text

    def record(self) -> str:
        """What the version carries: thresholds applied and the reference they were applied to."""
        return json.dumps(
            {
                **(asdict(self.thresholds) if self.thresholds is not None else {}),
                "reference_version": self.reference_version,
                "reference_auc": self.reference_auc,
                "overridden": self.override is not None,
                "judged_on": self.judged_on,
            },
            sort_keys=True,
        )

    def signed_record(self) -> dict[str, Any]:
        """What the gate signs on the version: the verdict, its thresholds and figures, and
        the override it passed under (its reason clipped, so the record fits a tag)."""
        override = None
        if self.override is not None:
            override = {**asdict(self.override), "reason": self.override.reason[:500]}
        return {
            "passed": self.passed,
            "judged_on": self.judged_on,
            "thresholds": json.loads(self.record()),
            "figures": {c.name: c.value for c in self.criteria},
            "failed": [c.name for c in self.criteria if not c.passed],
            "override": override,
        }


def evaluate_gate(
    report: EvaluationReport, thresholds: GateThresholds, override: GateOverride | None = None
) -> GateResult:
    candidate, baseline, _ = report.gated()
    auc = candidate["auc"]
    accuracy = candidate["accuracy"]
    criteria = [
        GateCriterion("auc >= min_auc", auc, thresholds.min_auc, auc >= thresholds.min_auc),
        GateCriterion(
            "accuracy >= min_accuracy",
            accuracy,
            thresholds.min_accuracy,
            accuracy >= thresholds.min_accuracy,
        ),
    ]
    reference_version, reference_auc = report.best_recent_production()
    if reference_version is not None and reference_auc is not None:
        floor = reference_auc - thresholds.max_auc_drop
        criteria.append(
            GateCriterion(
                f"auc >= best recent production auc (v{reference_version}) - max_auc_drop",
                auc,
                floor,
                auc >= floor,
            )
        )
    if thresholds.beat_baseline and baseline is not None:
        reference = baseline["auc"]
        criteria.append(GateCriterion("auc > baseline auc", auc, reference, auc > reference))
    ceiling = thresholds.max_plausible_auc
    criteria.append(GateCriterion("auc <= max_plausible_auc", auc, ceiling, auc <= ceiling))
    if alone := report.feature_alone:
        feature = max(alone, key=alone.__getitem__)
        criteria.append(
            GateCriterion(
                f"auc of {feature!r} alone <= max_plausible_auc",
                alone[feature],
                ceiling,
                alone[feature] <= ceiling,
            )
        )
    return GateResult(
        criteria, thresholds, reference_version, reference_auc, override, report.judged_on
    )
