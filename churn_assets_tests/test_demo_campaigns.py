"""`churn demo-campaigns` through the real CLI and graph: weeks of campaigns on a world that
answers offers, each campaign_effect measured and compared with the world's truth."""

import re
from pathlib import Path

import pandas as pd

from churn_assets_tests.processes import run_command

CHURN = ".venv/bin/churn"


def test_weeks_of_campaigns_are_measured_against_the_truth(
    tmp_path: Path, shell_env: dict[str, str]
) -> None:
    out = tmp_path / "campaigns"
    # a caller's store must not leak into the demo
    env = {**shell_env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/elsewhere.db"}
    done = run_command(
        [CHURN, "demo-campaigns", "--weeks", "4", "--customers", "2000", "--out", str(out)],
        env,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    screen = done.stdout.splitlines()
    assert len(screen) < 20, screen
    weeks = [line for line in screen if re.match(r"week \d ", line)]
    assert len(weeks) == 5 and "campaign 20" in weeks[0] and "true reduction" in weeks[0]
    assert "threshold by the assumed effect" in weeks[0]
    # two campaigns closed by week 4 (CHURN_EFFECT_MIN_CAMPAIGNS=2 in the demo): the version
    # trained then chose its threshold with what they measured
    assert "threshold by the effect measured on 2 campaign(s)" in weeks[4]
    truth = pd.read_csv(out / "campaign_truth.csv")
    closed = truth.loc[truth["window_complete"]]
    assert len(closed) >= 2  # weeks 0 and 1 closed by week 4 (three-week windows)
    assert closed["covered"].all(), closed
    assert (closed["treated"] > 0).all() and (closed["control"] > 0).all()
    # the team's contact logs went through record_contacts: a quarter of the offered were not
    # reached (REACH 0.75), which the measure per contact accounts for
    big = closed.loc[closed["treated"] >= 100]
    assert len(big) >= 1, closed
    assert big["contact_rate"].between(0.65, 0.85).all(), big
    assert big["measured_per_contact"].notna().all(), big
    assert "closed campaigns whose interval covers the truth" in screen[-1]
    assert not (tmp_path / "elsewhere.db").exists()

    log = (out / "logs" / "demo-campaigns.log").read_text()
    assert log.count("ok     campaign_effect") >= 4  # every promoted week measured them all
    assert log.count("is in production") >= 4
    assert "offers for the CRM" in log
    assert log.count("ok     contact_log") == 5  # a log a week, each recorded

    listed = run_command([CHURN, "campaigns"], {**shell_env, "CHURN_STATE_DIR": str(out)})
    assert listed.returncode == 0, listed.stderr
    for campaign in closed["campaign"]:
        (row,) = [line for line in listed.stdout.splitlines() if line.strip().startswith(campaign)]
        assert re.search(r"\+?-?\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", row), row
        assert re.search(r"\d+%\s+[+-]\d\.\d{3}$", row), row  # reached, per contact
