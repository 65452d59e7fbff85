"""Evaluation plots as PNG bytes, for MLflow artifacts and Markdown in Dagster metadata."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or in CI

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from churn_assets.ml.evaluation.decision import ValueCurve

# Curves on millions of rows are drawn from at most this many points.
_MAX_CURVE_POINTS = 2_000


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return buffer.getvalue()


def _thin(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    step = max(1, len(arrays[0]) // _MAX_CURVE_POINTS)
    return tuple(a[::step] for a in arrays)


def markdown_image(png: bytes, title: str) -> str:
    """Inline the PNG so the Dagster UI shows it without access to the artifact store."""
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def feature_importance_plot(importance: Mapping[str, float], top: int = 20) -> bytes:
    ranked = sorted(importance.items(), key=lambda item: item[1])[-top:]
    figure, axis = plt.subplots(figsize=(6, 5))
    axis.barh([name for name, _ in ranked], [value for _, value in ranked], color="#4c72b0")
    axis.set_xlabel("total gain")
    axis.set_title("LightGBM feature importance")
    return _png(figure)


def roc_plot(y_true: np.ndarray, curves: Mapping[str, np.ndarray]) -> bytes:
    figure, axis = plt.subplots(figsize=(5, 5))
    for label, probability in curves.items():
        fpr, tpr, _ = roc_curve(y_true, probability)
        axis.plot(*_thin(fpr, tpr), label=label)
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (holdout)")
    axis.legend(loc="lower right")
    return _png(figure)


def precision_recall_plot(y_true: np.ndarray, curves: Mapping[str, np.ndarray]) -> bytes:
    figure, axis = plt.subplots(figsize=(5, 5))
    for label, probability in curves.items():
        precision, recall, _ = precision_recall_curve(y_true, probability)
        axis.plot(*_thin(recall, precision), label=label)
    axis.axhline(float(np.mean(y_true)), linestyle="--", color="grey", label="churn rate")
    axis.set(xlabel="recall", ylabel="precision", title="Precision-recall (holdout)")
    axis.legend(loc="upper right")
    return _png(figure)


def calibration_plot(y_true: np.ndarray, curves: Mapping[str, np.ndarray]) -> bytes:
    figure, axis = plt.subplots(figsize=(5, 5))
    for label, probability in curves.items():
        observed, predicted = calibration_curve(y_true, probability, n_bins=10, strategy="quantile")
        axis.plot(predicted, observed, marker="o", label=label)
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    axis.set(xlabel="predicted churn probability", ylabel="observed churn rate")
    axis.set_title("Calibration (holdout)")
    axis.legend(loc="upper left")
    return _png(figure)


def value_curve_plot(curve: ValueCurve) -> bytes:
    """Expected value of offers by threshold, with the chosen threshold and break-even marked."""
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(curve.thresholds, curve.values, color="#4c72b0", label="expected value")
    axis.axvline(curve.threshold, color="#dd8452", label=f"chosen {curve.threshold:.2f}")
    axis.axvline(
        curve.economics.break_even,
        linestyle=":",
        color="grey",
        label=f"break-even {curve.economics.break_even:.2f}",
    )
    axis.axhline(0, color="black", linewidth=0.5)
    axis.set(
        xlabel="offer to customers with churn probability >= threshold",
        ylabel="expected value on the holdout",
        title="Value of retention offers (holdout)",
    )
    axis.legend(loc="upper right")
    return _png(figure)


def learning_curve_plot(rows: list[int], aucs: list[float], available: int) -> bytes:
    """Holdout AUC by training rows (log scale); the rows the export had, if more, marked."""
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(rows, aucs, marker="o", color="#4c72b0", label="holdout AUC")
    if available > rows[-1]:
        axis.axvline(available, linestyle=":", color="grey", label=f"available {available:,}")
    axis.set_xscale("log")
    axis.set(xlabel="training rows", ylabel="holdout AUC", title="Learning curve")
    axis.legend(loc="lower right")
    return _png(figure)


def realized_plot(table: pd.DataFrame, floor: float | None = None) -> bytes:
    """Realized AUC per scoring date, one line per model version; hollow while still open.
    Each version's holdout AUC (what the gate judged) dashed in its colour over its dates, and
    the gate's floor in grey."""
    figure, axis = plt.subplots(figsize=(7, 4))
    for version, scored in table.groupby("model_version", sort=False):
        rows = scored.dropna(subset=["realized_auc"])
        if rows.empty:
            continue
        days = pd.to_datetime(rows["scoring_date"])
        (line,) = axis.plot(days, rows["realized_auc"], label=f"v{version}")
        holdout = rows["holdout_auc"].dropna() if "holdout_auc" in rows else pd.Series()
        if not holdout.empty:
            span = [days.min() - pd.Timedelta(days=2), days.max() + pd.Timedelta(days=2)]
            axis.plot(span, [holdout.iloc[0]] * 2, linestyle="--", color=line.get_color())
        complete = rows["window_complete"].to_numpy(dtype=bool)
        axis.scatter(days[complete], rows["realized_auc"][complete], color=line.get_color())
        axis.scatter(
            days[~complete],
            rows["realized_auc"][~complete],
            facecolors="none",
            edgecolors=line.get_color(),
        )
    if floor is not None and axis.lines:
        axis.axhline(floor, color="grey", linewidth=1, label=f"gate floor {floor:.2f}")
    axis.set(
        xlabel="scoring date",
        ylabel="AUC",
        title="Realized AUC of sent scores (dashed: the version's holdout AUC)",
    )
    if axis.get_legend_handles_labels()[0]:
        axis.legend(loc="lower left", fontsize=8)
    figure.autofmt_xdate()
    return _png(figure)


