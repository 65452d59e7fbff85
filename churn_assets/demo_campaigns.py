"""`churn demo-campaigns`: weeks of campaigns end to end on a synthetic world that answers them.

Each week the world's full extract is merged, the graph retrains, scores and makes a campaign
(the jobs as `churn run` runs them, in this process), and the world then answers the campaign's
offers: the retention team reaches a share of the offered customers (REACH; the others never
hear of the offer) and drops a contact log, which `record_contacts` records; among those
reached, the world's persuadables stay and its sleeping dogs leave (see
`ml/data/synthetic_history.Response`), so the extracts of the following weeks record what the
offers did. Before it answers, the world says what it will do: the true reduction of churn over
the campaign's targets (by assignment: a target the team would not reach gains nothing) and per
customer reached, which the platform does not see. At the end `campaign_effect` has
judged every campaign with the churns recorded; this prints each campaign's measured reduction
with its interval against the truth, a line per week while it runs, and keeps every run's
output in `<out>/logs`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn_assets import start_up
from churn_assets.ml.campaigns import contacts, learner, ledger, measured, uplift
from churn_assets.ml.campaigns.assignment import Arm, PolicyName, draws
from churn_assets.ml.campaigns.effect import Effect, compare_policies
from churn_assets.ml.data.history import ExtractKind, today
from churn_assets.ml.data.synthetic import write_customers
from churn_assets.ml.data.synthetic_history import Response, SyntheticHistory, make_history
from churn_assets.ml.evaluation import decision, realized
from churn_assets.ml.registry import model_registry as registry
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store

#: What the demo sets for its runs: a window of three weeks, so campaigns close within the demo;
#: a gate fit for a few thousand synthetic customers; a control group large enough for small
#: effects; and offers at a tenth of a kept customer's value, as three-week churn rates are low
#: (at the default fifth, a retrained model's threshold soon targets nobody).
DEMO_ENV = {
    "CHURN_OUTCOME_WINDOW_DAYS": "21",
    "CHURN_OFFER_COST": "50",
    # from the second closed campaign on, thresholds are chosen with the measured effect
    "CHURN_EFFECT_MIN_CAMPAIGNS": "2",
    "CHURN_MIN_AUC": "0.6",
    "CHURN_MAX_AUC_DROP": "0.05",
    "CHURN_CONTROL_FRACTION": "0.3",
    "CHURN_EXPLORE_FRACTION": "0.05",
    # a demo's few thousand customers: an uplift model once 500 have an outcome in each arm
    "CHURN_UPLIFT_MIN_OUTCOMES": "500",
    # reasons off: the demo is about what offers do, and its weekly models explain slowly
    "CHURN_SCORES_REASONS": "0",
}
#: The version whose policy challenges production's from --challenger-from on: the first, which
#: chose its threshold by the assumed effect.
CHALLENGER = "1"
#: The share of offered customers the team reaches, by a draw of its own per campaign and
#: customer (the same draw says whether a control customer would have been reached).
REACH = 0.75


@dataclass(frozen=True)
class Truth:
    """What one policy of a campaign truly did (a campaign without a challenger has one)."""

    campaign: str
    week: int
    targets: int
    #: the mean over the campaign's targets of (churned without an offer - with one), where a
    #: target the team would not reach counts 0
    reduction: float
    #: the same over the targets the team would reach
    per_contact: float
    #: how the version that scored valued offers: "assumed", or "measured on campaigns ..."
    decided: str = "assumed"
    policy: str = PolicyName.production.value
    #: the policy's value per 1,000 of its customers, had all its targets been offered
    value_per_1000: float = 0.0
    #: the uplift model version that chose the policy's targets (None: its threshold did)
    uplift_version: str | None = None


@contextmanager
def _into(log: Path) -> Iterator[None]:
    """This process's standard output and error (file descriptors 1 and 2) appended to `log`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("a") as output:
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _launch(job: str, run_config: dict[str, Any] | None, log: Path) -> bool:
    """One job as `churn run` runs it, in this process (the code location loads once for the
    whole demo), its screen and log appended to `log`."""
    with start_up.bulk_imports():
        from churn_assets import run_console
    with _into(log):
        started = time.perf_counter()
        path = start_up.announce(ChurnSettings(), job, sys.stdout)
        return run_console.run(job, run_config, path, started) == 0


