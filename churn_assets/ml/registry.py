"""Registry state: the production alias, gate records on versions, promotion and rollback.

Production is a registry alias (MLflow 3; stages are deprecated). Every decision is written on
the model version as a tag, so the registry alone says why a version is or is not production,
whichever Dagster run, UI click or sensor got it there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

GATE_TAG = "quality_gate"
GATE_PASSED = "passed"
GATE_FAILED = "failed"
#: Production version the candidate was compared with ("none" when there was none).
COMPARED_WITH_TAG = "compared_with_production"
PREVIOUS_TAG = "previous_production_version"
PROMOTED_AT_TAG = "promoted_at"
ROLLED_BACK_TO_TAG = "rolled_back_to"
NO_VERSION = "none"


class PromotionRefusedError(RuntimeError):
    """Moving the production alias would break a promotion rule; the alias was not moved."""


@dataclass(frozen=True)
class AliasMove:
    """Where the production alias points after an operation, and where it pointed before."""

    model_name: str
    alias: str
    version: str
    previous_version: str | None
    changed: bool


def _missing(error: MlflowException) -> bool:
    return error.error_code in {
        ErrorCode.Name(RESOURCE_DOES_NOT_EXIST),
        ErrorCode.Name(INVALID_PARAMETER_VALUE),
    }


def production_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version the alias points at, or None when the model or alias does not exist yet."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if _missing(error):
            return None
        raise


def record_gate(
    client: MlflowClient, name: str, version: str, passed: bool, compared_with: str | None
) -> None:
    """Write the gate verdict on the version; promotion trusts nothing else."""
    client.set_model_version_tag(name, version, COMPARED_WITH_TAG, compared_with or NO_VERSION)
    client.set_model_version_tag(name, version, GATE_TAG, GATE_PASSED if passed else GATE_FAILED)


def promote(client: MlflowClient, name: str, version: str, alias: str) -> AliasMove:
    """Point `alias` at `version` if, and only if, it passed the gate against today's production.

    Idempotent: promoting the version that already holds the alias changes nothing.
    """
    candidate = client.get_model_version(name, version)
    current = production_version(client, name, alias)
    if current is not None and str(current.version) == str(candidate.version):
        previous = candidate.tags.get(PREVIOUS_TAG)
        return AliasMove(name, alias, version, previous, changed=False)
    gate = candidate.tags.get(GATE_TAG)
    if gate != GATE_PASSED:
        raise PromotionRefusedError(
            f"{name} version {version} cannot become {alias!r}: its quality gate is "
            f"{gate or 'not evaluated'}; only a version that passed the gate is promoted"
        )
    current_version = str(current.version) if current is not None else NO_VERSION
    compared_with = candidate.tags.get(COMPARED_WITH_TAG)
    if compared_with != current_version:
        raise PromotionRefusedError(
            f"{name} version {version} was evaluated against production version "
            f"{compared_with}, but {alias!r} is now version {current_version}; re-run "
            "evaluation_report so the candidate is compared with the current champion"
        )
    client.set_model_version_tag(name, version, PREVIOUS_TAG, current_version)
    client.set_model_version_tag(name, version, PROMOTED_AT_TAG, datetime.now(UTC).isoformat())
    client.set_registered_model_alias(name, alias, version)
    previous = None if current is None else str(current.version)
    return AliasMove(name, alias, version, previous, changed=True)


def rollback(
    client: MlflowClient, name: str, alias: str, to_version: str | None = None
) -> AliasMove:
    """Move `alias` back to the version it replaced (or to `to_version`, which passed the gate)."""
    current = production_version(client, name, alias)
    if current is None:
        raise PromotionRefusedError(f"{name} has no {alias!r} version to roll back from")
    target = to_version or current.tags.get(PREVIOUS_TAG)
    if not target or target == NO_VERSION:
        raise PromotionRefusedError(
            f"{name} version {current.version} records no previous {alias!r} version; "
            "name one with --to VERSION"
        )
    try:
        chosen = client.get_model_version(name, target)
    except MlflowException as error:
        if _missing(error):
            raise PromotionRefusedError(f"{name} has no version {target}") from error
        raise
    if to_version is not None and chosen.tags.get(GATE_TAG) != GATE_PASSED:
        raise PromotionRefusedError(
            f"{name} version {target} never passed the quality gate; not rolling back to it"
        )
    chosen_version, current_version = str(chosen.version), str(current.version)
    if chosen_version == current_version:
        return AliasMove(name, alias, chosen_version, current_version, changed=False)
    client.set_model_version_tag(name, current_version, ROLLED_BACK_TO_TAG, chosen_version)
    client.set_registered_model_alias(name, alias, chosen_version)
    return AliasMove(name, alias, chosen_version, current_version, changed=True)
