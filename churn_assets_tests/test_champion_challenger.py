"""Champion/challenger campaigns: a second, independent draw splits the customers between two
policies, each with its own control group; each policy judged on its half and the two compared
by value per customer; through the real graph with a challenger threshold and version."""

from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from churn_assets.ml.campaigns import effect, ledger, measured
from churn_assets.ml.campaigns.assignment import Arm, Policy, PolicyName, challenged
from churn_assets.ml.model.scoring import write_scores
from churn_assets_tests.conftest import ChurnEnv, failure_messages, materialize_graph
from churn_assets_tests.test_campaigns import POLICY, _campaign, _customers, _scores

DAY = date(2026, 12, 4)


def _challenger_scores(folder: Path, n: int = 3000) -> Path:
    """The same customers scored by another version, targeting a quarter of them."""
    rng = np.random.default_rng(8)
    probability = np.sort(rng.random(n))[::-1]
    customers = _customers(n).to_numpy()[rng.permutation(n)]
    frame = pd.DataFrame(
        {
            "rank": np.arange(1, n + 1),
            "customerID": customers,
            "churn_probability": probability,
            "offer": probability >= 0.75,
            "Contract": "Month-to-month",
            "model_version": "2",
        }
    )
    return write_scores(frame, folder / ledger.CHALLENGER_FOLDER).parquet


def test_each_customer_follows_one_policy_drawn_apart_from_the_control_draw(
    tmp_path: Path,
) -> None:
    scores = _scores(tmp_path)
    challenger = ledger.Challenger(_challenger_scores(tmp_path), Policy(0.75, 0.1, 0.02), share=0.3)
    terms = _campaign(DAY)
    made = ledger.start(scores, tmp_path, terms, POLICY, "customerID", challenger)
    rows = ledger.read_assignments(tmp_path, made.id)
    assert rows["customerID"].is_unique  # one policy, one arm each
    everyone = _customers(3000)
    theirs = set(everyone[challenged(made.id, everyone, 0.3)])
    assert set(rows.loc[rows["policy"] == "challenger", "customerID"]) <= theirs
    assert not set(rows.loc[rows["policy"] == "production", "customerID"]) & theirs
    assert made.by_policy["challenger"]["scored"] == len(theirs)
    assert made.by_policy["production"]["scored"] == 3000 - len(theirs)
    assert made.scored == 3000
    # each policy targets by its own file: production at 0.5, the challenger at 0.75
    production = pd.read_parquet(scores).set_index("customerID")
    other = pd.read_parquet(challenger.scores).set_index("customerID")
    for name, source in (("production", production), ("challenger", other)):
        mine = rows.loc[rows["policy"] == name].set_index("customerID")
        aimed = mine["arm"].isin([Arm.treatment.value, Arm.control.value])
        assert source.loc[mine.index[aimed], "offer"].all(), name
        half = source.index.isin(theirs) == (name == "challenger")
        targets = int(source.loc[half, "offer"].sum())
        assert made.by_policy[name]["treatment"] + made.by_policy[name]["control"] == targets
        control = made.by_policy[name]["control"] / targets
        assert 0.04 < control < 0.18, (name, control)  # 0.1 within sampling error
    assert set(rows.loc[rows["policy"] == "challenger", "model_version"]) == {"2"}
    assert made.versions == {"production": "3"}  # the caller names the challenger's version
    assert made.challenger_policy == {"threshold": 0.75, "share": 0.3}
    offers = pd.read_csv(tmp_path / ledger.OFFERS_FILE, dtype={"customerID": str})
    assert set(offers["policy"]) == {"production", "challenger"}
    # a rerun makes the same campaign, arm for arm
    before = ledger.assignments_file(tmp_path, made.id).read_bytes()
    assert ledger.start(scores, tmp_path, terms, POLICY, "customerID", challenger) == made
    assert ledger.assignments_file(tmp_path, made.id).read_bytes() == before