def campaign_plot(table: pd.DataFrame, qini: pd.DataFrame, latest: str) -> bytes:
    """Left: each campaign's churn reduction with its 95% interval (hollow while its window is
    open). Right: the Qini curve of the newest campaign against random targeting."""
    figure, (effects, curve) = plt.subplots(1, 2, figsize=(11, 4))
    rows = table.dropna(subset=["reduction"])
    if not rows.empty:
        x = np.arange(len(rows))
        middle = rows["reduction"].to_numpy(dtype=float)
        spread = [middle - rows["reduction_low"].to_numpy(dtype=float)]
        spread.append(rows["reduction_high"].to_numpy(dtype=float) - middle)
        complete = rows["window_complete"].to_numpy(dtype=bool)
        effects.errorbar(x, middle, yerr=np.vstack(spread), fmt="none", ecolor="tab:blue")
        effects.scatter(x[complete], middle[complete], color="tab:blue")
        effects.scatter(x[~complete], middle[~complete], facecolors="none", edgecolors="tab:blue")
        challenger = rows.get("policy", pd.Series("", index=rows.index)) == "challenger"
        labels = rows["campaign"].where(~challenger, rows["campaign"] + " (challenger)")
        effects.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    effects.axhline(0, color="grey", linewidth=0.8)
    effects.set(ylabel="churn rate, control - treatment", title="Churn prevented per offer")
    if not qini.empty:
        share, retained = qini["share_targeted"], qini["retained"]
        curve.plot(share, retained, label="by churn probability")
        curve.plot([0, 1], [0, retained.iloc[-1]], linestyle="--", color="grey", label="random")
        curve.legend(loc="upper left")
    curve.set(
        xlabel="share of targets, most at risk first",
        ylabel="customers retained",
        title=f"Qini curve, {latest}",
    )
    return _png(figure)


def customer_plot(days: list[str], probability: list[float], offered: list[bool]) -> bytes:
    """One customer's churn probability at each kept scoring, the offers circled: the
    console's customer page."""
    figure, axis = plt.subplots(figsize=(7, 2.6))
    when = pd.to_datetime(pd.Series(days))
    chance = np.asarray(probability, dtype=float)
    offer = np.asarray(offered, dtype=bool)
    axis.plot(when, chance, marker="o", color="#12355b", label="churn probability")
    if offer.any():
        axis.scatter(
            when[offer],
            chance[offer],
            s=140,
            facecolors="none",
            edgecolors="#a4161a",
            linewidths=2,
            label="offered",
        )
    axis.set(ylim=(0, 1), ylabel="churn probability")
    if when.nunique() == 1:  # one scoring: a fortnight around it, not years of empty axis
        axis.set_xlim(when.iloc[0] - pd.Timedelta(days=7), when.iloc[0] + pd.Timedelta(days=7))
    axis.legend(loc="upper left", fontsize=8)
    figure.autofmt_xdate()
    return _png(figure)
