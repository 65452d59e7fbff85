"""Calibration, the cost-based threshold, tuning and reasons, on generated customers.

The graph-level behaviour (report, version tags, MLflow trials, scores file) is in
`test_decisions_graph.py`; the API's side is in `test_serving.py`.
"""

import time
from dataclasses import replace

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churn_assets.ml.data.cleaning import clean_customers
from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.splitting import CustomerSplits, features_and_target, split_customers
from churn_assets.ml.data.synthetic import generate_customers
from churn_assets.ml.evaluation import decision, metrics
from churn_assets.ml.model import features, reasons, tuning
from churn_assets.ml.model.calibration import (
    CalibratedChurnClassifier,
    CalibrationMode,
    calibrate,
    uncalibrated_probability,
)
from churn_assets.ml.model.hyperparameters import DEFAULTS
from churn_assets.ml.model.training import TrainingChoices, churn_probability, train_churn_model
from churn_assets.ml.settings import ChurnSettings

TELCO = default_contract()


@pytest.fixture(scope="module")
def splits() -> CustomerSplits:
    customers, _ = clean_customers(generate_customers(6000, 21).astype(str), TELCO)
    return split_customers(customers, TELCO, 0.25, 42)


@pytest.fixture(scope="module")
def trained(splits: CustomerSplits):
    train_x, _ = features_and_target(splits.train, TELCO)
    return train_churn_model(
        features.fit_preprocessor(train_x, TELCO), splits.train, TELCO, DEFAULTS, _choices()
    )


def _choices() -> TrainingChoices:
    return TrainingChoices.from_settings(ChurnSettings())


def _raw(model: lgb.LGBMClassifier, matrix) -> np.ndarray:
    return model.predict(matrix, raw_score=True)


# --- calibration ---------------------------------------------------------------------------


def test_honest_probabilities_are_left_alone(trained, splits: CustomerSplits) -> None:
    """LightGBM fitted on log loss is close to calibrated here: auto must not 'fix' noise."""
    assert trained.calibration.mode is CalibrationMode.auto
    assert not trained.calibration.applied
    assert trained.calibration.p_value >= 0.01
    model = trained.pipeline.named_steps["model"]
    assert isinstance(model, CalibratedChurnClassifier) and not model.calibrated
    holdout_x, _ = features_and_target(splits.holdout, TELCO)
    np.testing.assert_allclose(
        churn_probability(trained.pipeline, holdout_x),
        uncalibrated_probability(trained.pipeline, splits.holdout),
        rtol=0,
        atol=1e-12,
    )


def _overconfident(splits: CustomerSplits):
    """A model trained with class weights, as teams do for imbalance: churn overstated."""
    train_x, _ = features_and_target(splits.train, TELCO)
    preprocessor = features.fit_preprocessor(train_x, TELCO)
    model = lgb.LGBMClassifier(
        n_estimators=150, learning_rate=0.05, num_leaves=7, scale_pos_weight=4.0, verbose=-1
    )
    fit_rows = splits.train.sample(frac=0.8, random_state=0)
    validation = splits.train.drop(fit_rows.index)
    fit_x, fit_y = features_and_target(fit_rows, TELCO)
    model.fit(preprocessor.transform(fit_x), fit_y)
    validation_x, validation_y = features_and_target(validation, TELCO)
    return preprocessor, model, preprocessor.transform(validation_x), validation_y.to_numpy()


def test_off_probabilities_are_calibrated_on_training_rows_and_the_holdout_improves(
    splits: CustomerSplits,
) -> None:
    preprocessor, model, validation_x, validation_y = _overconfident(splits)
    raw = _raw(model, validation_x)
    wrapped, fit = calibrate(model, raw, validation_y, CalibrationMode.auto, 0.01)
    assert fit.applied and fit.p_value < 1e-6
    assert fit.validation_ece_after < fit.validation_ece_before / 3
    holdout_x, holdout_y = features_and_target(splits.holdout, TELCO)
    matrix = preprocessor.transform(holdout_x)
    before = model.predict_proba(matrix)[:, 1]
    after = wrapped.predict_proba(matrix)[:, 1]
    # Measured on customers the map never saw: honest probabilities, same ranking.
    assert (
        metrics.calibration_error(holdout_y, after)
        < metrics.calibration_error(holdout_y, before) / 3
    )
    assert (
        metrics.classification_metrics(holdout_y, after)["brier"]
        < (metrics.classification_metrics(holdout_y, before)["brier"])
    )
    assert roc_auc_score(holdout_y, after) == pytest.approx(roc_auc_score(holdout_y, before))
    np.testing.assert_allclose(wrapped.uncalibrated_proba(matrix), before, atol=1e-12)


def test_modes_never_and_always(splits: CustomerSplits) -> None:
    _, model, validation_x, validation_y = _overconfident(splits)
    raw = _raw(model, validation_x)
    never, fit = calibrate(model, raw, validation_y, CalibrationMode.never, 0.01)
    assert not fit.applied and not never.calibrated
    always, fit = calibrate(model, raw, validation_y, CalibrationMode.always, 0.01)
    assert fit.applied and always.calibrated