def _answer(
    history: SyntheticHistory,
    settings: ChurnSettings,
    day: date,
    week: int,
    log: Path,
    world: dict[str, pd.Series],
) -> list[Truth]:
    """The world's answer to the campaign made on `day`, if one was: its truth per policy, the
    team's contact log recorded, then the offers of those reached applied."""
    folder = settings.scores_folder
    window_weeks = settings.outcome_window_days // 7
    made = [c for c in ledger.campaigns(folder) if c.campaign_date == day.isoformat()]
    if not made:
        return []
    campaign = made[-1]
    arms = ledger.read_assignments(folder, campaign.id)
    ids = pd.Index(arms.iloc[:, 0].astype(str))
    arm = arms["arm"].to_numpy()
    policy = arms["policy"].to_numpy()
    reach = draws(f"reach:{campaign.id}", ids.to_series()) < REACH
    aimed = (arm == Arm.treatment.value) | (arm == Arm.control.value)
    effect = np.zeros(len(ids))
    effect[aimed] = history.offer_effect(ids[aimed], week, window_weeks) * reach[aimed]
    # what an offer would do to each customer of the scoring, reach included (for judging the
    # uplift model's targeting later): kept before the world answers
    kept = realized.history_file(folder, day, campaign.versions[PolicyName.production.value])
    scored = pd.Index(realized.read_kept(kept).iloc[:, 0].tolist() if kept.exists() else [])
    everyone = ids.union(scored.astype(str))
    world[campaign.id] = pd.Series(
        history.offer_effect(everyone, week, window_weeks)
        * (draws(f"reach:{campaign.id}", everyone.to_series()) < REACH),
        index=everyone,
    )
    truths = []
    production = campaign.versions[PolicyName.production.value]
    tags = registry.open_registry(ChurnSettings()).version(production).tags or {}
    for name in campaign.versions:
        mine = aimed & (policy == name)
        reached = mine & reach
        customers = campaign.by_policy.get(name, {}).get("scored", campaign.scored)
        gained = effect[mine] * settings.saved_customer_value - settings.offer_cost
        truths.append(
            Truth(
                campaign.id,
                week,
                int(mine.sum()),
                float(effect[mine].mean()) if mine.any() else 0.0,
                float(effect[reached].mean()) if reached.any() else 0.0,
                tags.get(decision.EFFECT_TAG, decision.ASSUMED),
                name,
                1000 * float(gained.sum()) / customers if customers else 0.0,
                campaign.uplift_version if name == PolicyName.production.value else None,
            )
        )
    offered = (arm == Arm.treatment.value) | (arm == Arm.explore.value)
    contacted = ids[offered & reach]
    response = history.response.reindex(contacted).to_numpy()
    accepted = (response == Response.persuadable) | (response == Response.sure_thing)
    contact_log = settings.incoming_dir / contacts.LANDING_SUBFOLDER / f"{campaign.id}.csv"
    contact_log.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "customer": contacted,
            "campaign": campaign.id,
            "contacted": "yes",
            "accepted": np.where(accepted, "yes", "no"),
        }
    ).to_csv(contact_log, index=False)
    config = {"ops": {"contact_log": {"config": {"path": str(contact_log)}}}}
    if not _launch("record_contacts", config, log):
        raise RuntimeError(f"week {week}: the contact log was not recorded; see {log}")
    history.offer(contacted, week, window_weeks)
    return truths


def _targeting(truth: Truth) -> str:
    said = f"threshold by the {_effect_words(truth.decided)}"
    if truth.uplift_version is not None:  # the threshold is then probability targeting's
        said += f"; offers by uplift model v{truth.uplift_version}"
    return said


