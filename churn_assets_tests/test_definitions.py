"""The code location loads, and every asset carries what the UI shows about it."""

import os
import subprocess
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from churn_assets.definitions import defs
from churn_assets.ml import retraining
from churn_assets_tests.conftest import EXPECTED_PARENTS, TRAINING_ASSETS

REPO = Path(__file__).resolve().parents[1]
EXPECTED_ASSETS = set(EXPECTED_PARENTS)


def executable_keys(job_name: str) -> set[str]:
    job = defs.resolve_job_def(job_name)
    return {k.to_user_string() for k in job.asset_layer.executable_asset_keys}


def test_definitions_load_with_the_whole_graph() -> None:
    dg.Definitions.validate_loadable(defs)
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert keys == EXPECTED_ASSETS
    assert executable_keys("churn_training") == set(TRAINING_ASSETS)
    assert executable_keys("merge_extract") == {"customer_snapshot"}
    assert executable_keys("record_contacts") == {"contact_log", "campaign_effect"}
    graph = defs.resolve_asset_graph()
    for landed in ("incoming_extract", "incoming_contact_log"):  # the sensors report them
        assert not graph.get(dg.AssetKey(landed)).is_executable


def test_lineage_runs_from_the_landing_folder_to_the_scores() -> None:
    graph = defs.resolve_asset_graph()
    parents = {
        name: {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}
        for name in EXPECTED_ASSETS
    }
    assert parents == EXPECTED_PARENTS


def test_every_asset_has_group_owner_kinds_code_version_and_description() -> None:
    graph = defs.resolve_asset_graph()
    for spec in defs.resolve_all_asset_specs():
        name = spec.key.to_user_string()
        assert spec.group_name == "churn", name
        assert spec.owners == ["team:churn-ml"], name
        assert spec.kinds, name
        assert spec.description and "\n" not in spec.description.strip(), name
        if graph.get(spec.key).is_executable:
            assert spec.code_version, name


def test_automation_never_moves_past_a_failed_blocking_check() -> None:
    """Every asset after the snapshot follows by automation, and only behind passed checks."""
    for spec in defs.resolve_all_asset_specs():
        name = spec.key.to_user_string()
        if name in TRAINING_ASSETS:
            condition = spec.automation_condition
            assert condition is not None, name
            labels = {child.get_label() for child in condition.children}
            assert {"eager", "all_deps_blocking_checks_passed"} <= labels, name
        else:
            assert spec.automation_condition is None, name  # the landing sensor drives these
    automation = defs.resolve_sensor_def("churn_automation")
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING


def test_quality_gate_and_data_checks_are_blocking() -> None:
    graph = defs.resolve_asset_graph()
    checks = {
        (key.asset_key.to_user_string(), key.name): graph.get_check_spec(key)
        for key in graph.asset_check_keys
    }
    assert checks[("evaluation_report", "quality_gate")].blocking
    data_checks = {name for asset, name in checks if asset == "raw_customers"}
    assert data_checks == {
        "required_columns",
        "customer_ids",
        "value_types",
        "category_levels",
        "value_ranges",
        "target_codes",
        "churn_rate_plausible",
    }
    warnings = {
        ("customer_snapshot", "extract_drift"),
        ("realized_performance", "realized_auc"),
        ("campaign_effect", "offers_work"),
        ("uplift_model", "uplift_pays"),
    }
    assert all(spec.blocking for key, spec in checks.items() if key not in warnings)
    # drift and realized performance warn, never stop
    assert not any(checks[key].blocking for key in warnings)


def test_the_realized_retrain_sensor_is_off_unless_set() -> None:
    sensor = defs.resolve_sensor_def("realized_retrain")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.job_name == "churn_training"


def test_weekly_retrain_is_defined_and_off_by_default() -> None:
    schedule = defs.resolve_schedule_def("weekly_retrain")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "churn_training"
    assert schedule.cron_schedule == "0 6 * * 1"


@pytest.mark.parametrize(
    "after",
    [
        "2026-12-04T17:00:00+00:00",
        "2026-12-07T05:59:59+00:00",
        "2026-12-07T06:00:00+00:00",
        "2026-12-07T08:00:00+02:00",
        "2026-12-31T23:30:00-05:00",
    ],
)
def test_the_consoles_next_retrain_is_the_schedules_next_tick(after: str) -> None:
    """retraining.next_weekly, which the console shows, against Dagster's own cron iterator."""
    from dagster._utils.schedules import cron_string_iterator

    moment = datetime.fromisoformat(after)
    schedule = defs.resolve_schedule_def("weekly_retrain")
    ticks = cron_string_iterator(
        moment.timestamp() + 1e-3, schedule.cron_schedule, schedule.execution_timezone
    )
    assert retraining.next_weekly(moment) == next(ticks)


def test_landing_sensor_is_on_by_default_and_launches_the_merge() -> None:
    sensor = defs.resolve_sensor_def("incoming_extracts")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == "merge_extract"
    assert sensor.description


def test_dagster_and_dg_clis_load_the_code_location(tmp_path: Path) -> None:
    def cli(*args: str) -> str:
        done = subprocess.run(
            args,
            cwd=REPO,
            env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    cli("dagster", "definitions", "validate", "-w", "workspace.yaml")
    listed = cli("dg", "list", "defs", "--json")
    for name in EXPECTED_ASSETS:
        assert f'"{name}"' in listed


def test_failure_sensor_is_registered_and_on_by_default() -> None:
    sensor = defs.resolve_sensor_def("failed_runs_mlflow_cleanup")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.description
