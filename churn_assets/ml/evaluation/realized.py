"""Realized performance: how well the scores sent to the retention team predicted who left.

Every scoring is kept (scores/history/scoring_date=D/model_version=V/churn_scores.parquet,
Hive-style partitions any Parquet reader understands; D is the scored snapshot's date, so a
re-run on the same data replaces nothing but identical scores). Once outcomes arrive (the
churn dates later snapshots record), each (D, V) is judged on the customers it scored: a
customer counts as a churner when they left within the outcome window after D
(CHURN_OUTCOME_WINDOW_DAYS). Figures of a window still open are reported as they stand, with
the days observed so far; only complete windows are compared with the gate's floor.

The realized campaign value uses the version's own costs: saved_value for each churner it
offered to, minus offer_cost for each offer. (Offers that worked keep churners from leaving,
so where the retention team acts on the scores, realized figures understate the model.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score

from churn_assets.ml.data import history
from churn_assets.ml.data.contract import CHURN_DATE
from churn_assets.ml.data.snapshots import SnapshotError
from churn_assets.ml.evaluation.decision import Economics, version_economics
from churn_assets.ml.files import replacing
from churn_assets.ml.model.scoring import UPLIFT_VERSION
from churn_assets.ml.registry import model_registry as registry
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store

HISTORY_FOLDER = "history"
#: The version tag holding its holdout AUC (the gate's figure), shown beside realized AUC.
HOLDOUT_AUC_TAG = "holdout_auc"
_FILE = "churn_scores.parquet"
#: What every kept scoring holds after the customer's ID (named as the contract named it), in
#: this order; the rest of the scores file's columns (rank, segments, carried features, reasons)
#: follow, so a customer's page shows each scoring as it was.
_SCORED = ("churn_probability", "offer")
#: The partition key of the kept scorings, so not a column of their files.
_PARTITION = "model_version"
#: Rows sorted by ID at a time, and rows per row group: each sorted run's row groups span
#: narrow ID ranges, so a lookup of one customer (the console's customer page) reads one row
#: group per run instead of the whole ID column, in memory bounded by the run.
SORT_ROWS = 2_000_000
GROUP_ROWS = 64 * 1024


def history_file(folder: Path, scoring_date: date, version: str) -> Path:
    return (
        folder
        / HISTORY_FOLDER
        / f"scoring_date={scoring_date.isoformat()}"
        / f"{_PARTITION}={version}"
        / _FILE
    )


def keep_scores(
    ranked: Path, folder: Path, scoring_date: date, version: str, id_column: str
) -> Path:
    """Add one scoring, read from its ranked scores file, to the history (the same date and
    version replace identical scores): every column but the version, sorted by ID a run of
    `SORT_ROWS` at a time (a global sort of tens of millions of rows would not fit memory)."""
    path = history_file(folder, scoring_date, version)
    source = pq.ParquetFile(ranked)
    first = [id_column, *_SCORED]
    columns = [*first, *(c for c in source.schema_arrow.names if c not in (*first, _PARTITION))]
    schema = pa.schema([source.schema_arrow.field(c) for c in columns])
    with replacing(path) as temporary, pq.ParquetWriter(temporary, schema) as writer:

        def write(run: list[pa.RecordBatch]) -> None:
            table = pa.Table.from_batches(run, schema).unify_dictionaries()
            writer.write_table(table.sort_by(id_column), row_group_size=GROUP_ROWS)

        run: list[pa.RecordBatch] = []
        rows = 0
        for batch in source.iter_batches(batch_size=GROUP_ROWS, columns=columns):
            run.append(batch)
            rows += batch.num_rows
            if rows >= SORT_ROWS:
                write(run)
                run, rows = [], 0
        if run:
            write(run)
    return path


def offers_by(path: Path) -> str:
    """Who chose a kept scoring's offers: "churn probability" (the version's threshold), or
    "uplift vN" when an uplift version in production did (its `uplift_version` column)."""
    version = first_value(path, UPLIFT_VERSION)
    return "churn probability" if version is None else f"uplift v{version}"


def first_value(path: Path, column: str) -> Any:
    """The first value of a column every row of a scores file holds alike (the version that
    scored, the uplift version that chose), read from one row group; None when the file has
    no such column or no rows."""
    scores = pq.ParquetFile(path)
    if column not in scores.schema_arrow.names or scores.metadata.num_rows == 0:
        return None
    values = scores.read_row_group(0, columns=[column]).column(0)
    return values[0].as_py() if len(values) else None


def read_kept(path: Path) -> pd.DataFrame:
    """A kept scoring's ID, probability and offer: what judging it needs."""
    names = pq.read_schema(path).names
    return pq.read_table(path, columns=names[: 1 + len(_SCORED)]).to_pandas()


