"""Writes to the artifact store appear whole or not at all: a local folder and S3 (moto's
standalone server), through the one helper snapshots and the I/O manager both use; snapshots
are written and read a partition at a time on both."""

import itertools
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import boto3
import pandas as pd
import pyarrow.fs as pafs
import pytest

from churn_assets.ml.data import history, snapshots
from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.snapshots import SnapshotStore
from churn_assets.ml.data.synthetic import generate_customers
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.storage import Location, location
from churn_assets.ml.stores import s3_access
from churn_assets_tests.processes import base_env, free_port, running

TELCO = default_contract()
DAY = date(2026, 11, 20)
KEYS = {"AWS_ACCESS_KEY_ID": "churn-test", "AWS_SECRET_ACCESS_KEY": "churn-test-secret"}


class InterruptedWriteError(Exception):
    """What a failure half-way through a write looks like (a full disk, a lost connection)."""


@pytest.fixture(params=["folder", "s3"])
def where(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Location]:
    if request.param == "folder":
        yield location(str(tmp_path / "store"), s3_access(ChurnSettings()))
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    moto = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with running(moto, base_env(), f"{url}/moto-api/", tmp_path / "s3.log"):
        boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket="churn")
        for name, value in {**KEYS, "MLFLOW_S3_ENDPOINT_URL": url}.items():
            monkeypatch.setenv(name, value)
        yield location("s3://churn/store", s3_access(ChurnSettings()))


def _names(where: Location) -> list[str]:
    selector = pafs.FileSelector(where.root, recursive=True, allow_not_found=True)
    return sorted(f.base_name for f in where.filesystem.get_file_info(selector) if f.is_file)


def test_a_write_that_fails_half_way_leaves_nothing_behind(where: Location) -> None:
    path = where.path("runs", "table.bin")
    with pytest.raises(InterruptedWriteError), where.writing(path) as target:
        with where.filesystem.open_output_stream(target) as stream:
            stream.write(b"half of a file")
        raise InterruptedWriteError
    assert not where.exists(path)
    assert _names(where) == []


def test_a_write_appears_whole_under_its_name_and_replaces_the_old(where: Location) -> None:
    path = where.path("runs", "table.bin")
    for content in (b"first", b"second, longer"):
        with where.writing(path) as target, where.filesystem.open_output_stream(target) as out:
            out.write(content)
        with where.filesystem.open_input_stream(path) as stream:
            assert stream.read() == content
    assert _names(where) == ["table.bin"]


def _store(where: Location) -> SnapshotStore:
    return SnapshotStore(where, default_contract(), ChurnSettings().max_extract_ahead_days)


def test_a_snapshot_in_chunks_is_the_snapshot_whole_and_reads_back_a_partition_at_a_time(
    where: Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "PARTITION_ROWS", 1000)
    frame = generate_customers(3500, 5)
    store = _store(where)
    whole = store.write(
        frame, kind="file", source="a.csv", source_sha256="", parent=None, as_of=DAY
    )
    cuts = [0, 700, 2600, 3500]  # chunk edges that are not partition edges
    chunks = (frame.iloc[a:b] for a, b in itertools.pairwise(cuts))
    chunked = store.write(
        chunks, kind="file", source="a.csv", source_sha256="", parent=None, as_of=DAY
    )
    assert chunked == whole and (whole.rows, whole.churn_rate) == (
        3500,
        history.churned(frame, TELCO).mean(),
    )
    assert _names(where) == sorted([f"{whole.id}.json", f"{whole.id}.parquet"])
    assert store.partitions(whole.id) == 4
    read = store.read(whole.id, categorical=True)
    parts = [store.read_partition(whole.id, i, categorical=True) for i in range(4)]
    assert [len(p) for p in parts] == [1000, 1000, 1000, 500] and parts[3].index[0] == 3000
    pd.testing.assert_frame_equal(pd.concat(parts).astype(str), read.astype(str))
    pd.testing.assert_frame_equal(
        read[list(TELCO.columns)].astype(str), frame.astype(str), check_dtype=False
    )


def test_a_snapshot_whose_chunks_fail_half_way_leaves_nothing_behind(
    where: Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "PARTITION_ROWS", 1000)
    frame = generate_customers(3000, 5)

    def chunks() -> Iterator[pd.DataFrame]:
        yield frame.iloc[:1500]  # one partition already written
        yield frame.iloc[1500:2500]
        raise InterruptedWriteError

    store = _store(where)
    with pytest.raises(InterruptedWriteError):
        store.write(chunks(), kind="file", source="a.csv", source_sha256="", parent=None, as_of=DAY)
    assert _names(where) == [] and store.all() == []


def _three(store: SnapshotStore) -> list[str]:
    return [
        store.write(
            generate_customers(20, seed),
            kind="file",
            source="a.csv",
            source_sha256="",
            parent=None,
            as_of=DAY,
        ).id
        for seed in (1, 2, 3)
    ]


def test_the_pointer_moves_only_from_the_version_a_writer_read(where: Location) -> None:
    # two writers on one store: nothing they share but the store itself
    ours, theirs = _store(where), _store(location(where.uri, s3_access(ChurnSettings())))
    x, y, _ = _three(ours)
    none_yet = ours.pointer()
    assert none_yet == snapshots.Pointer(None, None)
    ours.point_to(x, "first", replacing=none_yet)
    with pytest.raises(snapshots.PointerMovedError, match=r"CURRENT\.json .* since it named none"):
        theirs.point_to(y, "also first", replacing=none_yet)  # created meanwhile: refused
    assert theirs.current_id() == x

    read = ours.pointer()
    moved = theirs.point_to(y, "theirs", replacing=theirs.pointer())
    with pytest.raises(snapshots.PointerMovedError, match=f"since it named {x[:12]}"):
        ours.point_to(x, "ours, on a stale read", replacing=read)
    assert ours.pointer() == moved and ours.current_id() == y
    # a failed move wrote nothing: the store holds the pointer and the snapshots only
    assert sum(name.endswith(".tmp") for name in _names(where)) == 0


def test_a_prune_that_a_move_overtakes_puts_back_what_it_unlisted(where: Location) -> None:
    store = _store(where)
    x, y, z = _three(store)
    before = store.pointer()
    store.point_to(z, "current", replacing=before)
    stale = store.pointer()
    store.point_to(x, "restored meanwhile", replacing=stale)
    # a prune that read the pointer before that restore would take x, the new current
    with pytest.raises(snapshots.PointerMovedError):
        store._prune(1, [], stale)
    assert [s.id for s in store.all()] == [x, y, z]
    assert store.read(x).shape[0] == 20  # its data untouched, its bytes its name
    # prune moves the pointer onto itself: a move made on a pointer read before it is refused
    read = store.pointer()
    assert [s.id for s in store.prune(1, [])] == [y]  # x is current, z the newest
    assert store.current_id() == x
    with pytest.raises(snapshots.PointerMovedError):
        store.point_to(z, "made on the pointer read before the prune", replacing=read)
    assert store.current_id() == x