# --- the cost-based threshold --------------------------------------------------------------


def test_value_curve_counts_offers_and_saved_churners() -> None:
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.45, 0.3, 0.2, 0.1, 0.05])
    curve = decision.value_curve(y, p, decision.Economics(offer_cost=100, saved_value=500))
    at = dict(zip(np.round(curve.thresholds, 2), curve.values, strict=True))
    assert at[0.85] == 500 - 100  # one offer, one churner saved
    assert at[0.75] == 2 * 500 - 2 * 100
    assert at[0.5] == 2 * 500 - 3 * 100
    assert at[0.4] == 3 * 500 - 4 * 100  # the best: every churner, one wasted offer
    assert curve.value_target_all == 3 * 500 - 8 * 100
    # 0.31 to 0.45 all earn 1100; the highest wins the tie (fewest offers for the value).
    assert curve.threshold == 0.45 and curve.best_value == 1100 and curve.best_targeted == 4
    assert curve.version_tags() == {
        "decision_threshold": "0.45",
        "decision_offer_cost": "100",
        "decision_saved_value": "500",
        "decision_effect": "assumed",
    }
    assert decision.threshold_from_tags(curve.version_tags()) == 0.45
    assert decision.threshold_from_tags({}) is None


def test_a_measured_effect_values_offers_by_the_churn_they_change() -> None:
    """Offers pay where they change churn, whoever leaves: the measured reduction by band
    replaces 'a churner offered is a churner saved'."""
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.45, 0.3, 0.2, 0.1, 0.05])
    measured = decision.OfferEffect(
        "measured on campaigns a, b",
        lower=np.array([0.0, 0.25, 0.6]),
        reduction=np.array([0.0, 0.1, 0.4]),  # lost causes at the top would read otherwise
    )
    assert measured.at(np.array([0.05, 0.25, 0.59, 0.6, 0.99])).tolist() == [0, 0.1, 0.1, 0.4, 0.4]
    economics = decision.Economics(offer_cost=100, saved_value=500)
    curve = decision.value_curve(y, p, economics, measured)
    at = dict(zip(np.round(curve.thresholds, 2), curve.values, strict=True))
    assert at[0.85] == pytest.approx(500 * 0.4 - 100)
    assert at[0.6] == pytest.approx(3 * (500 * 0.4 - 100))
    assert at[0.4] == pytest.approx(3 * 100 + (500 * 0.1 - 100))  # the 0.45 offer loses 50
    # 0.46 to 0.70 all earn 300; the highest wins the tie (not 0.45, as the assumed effect)
    assert curve.threshold == 0.7 and curve.best_targeted == 3
    assert curve.value_target_all == pytest.approx(300 - 2 * 50 - 3 * 100)
    assert curve.version_tags()["decision_effect"] == "measured on campaigns a, b"


def test_cheaper_offers_lower_the_threshold(trained, splits: CustomerSplits) -> None:
    holdout_x, holdout_y = features_and_target(splits.holdout, TELCO)
    p = churn_probability(trained.pipeline, holdout_x)
    thresholds = [
        decision.value_curve(holdout_y, p, decision.Economics(cost, 500)).threshold
        for cost in (25, 100, 250)
    ]
    assert thresholds[0] < thresholds[1] < thresholds[2]
    # With honest probabilities the optimum sits near break-even (cost / value = 0.2).
    assert abs(thresholds[1] - 0.2) <= 0.08


# --- tuning --------------------------------------------------------------------------------


def test_search_tries_the_defaults_first_and_stops_within_budget() -> None:
    seen = []

    def evaluate(h):
        time.sleep(0.05)
        return abs(h.learning_rate - 0.07), 0.8, 10  # pretend 0.07 is best

    result = tuning.search(evaluate, DEFAULTS, budget_s=0.5, max_trials=100, on_trial=seen.append)
    assert result.trials[0].hyperparameters == DEFAULTS
    # The budget rule, checked on the trials' own durations rather than a wall-clock bound a
    # loaded machine can miss: a trial started only while the time spent plus the mean trial
    # fit the budget, and the search stopped once they no longer did.
    spent = [t.seconds for t in result.trials]
    for k in range(1, len(spent)):
        assert sum(spent[:k]) * (1 + 1 / k) <= 0.5, spent
    assert result.seconds * (1 + 1 / len(spent)) > 0.5, spent
    assert seen == result.trials
    assert result.best.validation_log_loss == min(t.validation_log_loss for t in result.trials)
    again = tuning.search(evaluate, DEFAULTS, budget_s=60, max_trials=4)
    assert len(again.trials) == 4
    draws = [t.hyperparameters for t in again.trials]
    assert draws == [t.hyperparameters for t in tuning.search(evaluate, DEFAULTS, 60, 4).trials]
    for h in draws[1:]:
        assert 4 <= h.num_leaves <= 63 and 0.01 <= h.learning_rate <= 0.15


