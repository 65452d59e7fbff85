"""The console's queries, run by DuckDB on the Parquet files the platform keeps, in place.

DuckDB rather than pandas or Polars: a page of a scoring of tens of millions of customers is a
filter, a sort and a LIMIT, which DuckDB answers by scanning only the columns asked for (the
scores file is ranked, its row groups' statistics prune the rest) in bounded memory, with SQL
parameters for every value a user types; Polars' lazy scans would do too, but DuckDB's
`COPY ... TO` writes a filtered download as a stream, and the same engine reads the history's
hive-partitioned folders by date and version. Nothing is loaded whole into Python.

Column names never come from a request as text: a sort or filter column is one of the scores
file's own columns, checked against its schema; values are bound parameters.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from churn_assets.ml.campaigns import ledger
from churn_assets.ml.evaluation import realized
from churn_assets.ml.model.scoring import SCORES_FILE

#: What a page may be sorted by, besides the segments: the columns every scores file has.
_SORTABLE = ("rank", "churn_probability", "expected_incremental_value", "uplift")
ARMS = ("treatment", "control", "explore", "held")


class NoScoresError(LookupError):
    """No scoring has been written yet."""


@dataclass(frozen=True)
class ListQuery:
    """A page of the current scoring: filters, sort and position, as the list page asks."""

    segments: dict[str, str] = field(default_factory=dict)
    #: "offer", "no offer", or an arm of the latest campaign ("treatment", ...); "" for all
    show: str = ""
    search: str = ""
    sort: str = "rank"
    descending: bool = False
    page: int = 1


@dataclass(frozen=True)
class Page:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    total: int
    campaign: str | None


class ConsoleData:
    """Queries over one scores folder; a cursor per call, so threads never share one."""

    def __init__(
        self, folder: Path, page_rows: int = 50, memory: str = "1GB", spill: str = "4GB"
    ) -> None:
        self.folder = folder
        self.page_rows = page_rows
        self._db = duckdb.connect(":memory:")
        # validated settings (a size each), not values
        self._db.execute(f"set memory_limit = '{memory}'")
        self._db.execute(f"set max_temp_directory_size = '{spill}'")
        # a large sort spills here: not into the working folder (read-only in the images), and
        # a folder of this process's own, as two consoles on one host would share a fixed one
        spills = tempfile.mkdtemp(prefix="churn-console-duckdb-")
        self._db.execute("set temp_directory = ?", [spills])
        weakref.finalize(self, shutil.rmtree, spills, True)  # at exit at the latest
        self._lock = threading.Lock()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:  # making a cursor is the one step that must not race
            return self._db.cursor()

    @property
    def scores_file(self) -> Path:
        path = self.folder / f"{SCORES_FILE}.parquet"
        if not path.exists():
            raise NoScoresError(f"no scoring yet in {self.folder}: run the graph (make run)")
        return path

    def schema(self) -> list[str]:
        return list(pq.read_schema(self.scores_file).names)

    def id_column(self) -> str:
        return self.schema()[1]  # rank, then the contract's ID (scoring.rank)

    def segment_columns(self) -> list[str]:
        """The scores' categorical columns (the contract's segments), by their values."""
        schema = pq.read_schema(self.scores_file)
        return [f.name for f in schema if str(f.type).startswith("dictionary")]

    def segment_values(self) -> dict[str, list[str]]:
        cursor = self._cursor()
        found = {}
        for column in self.segment_columns():
            rows = cursor.execute(
                f'select distinct "{column}" from read_parquet(?) order by 1',
                [str(self.scores_file)],
            ).fetchall()
            found[column] = [str(value) for (value,) in rows if value is not None]
        return found

    def last_scoring(self) -> str | None:
        """The date the current scoring is true on (its snapshot's date)."""
        current = self._current_scoring(realized.scorings(self.folder))
        return None if current is None else current[0]

    def _current_scoring(self, kept: list[tuple[date, str, Path]]) -> tuple[str, str] | None:
        """(date, version) of the kept scoring today's list is: the newest kept by the version
        that wrote the scores file (after a rollback, an older version re-scores a date a newer
        one scored first, so the newest kept is not always it)."""
        version = self.current_version()
        days = [day for day, by, _ in kept if by == version]
        return None if not days or version is None else (days[-1].isoformat(), version)

    def latest_campaign(self) -> ledger.Campaign | None:
        made = ledger.campaigns(self.folder)
        return made[-1] if made else None

    def _where(self, query: ListQuery, columns: list[str]) -> tuple[str, list[Any], str]:
        """The WHERE clause, its parameters, and the FROM (joined with the latest campaign's
        arms when the filter asks for an arm)."""
        id_column = columns[1]
        clauses, params = [], []
        source = "read_parquet(?) as s"
        params.append(str(self.scores_file))
        campaign = self.latest_campaign()
        if query.show in ARMS and campaign is not None:
            source += f' join read_parquet(?) as a on a."{id_column}" = s."{id_column}"'
            params.append(str(ledger.assignments_file(self.folder, campaign.id)))
            clauses.append("a.arm = ?")
            params.append(query.show)
        elif query.show in ARMS:
            clauses.append("false")
        elif query.show == "offer":
            clauses.append("s.offer")
        elif query.show == "no offer":
            clauses.append("not s.offer")
        segments = set(self.segment_columns())
        for column, value in query.segments.items():
            if column in segments and value:
                clauses.append(f's."{column}" = ?')
                params.append(value)
        if query.search:
            clauses.append(f"s.\"{id_column}\" like ? escape '\\'")
            escaped = query.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params.append(f"{escaped}%")
        where = " where " + " and ".join(clauses) if clauses else ""
        return source, params, where

    def _order(self, query: ListQuery, columns: list[str]) -> str:
        sortable = {*(c for c in _SORTABLE if c in columns), *self.segment_columns()}
        sortable |= {c for c in columns if c in ("tenure", "MonthlyCharges")}
        column = query.sort if query.sort in sortable else "rank"
        direction = "desc" if query.descending else "asc"
        return f'order by s."{column}" {direction}, s.rank'

    def page(self, query: ListQuery) -> Page:
        """One page of the current scoring, filtered and sorted, with the number matching."""
        columns = self.schema()
        source, params, where = self._where(query, columns)
        shown = ", ".join(f's."{c}"' for c in columns)
        offset = (max(query.page, 1) - 1) * self.page_rows
        cursor = self._cursor()
        rows = cursor.execute(
            f"select {shown} from {source}{where} {self._order(query, columns)} "
            f"limit {self.page_rows} offset {offset}",
            params,
        ).fetchall()
        (total,) = cursor.execute(f"select count(*) from {source}{where}", params).fetchone() or (
            0,
        )
        campaign = self.latest_campaign()
        return Page(columns, rows, int(total), None if campaign is None else campaign.id)

    def download(self, query: ListQuery, target: Path) -> int:
        """The whole filtered list, sorted as shown, written to `target` as CSV; its rows."""
        columns = self.schema()
        source, params, where = self._where(query, columns)
        shown = ", ".join(f's."{c}"' for c in columns)
        cursor = self._cursor()
        cursor.execute(
            f"copy (select {shown} from {source}{where} {self._order(query, columns)}) "
            f"to '{_quoted(target)}' (header, delimiter ',')",
            params,
        )
        (rows,) = cursor.execute(f"select count(*) from {source}{where}", params).fetchone() or (0,)
        return int(rows)

    def customer(self, customer_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The customer at every kept scoring, oldest first (each row as that scoring had it:
        probability, offer, rank, segments, carried features, reasons), and their row in the
        latest one if they are in it (None: churned, or not in the latest export).

        The kept scorings are sorted by ID in runs (`realized.keep_scores`), so DuckDB reads
        one row group per run of each, never a whole ID column."""
        kept = realized.scorings(self.folder)
        if not kept:
            return None, []
        id_column = self.id_column()
        cursor = self._cursor()
        found = cursor.execute(
            "select * from read_parquet(?, hive_partitioning = true, "
            "hive_types_autocast = false, union_by_name = true) "
            f'where "{id_column}" = ?',
            [[str(path) for *_, path in kept], customer_id],  # exactly the kept scorings
        )
        names = [column for column, *_ in found.description or []]
        rows = [dict(zip(names, row, strict=True)) for row in found.fetchall()]
        # in the order `realized.scorings` keeps them (by date, then version)
        order = {(day.isoformat(), version): i for i, (day, version, _) in enumerate(kept)}
        rows.sort(key=lambda r: order[(r["scoring_date"], r["model_version"])])
        current = self._current_scoring(kept)
        latest = next((r for r in rows if (r["scoring_date"], r["model_version"]) == current), None)
        return latest, rows

    def current_version(self) -> str | None:
        """The version that wrote the current scores file (every row holds it)."""
        version = realized.first_value(self.scores_file, "model_version")
        return None if version is None else str(version)


def _quoted(path: Path) -> str:
    """A path as a SQL string literal's content (COPY's target takes no parameter)."""
    return str(path).replace("'", "''")
