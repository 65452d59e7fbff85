"""A version's files: listed and signed when it is registered, verified before they are read.

The one way this code turns a registered version into a pipeline. What MLflow's `MLmodel` says
about the files (their serialization format, the types to trust) is never believed: the
pipeline is read from `model.skops` with skops and the types pinned here, and only after the
manifest's signature verified and each file read was copied into a private folder and found
to have the digest training signed. Pickle is never an option, whatever the artifact declares.

Each load copies the files first (MLflow would hand a local store's own path back, which a
writer could change between the check and the read), so what is checked is what is read.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from churn_assets.ml.data.contract import Contract, ContractError, default_contract, parse_contract
from churn_assets.ml.files import file_sha256
from churn_assets.ml.registry import signing, tracking
from churn_assets.ml.registry.signing import SignatureError, Signer, Verifier

MANIFEST_TAG = "churn.manifest"
MANIFEST_SIGNATURE_TAG = "churn.manifest_signature"
VERDICT_TAG = "churn.verdict"
VERDICT_SIGNATURE_TAG = "churn.verdict_signature"
ATTESTATION_TAG = "churn.attestation"
ATTESTATION_SIGNATURE_TAG = "churn.attestation_signature"
#: Keys of a manifest's files: the logged model's own, then the run's contract.
MODEL_PREFIX = "model/"
PIPELINE_FILE = f"{MODEL_PREFIX}model.skops"
CONTRACT_FILE = f"run/{tracking.CONTRACT_ARTIFACT}"
#: What an attestation may say of a version; anything else is not served.
PASSED = "passed"


@dataclass(frozen=True)
class VerifiedModel:
    """A version's pipeline and contract, read from files that match its signed manifest."""

    name: str
    version: str
    pipeline: Any
    contract: Contract
    manifest: dict[str, Any]
    #: The signed attestation that the gate let it through, when the caller asked for one.
    attestation: dict[str, Any] | None


def _what(name: str, version: str) -> str:
    return f"{name} version {version}"


def _download(uri: str, folder: Path, store: str) -> Path:
    """An artifact location of the store at `store`, copied into `folder`.

    Locations are resolved through a client of `store` itself, never through MLflow's
    process-wide URIs (models:/ ignores the registry it is given), which another registry
    may have set in this process.
    """
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(folder), tracking_uri=store
        )
    )


def _download_model(name: str, version: str, folder: Path, store: str, path: str = "") -> Path:
    root = MlflowClient(store, store).get_model_version_download_uri(name, version)
    return _download(root.rstrip("/") + (f"/{path}" if path else ""), folder, store)


def _download_contract(run_id: str, folder: Path, store: str) -> Path | None:
    try:
        root = MlflowClient(store, store).get_run(run_id).info.artifact_uri
        return _download(f"{root.rstrip('/')}/{tracking.CONTRACT_ARTIFACT}", folder, store)
    except (MlflowException, OSError):
        return None  # runs from before contracts: the telco contract


def _all_files(
    name: str, version: str, run_id: str | None, folder: Path, store: str
) -> dict[str, Path]:
    """Every file of the logged model, and the run's contract, copied into `folder`."""
    model = _download_model(name, version, folder / "model", store)
    files = {
        f"{MODEL_PREFIX}{path.relative_to(model).as_posix()}": path
        for path in sorted(model.rglob("*"))
        if path.is_file()
    }
    contract = _download_contract(run_id, folder / "run", store) if run_id else None
    if contract is not None:
        files[CONTRACT_FILE] = contract
    return files


def read_pipeline(path: Path, what: str) -> Any:
    """The preprocess+model pipeline in a skops file, with only the pinned types trusted."""
    import skops.io

    try:
        pipeline = skops.io.load(path, trusted=tracking.SKOPS_TRUSTED_TYPES)
    except Exception as error:  # skops raises its own and zipfile's errors; none is trusted
        raise SignatureError(
            f"{what}'s pipeline file is not a skops file of trusted types ({type(error).__name__})"
        ) from None
    steps = getattr(pipeline, "named_steps", {})
    if "preprocess" not in steps or "model" not in steps:
        raise SignatureError(f"{what}'s pipeline file is not a preprocess+model pipeline")
    return pipeline


