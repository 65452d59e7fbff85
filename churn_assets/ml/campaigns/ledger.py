"""Every campaign's assignments, kept for good, and the offer file the retention team loads.

A campaign is made from one scoring (the ranked scores file `churn_scores` wrote): its ID is
the scored snapshot's date and the version that scored it (`2026-12-04-v3`), so running the graph
again on the same snapshot and model makes the same campaign with the same arms and replaces
nothing but identical rows. Kept as

    <scores folder>/campaigns/campaign=<ID>/assignments.parquet

one row per customer the campaign assigned (treatment, control, explore, held) with the score
it was assigned on; the campaign's terms (date, policy, versions, window, counts) are in the
file's own metadata, so the assignment and what it was made under are one atomic file. The
customers it offers to, with everything the scores file says of them (rank, probability,
segments, reasons), are `<scores folder>/campaign_offers.csv`, replaced by each campaign.

The scores are read a row group at a time, so a base of tens of millions of customers is never
whole in memory; only the customers of campaigns still running are (to hold them back).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq

from churn_assets.ml.campaigns.assignment import Arm, Policy, PolicyName, assign, challenged
from churn_assets.ml.files import replacing
from churn_assets.ml.model.ranking import conform

FOLDER = "campaigns"
OFFERS_FILE = "campaign_offers.csv"
#: Where a champion/challenger campaign's challenger writes its ranked scores, in the scores
#: folder: the same files as churn_scores', by the challenger's version and threshold.
CHALLENGER_FOLDER = "challenger"
_ASSIGNMENTS = "assignments.parquet"
_TERMS_KEY = b"churn.campaign"


def campaign_id(scoring_date: date, version: str) -> str:
    return f"{scoring_date.isoformat()}-v{version}"


@dataclass(frozen=True)
class Campaign:
    """One campaign's terms and counts, as kept with its assignments."""

    id: str
    campaign_date: str
    #: days after `date` in which a churn counts as an outcome of the campaign
    window_days: int
    policy: dict[str, float]
    #: the versions whose policy it applied, by arm name ("production": "3")
    versions: dict[str, str]
    #: customers per arm
    counts: dict[str, int] = field(default_factory=dict)
    scored: int = 0
    #: a champion/challenger campaign's challenger: threshold and share (empty: none)
    challenger_policy: dict[str, float] = field(default_factory=dict)
    #: per policy (production, challenger): customers scored and per arm; empty without one
    by_policy: dict[str, dict[str, int]] = field(default_factory=dict)
    #: the uplift model version whose expected incremental value chose production's targets
    #: (None: its threshold did)
    uplift_version: str | None = None

    @property
    def closes(self) -> date:
        return date.fromisoformat(self.campaign_date) + timedelta(days=self.window_days)

    def running_on(self, day: date) -> bool:
        return date.fromisoformat(self.campaign_date) <= day < self.closes

    @property
    def offered(self) -> int:
        return sum(n for arm, n in self.counts.items() if Arm(arm).offered)


def assignments_file(folder: Path, campaign: str) -> Path:
    return folder / FOLDER / f"campaign={campaign}" / _ASSIGNMENTS


def campaigns(folder: Path) -> list[Campaign]:
    """Every kept campaign, oldest first."""
    found = []
    for path in (folder / FOLDER).glob(f"campaign=*/{_ASSIGNMENTS}"):
        metadata = pq.read_metadata(path).metadata or {}
        if _TERMS_KEY not in metadata:
            continue  # not a file this module wrote
        try:
            found.append(Campaign(**json.loads(metadata[_TERMS_KEY])))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: its campaign terms are not readable ({error})") from None
    return sorted(found, key=lambda c: (c.campaign_date, c.id))


def read_assignments(folder: Path, campaign: str) -> pd.DataFrame:
    return pd.read_parquet(assignments_file(folder, campaign))


def running_customers(folder: Path, day: date, besides: str) -> frozenset[str]:
    """Customers any campaign other than `besides` offered to or held back as control while
    its window is open on `day` (a customer it held belongs to the campaign that held it)."""
    running: set[str] = set()
    for campaign in campaigns(folder):
        if campaign.id != besides and campaign.running_on(day):
            frame = read_assignments(folder, campaign.id)
            assigned = frame.loc[frame["arm"] != Arm.held.value]
            running.update(assigned.iloc[:, 0].astype(str).str.strip())
    return frozenset(running)


@dataclass(frozen=True)
class Challenger:
    """A champion/challenger campaign's challenger: its ranked scores file (the same customers
    scored by its version, `offer` at its threshold), its policy, and its share."""

    scores: Path
    policy: Policy
    share: float


