"""Promotion and rollback rules against a real MLflow registry on SQLite."""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from churn_assets.ml import registry

NAME = "churn-classifier"
ALIAS = "production"


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_client = MlflowClient(uri, uri)
    mlflow_client.create_registered_model(NAME)
    return mlflow_client


def _version(client: MlflowClient, gate: str | None = None, against: str = "none") -> str:
    source = Path(client.tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
    source.mkdir(exist_ok=True)
    version = client.create_model_version(NAME, source=source.as_uri(), run_id=None)
    if gate is not None:
        registry.record_gate(
            client, NAME, version.version, gate == "passed", None if against == "none" else against
        )
    return str(version.version)


def _production(client: MlflowClient) -> str | None:
    current = registry.production_version(client, NAME, ALIAS)
    return None if current is None else str(current.version)


def test_no_alias_means_no_production(client: MlflowClient) -> None:
    assert _production(client) is None
    assert registry.production_version(client, "never-registered", ALIAS) is None


def test_first_promotion_records_no_previous_version(client: MlflowClient) -> None:
    v1 = _version(client, "passed")
    move = registry.promote(client, NAME, v1, ALIAS)
    assert (move.version, move.previous_version, move.changed) == (v1, None, True)
    assert _production(client) == v1
    tags = client.get_model_version(NAME, v1).tags
    assert tags[registry.PREVIOUS_TAG] == "none"
    assert registry.PROMOTED_AT_TAG in tags


def test_promotion_is_idempotent(client: MlflowClient) -> None:
    v1 = _version(client, "passed")
    registry.promote(client, NAME, v1, ALIAS)
    again = registry.promote(client, NAME, v1, ALIAS)
    assert not again.changed
    assert _production(client) == v1


@pytest.mark.parametrize("gate", ["failed", None])
def test_version_without_a_passed_gate_is_refused(client: MlflowClient, gate: str | None) -> None:
    v1 = _version(client, "passed")
    registry.promote(client, NAME, v1, ALIAS)
    v2 = _version(client, gate, against=v1)
    with pytest.raises(registry.PromotionRefusedError, match="quality gate is"):
        registry.promote(client, NAME, v2, ALIAS)
    assert _production(client) == v1


def test_candidate_compared_with_an_older_champion_is_refused(client: MlflowClient) -> None:
    v1 = _version(client, "passed")
    registry.promote(client, NAME, v1, ALIAS)
    v2 = _version(client, "passed", against=v1)
    v3 = _version(client, "passed", against=v1)
    registry.promote(client, NAME, v3, ALIAS)
    with pytest.raises(registry.PromotionRefusedError, match="is now version 3"):
        registry.promote(client, NAME, v2, ALIAS)
    assert _production(client) == v3


def test_rollback_returns_to_the_replaced_version(client: MlflowClient) -> None:
    v1 = _version(client, "passed")
    registry.promote(client, NAME, v1, ALIAS)
    v2 = _version(client, "passed", against=v1)
    registry.promote(client, NAME, v2, ALIAS)
    move = registry.rollback(client, NAME, ALIAS)
    assert (move.version, move.previous_version, move.changed) == (v1, v2, True)
    assert _production(client) == v1
    assert client.get_model_version(NAME, v2).tags[registry.ROLLED_BACK_TO_TAG] == v1
    with pytest.raises(registry.PromotionRefusedError, match="records no previous"):
        registry.rollback(client, NAME, ALIAS)


def test_rollback_to_named_version_requires_a_passed_gate(client: MlflowClient) -> None:
    v1 = _version(client, "passed")
    registry.promote(client, NAME, v1, ALIAS)
    rejected = _version(client, "failed", against=v1)
    with pytest.raises(registry.PromotionRefusedError, match="never passed"):
        registry.rollback(client, NAME, ALIAS, rejected)
    with pytest.raises(registry.PromotionRefusedError, match="has no version 99"):
        registry.rollback(client, NAME, ALIAS, "99")
    assert _production(client) == v1


def test_rollback_without_production_is_refused(client: MlflowClient) -> None:
    with pytest.raises(registry.PromotionRefusedError, match="no 'production' version"):
        registry.rollback(client, NAME, ALIAS)