def scorings(folder: Path) -> list[tuple[date, str, Path]]:
    """Every kept scoring, oldest date first."""
    found = []
    for path in sorted((folder / HISTORY_FOLDER).glob(f"scoring_date=*/model_version=*/{_FILE}")):
        day = path.parent.parent.name.removeprefix("scoring_date=")
        version = path.parent.name.removeprefix("model_version=")
        try:
            found.append((date.fromisoformat(day), version, path))
        except ValueError:
            continue  # not a folder this module wrote
    return sorted(found, key=lambda f: (f[0], int(f[1]) if f[1].isdigit() else 0))


@dataclass(frozen=True)
class Realized:
    """One scoring judged against what happened after it."""

    scoring_date: str
    model_version: str
    customers: int
    days_observed: int
    window_complete: bool
    churners: int
    realized_auc: float | None
    offered: int
    precision_at_offer: float | None
    recall_at_offer: float | None
    churn_rate_offered: float | None
    churn_rate_not_offered: float | None
    realized_value: float
    realized_value_per_1000: float
    #: who chose the offers: the churn version's threshold, or an uplift version (whose offers
    #: these figures then judge, by the churn version's probability only for the AUC)
    offers_by: str = "churn probability"


def judge(
    scores: pd.DataFrame,
    scoring_date: date,
    version: str,
    churn_dates: pd.Series,
    outcomes_as_of: date,
    window_days: int,
    economics: Economics,
    offers_by: str = "churn probability",
) -> Realized | None:
    """The scoring's figures with the outcomes known on `outcomes_as_of`; None before any."""
    observed = min((outcomes_as_of - scoring_date).days, window_days)
    if observed <= 0:
        return None
    end = min(scoring_date + timedelta(days=window_days), outcomes_as_of).isoformat()
    # a scoring kept under an earlier contract names its ID column as that contract did
    id_column = next(c for c in scores.columns if c not in _SCORED)
    later = churn_dates.reindex(scores[id_column]).fillna("").to_numpy()
    left = (later != "") & (later > scoring_date.isoformat()) & (later <= end)
    offer = scores["offer"].to_numpy().astype(bool)
    probability = scores["churn_probability"].to_numpy()
    churners = int(left.sum())
    both = 0 < churners < len(left)

    def share(part: np.ndarray, of: np.ndarray) -> float | None:
        return float(part.sum() / of.sum()) if of.sum() else None

    hits = left & offer  # offered and left: the offers that could have saved someone
    offered = int(offer.sum())
    # the churn rate among those offered is the offer's precision: one figure, two names
    precision = share(hits, offer)
    value = economics.saved_value * int(hits.sum()) - economics.offer_cost * offered
    return Realized(
        scoring_date=scoring_date.isoformat(),
        model_version=version,
        customers=len(scores),
        days_observed=observed,
        window_complete=observed >= window_days,
        churners=churners,
        realized_auc=float(roc_auc_score(left, probability)) if both else None,
        offered=offered,
        precision_at_offer=precision,
        recall_at_offer=share(hits, left),
        churn_rate_offered=precision,
        churn_rate_not_offered=share(left & ~offer, ~offer),
        realized_value=float(value),
        realized_value_per_1000=float(value * 1000 / max(len(scores), 1)),
        offers_by=offers_by,
    )


