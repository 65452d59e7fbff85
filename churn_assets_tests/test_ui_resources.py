"""The Dagster UI's resources page shows the settings in force, and run config still sets one
for one run: read over GraphQL from a real code server of workspace.yaml, as the UI reads it."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

from churn_assets.ml.settings import ChurnSettings
from churn_assets.resources import ChurnSettingsResource, churn_resources
from churn_assets_tests.processes import REPO

RESOURCES_QUERY = """
query {
  allTopLevelResourceDetailsOrError(repositorySelector: {
      repositoryLocationName: "churn_assets", repositoryName: "__repository__"}) {
    __typename
    ... on ResourceDetailsList {
      results {
        name resourceType description
        configFields { name }
        configuredValues { key value type }
      }
    }
  }
}
"""
#: A tracking store whose URI carries a password, which no page may show.
SECRET_STORE = "postgresql://churn:s3cret-pw@db.internal:5432/mlflow"


@pytest.fixture
def resources_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> Iterator[dict[str, dict[str, Any]]]:
    """Every top-level resource as the UI gets it, by key, from a code server started with
    this environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHURN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CHURN_DATA_PATH", "/data/customers.csv")
    monkeypatch.setenv("CHURN_MIN_AUC", "0.85")
    monkeypatch.setenv("CHURN_GATE_BEAT_BASELINE", "true")
    monkeypatch.setenv("CHURN_DASK_WORKERS", "3")
    monkeypatch.setenv("CHURN_EXPERIMENT_NAME", "churn-ui-test")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SECRET_STORE)
    with define_out_of_process_context(str(REPO / "workspace.yaml"), None, instance) as context:
        data = execute_dagster_graphql(context, RESOURCES_QUERY).data
    page = data["allTopLevelResourceDetailsOrError"]
    assert page["__typename"] == "ResourceDetailsList", page
    yield {resource["name"]: resource for resource in page["results"]}


def _values(resource: dict[str, Any]) -> dict[str, str]:
    return {v["key"]: v["value"] for v in resource["configuredValues"]}


def test_resources_page_shows_the_settings_in_force(
    resources_page: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    assert set(resources_page) == {"settings", "registry", "dask", "io_manager", "mlflow"}
    for name, resource in resources_page.items():
        assert (resource["description"] or "").strip(), f"{name} has no description"

    settings = resources_page["settings"]
    values = _values(settings)
    # every field shows a value (JSON), null only where unset means "the shipped contract" or
    # "no challenger"
    assert set(values) == {field["name"] for field in settings["configFields"]}
    assert {key for key, value in values.items() if value == "null"} == {
        "contract_path",
        "challenger_version",
        "challenger_threshold",
    }
    assert values["min_auc"] == "0.85"  # from the environment
    assert values["min_accuracy"] == "0.78"  # the default, written out
    assert values["gate_beat_baseline"] == "true"
    assert values["data_path"] == '"/data/customers.csv"'
    assert values["scores_dir"] == f'"{(tmp_path / "state" / "scores").resolve()}"'
    assert values["calibration"] == '"auto"'
    assert _values(resources_page["dask"])["workers"] == "3"

    mlflow = resources_page["mlflow"]
    assert mlflow["resourceType"] == "churn_assets.resources.mlflow_run_tracking"
    assert "experiment 'churn-ui-test'" in mlflow["description"]
    assert "postgresql://***@db.internal:5432/mlflow" in mlflow["description"]
    # nothing to leave blank: no config of its own, so no run sends its MLflow run elsewhere
    assert mlflow["configFields"] == [] and mlflow["configuredValues"] == []
    assert "s3cret" not in str(resources_page)


def test_run_config_sets_a_setting_for_one_run_over_the_value_in_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHURN_MIN_AUC", "0.83")

    @dg.asset
    def seen(settings: ChurnSettingsResource) -> dict[str, Any]:
        """What a step of a run reads from the settings resource."""
        return settings.get().model_dump()

    resources = churn_resources()
    as_bound = dg.materialize([seen], resources=resources)
    assert as_bound.output_for_node("seen")["min_auc"] == 0.83
    raised = dg.materialize(
        [seen],
        resources=resources,
        run_config={"resources": {"settings": {"config": {"min_auc": 0.9}}}},
    )
    chosen = raised.output_for_node("seen")
    assert chosen["min_auc"] == 0.9  # this run only
    assert chosen["min_accuracy"] == 0.78  # the rest as in force
    assert dg.materialize([seen], resources=resources).output_for_node("seen")["min_auc"] == 0.83


def test_values_in_force_give_back_the_settings_they_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHURN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CHURN_MAX_AUC_DROP", "0.02")
    monkeypatch.setenv("CHURN_CALIBRATION", "never")
    environment = ChurnSettings()
    bound = ChurnSettingsResource.in_force(environment).get()
    assert bound.scores_folder == environment.scores_folder
    assert bound.model_dump(exclude={"scores_dir"}) == environment.model_dump(
        exclude={"scores_dir"}
    )
