"""`churn demo-campaigns` through the real CLI and graph: weeks of campaigns on a world that
answers offers, each campaign_effect measured and compared with the world's truth."""

import re
from pathlib import Path

import pandas as pd

from churn_assets.ml.campaigns import ledger
from churn_assets_tests.conftest import CampaignsDemo
from churn_assets_tests.processes import run_command

CHURN = ".venv/bin/churn"


def test_weeks_of_campaigns_are_measured_against_the_truth(
    campaigns_demo: CampaignsDemo, shell_env: dict[str, str]
) -> None:
    done, out = campaigns_demo, campaigns_demo.out
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    screen = done.stdout.splitlines()
    log = (out / "logs" / "demo-campaigns.log").read_text()
    assert len(screen) < 25, screen
    weeks = [line for line in screen if re.match(r"week \d ", line)]
    assert len(weeks) == 5 and "campaign 20" in weeks[0] and "true reduction" in weeks[0]
    assert "threshold by the assumed effect" in weeks[0]
    # two campaigns closed by week 4 (CHURN_EFFECT_MIN_CAMPAIGNS=2 in the demo): the version
    # trained then chose its threshold with what they measured
    assert "threshold by the effect measured on 2 campaign(s)" in weeks[4]
    _assert_uplift_targeting_took_over(out, weeks)
    truth = pd.read_csv(out / "campaign_truth.csv")
    closed = truth.loc[truth["window_complete"]]
    assert len(closed) >= 2  # weeks 0 and 1 closed by week 4 (three-week windows)
    # the interval's coverage is asymptotic: held to it where an arm has 100 treated
    assert closed.loc[closed["treated"] >= 100, "covered"].all(), closed
    # every closed one, by the joint intervals (95% for all at once), each wider than its own
    wider = (closed["family_low"] <= closed["low"]) & (closed["family_high"] >= closed["high"])
    assert (closed["covered_together"] & wider).all(), closed
    assert (closed["treated"] > 0).all() and (closed["control"] > 0).all()
    # the team's contact logs went through record_contacts: a quarter of the offered were not
    # reached (REACH 0.75), which the measure per contact accounts for
    big = closed.loc[closed["treated"] >= 100]
    assert len(big) >= 1, closed
    assert big["contact_rate"].between(0.65, 0.85).all(), big
    assert big["measured_per_contact"].notna().all(), big
    assert "closed campaigns whose interval covers the truth" in screen[-1]
    # the uplift model, as uplift_model fits and judges it, beside the world's truth
    (said,) = [line for line in screen if line.startswith("uplift model")]
    if "not enough outcomes" not in said:
        judged = pd.read_csv(out / "uplift_truth.csv")
        assert judged["held_out_customers"].iloc[0] > 0
        assert re.search(r"true [+-]\d+ vs [+-]\d+; ", said), said
    assert log.count("ok     uplift_model") >= 4
    # from week 1 version 1's policy challenged production's on half the customers: week 1's
    # campaign closed by week 4, each policy judged on its half, the two compared in value
    assert "; challenger v1: " in weeks[1]
    assert set(closed["policy"]) == {"production", "challenger"}
    ended = _duels_against_the_truth(out)
    assert not campaigns_demo.callers_store.exists()

    assert log.count("ok     campaign_effect") >= 4  # every promoted week measured them all
    assert log.count("is in production") >= 4
    assert "offers for the CRM" in log
    assert log.count("ok     contact_log") == 5  # a log a week, each recorded

    _realized_says_who_offered(out, shell_env, weeks)
    listed = run_command([CHURN, "campaigns"], {**shell_env, "CHURN_STATE_DIR": str(out)})
    assert listed.returncode == 0, listed.stderr
    assert "  challenger v1 " in listed.stdout
    assert "  uplift model (outcomes as of " in listed.stdout  # what uplift_model kept
    for duel in ended["campaign"]:
        assert re.search(
            rf"  {duel}: (challenger better|production better|not distinguishable)", listed.stdout
        )
    for campaign in closed.loc[closed["policy"] == "production", "campaign"]:
        (row,) = [
            line for line in listed.stdout.splitlines() if line.strip().startswith(f"{campaign} ")
        ]
        assert re.search(r"\+?-?\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", row), row
        assert re.search(r"\d+%\s+[+-]\d\.\d{3}$", row), row  # reached, per contact


def _duels_against_the_truth(out: Path) -> pd.DataFrame:
    """The champion/challenger splits that closed, each judged against the better policy: its
    interval covers the world's difference, and a verdict that names a winner names the one
    the world says is better."""
    duels = pd.read_csv(out / "champion_challenger_truth.csv")
    ended = duels.loc[duels["window_complete"]]
    assert len(ended) >= 1, duels
    assert (ended["challenger_version"].astype(str) == "1").all()
    assert (ended["difference_high"] > ended["difference_low"]).all(), ended
    assert ended["covered"].all(), ended
    assert set(ended["verdict"]) <= {
        "challenger better",
        "production better",
        "not distinguishable",
    }
    named = duels.loc[duels["verdict"] != "not distinguishable"]
    better = (
        named["true_difference_per_1000"]
        .gt(0)
        .map({True: "challenger better", False: "production better"})
    )
    assert (named["verdict"] == better).all(), named
    return ended


def _realized_says_who_offered(out: Path, shell_env: dict[str, str], weeks: list[str]) -> None:
    """`churn realized`: weeks 0 to 3 (week 4's scoring is today's: no outcome yet) judged as
    offered by the churn version's threshold, the uplift model not having chosen them."""
    judged = run_command([CHURN, "realized"], {**shell_env, "CHURN_STATE_DIR": str(out)})
    assert judged.returncode == 0, judged.stderr
    lines = judged.stdout.splitlines()
    assert lines[1].endswith("offers by")
    assert [line.split()[0] for line in lines[2:6]] == [w.split("(")[1][:10] for w in weeks[:4]]
    assert all(line.endswith("churn probability") for line in lines[2:6])


def _assert_uplift_targeting_took_over(out: Path, weeks: list[str]) -> None:
    """The uplift model beat probability targeting on the campaigns closed by week 3 and was
    promoted: week 4's production offers went by its expected incremental value, while
    version 1's policy (by probability) challenged it on the other half."""
    assert "; offers by uplift model v1); " in weeks[4] and "; challenger v1: " in weeks[4]
    assert "offers by uplift" not in "".join(weeks[:4])
    (campaign,) = [c for c in ledger.campaigns(out / "scores") if c.campaign_date in weeks[4]]
    assert campaign.uplift_version == "1"
    offers = pd.read_csv(out / "scores" / "campaign_offers.csv")
    mine = offers.loc[(offers["policy"] == "production") & (offers["arm"] == "treatment")]
    assert (mine["expected_incremental_value"] > 0).all()
    assert offers.loc[offers["policy"] == "challenger", "uplift"].isna().all()