def test_tuned_training_keeps_the_best_validation_trial(splits: CustomerSplits) -> None:
    train_x, _ = features_and_target(splits.train, TELCO)
    fast = replace(DEFAULTS, n_estimators=200)
    result = train_churn_model(
        features.fit_preprocessor(train_x, TELCO),
        splits.train,
        TELCO,
        fast,
        # the trial count ends the search, never the clock: a loaded machine took 22 s a trial
        replace(_choices(), tuning_budget_s=3600, tuning_max_trials=3),
    )
    assert result.tuning is not None and len(result.tuning.trials) == 3
    assert result.hyperparameters == result.tuning.best.hyperparameters
    assert result.validation_metrics["log_loss"] == pytest.approx(
        result.tuning.best.validation_log_loss
    )


# --- reasons -------------------------------------------------------------------------------


def test_contributions_are_exact_and_reasons_read_in_export_terms(
    trained, splits: CustomerSplits
) -> None:
    customers = splits.holdout.head(200)
    explainer = reasons.Explainer.from_pipeline(trained.pipeline)
    matrix = trained.pipeline.named_steps["preprocess"].transform(
        customers[list(explainer.columns)]
    )
    contributions = explainer.contributions(np.asarray(matrix, dtype=np.float64))
    raw = trained.pipeline.named_steps["model"].raw_score(matrix)
    np.testing.assert_allclose(contributions.sum(axis=1), raw, atol=1e-9)

    top = reasons.frame_reasons(trained.pipeline, customers, 3)
    assert len(top) == 200 and all(len(r) == 3 for r in top)
    for row, customer_reasons in zip(range(200), top, strict=True):
        sizes = [abs(r["contribution"]) for r in customer_reasons]
        assert sizes == sorted(sizes, reverse=True)
        largest = np.abs(contributions[row, :-1]).max()
        assert sizes[0] == pytest.approx(largest)
        for reason in customer_reasons:
            column = reason["feature"]
            assert column in customers.columns
            assert reason["text"] == (
                f"{column} = {reason['value']}: {reason['contribution']:+.2f}"
            )
    contract = next(r for rs in top for r in rs if r["feature"] == "Contract")
    assert contract["value"] in ("Month-to-month", "One year", "Two year")
    everything = reasons.frame_reasons(trained.pipeline, customers.head(1), 50)
    assert len(everything[0]) == len(explainer.columns)  # asking for more gives all


def test_reasons_explain_the_scores_ranking(trained, splits: CustomerSplits) -> None:
    """Month-to-month contracts push towards churn in the generator; the model agrees."""
    customers = splits.holdout
    top = reasons.frame_reasons(trained.pipeline, customers, reasons.MAX_REASONS)
    contract = pd.Series(
        [next(r["contribution"] for r in rs if r["feature"] == "Contract") for rs in top]
    )
    monthly = (customers["Contract"] == "Month-to-month").to_numpy()
    assert contract[monthly].mean() > 0 > contract[~monthly].mean()


def test_a_map_that_would_reverse_the_ranking_is_never_applied(splits: CustomerSplits) -> None:
    """A model that ranks backwards is the gate's to refuse, not calibration's to hide."""
    train_x, train_y = features_and_target(splits.train, TELCO)
    preprocessor = features.fit_preprocessor(train_x, TELCO)
    backwards = lgb.LGBMClassifier(n_estimators=50, num_leaves=7, verbose=-1)
    backwards.fit(preprocessor.transform(train_x), 1 - train_y)
    holdout_x, holdout_y = features_and_target(splits.holdout, TELCO)
    matrix = preprocessor.transform(holdout_x)
    raw = _raw(backwards, matrix)
    model, fit = calibrate(backwards, raw, holdout_y.to_numpy(), CalibrationMode.always, 0.01)
    assert fit.slope == 1.0 and not fit.applied and not model.calibrated


def test_the_transform_fitted_on_a_few_rows_equals_the_one_fitted_on_all(
    splits: CustomerSplits, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_x, _ = features_and_target(splits.train, TELCO)
    # levels learned from the rows, not listed, and one that first appears after the rows the
    # transform is fitted on: it is still known
    column = TELCO.categorical_features[-1]
    fields = TELCO.model_dump(by_alias=True, exclude_none=True)
    del fields["features"][column]["levels"]
    contract = type(TELCO).model_validate(fields)
    assert column not in contract.listed_levels
    train_x = train_x.copy()
    train_x[column] = train_x[column].cat.add_categories(["late level"])
    train_x.loc[train_x.index[-1], column] = "late level"
    monkeypatch.setattr(features, "FIT_ROWS", 50)
    few = features.fit_preprocessor(train_x, contract)
    monkeypatch.setattr(features, "FIT_ROWS", len(train_x))
    every = features.fit_preprocessor(train_x, contract)
    assert features.encoded_levels(few) == features.encoded_levels(every)
    assert "late level" in features.encoded_levels(few)[column]
    assert features.output_features(few) == features.output_features(every)
    np.testing.assert_array_equal(few.transform(train_x), every.transform(train_x))
