"""Campaigns: reproducible, auditable assignment; kept for good; running campaigns held."""

import hashlib
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churn_assets.ml.campaigns import ledger
from churn_assets.ml.campaigns.assignment import Arm, Policy, assign, draws
from churn_assets.ml.model.scoring import write_scores

POLICY = Policy(threshold=0.5, control_fraction=0.1, explore_fraction=0.02)


def _customers(n: int) -> pd.Series:
    return pd.Series([f"{i:04d}-CUST" for i in range(n)])


def test_a_draw_is_recomputed_from_the_two_ids_alone() -> None:
    digest = hashlib.sha256(b"2026-12-04-v3:0042-CUST").digest()
    expected = int.from_bytes(digest[:8], "big") / 2**64
    assert draws("2026-12-04-v3", pd.Series(["0042-CUST"]))[0] == expected


def test_assignment_does_not_depend_on_order_or_on_who_else_was_scored() -> None:
    customers = _customers(5000)
    targeted = np.arange(5000) % 3 == 0
    arms = assign("c1", customers, targeted, POLICY)
    shuffled = np.random.default_rng(0).permutation(5000)[:2000]
    again = assign("c1", customers.iloc[shuffled], targeted[shuffled], POLICY)
    pd.testing.assert_series_equal(again, arms.iloc[shuffled])
    other = assign("c2", customers, targeted, POLICY)
    assert (other != arms).any()  # another campaign draws again


def test_shares_follow_the_policy_within_sampling_error() -> None:
    n = 40_000
    customers = _customers(n)
    targeted = np.arange(n) % 2 == 0
    arms = assign("2026-12-04-v3", customers, targeted, POLICY).to_numpy()
    control = (arms[targeted] == Arm.control).mean()
    explore = (arms[~targeted] == Arm.explore).mean()
    # four standard errors of a binomial share at n/2 each
    assert abs(control - 0.1) < 4 * np.sqrt(0.1 * 0.9 / (n / 2))
    assert abs(explore - 0.02) < 4 * np.sqrt(0.02 * 0.98 / (n / 2))
    assert set(arms[targeted]) == {Arm.treatment, Arm.control}
    assert set(arms[~targeted]) == {Arm.explore, None}


def test_customers_of_a_running_campaign_are_neither_offered_again_nor_explored() -> None:
    customers = _customers(2000)
    targeted = np.arange(2000) < 1000
    busy = frozenset(customers.iloc[::2])
    arms = assign("c", customers, targeted, POLICY, busy).to_numpy()
    held = customers.isin(busy).to_numpy()
    assert (arms[held] == Arm.held).all()
    assert not (arms[~held] == Arm.held).any()


def test_fractions_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="control_fraction must be in"):
        Policy(0.5, 1.0, 0.0)
    with pytest.raises(ValueError, match="explore_fraction must be in"):
        Policy(0.5, 0.1, -0.1)


def _scores(folder: Path, n: int = 3000, version: str = "3") -> Path:
    rng = np.random.default_rng(7)
    probability = np.sort(rng.random(n))[::-1]
    frame = pd.DataFrame(
        {
            "rank": np.arange(1, n + 1),
            "customerID": _customers(n),
            "churn_probability": probability,
            "offer": probability >= 0.5,
            "Contract": "Month-to-month",
            "model_version": version,
        }
    )
    return write_scores(frame, folder).parquet


def _campaign(day: date, version: str = "3", window: int = 90) -> ledger.Campaign:
    return ledger.Campaign(
        id=ledger.campaign_id(day, version),
        campaign_date=day.isoformat(),
        window_days=window,
        policy={"threshold": 0.5, "control_fraction": 0.1, "explore_fraction": 0.02},
        versions={"production": version},
    )


def test_a_campaign_is_kept_with_its_terms_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    scores = _scores(tmp_path)
    first = ledger.start(scores, tmp_path, _campaign(date(2026, 12, 4)), POLICY, "customerID")
    kept = ledger.assignments_file(tmp_path, first.id)
    before = kept.read_bytes()
    again = ledger.start(scores, tmp_path, _campaign(date(2026, 12, 4)), POLICY, "customerID")
    assert again == first
    assert kept.read_bytes() == before  # same campaign, same arms, same file
    assert ledger.campaigns(tmp_path) == [first]
    assert first.scored == 3000
    targets = int((pd.read_parquet(scores)["offer"]).sum())
    assert first.counts["treatment"] + first.counts["control"] == targets
    arms = ledger.read_assignments(tmp_path, first.id)
    assert list(arms.columns) == [
        "customerID",
        "arm",
        "churn_probability",
        "model_version",
        "policy",
    ]
    assert arms["arm"].value_counts().to_dict() == {k: v for k, v in first.counts.items() if v}
    offers = pd.read_csv(tmp_path / ledger.OFFERS_FILE, dtype={"customerID": str})
    assert set(offers["arm"]) == {"treatment", "explore"}
    assert len(offers) == first.offered
    assert (offers["campaign"] == first.id).all()
    assert pq.read_metadata(kept).metadata[b"churn.campaign"]


def test_a_later_campaign_holds_the_running_one_until_its_window_closes(tmp_path: Path) -> None:
    scores = _scores(tmp_path)
    first = ledger.start(scores, tmp_path, _campaign(date(2026, 12, 4)), POLICY, "customerID")
    week_later = ledger.start(
        scores, tmp_path, _campaign(date(2026, 12, 11), "4"), POLICY, "customerID"
    )
    # everyone the first assigned is held: all the targets, and the explored
    assert first.counts["held"] == 0
    assert week_later.counts["held"] == sum(first.counts.values())
    assert week_later.counts["treatment"] == week_later.counts["control"] == 0
    closed = ledger.start(scores, tmp_path, _campaign(date(2027, 3, 4), "5"), POLICY, "customerID")
    # the first closed on 2027-03-04; the second still runs: only those it explored are held
    assert closed.counts["held"] == week_later.counts["explore"]
    assert closed.counts["treatment"] > 0
    assert [c.id for c in ledger.campaigns(tmp_path)] == [first.id, week_later.id, closed.id]


def test_offers_are_written_when_the_first_batch_of_scores_offers_nobody(tmp_path: Path) -> None:
    """An uplift model may value none of the customers most at risk: the offers file still
    gets the later batches' offers, in one schema."""
    n = 3000
    rng = np.random.default_rng(3)
    probability = np.sort(rng.random(n))[::-1]
    value = np.where(np.arange(n) < 1500, -10.0, 25.0)  # nobody in the first half pays
    frame = pd.DataFrame(
        {
            "rank": np.arange(1, n + 1),
            "customerID": _customers(n),
            "churn_probability": probability,
            "offer": value > 0,
            "uplift": (value + 100) / 500,
            "expected_incremental_value": value,
            "uplift_version": "1",
            "model_version": "3",
        }
    )
    scores = tmp_path / "scores.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), scores, row_group_size=500)
    quiet = Policy(threshold=0.5, control_fraction=0.1, explore_fraction=0.0)
    done = ledger.start(scores, tmp_path, _campaign(date(2026, 12, 4)), quiet, "customerID")
    offers = pd.read_csv(tmp_path / ledger.OFFERS_FILE)
    assert len(offers) == done.counts["treatment"] > 1000
    assert (offers["expected_incremental_value"] > 0).all()
    assert list(offers.columns[:3]) == ["campaign", "arm", "policy"]