def _contract(files: Mapping[str, Path], what: str) -> Contract:
    if CONTRACT_FILE not in files:
        return default_contract()
    try:
        return parse_contract(files[CONTRACT_FILE].read_text(), f"of {what}")
    except (ContractError, UnicodeDecodeError) as error:
        raise SignatureError(f"{what}'s contract does not parse: {error}") from None


def sign_manifest(
    signer: Signer,
    version: ModelVersion,
    store: str,
    facts: Mapping[str, str],
    check: Callable[[Any], None] | None = None,
) -> dict[str, str]:
    """The manifest tags of a version just registered: every file it has, and the `facts`
    training registered it with (snapshot, contract, run, commit), signed.

    `check` is given the pipeline read back from the store, so training can confirm it is
    the one it fitted before signing for it.
    """
    name, number = str(version.name), str(version.version)
    with tempfile.TemporaryDirectory(prefix="churn-sign-") as folder:
        files = _all_files(name, number, version.run_id, Path(folder), store)
        if check is not None and PIPELINE_FILE in files:
            check(read_pipeline(files[PIPELINE_FILE], _what(name, number)))
        digests = {key: file_sha256(path) for key, path in files.items()}
    text, signature = signer.sign(
        {
            "kind": signing.MANIFEST_KIND,
            "model": name,
            "version": number,
            "run_id": version.run_id or "",
            "files": digests,
            "facts": dict(facts),
        }
    )
    return {MANIFEST_TAG: text, MANIFEST_SIGNATURE_TAG: signature}


def verified_manifest(verifier: Verifier, version: ModelVersion) -> dict[str, Any]:
    """The version's manifest, if training signed it for this very version and run."""
    name, number = str(version.name), str(version.version)
    what = _what(name, number)
    tags = version.tags or {}
    manifest = verifier.record(
        signing.MANIFEST_KIND,
        tags.get(MANIFEST_TAG),
        tags.get(MANIFEST_SIGNATURE_TAG),
        f"{what}'s manifest",
    )
    signed_for = (manifest.get("model"), manifest.get("version"), manifest.get("run_id"))
    if signed_for != (name, number, version.run_id or ""):
        raise SignatureError(f"{what}'s manifest was signed for another version")
    if not isinstance(manifest.get("files"), dict):
        raise SignatureError(f"{what}'s manifest lists no files")
    return manifest


def _signed_for(record: Mapping[str, Any], version: ModelVersion, what: str, kind: str) -> None:
    """Refuse a record signed for another version, or for other files than its manifest's."""
    tags = version.tags or {}
    if (record.get("model"), record.get("version")) != (str(version.name), str(version.version)):
        raise SignatureError(f"{what}'s {kind} was signed for another version")
    if record.get("manifest_sha256") != signing.sha256_text(tags.get(MANIFEST_TAG, "")):
        raise SignatureError(f"{what}'s {kind} is for other files than its manifest lists")


