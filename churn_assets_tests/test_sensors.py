"""The landing sensor's logic, evaluated with Dagster's own sensor context and instance."""

import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from churn_assets.definitions import defs
from churn_assets.ml.data.landing import LandingCursor
from churn_assets.ml.data.synthetic import generate_customers, write_customers
from churn_assets.ml.files import file_sha256
from churn_assets.resources import ChurnSettingsResource
from churn_assets.sensors import EXTRACT_SHA256_TAG, EXTRACT_TAG, incoming_extracts


@pytest.fixture
def landing_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "incoming"
    folder.mkdir()
    monkeypatch.setenv("CHURN_INCOMING_DIR", str(folder))
    monkeypatch.setenv("CHURN_INCOMING_SETTLE_S", "30")
    return folder


@pytest.fixture
def sensor_instance(tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


def _drop(folder: Path, name: str, seed: int, age_s: float = 120) -> Path:
    path = write_customers(generate_customers(40, seed), folder / name)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def _tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=defs,
        resources={"settings": ChurnSettingsResource()},
    )
    result = incoming_extracts(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_new_extract_requests_one_merge_and_reports_where_the_data_came_from(
    landing_dir: Path, sensor_instance: dg.DagsterInstance
) -> None:
    path = _drop(landing_dir, "week48.csv", 1)
    sha256 = file_sha256(path)

    result = _tick(sensor_instance, None)

    (request,) = result.run_requests or []
    assert request.run_key == sha256
    config = request.run_config["ops"]["customer_snapshot"]["config"]
    assert config == {"extract_path": str(path.resolve()), "extract_sha256": sha256}
    assert request.tags[EXTRACT_TAG] == "week48.csv"
    assert request.tags[EXTRACT_SHA256_TAG] == sha256
    (event,) = result.asset_events
    assert isinstance(event, dg.AssetMaterialization)
    assert event.asset_key == dg.AssetKey("incoming_extract")
    assert event.metadata["sha256"].value == sha256
    assert event.metadata["path"].value == str(path.resolve())
    assert event.tags["dagster/data_version"] == sha256
    assert sha256 in json.loads(result.cursor or "{}")["seen"]


def test_the_same_content_never_triggers_twice(
    landing_dir: Path, sensor_instance: dg.DagsterInstance
) -> None:
    path = _drop(landing_dir, "week48.csv", 1)
    first = _tick(sensor_instance, None)
    second = _tick(sensor_instance, first.cursor)
    assert not second.run_requests
    assert second.skip_reason and "no new settled extract" in second.skip_reason.skip_message

    copy = landing_dir / "week48 (1).csv"
    copy.write_bytes(path.read_bytes())
    os.utime(copy, (time.time() - 120, time.time() - 120))
    assert not _tick(sensor_instance, second.cursor).run_requests


def test_a_file_still_being_written_waits(
    landing_dir: Path, sensor_instance: dg.DagsterInstance
) -> None:
    _drop(landing_dir, "copying.csv", 1, age_s=1)
    _drop(landing_dir, "upload.csv.part", 2)
    result = _tick(sensor_instance, None)
    assert not result.run_requests
    assert LandingCursor.from_json(result.cursor).seen == []  # it will be picked up later


def test_extracts_merge_one_at_a_time_oldest_first(
    landing_dir: Path, sensor_instance: dg.DagsterInstance
) -> None:
    _drop(landing_dir, "b.csv", 2, age_s=100)
    _drop(landing_dir, "a.csv", 1, age_s=200)
    first = _tick(sensor_instance, None)
    (request,) = first.run_requests or []
    assert request.tags[EXTRACT_TAG] == "a.csv"

    running = dg.DagsterRun(job_name="merge_extract", status=dg.DagsterRunStatus.STARTED)
    sensor_instance.add_run(running)
    waiting = _tick(sensor_instance, first.cursor)
    assert not waiting.run_requests
    assert running.run_id in waiting.skip_reason.skip_message

    sensor_instance.report_run_failed(running)
    (request,) = _tick(sensor_instance, waiting.cursor).run_requests or []
    assert request.tags[EXTRACT_TAG] == "b.csv"
