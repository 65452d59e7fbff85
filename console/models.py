"""The registry as the console shows it: each model's versions, their verdicts and whether
their attestation verifies, and what changed between two versions. Reads only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow.entities.model_registry import ModelVersion

from churn_assets.ml.registry import artifacts, signing, tracking
from churn_assets.ml.registry import model_registry as registry
from churn_assets.ml.registry.signing import SignatureError, Verifier
from churn_assets.ml.settings import ChurnSettings

#: The figures a version's tags carry that the page compares (held-out ones: heldout_*).
_FIGURE_PREFIXES = ("holdout_", "heldout_", "decision_threshold")


@dataclass(frozen=True)
class VersionRow:
    model: str
    version: str
    created: str
    verdict: str
    reason: str
    production: bool
    #: "yes", "no: why", or "not checked: why" (no key to verify with)
    attested: str
    figures: dict[str, str]
    contract: str


def _verifier(settings: ChurnSettings) -> Verifier | str:
    try:
        return signing.verifier(settings)
    except SignatureError as error:
        return f"not checked ({error})"[:200]


def _attested(verifier: Verifier | str, version: ModelVersion) -> str:
    if isinstance(verifier, str):
        return verifier
    try:
        artifacts.verified_attestation(verifier, version)
    except SignatureError as error:
        return f"no: {error}"[:300]
    return "yes"


def versions(settings: ChurnSettings, name: str) -> list[VersionRow]:
    """Every version of model `name`, newest first."""
    client = tracking.client(settings)
    production = registry.production_version(client, name, settings.production_alias)
    current = None if production is None else str(production.version)
    verifier = _verifier(settings)
    found = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: -int(v.version))
    return [_row(name, version, verifier, str(version.version) == current) for version in found]


def production(settings: ChurnSettings, name: str) -> VersionRow | None:
    """The version of `name` in production, as `versions` shows it; None before any."""
    client = tracking.client(settings)
    version = registry.production_version(client, name, settings.production_alias)
    return None if version is None else _row(name, version, _verifier(settings), True)


def _row(name: str, version: ModelVersion, verifier: Verifier | str, current: bool) -> VersionRow:
    tags = version.tags or {}
    return VersionRow(
        model=name,
        version=str(version.version),
        created=_when(version.creation_timestamp),
        verdict=tags.get(registry.GATE_TAG, "not evaluated"),
        reason=tags.get(registry.GATE_REASON_TAG, "")[:400],
        production=current,
        attested=_attested(verifier, version),
        figures={k: v for k, v in sorted(tags.items()) if k.startswith(_FIGURE_PREFIXES)},
        contract=registry.contract_digest(version)[:12],
    )


@dataclass(frozen=True)
class Comparison:
    older: VersionRow
    newer: VersionRow
    #: figure -> (older, newer), for every figure either carries
    figures: dict[str, tuple[str, str]]
    #: what in the newer version's contract would break the older's callers (signed files)
    contract_changes: list[str]


def compare(settings: ChurnSettings, name: str, first: str, second: str) -> Comparison | None:
    """Two versions of `name` side by side; None if either is not a version."""
    rows = {row.version: row for row in versions(settings, name)}
    if first not in rows or second not in rows:
        return None
    older, newer = sorted((rows[first], rows[second]), key=lambda r: int(r.version))
    names = sorted(set(older.figures) | set(newer.figures))
    figures = {k: (older.figures.get(k, ""), newer.figures.get(k, "")) for k in names}
    changes: list[str] = []
    if older.contract != newer.contract:
        verifier = _verifier(settings)
        if isinstance(verifier, str):
            changes = [f"the contracts differ; their changes are {verifier}"]
        else:
            client = tracking.client(settings)
            try:
                before = artifacts.verified_contract(
                    verifier, client.get_model_version(name, older.version), settings.tracking_uri
                )
                after = artifacts.verified_contract(
                    verifier, client.get_model_version(name, newer.version), settings.tracking_uri
                )
                changes = before.breaking_changes(after) or ["the contracts differ, compatibly"]
            except SignatureError as error:
                changes = [f"not compared: {error}"[:300]]
    return Comparison(older, newer, figures, changes)


def _when(milliseconds: Any) -> str:
    from datetime import UTC, datetime

    if not milliseconds:
        return ""
    return datetime.fromtimestamp(int(milliseconds) / 1000, UTC).strftime("%Y-%m-%d %H:%M")