def realized_table(
    folder: Path,
    churn_dates: pd.Series,
    outcomes_as_of: date,
    window_days: int,
    economics: dict[str, Economics],
    default: Economics,
) -> pd.DataFrame:
    """Every kept scoring with outcomes so far, oldest first (empty before any arrived)."""
    rows = []
    for day, version, path in scorings(folder):
        if day >= outcomes_as_of:
            continue  # no outcome can have arrived: not worth reading (tens of millions of rows)
        judged = judge(
            read_kept(path),
            day,
            version,
            churn_dates,
            outcomes_as_of,
            window_days,
            economics.get(version, default),
            offers_by(path),
        )
        if judged is not None:
            rows.append(asdict(judged))
    return pd.DataFrame(rows, columns=[f for f in Realized.__dataclass_fields__])


def latest_complete(table: pd.DataFrame) -> pd.Series | None:
    """The newest scoring whose whole window has passed and could be judged, if any."""
    complete = table.loc[table["window_complete"].astype(bool) & table["realized_auc"].notna()]
    return None if complete.empty else complete.iloc[-1]


def alert(row: pd.Series, floor: float, holdout_auc: float | None, max_drop: float) -> str | None:
    """Why a complete window's realized AUC is worrying, or None when it is not."""
    auc = float(row["realized_auc"])
    version = row["model_version"]
    if auc < floor:
        return (
            f"realized AUC {auc:.3f} of v{version} (scored {row['scoring_date']}) is below "
            f"the gate's floor {floor:.3f}"
        )
    if holdout_auc is not None and auc < holdout_auc - max_drop:
        return (
            f"realized AUC {auc:.3f} of v{version} (scored {row['scoring_date']}) is more than "
            f"{max_drop:.2f} below its holdout AUC {holdout_auc:.3f}"
        )
    return None


def outcomes_now(settings: ChurnSettings) -> tuple[str, pd.Series]:
    """The current snapshot's date, and the churn date of each customer it records as churned
    (judge counts every other customer as active)."""
    store = snapshot_store(settings)
    current = store.current()
    if current is None:
        raise SnapshotError(f"no snapshot in {store.uri} yet, so nothing was scored")
    churned = store.read(
        current.id, columns=[store.contract.id_column, CHURN_DATE], nonblank=CHURN_DATE
    )
    return current.as_of, history.churn_dates(churned, store.contract)


def realized_now(settings: ChurnSettings) -> tuple[str, pd.DataFrame]:
    """Every kept scoring judged with the outcomes the current snapshot records, and its date.

    Each version is valued with its own costs (the settings' for versions without them).
    """
    as_of, churn_dates = outcomes_now(settings)
    default = Economics(settings.offer_cost, settings.saved_customer_value)
    versions = registry.open_registry(settings).versions()
    table = realized_table(
        settings.scores_folder,
        churn_dates,
        date.fromisoformat(as_of),
        settings.outcome_window_days,
        {str(v.version): version_economics(v.tags or {}, default) for v in versions},
        default,
    )
    # what the gate saw of each version, beside what its scores did: the holdout AUC
    holdout = {str(v.version): float((v.tags or {}).get(HOLDOUT_AUC_TAG, "nan")) for v in versions}
    table[HOLDOUT_AUC_TAG] = table["model_version"].map(holdout).astype(float)
    return as_of, table


#: Where realized_performance keeps its latest table and plot for the console and other
#: readers, in the scores folder (replaced each time).
REALIZED_FOLDER, REALIZED_FILE, REALIZED_PLOT = "realized", "realized.csv", "realized.png"


def keep_realized(folder: Path, table: pd.DataFrame, png: bytes | None) -> None:
    """Write the latest judgement of every kept scoring, each file in one rename."""
    kept = folder / REALIZED_FOLDER
    with replacing(kept / REALIZED_FILE) as temporary:
        table.to_csv(temporary, index=False)
    if png is None:
        (kept / REALIZED_PLOT).unlink(missing_ok=True)
        return
    with replacing(kept / REALIZED_PLOT) as temporary:
        temporary.write_bytes(png)