def _effect_words(decided: str) -> str:
    if decided == decision.ASSUMED:
        return "assumed effect"
    return f"effect measured on {decided.count(',') + 1} campaign(s)"


def run(args: argparse.Namespace) -> int:
    out: Path = args.out.resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (out / "dagster_home").mkdir(exist_ok=True)
    instance = out / "dagster_home" / "dagster.yaml"
    if not instance.exists():
        shipped = Path(__file__).resolve().parents[1] / "deploy" / "dagster" / "local.yaml"
        instance.write_text(shipped.read_text())
    start = args.start or today() - timedelta(weeks=args.weeks)
    history = make_history(args.customers, args.weeks, ExtractKind.full, args.seed, start)
    base = write_customers(history.base, out / "data" / f"customers_{start}.csv")
    # Nothing of the caller's stores reaches the demo: no CHURN_ or MLflow variable, and its
    # runs start in its own folder, where no .env names another store.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "MLFLOW_"))},
        **DEMO_ENV,
        "CHURN_STATE_DIR": str(out),
        "DAGSTER_HOME": str(out / "dagster_home"),
        "CHURN_DATA_PATH": str(base),
    }
    os.environ.clear()  # the runs are this process's: they read this environment
    os.environ.update(env)
    os.chdir(out)
    settings = ChurnSettings(_env_file=None)  # type: ignore[call-arg]
    log = logs / "demo-campaigns.log"
    truths: list[Truth] = []
    world: dict[str, pd.Series] = {}
    print(f"demo campaigns in {out}: {args.customers:,} customers, {args.weeks} weeks; log {log}")
    for week in range(args.weeks + 1):
        day, extract = history.extract(week) if week else (start, None)
        if extract is not None:
            path = write_customers(
                extract, out / "data" / "weeks" / f"week{week:02d}_{day}.full.csv"
            )
            config = {"ops": {"customer_snapshot": {"config": {"extract_path": str(path)}}}}
            if not _launch("merge_extract", config, log):
                print(f"week {week}: the extract was not merged; see {log}")
                return 1
        if 0 < args.challenger_from <= week:
            # the runs read the environment: version 1's policy challenges production's
            os.environ["CHURN_CHALLENGER_VERSION"] = CHALLENGER
        trained = _launch("churn_training", None, log)
        try:
            found = _answer(history, settings, day, week, log, world)
        except RuntimeError as error:
            print(error)
            return 1
        if not found:
            said = "no campaign" if trained else f"the run failed (not promoted?): see {log}"
            print(f"week {week} ({day}): {said}")
            continue
        truths.extend(found)
        head, *others = found
        print(
            f"week {week} ({day}): campaign {head.campaign}, {head.targets:,} targets "
            f"({_targeting(head)}); true reduction "
            f"{head.reduction:+.3f}, {head.per_contact:+.3f} per contact"
            + "".join(
                f"; challenger v{CHALLENGER}: {other.targets:,} targets, true reduction "
                f"{other.reduction:+.3f}"
                for other in others
            )
        )
    return _report(settings, truths, world, out)