def test_policies_are_judged_apart_and_compared_by_value_per_customer() -> None:
    """Production targets 200 of its 1,000 customers (150 treated, 30 churned; 50 control, 15
    churned); the challenger targets nobody of its 1,000."""
    campaign = ledger.Campaign(
        id="2026-11-01-v3",
        campaign_date="2026-11-01",
        window_days=21,
        policy={"threshold": 0.4, "control_fraction": 0.25, "explore_fraction": 0.0},
        versions={"production": "3", "challenger": "1"},
        counts={"treatment": 150, "control": 50},
        scored=2000,
        challenger_policy={"threshold": 0.9, "share": 0.5},
        by_policy={
            "production": {"scored": 1000, "treatment": 150, "control": 50},
            "challenger": {"scored": 1000, "treatment": 0, "control": 0},
        },
    )
    ids = [f"c{i}" for i in range(200)]
    assignments = pd.DataFrame(
        {
            "customerID": ids,
            "arm": ["treatment"] * 150 + ["control"] * 50,
            "churn_probability": 0.5,
            "model_version": "3",
            "policy": "production",
        }
    )
    churned = pd.Series(
        "2026-11-10", index=[*ids[:30], *ids[150:165]], dtype=object
    )  # 30 treated, 15 control
    effects = [
        found
        for policy, rows in measured.by_policy(campaign, assignments)
        if (found := effect.judge(campaign, rows, churned, date(2026, 12, 1), policy=policy))
    ]
    assert [e.policy for e in effects] == ["production", "challenger"]
    assert effects[1].targets is None
    (duel,) = effect.compare_policies(effects, offer_cost=100, saved_value=500)
    # 200/1000 x (0.1 x 500 - 100) per customer, x 1000
    assert duel.production.value_per_1000 == pytest.approx(-10_000)
    assert duel.challenger.value_per_1000 == 0
    low, high = effect.newcombe(15, 50, 30, 150)
    se = 1000 * 0.2 * 500 * (high - low) / (2 * 1.959963984540054)
    assert duel.production.standard_error == pytest.approx(se)
    assert duel.difference == pytest.approx(10_000)
    assert duel.difference_low == pytest.approx(10_000 - 1.959963984540054 * se)
    assert duel.verdict == "not distinguishable"
    assert duel.figures()["challenger_threshold"] == 0.9
    row = effects[0].figures(100, 500)
    assert (row["policy"], row["model_version"]) == ("production", "3")
    assert effects[1].figures(100, 500)["model_version"] == "1"
    # a campaign without a challenger is judged whole and compared with nothing
    alone = ledger.Campaign(**{**campaign.__dict__, "challenger_policy": {}, "by_policy": {}})
    assert [p for p, _ in measured.by_policy(alone, assignments)] == [PolicyName.production]
    assert effect.compare_policies(effects[:1], 100, 500) == []


def test_a_challenger_threshold_campaigns_through_the_graph_and_a_bad_one_is_refused(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert materialize_graph(churn_env, instance).success  # version 1 in production
    folder = churn_env.settings.scores_folder
    plain = ledger.campaigns(folder)[-1]
    assert not plain.challenger_policy
    # the same version under a higher threshold challenges production on a third of the base
    monkeypatch.setenv("CHURN_CHALLENGER_THRESHOLD", "0.8")
    monkeypatch.setenv("CHURN_CHALLENGER_SHARE", "0.3")
    result = materialize_graph(churn_env, instance, selection="retention_campaign")
    assert result.success, failure_messages(result)
    made = ledger.campaigns(folder)[-1]
    assert made.versions == {"production": "1", "challenger": "1"}
    assert made.challenger_policy == {"threshold": 0.8, "share": 0.3}
    share = made.by_policy["challenger"]["scored"] / made.scored
    assert 0.25 < share < 0.35
    rows = ledger.read_assignments(folder, made.id)
    aimed = rows.loc[rows["arm"].isin(["treatment", "control"])]
    assert (aimed.loc[aimed["policy"] == "challenger", "churn_probability"] >= 0.8).all()
    assert (folder / ledger.CHALLENGER_FOLDER / "churn_scores.parquet").exists()
    # production itself as its own challenger is refused in words, nothing kept
    monkeypatch.delenv("CHURN_CHALLENGER_THRESHOLD")
    monkeypatch.setenv("CHURN_CHALLENGER_VERSION", "1")
    same = materialize_graph(churn_env, instance, selection="retention_campaign")
    assert not same.success
    assert "the challenger is production itself (version 1" in failure_messages(same)
    monkeypatch.setenv("CHURN_CHALLENGER_VERSION", "41")
    missing = materialize_graph(churn_env, instance, selection="retention_campaign")
    assert not missing.success
    assert "challenger version '41'" in failure_messages(missing)
    assert ledger.campaigns(folder)[-1] == made
