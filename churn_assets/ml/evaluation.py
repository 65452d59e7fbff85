"""The evaluation report: a registered candidate and the current production model, side by side."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from churn_assets.ml import baseline, metrics
from churn_assets.ml.splitting import features_and_target
from churn_assets.ml.training import churn_probability

#: Metrics written on the model version as `holdout_<name>` tags.
VERSION_TAG_METRICS = ("auc", "accuracy", "f1")


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
        lines += [
            "",
            "Confusion matrix at threshold 0.5: "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.confusion.items()),
        ]
        return "\n".join(lines) + "\n"


def score_model_uri(model_uri: str, holdout: pd.DataFrame) -> np.ndarray:
    """Churn probabilities of a registered model, loaded back from the registry."""
    model: Any = mlflow.sklearn.load_model(model_uri)
    features, _ = features_and_target(holdout)
    return np.asarray(churn_probability(model, features))


def build_report(
    model_name: str,
    candidate_version: str,
    candidate_run_id: str,
    holdout: pd.DataFrame,
    candidate_probability: np.ndarray,
    production_version: str | None,
    production_probability: np.ndarray | None,
    baseline_probability: np.ndarray | None = None,
) -> EvaluationReport:
    y = holdout["Churn"].to_numpy()
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
    )