def _report(
    settings: ChurnSettings, truths: list[Truth], world: dict[str, pd.Series], out: Path
) -> int:
    """Each campaign measured against its truth; 0 once a campaign has closed. A 95% interval
    misses its truth one time in twenty, so a miss is shown (MISSED), not an error; whether
    every closed campaign's interval covers its truth is judged with the joint intervals
    (`Comparison.interval`), which hold all together 95% of the time."""
    as_of, effects = measured.measured_now(settings)
    truth_by_id = {(t.campaign, t.policy): t for t in truths}
    rows, comparisons = [], []
    for judged in effects:
        truth = truth_by_id.get((judged.campaign.id, judged.policy))
        t = judged.targets
        if truth is None or t is None:
            continue
        covered = t.reduction_low <= truth.reduction <= t.reduction_high
        comparisons.append(t)
        protocol = judged.protocol
        per_contact = None if protocol is None else protocol.reduction_per_contact
        rows.append(
            {
                "campaign": judged.campaign.id,
                "policy": judged.policy,
                "days_observed": judged.days_observed,
                "window_complete": judged.window_complete,
                "treated": t.offered,
                "control": t.held_back,
                "measured_reduction": t.reduction,
                "low": t.reduction_low,
                "high": t.reduction_high,
                "true_reduction": truth.reduction,
                "covered": covered,
                "contact_rate": None if protocol is None else protocol.contact_rate,
                "measured_per_contact": per_contact,
                "true_per_contact": truth.per_contact,
            }
        )
    table = pd.DataFrame(rows)
    if not table.empty:  # all closed campaigns' intervals at once: see Comparison.interval
        closing = table["window_complete"].astype(bool).to_numpy()
        family = max(int(closing.sum()), 1)
        joint = [c.interval(family) for c in comparisons]
        table["family_low"] = [low for low, _ in joint]
        table["family_high"] = [high for _, high in joint]
        table["covered_together"] = table["family_low"].le(table["true_reduction"]) & table[
            "family_high"
        ].ge(table["true_reduction"])
    table.to_csv(out / "campaign_truth.csv", index=False)
    print(f"measured with the churns recorded up to {as_of} ({out / 'campaign_truth.csv'}):")
    for row in table.itertuples():
        state = "closed" if row.window_complete else f"open, {row.days_observed} days"
        label = row.campaign + ("" if row.policy == PolicyName.production else " challenger")
        print(
            f"  {label:<24} {state:<14} {row.treated:>5} treated {row.control:>5} "
            f"control  measured {row.measured_reduction:+.3f} [{row.low:+.3f}, "
            f"{row.high:+.3f}]  true {row.true_reduction:+.3f}  "
            + ("covered" if row.covered else "MISSED")
            + (
                f" (joint [{row.family_low:+.3f}, {row.family_high:+.3f}]: covered)"
                if row.window_complete and not row.covered and row.covered_together
                else ""
            )
            + (
                f"; per contact {row.measured_per_contact:+.3f}, true {row.true_per_contact:+.3f}"
                if pd.notna(row.measured_per_contact)
                else ""
            )
        )
    closed = table.loc[table["window_complete"].astype(bool)] if not table.empty else table
    hits = int(closed["covered"].sum()) if not closed.empty else 0
    together = int(closed["covered_together"].sum()) if not closed.empty else 0
    duels = _duels(effects, truth_by_id, settings, out)
    if not duels.empty:
        ended = duels.loc[duels["window_complete"].astype(bool)]
        print(
            f"closed champion/challenger campaigns whose interval covers the true difference: "
            f"{int(ended['covered'].sum())} of {len(ended)}"
        )
    _uplift(settings, world, out)
    print(
        f"closed campaigns whose interval covers the truth: {hits} of {len(closed)} "
        f"(95% each: one in twenty misses); all together, at 95% for the {len(closed)} "
        f"(Bonferroni): {together} of {len(closed)}"
    )
    return 0 if not closed.empty else 1