def _bound(version: ModelVersion, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """A record about `version` and the files its manifest lists."""
    return {
        "kind": kind,
        "model": str(version.name),
        "version": str(version.version),
        "manifest_sha256": signing.sha256_text((version.tags or {}).get(MANIFEST_TAG, "")),
        **body,
    }


def sign_verdict(
    signer: Signer, version: ModelVersion, verdict: Mapping[str, Any]
) -> dict[str, str]:
    """The gate's verdict on a version, as the gate reached it: what promotion trusts."""
    text, signature = signer.sign(_bound(version, signing.VERDICT_KIND, verdict))
    return {VERDICT_TAG: text, VERDICT_SIGNATURE_TAG: signature}


def _bound_record(
    verifier: Verifier, version: ModelVersion, kind: str, tag: str, signature_tag: str, label: str
) -> dict[str, Any]:
    """A record the version carries under `tag`, signed by us for it and for its files."""
    what = _what(str(version.name), str(version.version))
    tags = version.tags or {}
    record = verifier.record(kind, tags.get(tag), tags.get(signature_tag), f"{what}'s {label}")
    _signed_for(record, version, what, label)
    return record


def verified_verdict(verifier: Verifier, version: ModelVersion) -> dict[str, Any]:
    """The version's signed gate verdict (passed or not); refused if missing or not ours."""
    return _bound_record(
        verifier, version, signing.VERDICT_KIND, VERDICT_TAG, VERDICT_SIGNATURE_TAG, "gate verdict"
    )


def sign_attestation(
    signer: Signer, version: ModelVersion, verdict: Mapping[str, Any], body: Mapping[str, Any]
) -> dict[str, str]:
    """That `version` may serve: it passed the gate (`verdict`, checked by the caller)."""
    manifest = json.loads((version.tags or {})[MANIFEST_TAG])
    text, signature = signer.sign(
        _bound(
            version,
            signing.ATTESTATION_KIND,
            {
                "verdict": PASSED,
                "verdict_sha256": signing.sha256_text(signing.canonical(verdict)),
                "gate": {key: verdict.get(key) for key in ("thresholds", "figures", "override")},
                "registered": manifest.get("facts", {}),
                "mlflow_run": version.run_id or "",
                **body,
            },
        )
    )
    return {ATTESTATION_TAG: text, ATTESTATION_SIGNATURE_TAG: signature}


def verified_attestation(verifier: Verifier, version: ModelVersion) -> dict[str, Any]:
    """The version's signed attestation, if it says this version and manifest passed."""
    what = _what(str(version.name), str(version.version))
    tags = version.tags or {}
    if not tags.get(ATTESTATION_TAG):
        raise SignatureError(
            f"{what} has no signed gate attestation: only a version promoted by "
            "production_promotion, chosen by a rollback or attested by `churn attest` is served"
        )
    attestation = _bound_record(
        verifier,
        version,
        signing.ATTESTATION_KIND,
        ATTESTATION_TAG,
        ATTESTATION_SIGNATURE_TAG,
        "gate attestation",
    )
    if attestation.get("verdict") != PASSED:
        raise SignatureError(f"{what}'s gate attestation does not say it passed")
    return attestation


def _fetch(name: str, version: ModelVersion, key: str, folder: Path, store: str) -> Path:
    """One file a manifest lists, copied into `folder`."""
    try:
        if key.startswith(MODEL_PREFIX):
            return _download_model(
                name, str(version.version), folder / "model", store, key.removeprefix(MODEL_PREFIX)
            )
        if key == CONTRACT_FILE and version.run_id:
            found = _download_contract(version.run_id, folder / "run", store)
            if found is not None:
                return found
    except (MlflowException, OSError):
        pass
    raise SignatureError(f"{_what(name, str(version.version))}'s file {key} is missing")


def checked_copy(
    version: ModelVersion, listed: Mapping[str, str], key: str, folder: Path, store: str
) -> Path:
    """One file a verified manifest lists (`listed`), copied and found to be the one signed."""
    path = _fetch(str(version.name), version, key, folder, store)
    if file_sha256(path) != listed[key]:
        what = _what(str(version.name), str(version.version))
        raise SignatureError(f"{what}'s file {key} is not the file training signed")
    return path


def verified_contract(verifier: Verifier, version: ModelVersion, store: str) -> Contract:
    """The data contract a version was trained under, from the file its manifest signed
    (versions from before contracts: the telco contract)."""
    listed = verified_manifest(verifier, version)["files"]
    if CONTRACT_FILE not in listed:
        return default_contract()
    with tempfile.TemporaryDirectory(prefix="churn-contract-") as folder:
        path = checked_copy(version, listed, CONTRACT_FILE, Path(folder), store)
        return _contract({CONTRACT_FILE: path}, _what(str(version.name), str(version.version)))


def load_version(
    verifier: Verifier, version: ModelVersion, store: str, *, attested: bool
) -> VerifiedModel:
    """A registered version's pipeline and contract, each checked against its signed manifest
    before it is read; with `attested`, only a version the gate let through.

    Only the files this code reads are fetched and checked (the pipeline and the contract):
    the manifest's other entries (MLmodel, the environment files) are for other readers.
    """
    name, number = str(version.name), str(version.version)
    what = _what(name, number)
    manifest = verified_manifest(verifier, version)
    attestation = verified_attestation(verifier, version) if attested else None
    listed: dict[str, str] = manifest["files"]
    if PIPELINE_FILE not in listed:
        raise SignatureError(f"{what}'s manifest lists no pipeline file")
    with tempfile.TemporaryDirectory(prefix="churn-load-") as folder:
        files = {
            key: checked_copy(version, listed, key, Path(folder), store)
            for key in (PIPELINE_FILE, CONTRACT_FILE)
            if key in listed
        }
        pipeline = read_pipeline(files[PIPELINE_FILE], what)
        contract = _contract(files, what)
    return VerifiedModel(name, number, pipeline, contract, manifest, attestation)
