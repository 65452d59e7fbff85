"""The streaming merge that ranks a base scored a partition at a time: the order one stable
sort of the whole gives, ties included, however the runs are cut into batches."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from churn_assets.ml.model import ranking


def _run(index: int, rows: int, rng: np.random.Generator, ties: bool) -> pa.Table:
    p = rng.choice([0.1, 0.5, 0.5, 0.9], rows) if ties else rng.random(rows)
    # each partition's categories in its own order: Arrow dictionaries that differ
    levels = ["a", "b", "c"] if index % 2 else ["c", "a", "b"]
    frame = pd.DataFrame(
        {
            "id": pd.array([f"{index}-{j}" for j in range(rows)], dtype="string[pyarrow]"),
            "churn_probability": p,
            "segment": pd.Categorical(rng.choice(["a", "b", "c"], rows), categories=levels),
        }
    )
    return pa.Table.from_pandas(frame, preserve_index=False)


def _batches(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(start, size) for start in range(0, table.num_rows, size)]


@pytest.mark.parametrize("ties", [False, True])
def test_merged_runs_are_one_stable_sort_of_the_whole(ties: bool) -> None:
    rng = np.random.default_rng(7)
    for _ in range(150):
        parts = [_run(i, int(rng.integers(0, 60)), rng, ties) for i in range(rng.integers(1, 7))]
        whole = pa.concat_tables(parts)
        expected = ranking.sort_descending(whole, "churn_probability")
        runs = [
            iter(_batches(ranking.sort_descending(part, "churn_probability"), rng.integers(1, 9)))
            for part in parts
        ]
        batch_rows = int(rng.integers(1, 40))
        merged = list(ranking.merge_descending(runs, "churn_probability", batch_rows))
        assert all(b.num_rows >= batch_rows for b in merged[:-1])
        got = pa.concat_tables(merged) if merged else whole.slice(0, 0)
        for column in ("id", "churn_probability", "segment"):
            assert got.column(column).to_pylist() == expected.column(column).to_pylist()


def test_ranked_batches_number_on_across_batches_and_carry_the_version() -> None:
    rng = np.random.default_rng(1)
    table = ranking.sort_descending(_run(0, 25, rng, ties=True), "churn_probability")
    ranked = pa.concat_tables(ranking.ranked(_batches(table, 7), "12")).to_pandas()
    assert ranked["rank"].tolist() == list(range(1, 26))
    assert list(ranked.columns) == ["rank", "id", "churn_probability", "segment", "model_version"]
    assert (ranked["model_version"] == "12").all()


def test_a_column_one_partition_lacks_or_holds_only_blanks_is_typed_as_elsewhere() -> None:
    schema = pa.schema([("id", pa.string()), ("plan", pa.string()), ("reason_1", pa.string())])
    blank = pa.table({"id": ["x", "y"], "plan": pa.nulls(2)})
    conformed = ranking.conform(blank, schema)
    assert conformed.schema == schema
    assert conformed.column("reason_1").null_count == 2
    assert conformed.column("id").to_pylist() == ["x", "y"]
