"""Measured offer effects: the interval's arithmetic, the window's edges, the check's verdicts,
and the measurement against a synthetic world whose answer to offers is known."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from churn_assets.ml.campaigns import effect, ledger
from churn_assets.ml.campaigns.assignment import Arm, Policy, assign
from churn_assets.ml.data.history import ExtractKind
from churn_assets.ml.data.synthetic_history import NEVER, Response, make_history

#: statsmodels 0.14's confint_proportions_2indep(x1, n1, x2, n2, method="newcomb",
#: compare="diff"), computed once outside the project (statsmodels is not a dependency).
NEWCOMBE = [
    ((56, 70, 48, 80), (0.05243147240236498, 0.33387265403690614)),
    ((9, 10, 3, 10), (0.1705227239345029, 0.809017973535488)),
    ((0, 120, 5, 130), (-0.0868783993577732, -0.0004771794499574544)),
    ((30, 1200, 22, 130), (-0.2183268517023229, -0.08850430989825779)),
]


@pytest.mark.parametrize(("counts", "expected"), NEWCOMBE)
def test_the_interval_is_newcombes(
    counts: tuple[int, int, int, int], expected: tuple[float, float]
) -> None:
    assert effect.newcombe(*counts) == pytest.approx(expected, abs=1e-12)


def _campaign(day: str = "2026-11-02", window: int = 21) -> ledger.Campaign:
    return ledger.Campaign(
        id=f"{day}-v1",
        campaign_date=day,
        window_days=window,
        policy={"threshold": 0.5, "control_fraction": 0.5, "explore_fraction": 0.0},
        versions={"production": "1"},
    )


def test_a_churn_counts_only_inside_the_window_and_the_arms_are_compared() -> None:
    assignments = pd.DataFrame(
        {
            "customerID": ["t1", "t2", "t3", "t4", "c1", "c2", "c3", "c4"],
            "arm": ["treatment"] * 4 + ["control"] * 4,
            "churn_probability": [0.9, 0.8, 0.7, 0.6, 0.9, 0.8, 0.7, 0.6],
            "model_version": "1",
        }
    )
    churned = pd.Series(
        {
            "t1": "2026-11-02",  # on the campaign's day: before its offers, not an outcome
            "t2": "2026-11-23",  # the window's last day
            "c1": "2026-11-09",
            "c2": "2026-11-16",
            "c3": "2026-11-24",  # a day after the window
        }
    )
    judged = effect.judge(_campaign(), assignments, churned, date(2026, 12, 31))
    assert judged is not None and judged.window_complete and judged.days_observed == 21
    t = judged.targets
    assert t is not None
    assert (t.churn_rate_offered, t.churn_rate_held_back) == (0.25, 0.5)
    assert t.reduction == 0.25
    assert (t.reduction_low, t.reduction_high) == pytest.approx(effect.newcombe(2, 4, 1, 4))
    row = judged.figures(offer_cost=100, saved_value=500)
    assert row["retained_per_1000_offers"] == 250
    assert row["value_per_1000_offers"] == 1000 * (0.25 * 500 - 100)
    # seven days in, only what arrived by then
    early = effect.judge(_campaign(), assignments, churned, date(2026, 11, 9))
    assert early is not None and not early.window_complete and early.days_observed == 7
    assert early.targets is not None and early.targets.churn_rate_held_back == 0.25
    assert effect.judge(_campaign(), assignments, churned, date(2026, 11, 2)) is None


def _table(*rows: tuple[bool, float, float, float, int, int, float, float]) -> pd.DataFrame:
    names = [
        "window_complete",
        "reduction",
        "reduction_low",
        "reduction_high",
        "treated",
        "control",
        "churn_rate_treatment",
        "churn_rate_control",
    ]
    table = pd.DataFrame(rows, columns=names)
    table.insert(0, "campaign", [f"c{i}" for i in range(len(rows))])
    return table


def test_the_check_warns_when_offers_push_customers_out_or_prove_nothing() -> None:
    assert effect.offers_verdict(pd.DataFrame(), 3).passed
    still_open = _table((False, -0.2, -0.3, -0.1, 500, 100, 0.3, 0.1))
    assert effect.offers_verdict(still_open, 3).passed
    harmful = _table((True, -0.2, -0.3, -0.1, 500, 100, 0.3, 0.1))
    verdict = effect.offers_verdict(harmful, 3)
    assert not verdict.passed
    assert "offers pushed customers out in campaign c0: churn +0.200" in verdict.description
    # the worst of two harmful campaigns is named
    two = _table(
        (True, -0.1, -0.15, -0.01, 500, 100, 0.2, 0.1), (True, -0.3, -0.4, -0.2, 500, 100, 0.4, 0.1)
    )
    assert "in campaign c1: churn +0.300" in effect.offers_verdict(two, 3).description
    # each campaign's interval crosses zero, the pooled one lies below it
    slight = _table(*[(True, -0.05, -0.12, 0.01, 300, 100, 0.15, 0.1)] * 4)
    verdict = effect.offers_verdict(slight, 3)
    assert not verdict.passed and verdict.pooled is not None
    assert verdict.pooled.reduction_high < 0
    assert verdict.description.startswith("offers pushed customers out over the closed campaigns")
    working = _table(*[(True, 0.1, 0.05, 0.15, 500, 200, 0.1, 0.2)] * 3)
    verdict = effect.offers_verdict(working, 3)
    assert verdict.passed and verdict.pooled is not None and verdict.pooled.distinguishable
    nothing = _table(*[(True, 0.0, -0.05, 0.05, 500, 200, 0.1, 0.1)] * 3)
    assert effect.offers_verdict(nothing.iloc[:2], 3).passed  # too few closed to say
    verdict = effect.offers_verdict(nothing, 3)
    assert not verdict.passed
    assert "after 3 closed campaigns the offers' effect is not distinguishable" in (
        verdict.description
    )


def test_the_world_answers_offers_by_its_truth() -> None:
    history = make_history(3000, 8, ExtractKind.full, seed=11)
    customers = history.churn_week.index
    active = history.churn_week.to_numpy() > 2
    everyone = customers[active]
    truth = history.offer_effect(everyone, 2, 3)
    response = history.response.reindex(everyone).to_numpy()
    assert set(truth[response == Response.sure_thing]) == {0.0}
    assert set(truth[response == Response.lost_cause]) == {0.0}
    assert set(truth[response == Response.persuadable]) <= {0.0, 1.0}
    assert (truth[response == Response.sleeping_dog] == -1).all()
    history.offer(everyone, 2, 3)
    after = history.churn_week.reindex(everyone).to_numpy()
    assert (after[response == Response.persuadable] == NEVER).all()
    dogs = after[response == Response.sleeping_dog]
    assert ((dogs > 2) & (dogs <= 5)).all()


def test_the_joint_interval_is_newcombes_at_the_bonferroni_level() -> None:
    judged = effect.Comparison.of(np.arange(130) < 5, np.arange(120) < 0)
    assert judged is not None
    assert judged.interval(1) == pytest.approx((judged.reduction_low, judged.reduction_high))
    # 8 together: each at 1 - 0.05/8, z = 2.734 (wider, and still inside [-1, 1])
    assert judged.interval(8) == pytest.approx(effect.newcombe(0, 120, 5, 130, z=2.7344), abs=1e-4)
    low, high = judged.interval(8)
    assert -1 <= low < judged.reduction_low and judged.reduction_high < high <= 1


def test_measured_effects_cover_the_worlds_truth() -> None:
    """Twenty campaigns on fresh worlds: randomized arms, the world answers, the interval is
    judged against the true reduction over the targets (95% intervals: at least 16 of 20; the
    twenty joint intervals: all of them, as they hold together 95% of the time)."""
    covered, together, errors = 0, 0, []
    for seed in range(20):
        history = make_history(4000, 8, ExtractKind.full, seed=100 + seed)
        week, window = 1, 3
        active = history.churn_week[history.churn_week > week].index
        people = history.people.reindex(active)
        targeted = (people["Contract"] == "Month-to-month").to_numpy()
        arms = assign(f"c{seed}", pd.Series(active), targeted, Policy(0.5, 0.3, 0.0))
        arm = arms.to_numpy()
        targets = active[targeted]
        truth = float(history.offer_effect(targets, week, window).mean())
        history.offer(active[arm == Arm.treatment], week, window)
        left = history.left_within(active, week, window)
        measured = effect.Comparison.of(left[arm == Arm.treatment], left[arm == Arm.control])
        assert measured is not None
        covered += measured.reduction_low <= truth <= measured.reduction_high
        low, high = measured.interval(20)
        together += low <= truth <= high
        errors.append(measured.reduction - truth)
    assert covered >= 16, covered
    assert together == 20, together
    assert abs(float(np.mean(errors))) < 0.01  # unbiased: the errors average out
