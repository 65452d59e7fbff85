"""The model registry: the one writer of versions, their tags and the production alias.

Production is a registry alias (MLflow 3; stages are deprecated). Every decision is written on
the model version as a tag, so the registry alone says why a version is or is not production,
whichever Dagster run, UI click, sensor or shell command got it there. Every write goes
through `ModelRegistry`; reads that need no decision (`production_version`) stay functions so
the API can use them without a lock.

A version is registered with the gate verdict `pending`; evaluation turns it into `passed`,
`failed` or `refused` (with a reason), and a run that dies before that refuses it on its way
out (or the failure sensor does, for a worker that was killed), so no version is left without
a verdict. Moving the alias is a compare-and-set under a lock every writer shares
(`churn_assets.ml.registry.locks`), re-read after the move.

Tags are for people; what decides is signed (`churn_assets.ml.registry.signing`): the manifest
of a version's files at registration, the gate's verdict, and the attestation that promotion,
a rollback or `churn attest` signs. Promotion and rollback believe the signed verdict, never
the `quality_gate` tag, and consumers serve only an attested version.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.registry import artifacts, locks, signing, tracking
from churn_assets.ml.registry.locks import RegistryLock
from churn_assets.ml.registry.signing import SignatureError, Signer
from churn_assets.ml.settings import ChurnSettings

if TYPE_CHECKING:
    from churn_assets.ml.evaluation.gate import GateResult

GATE_TAG = "quality_gate"
GATE_PENDING = "pending"
GATE_PASSED = "passed"
GATE_FAILED = "failed"
GATE_REFUSED = "refused"
#: Why a version failed or was refused, in words.
GATE_REASON_TAG = "quality_gate_reason"
#: The thresholds the verdict applied and the reference it applied them to (JSON).
GATE_THRESHOLDS_TAG = "quality_gate_thresholds"
#: Present when the gate ran below the deployment's floor on purpose (JSON: who, why, what).
GATE_OVERRIDE_TAG = "quality_gate_override"
#: Production version the candidate was compared with ("none" when there was none).
COMPARED_WITH_TAG = "compared_with_production"
PREVIOUS_TAG = "previous_production_version"
PROMOTED_AT_TAG = "promoted_at"
PROMOTED_BY_TAG = "promoted_by_run"
#: Why a version that passed the gate did not become production.
PROMOTION_REFUSED_TAG = "promotion_refused"
ROLLED_BACK_TO_TAG = "rolled_back_to"
DAGSTER_RUN_TAG = "dagster_run_id"
#: The training snapshot a version learned from (its SHA-256; see churn_assets.ml.data.snapshots).
SNAPSHOT_TAG = "snapshot_id"
#: The digest and version of the data contract a version reads its inputs by (the contract
#: itself is its run's tracking.CONTRACT_ARTIFACT).
CONTRACT_TAG = "contract_digest"
CONTRACT_VERSION_TAG = "contract_version"
NO_VERSION = "none"
#: MLflow's limit on a model version tag's value.
_TAG_LIMIT = 5000


class PromotionRefusedError(RuntimeError):
    """Moving the production alias would break a promotion rule; the alias was not moved."""


class PromotionLostError(RuntimeError):
    """The alias moved elsewhere while we held the lock: a writer that skips the lock exists."""


#: Every way an alias move ends without moving it, each with a message for people.
WRITE_REFUSALS: tuple[type[Exception], ...] = (
    PromotionRefusedError,
    SignatureError,
    PromotionLostError,
    locks.LockTimeoutError,
    locks.LockUnavailableError,
)


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


def override_of(version: ModelVersion) -> dict[str, object] | None:
    """The gate override a version was promoted under, if any (shown by the CLI and the API)."""
    text = (version.tags or {}).get(GATE_OVERRIDE_TAG)
    return None if not text else dict(json.loads(text))


@dataclass
class ModelRegistry:
    """Every write to one registered model: versions, their tags and the production alias."""

    client: MlflowClient
    name: str
    alias: str
    lock: RegistryLock
    #: Training's key, asked for only by the writes that sign (a sensor refusing a version
    #: never makes the embedded default's key pair).
    signing_key: Callable[[], Signer]
    lock_timeout_s: float = 60.0

    # -- reads ---------------------------------------------------------------------------
    @property
    def store(self) -> str:
        """The tracking and registry URI this registry reads and writes."""
        return str(self.client.tracking_uri)

    def production(self) -> ModelVersion | None:
        return production_version(self.client, self.name, self.alias)

    def production_number(self) -> str | None:
        """The production version's number; None before one is promoted."""
        production = self.production()
        return None if production is None else str(production.version)

    def version(self, version: str) -> ModelVersion:
        try:
            return self.client.get_model_version(self.name, version)
        except MlflowException as error:
            if _missing(error):
                raise PromotionRefusedError(f"{self.name} has no version {version}") from error
            raise

    def versions(self) -> list[ModelVersion]:
        try:
            return list(self.client.search_model_versions(f"name = '{self.name}'"))
        except MlflowException as error:
            if _missing(error):
                return []
            raise

    def versions_of_run(self, dagster_run_id: str) -> list[ModelVersion]:
        """The versions a Dagster run registered, oldest first."""
        mine = [v for v in self.versions() if (v.tags or {}).get(DAGSTER_RUN_TAG) == dagster_run_id]
        return sorted(mine, key=lambda v: int(v.version))

    def versions_by_snapshot(self) -> dict[str, list[str]]:
        """Each snapshot a version was trained on, and those versions (oldest first)."""
        found: dict[str, list[str]] = {}
        for version in sorted(self.versions(), key=lambda v: int(v.version)):
            snapshot = (version.tags or {}).get(SNAPSHOT_TAG)
            if snapshot:
                found.setdefault(snapshot, []).append(str(version.version))
        return found

    def recent_production_versions(self, count: int) -> list[str]:
        """Production now, then the versions promoted before it, newest first, at most `count`."""
        return self.recent_production_versions_from(self.production(), count)

    def recent_production_versions_from(
        self, current: ModelVersion | None, count: int
    ) -> list[str]:
        """`current` (production as the caller read it), then the versions promoted before it.

        Versions production was rolled back from are left out: someone judged them unfit.
        """
        chosen = [] if current is None else [str(current.version)]
        promoted = sorted(
            (
                v
                for v in self.versions()
                if PROMOTED_AT_TAG in (v.tags or {})
                and ROLLED_BACK_TO_TAG not in (v.tags or {})
                and str(v.version) not in chosen
            ),
            key=lambda v: v.tags[PROMOTED_AT_TAG],
            reverse=True,
        )
        chosen += [str(v.version) for v in promoted]
        return chosen[:count]

    # -- versions and their verdicts -----------------------------------------------------
    def register(
        self,
        model_uri: str,
        tags: Mapping[str, str],
        check: Callable[[Any], None] | None = None,
    ) -> ModelVersion:
        """A new version of the logged model, born with a pending gate verdict and a signed
        manifest of its files (`check` sees the pipeline as read back, before it is signed).

        MLflow registers through its process-wide registry URI, which `open_registry` (via
        `tracking.client`) points at this registry's store.
        """
        version = mlflow.register_model(model_uri, self.name, tags={**tags, GATE_TAG: GATE_PENDING})
        number = str(version.version)
        registered = self.client.get_model_version(self.name, number)
        self.tag(
            number, artifacts.sign_manifest(self.signing_key(), registered, self.store, tags, check)
        )
        return self.client.get_model_version(self.name, number)

    def tag(self, version: str, tags: Mapping[str, str]) -> None:
        """Facts about a version (holdout metrics, its decision threshold)."""
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, version, key, value)

    def record_verdict(self, version: str, result: GateResult, compared_with: str | None) -> None:
        """Write the gate verdict on the version, signed: promotion trusts nothing else."""
        tags = {
            COMPARED_WITH_TAG: compared_with or NO_VERSION,
            GATE_THRESHOLDS_TAG: result.record(),
            GATE_REASON_TAG: _clip(result.summary()),
        }
        if result.override is not None:
            tags[GATE_OVERRIDE_TAG] = _clip(result.override.to_json())
        verdict = {**result.signed_record(), "compared_with": compared_with or NO_VERSION}
        tags |= artifacts.sign_verdict(self.signing_key(), self.version(version), verdict)
        self.tag(version, tags)
        # The verdict last: a version reads as passed only once its record is complete.
        self.tag(version, {GATE_TAG: GATE_PASSED if result.passed else GATE_FAILED})

    def refuse(self, version: str, reason: str) -> None:
        """A verdict without an evaluation: the version can never be promoted."""
        self.tag(version, {GATE_REASON_TAG: _clip(reason), GATE_TAG: GATE_REFUSED})

    def refuse_unjudged(self, dagster_run_id: str, reason: str | None = None) -> list[str]:
        """Refuse every version a run registered that still waits for its verdict (by default
        because the run failed before the gate)."""
        reason = reason or (
            f"Dagster run {dagster_run_id} failed before the quality gate judged this version"
        )
        refused = []
        for version in self.versions_of_run(dagster_run_id):
            if (version.tags or {}).get(GATE_TAG) == GATE_PENDING:
                self.refuse(str(version.version), reason)
                refused.append(str(version.version))
        return refused

    # -- the alias -----------------------------------------------------------------------
    def promote(self, version: str, dagster_run_id: str | None = None) -> AliasMove:
        """Point the alias at `version` if, and only if, it passed the gate against the
        production version that holds the alias now. Idempotent."""
        with self.lock.hold(self.lock_timeout_s):
            candidate = self.version(version)
            current = self.production()
            if current is not None and str(current.version) == str(candidate.version):
                previous = candidate.tags.get(PREVIOUS_TAG)
                return AliasMove(self.name, self.alias, version, previous, changed=False)
            signer = self.signing_key()
            # The signed records, not the tags: a tag says what anyone with the store wrote.
            refused = (
                f"{self.name} version {version} cannot become {self.alias!r}: its quality gate is"
            )
            try:
                artifacts.verified_manifest(signer.verifier, candidate)
                verdict = artifacts.verified_verdict(signer.verifier, candidate)
            except SignatureError as error:
                recorded = candidate.tags.get(GATE_TAG) or "not evaluated"
                raise PromotionRefusedError(
                    f"{refused} {recorded}, and no verdict of this platform's gate says "
                    f"otherwise ({error}); only a version that passed the gate is promoted"
                ) from error
            if not verdict.get("passed"):
                raise PromotionRefusedError(
                    f"{refused} failed (its signed verdict); only a version that passed the "
                    "gate is promoted"
                )
            current_version = str(current.version) if current is not None else NO_VERSION
            compared_with = verdict.get("compared_with")
            if compared_with != current_version:
                reason = (
                    f"{self.name} version {version} was evaluated against production version "
                    f"{compared_with}, but {self.alias!r} is now version {current_version}"
                    + _promoted_by(current)
                    + "; re-run evaluation_report so the candidate is compared with the current "
                    "champion"
                )
                self.tag(version, {PROMOTION_REFUSED_TAG: _clip(reason)})
                raise PromotionRefusedError(reason)
            self._refuse_breaking_contract(candidate, current)
            attestation = artifacts.sign_attestation(
                signer,
                candidate,
                verdict,
                {
                    "signed_by": "promotion",
                    "promoted_by_run": dagster_run_id or "",
                    "previous_version": current_version,
                    "signed_at": datetime.now(UTC).isoformat(),
                },
            )
            self.tag(version, {PREVIOUS_TAG: current_version, **attestation})
            self.client.set_registered_model_alias(self.name, self.alias, version)
            self._verify_alias(version)
            promoted = {PROMOTED_AT_TAG: datetime.now(UTC).isoformat()}
            if dagster_run_id:
                promoted[PROMOTED_BY_TAG] = dagster_run_id
            self.tag(version, promoted)
        previous = None if current is None else str(current.version)
        return AliasMove(self.name, self.alias, version, previous, changed=True)

    def _refuse_breaking_contract(
        self, candidate: ModelVersion, current: ModelVersion | None
    ) -> None:
        """A candidate whose data contract would break the API's callers (a field gone, a new
        required one, a level refused) is promoted only when its contract's `version` was
        bumped past production's: the explicit, documented way to say the callers move too."""
        if current is None:
            return
        if contract_digest(candidate) == contract_digest(current):
            return
        verifier = self.signing_key().verifier
        newer = artifacts.verified_contract(verifier, candidate, self.store)
        older = artifacts.verified_contract(verifier, current, self.store)
        breaks = older.breaking_changes(newer)
        if not breaks or newer.version > older.version:
            return
        listed = "; ".join(breaks[:5]) + (
            f"; and {len(breaks) - 5} more" if len(breaks) > 5 else ""
        )
        reason = (
            f"{self.name} version {candidate.version}'s data contract would break the API's "
            f"callers of production version {current.version}: {listed}. Bump `version` in "
            f"the contract (now {newer.version}, production's {older.version}) to promote it on "
            "purpose, with the callers"
        )
        self.tag(str(candidate.version), {PROMOTION_REFUSED_TAG: _clip(reason)})
        raise PromotionRefusedError(reason)

    def rollback(self, to_version: str | None = None, withdraw: bool = False) -> AliasMove:
        """Move the alias back to the version it replaced (or to `to_version`, which passed
        the gate). With `withdraw`, a version that replaced none is withdrawn: the alias is
        removed (the uplift model's first version: offers go by churn probability again)."""
        with self.lock.hold(self.lock_timeout_s):
            current = self.production()
            if current is None:
                raise PromotionRefusedError(
                    f"{self.name} has no {self.alias!r} version to roll back from"
                )
            target = to_version or current.tags.get(PREVIOUS_TAG)
            if withdraw and to_version is None and target == NO_VERSION:
                self.client.delete_registered_model_alias(self.name, self.alias)
                if self.production() is not None:
                    raise PromotionRefusedError(f"{self.name}@{self.alias} was not withdrawn")
                self.tag(str(current.version), {ROLLED_BACK_TO_TAG: NO_VERSION})
                return AliasMove(self.name, self.alias, NO_VERSION, str(current.version), True)
            if not target or target == NO_VERSION:
                raise PromotionRefusedError(
                    f"{self.name} version {current.version} records no previous {self.alias!r} "
                    "version; name one with --to VERSION"
                )
            chosen = self.version(target)
            chosen_version, current_version = str(chosen.version), str(current.version)
            if chosen_version == current_version:
                return AliasMove(self.name, self.alias, chosen_version, current_version, False)
            signer = self.signing_key()
            try:
                verdict = artifacts.verified_verdict(signer.verifier, chosen)
            except SignatureError as error:
                raise PromotionRefusedError(
                    f"{self.name} version {target} has no signed verdict of the quality gate "
                    f"({error}); not rolling back to it"
                ) from error
            if not verdict.get("passed"):
                raise PromotionRefusedError(
                    f"{self.name} version {target} never passed the quality gate; not rolling "
                    "back to it"
                )
            # A rollback is what an operator reaches for when production is in trouble; moving
            # the alias to a version the API cannot load would turn trouble into an outage.
            try:
                artifacts.load_version(signer.verifier, chosen, self.store, attested=False)
            except Exception as error:
                raise PromotionRefusedError(
                    f"{self.name} version {chosen_version} cannot be loaded "
                    f"({type(error).__name__}: {str(error)[:300]}); not rolling back to it"
                ) from error
            attestation = artifacts.sign_attestation(
                signer,
                chosen,
                verdict,
                {
                    "signed_by": "rollback",
                    "rolled_back_from": current_version,
                    "signed_at": datetime.now(UTC).isoformat(),
                },
            )
            self.tag(chosen_version, attestation)
            self.tag(current_version, {ROLLED_BACK_TO_TAG: chosen_version})
            self.client.set_registered_model_alias(self.name, self.alias, chosen_version)
            self._verify_alias(chosen_version)
        return AliasMove(self.name, self.alias, chosen_version, current_version, changed=True)

    def attest(self, version: str, operator: str) -> dict[str, Any]:
        """Sign, on an operator's word, a version registered before versions were signed:
        only one whose recorded verdict is passed, whose pipeline reads as a skops file of
        the pinned types and whose contract has the digest recorded at registration.
        Returns the attestation."""
        with self.lock.hold(self.lock_timeout_s):
            legacy = self.version(version)
            tags = legacy.tags or {}
            what = f"{self.name} version {version}"
            if artifacts.MANIFEST_TAG in tags:
                raise PromotionRefusedError(
                    f"{what} was signed when it was registered: it is attested by promotion "
                    "(production_promotion) or a rollback, not by hand"
                )
            if tags.get(GATE_TAG) != GATE_PASSED or GATE_THRESHOLDS_TAG not in tags:
                raise PromotionRefusedError(
                    f"{what}'s recorded quality gate is {tags.get(GATE_TAG) or 'not evaluated'}"
                    "; only a version that passed the gate is attested"
                )
            signer = self.signing_key()
            facts = {k: tags[k] for k in (SNAPSHOT_TAG, CONTRACT_TAG, DAGSTER_RUN_TAG) if k in tags}
            self.tag(version, artifacts.sign_manifest(signer, legacy, self.store, facts))
            signed = self.version(version)
            try:  # every file it is served from, read as the API will read it
                loaded = artifacts.load_version(signer.verifier, signed, self.store, attested=False)
                if loaded.contract.digest != contract_digest(signed):
                    raise SignatureError(
                        f"{what}'s contract is not the one recorded when it was registered"
                    )
            except SignatureError:
                for key in (artifacts.MANIFEST_TAG, artifacts.MANIFEST_SIGNATURE_TAG):
                    self.client.delete_model_version_tag(self.name, version, key)
                raise
            verdict = {
                "passed": True,
                "thresholds": json.loads(tags[GATE_THRESHOLDS_TAG]),
                "figures": {k: v for k, v in tags.items() if k.startswith("holdout_")},
                "override": override_of(legacy),
                "compared_with": tags.get(COMPARED_WITH_TAG, NO_VERSION),
                "recorded_verdict": tags.get(GATE_REASON_TAG, "")[:1000],
            }
            stamp = {"signed_by": "attest", "operator": operator}
            attestation = artifacts.sign_attestation(
                signer, signed, verdict, {**stamp, "signed_at": datetime.now(UTC).isoformat()}
            )
            self.tag(version, artifacts.sign_verdict(signer, signed, verdict) | attestation)
            return json.loads(attestation[artifacts.ATTESTATION_TAG])

    def _verify_alias(self, version: str) -> None:
        after = self.production()
        if after is None or str(after.version) != version:
            raise PromotionLostError(
                f"{self.name}@{self.alias} is version "
                f"{'none' if after is None else after.version} right after it was moved to "
                f"{version} under {self.lock.describe()}: something moves the alias without "
                "that lock"
            )


def contract_digest(version: ModelVersion) -> str:
    """The digest of the data contract a version was trained under; versions from before
    contracts were trained on the shipped telco export."""
    return (version.tags or {}).get(CONTRACT_TAG) or default_contract().digest


def open_registry(settings: ChurnSettings, name: str | None = None) -> ModelRegistry:
    """The registry of model `name` (default: the churn model) in the store the settings
    point at, with the lock every writer of it shares."""
    name = name or settings.model_name
    return ModelRegistry(
        tracking.client(settings),
        name,
        settings.production_alias,
        locks.registry_lock(
            settings.tracking_uri,
            settings.registry_lock.get_secret_value() if settings.registry_lock else None,
            name,
        ),
        lambda: signing.signer(settings),
        settings.registry_lock_timeout_s,
    )


def _promoted_by(version: ModelVersion | None) -> str:
    run = None if version is None else (version.tags or {}).get(PROMOTED_BY_TAG)
    return f" (promoted by Dagster run {run})" if run else ""


def _clip(text: str) -> str:
    return text if len(text) <= _TAG_LIMIT else text[: _TAG_LIMIT - 3] + "..."