def _uplift(settings: ChurnSettings, world: dict[str, pd.Series], out: Path) -> None:
    """The uplift model as uplift_model fits and judges it, and the world's truth about the two
    targetings on the same held-out customers."""
    store = snapshot_store(settings)
    as_of, churn_dates = realized.outcomes_now(settings)
    rows = uplift.experiments(store, settings.scores_folder, date.fromisoformat(as_of), churn_dates)
    found = uplift.evaluate(
        rows,
        store.contract,
        settings.uplift_min_outcomes,
        settings.saved_customer_value,
        settings.offer_cost,
        uplift.SEED,
    )
    if isinstance(found, uplift.TooFewOutcomes):
        print(f"uplift model: {found.words}")
        return
    test, v = found.held_out, found.verdict
    ids = test[store.contract.id_column].astype(str)
    effect = np.array(
        [world[c].get(i, 0.0) for c, i in zip(test[uplift.CAMPAIGN], ids, strict=True)]
    )
    gain = effect * settings.saved_customer_value - settings.offer_cost
    by_uplift = (
        learner.expected_incremental_value(
            found.uplift, settings.saved_customer_value, settings.offer_cost
        )
        > 0
    )
    by_probability = test[uplift.TARGETED].to_numpy(dtype=bool)
    true_uplift = 1000 * float(gain[by_uplift].sum()) / len(test)
    true_probability = 1000 * float(gain[by_probability].sum()) / len(test)
    top = np.argsort(-test[uplift.PROBABILITY].to_numpy(dtype=float), kind="stable")
    true_same_offers = 1000 * float(gain[top[: int(by_uplift.sum())]].sum()) / len(test)
    pd.DataFrame(
        [
            {
                **v.figures(),
                "true_uplift_value_per_1000": true_uplift,
                "true_probability_value_per_1000": true_probability,
                "true_probability_value_same_offers_per_1000": true_same_offers,
            }
        ]
    ).to_csv(out / "uplift_truth.csv", index=False)
    print(
        f"uplift model on {v.customers:,} held-out customers: {v.words}; per 1,000 customers "
        f"uplift targeting {_whole(v.uplift_value)} ({v.uplift_offers} offers) vs probability "
        f"{_whole(v.probability_value)} ({v.probability_offers} offers), difference "
        f"{_whole(v.difference)} [{_whole(v.difference_low)}, {_whole(v.difference_high)}]; "
        f"true {_whole(true_uplift)} vs {_whole(true_probability)}; probability cut to the same "
        f"offers {_whole(v.probability_value_same_offers)}, true {_whole(true_same_offers)}"
    )


def _duels(
    effects: list[Effect],
    truth_by_id: dict[tuple[str, str], Truth],
    settings: ChurnSettings,
    out: Path,
) -> pd.DataFrame:
    """Champion against challenger per campaign, measured and true, per 1,000 customers."""
    rows = []
    for duel in compare_policies(effects, settings.offer_cost, settings.saved_customer_value):
        truths = [truth_by_id.get((duel.campaign, name.value)) for name in PolicyName]
        if None in truths:
            continue
        champion, challenger = truths
        assert champion is not None and challenger is not None
        true_difference = challenger.value_per_1000 - champion.value_per_1000
        rows.append(
            {
                **duel.figures(),
                "true_production_value_per_1000": champion.value_per_1000,
                "true_challenger_value_per_1000": challenger.value_per_1000,
                "true_difference_per_1000": true_difference,
                "covered": duel.difference_low <= true_difference <= duel.difference_high,
                "production_targeting": (
                    "probability" if champion.uplift_version is None else "uplift"
                ),
            }
        )
    table = pd.DataFrame(rows)
    table.to_csv(out / "champion_challenger_truth.csv", index=False)
    for row in table.to_dict("records"):
        state = "closed" if row["window_complete"] else "open"
        print(
            f"  {row['campaign']:<16} {state:<6} production v{row['production_version']}"
            + (" by uplift" if row["production_targeting"] == "uplift" else "")
            + " "
            f"{_whole(row['production_value_per_1000'])} vs challenger "
            f"v{row['challenger_version']} {_whole(row['challenger_value_per_1000'])} per 1,000 "
            f"customers: {row['verdict']}, difference {_whole(row['difference_per_1000'])} "
            f"[{_whole(row['difference_low'])}, {_whole(row['difference_high'])}], true "
            f"{_whole(row['true_difference_per_1000'])}  "
            + ("covered" if row["covered"] else "MISSED")
        )
    return table


def _whole(value: float) -> str:
    """A signed whole number, without the minus of a value that rounds to zero."""
    return f"{round(value) + 0:+d}"