def start(
    scores: Path,
    folder: Path,
    campaign: Campaign,
    policy: Policy,
    id_column: str,
    challenger: Challenger | None = None,
) -> Campaign:
    """Assign the customers of the ranked scores file `scores` and keep the campaign; returns
    it with its counts. Targets are the scores' `offer` column (the policy's threshold). With
    a `challenger`, the customers its share draws (assignment.challenged) are assigned from its
    scores file by its policy instead, and every row says whose policy it followed."""
    running = running_customers(folder, date.fromisoformat(campaign.campaign_date), campaign.id)
    sources = [(PolicyName.production, scores, policy)]
    if challenger is not None:
        sources.append((PolicyName.challenger, challenger.scores, challenger.policy))
    counts = dict.fromkeys([arm.value for arm in Arm], 0)
    by_policy = {name.value: {"scored": 0, **counts} for name, _, _ in sources}
    schema = pa.schema(
        [
            (id_column, pa.string()),
            ("arm", pa.string()),
            ("churn_probability", pa.float64()),
            ("model_version", pa.string()),
            ("policy", pa.string()),
        ]
    )
    path = assignments_file(folder, campaign.id)
    with (
        replacing(path) as kept_file,
        replacing(folder / OFFERS_FILE) as offers_file,
        pq.ParquetWriter(kept_file, schema) as kept,
    ):
        offers: pyarrow.csv.CSVWriter | None = None
        # Every batch is written in one schema (pyarrow's CSV writer does not check a batch
        # against it): the campaign's columns, then every column of each policy's scores
        # (production's uplift figures, which a challenger's lack, are blank there).
        offers_schema = pa.unify_schemas(
            [
                pa.schema(
                    [("campaign", pa.string()), ("arm", pa.string()), ("policy", pa.string())]
                ),
                *(pq.read_schema(source) for _, source, _ in sources),
            ],
            promote_options="permissive",
        )
        for name, source, rules in sources:
            tally = by_policy[name.value]
            for batch in pq.ParquetFile(source).iter_batches():
                frame = batch.to_pandas()
                ids = frame[id_column].astype(str).str.strip()
                if challenger is not None:
                    theirs = challenged(campaign.id, ids, challenger.share)
                    mine = theirs if name is PolicyName.challenger else ~theirs
                    frame, ids = frame.loc[mine], ids[mine]
                tally["scored"] += len(frame)
                arms = assign(campaign.id, ids, frame["offer"].to_numpy(dtype=bool), rules, running)
                chosen = arms.notna().to_numpy()
                rows = frame.loc[chosen]
                for arm, n in arms[chosen].value_counts().items():
                    counts[str(arm)] += int(n)
                    tally[str(arm)] += int(n)
                kept.write_table(
                    pa.Table.from_pandas(
                        pd.DataFrame(
                            {
                                id_column: rows[id_column].astype(str),
                                "arm": arms[chosen].astype(str),
                                "churn_probability": rows["churn_probability"].astype(float),
                                "model_version": rows["model_version"].astype(str),
                                "policy": name.value,
                            }
                        ),
                        schema=schema,
                        preserve_index=False,
                    )
                )
                offered = arms.isin([a.value for a in Arm if a.offered]).to_numpy()
                sent = frame.loc[offered].assign(
                    campaign=campaign.id,
                    arm=arms[offered].astype(str),
                    policy=name.value,
                    churn_probability=frame.loc[offered, "churn_probability"].round(6),
                )
                table = pa.Table.from_pandas(
                    sent[["campaign", "arm", "policy", *frame.columns]], preserve_index=False
                )
                if offers is None:
                    options = pyarrow.csv.WriteOptions(quoting_style="needed")
                    offers = pyarrow.csv.CSVWriter(
                        offers_file, offers_schema, write_options=options
                    )
                offers.write_table(conform(table, offers_schema))
        if offers is None:
            raise ValueError(f"{scores} holds no scores")
        offers.close()
        done = Campaign(
            **{
                **asdict(campaign),
                "counts": counts,
                "scored": sum(t["scored"] for t in by_policy.values()),
                "challenger_policy": (
                    {"threshold": challenger.policy.threshold, "share": challenger.share}
                    if challenger is not None
                    else {}
                ),
                "by_policy": by_policy if challenger is not None else {},
            }
        )
        kept.add_key_value_metadata({_TERMS_KEY: json.dumps(asdict(done)).encode()})
    return done


def as_metadata(campaign: Campaign) -> dict[str, Any]:
    """A campaign's figures under the names the UI and the CLI show."""
    return {
        "campaign": campaign.id,
        "campaign_date": campaign.campaign_date,
        "window_closes": campaign.closes.isoformat(),
        "customers_scored": campaign.scored,
        "offered": campaign.offered,
        "targeting": (
            "churn probability at or above the threshold"
            if campaign.uplift_version is None
            else f"expected incremental value above 0 (uplift model v{campaign.uplift_version})"
        ),
        **{f"arm_{arm}": n for arm, n in campaign.counts.items()},
    }
