"""The evaluation report: a registered candidate and the current production model, side by side."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from churn_assets.ml.evaluation import metrics
from churn_assets.ml.evaluation.decision import ValueCurve
from churn_assets.ml.model import baseline

#: Metrics written on the model version as `holdout_<name>` tags.
VERSION_TAG_METRICS = ("auc", "accuracy", "f1")


@dataclass(frozen=True)
class OutOfTime:
    """Candidate, production and baseline on the out-of-time window."""

    day: str
    window_days: int
    rows: int
    churn_rate: float
    candidate: dict[str, float]
    baseline: dict[str, float]
    production: dict[str, float] | None
    recent_production_auc: dict[str, float]


def out_of_time(
    day: str,
    window_days: int,
    frame: pd.DataFrame,
    target: str,
    candidate: np.ndarray,
    baseline_probability: np.ndarray,
    recent: dict[str, np.ndarray],
    production_version: str | None,
) -> OutOfTime:
    y = frame[target].to_numpy()
    scored = {v: metrics.classification_metrics(y, p) for v, p in recent.items()}
    return OutOfTime(
        day=day,
        window_days=window_days,
        rows=len(frame),
        churn_rate=float(y.mean()),
        candidate=metrics.classification_metrics(y, candidate),
        baseline=metrics.classification_metrics(y, baseline_probability),
        production=scored.get(production_version or ""),
        recent_production_auc={v: m["auc"] for v, m in scored.items()},
    )


@dataclass(frozen=True)
class EvaluationReport:
    """Holdout metrics of a candidate version and, when one exists, of production."""

    model_name: str
    candidate_version: str
    candidate_run_id: str
    holdout_rows: int
    candidate: dict[str, float]
    confusion: dict[str, int]
    production_version: str | None = None
    production: dict[str, float] | None = None
    baseline: dict[str, float] | None = None
    #: The candidate's metrics before its calibration map; None when it has none.
    uncalibrated: dict[str, float] | None = None
    #: The value-maximising threshold and what it earns on the holdout.
    decision: dict[str, float] | None = None
    #: what the decision took an offer to do: "assumed", or the campaigns that measured it
    offer_effect: str = "assumed"
    #: Holdout AUC, on this same holdout, of each recently promoted version (production
    #: included), newest first: what the gate's no-slide rule compares with.
    recent_production_auc: dict[str, float] | None = None
    #: The same comparison on the newest complete window training did not see (see
    #: churn_assets.ml.data.point_in_time); None while history is too short for one.
    out_of_time: OutOfTime | None = None
    #: Holdout AUC of each of the candidate's most important features used alone (see
    #: churn_assets.ml.evaluation.leakage), most important first.
    feature_alone: dict[str, float] | None = None

    @property
    def judged_on(self) -> str:
        """What the gate judges: the out-of-time window when there is one, else the holdout."""
        if self.out_of_time is None:
            return f"holdout ({self.holdout_rows} customers)"
        o = self.out_of_time
        return (
            f"out of time ({o.rows} customers active on {o.day}, churn within {o.window_days} days)"
        )

    def gated(self) -> tuple[dict[str, float], dict[str, float] | None, dict[str, float]]:
        """Candidate metrics, baseline metrics and recent production AUCs the gate uses."""
        if self.out_of_time is not None:
            o = self.out_of_time
            recent = dict(o.recent_production_auc)
        else:
            recent = dict(self.recent_production_auc or {})
            o = None
        if self.production_version is not None:
            production = self.production if o is None else o.production
            if production is not None:
                recent.setdefault(self.production_version, production["auc"])
        if o is None:
            return self.candidate, self.baseline, recent
        return o.candidate, o.baseline, recent

    def best_recent_production(self) -> tuple[str | None, float | None]:
        """The recent production version with the best AUC here (production if none other)."""
        _, _, recent = self.gated()
        if not recent:
            return None, None
        version = max(recent, key=lambda v: (recent[v], int(v) if v.isdigit() else 0))
        return version, recent[version]

    @property
    def auc_change(self) -> float | None:
        """Candidate AUC minus production AUC on the same holdout."""
        if self.production is None:
            return None
        return self.candidate["auc"] - self.production["auc"]

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "auc_change": self.auc_change}, indent=2)

    def to_markdown(self) -> str:
        production = f"production v{self.production_version}"
        columns = {f"candidate v{self.candidate_version}": self.candidate}
        if self.production is not None:
            columns[production] = self.production
        if self.baseline is not None:
            columns[f"baseline ({baseline.NAME})"] = self.baseline
        header = "| metric | " + " | ".join(columns) + " |"
        rule = "|---|" + "---|" * len(columns)
        lines = [
            f"# Evaluation of {self.model_name} v{self.candidate_version}",
            "",
            f"Holdout rows: {self.holdout_rows}. "
            + (
                f"Compared with {production}."
                if self.production_version
                else "No production version to compare with."
            ),
            "",
            header,
            rule,
        ]
        for name in self.candidate:
            lines.append(
                f"| {name} | " + " | ".join(f"{m[name]:.4f}" for m in columns.values()) + " |"
            )
        if self.recent_production_auc:
            lines += [
                "",
                "Recently promoted versions on this holdout (the gate compares with the best): "
                + ", ".join(f"v{v} AUC {auc:.4f}" for v, auc in self.recent_production_auc.items())
                + ".",
            ]
        lines += ["", *self._out_of_time_lines()]
        lines += [
            "",
            "Confusion matrix at threshold 0.5: "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.confusion.items()),
            "",
            *self._calibration_lines(),
            "",
            *self._decision_lines(),
        ]
        return "\n".join(lines) + "\n"

    def _out_of_time_lines(self) -> list[str]:
        if self.out_of_time is None:
            return [
                "Out of time: history is too short for a complete window training did not see; "
                "the gate judges the holdout."
            ]
        o = self.out_of_time
        columns = {f"candidate v{self.candidate_version}": o.candidate}
        if o.production is not None:
            columns[f"production v{self.production_version}"] = o.production
        columns[f"baseline ({baseline.NAME})"] = o.baseline
        return [
            f"Out of time, what the gate judges: the {o.rows} customers active on {o.day}, "
            f"who churned within {o.window_days} days after it (churn rate {o.churn_rate:.1%}); "
            "training saw no label from that window.",
            "",
            "| metric | " + " | ".join(columns) + " |",
            "|---|" + "---|" * len(columns),
            *(
                f"| {name} | " + " | ".join(f"{m[name]:.4f}" for m in columns.values()) + " |"
                for name in ("auc", "precision", "recall", "brier")
            ),
        ]

    def _calibration_lines(self) -> list[str]:
        after = self.candidate
        if self.uncalibrated is None:
            return [
                "Calibration: none applied; LightGBM's probabilities were within tolerance on "
                f"the validation fold (holdout Brier {after['brier']:.4f}, calibration error "
                f"{after['calibration_error']:.4f})."
            ]
        before = self.uncalibrated
        return [
            "Calibration (Platt map fitted on the training rows' validation fold):",
            "",
            "| holdout | before | after |",
            "|---|---|---|",
            *(
                f"| {name} | {before[name]:.4f} | {after[name]:.4f} |"
                for name in ("brier", "calibration_error", "log_loss")
            ),
        ]

    def _decision_lines(self) -> list[str]:
        if self.decision is None:
            return []
        d = self.decision
        return [
            f"Decision threshold {d['decision_threshold']:.2f} (offer cost "
            f"{d['offer_cost']:g}, saved customer value {d['saved_value']:g}, break-even "
            f"probability {d['break_even_probability']:.2f}): offers to "
            f"{d['targeted_share']:.1%} of the holdout, expected value "
            f"{d['expected_value']:,.0f} ({d['expected_value_per_1000_customers']:,.0f} per "
            f"1,000 customers), against {d['expected_value_target_all']:,.0f} "
            f"({d.get('expected_value_target_all_per_1000_customers', 0):,.0f} per 1,000) for an "
            "offer to everyone and 0 for none.",
        ]


def build_report(
    model_name: str,
    candidate_version: str,
    candidate_run_id: str,
    holdout: pd.DataFrame,
    target: str,
    candidate_probability: np.ndarray,
    production_version: str | None,
    production_probability: np.ndarray | None,
    baseline_probability: np.ndarray | None = None,
    uncalibrated_probability: np.ndarray | None = None,
    decision: ValueCurve | None = None,
    recent_production_probability: dict[str, np.ndarray] | None = None,
    oot: OutOfTime | None = None,
) -> EvaluationReport:
    y = holdout[target].to_numpy()
    return EvaluationReport(
        model_name=model_name,
        candidate_version=candidate_version,
        candidate_run_id=candidate_run_id,
        holdout_rows=len(holdout),
        candidate=metrics.classification_metrics(y, candidate_probability),
        confusion=metrics.confusion(y, candidate_probability),
        production_version=production_version,
        production=(
            None
            if production_probability is None
            else metrics.classification_metrics(y, production_probability)
        ),
        baseline=(
            None
            if baseline_probability is None
            else metrics.classification_metrics(y, baseline_probability)
        ),
        uncalibrated=(
            None
            if uncalibrated_probability is None
            else metrics.classification_metrics(y, uncalibrated_probability)
        ),
        decision=(
            None
            if decision is None
            else {
                **decision.summary(),
                "offer_cost": decision.economics.offer_cost,
                "saved_value": decision.economics.saved_value,
            }
        ),
        offer_effect="assumed" if decision is None else decision.effect,
        recent_production_auc=(
            None
            if recent_production_probability is None
            else {
                version: metrics.classification_metrics(y, probability)["auc"]
                for version, probability in recent_production_probability.items()
            }
        ),
        out_of_time=oot,
    )
