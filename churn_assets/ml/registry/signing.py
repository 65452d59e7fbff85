"""Signed records: what training wrote, and what the gate let through.

MLflow's store is writable by more hands than training's (the server, anyone with its
database or artifact credentials), so nothing read back from it is trusted for what it says.
Training signs two records with a private key only it holds, and every loader verifies them
with the public key before a byte of a model is deserialized:

- the *manifest* of a version: the SHA-256 of every file it is loaded from (the pipeline, its
  MLmodel and environment files, the data contract), signed when the version is registered;
- the *verdict* of the gate on a version (thresholds, figures, the override it passed under),
  signed by the gate itself: promotion believes this record, never the verdict's tag;
- the *attestation* of a version: that it passed the gate and may serve (the verdict's
  figures, snapshot, contract, runs), signed when it is promoted, or when a rollback or an
  operator's `churn attest` vouches for it. The API and scoring use nothing without one.

Ed25519 through `cryptography` (already pinned for MLflow's and boto's TLS): one 32-byte key
pair, deterministic signatures, nothing else to run. The OpenSSF `model-signing` package does
the manifest part, but it brings sigstore's client and in-toto for a bring-your-own-key mode
that signs one folder, while a version here is files from two places (the logged model and
its run's contract) plus a verdict that must be bound to them.

Every payload is canonical JSON (sorted keys, no spaces) behind a line naming its kind, so a
signature made for one kind of record never verifies as another.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from churn_assets.ml.settings import ChurnSettings

log = logging.getLogger(__name__)

MANIFEST_KIND = "churn.manifest/v1"
VERDICT_KIND = "churn.verdict/v1"
ATTESTATION_KIND = "churn.attestation/v1"
#: Where the embedded default keeps its key pair, under the state folder.
KEY_FOLDER = "signing"
PRIVATE_KEY_FILE = "signing-key.pem"
PUBLIC_KEY_FILE = "verify-key.pem"
_PEM = "-----BEGIN"


class SignatureError(RuntimeError):
    """A record or a file is not what training signed; the message says which, never why
    in terms of the bytes themselves."""


def canonical(payload: Mapping[str, Any]) -> str:
    """The one text of a record that is signed, stored and verified."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _message(kind: str, text: str) -> bytes:
    return f"{kind}\n{text}".encode()


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a public key (the first 16 hex digits of its SHA-256)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Verifier:
    """Checks records against the one public key training signs with."""

    public_key: Ed25519PublicKey

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def pem(self) -> str:
        """The public key as PEM text: what a Dask worker is sent to verify with."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def record(self, kind: str, text: str | None, signature: str | None, what: str) -> dict:
        """The record `text` if `signature` is this key's over it as `kind`; else refused."""
        if not text or not signature:
            raise SignatureError(f"{what} is not signed")
        try:
            self.public_key.verify(base64.b64decode(signature, validate=True), _message(kind, text))
        except (InvalidSignature, ValueError) as error:
            raise SignatureError(
                f"{what}'s signature does not verify with key {self.key_id}"
            ) from error
        record = json.loads(text)
        if not isinstance(record, dict) or record.get("kind") != kind:
            raise SignatureError(f"{what} is not a {kind} record")
        return record


@dataclass(frozen=True)
class Signer:
    """Signs records with training's private key."""

    private_key: Ed25519PrivateKey

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.private_key.public_key())

    def sign(self, payload: Mapping[str, Any]) -> tuple[str, str]:
        """The record's canonical text and its signature (base64), kind from the payload."""
        text = canonical({**payload, "key_id": self.verifier.key_id})
        signature = self.private_key.sign(_message(str(payload["kind"]), text))
        return text, base64.b64encode(signature).decode()


def _pem_bytes(value: str, setting: str) -> bytes:
    """PEM text as given, or the content of the file it names."""
    if value.lstrip().startswith(_PEM):
        return value.encode()
    path = Path(value).expanduser()
    try:
        return path.read_bytes()
    except OSError as error:
        raise SignatureError(
            f"{setting} is neither PEM text nor a readable key file ({error.strerror})"
        ) from None


def _private(data: bytes, setting: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise SignatureError(f"{setting} is not a PEM private key without a password") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{setting} is not an Ed25519 key")
    return key


def _public(data: bytes, setting: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as error:
        raise SignatureError(f"{setting} is not a PEM public key") from error
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{setting} is not an Ed25519 key")
    return key


def key_folder(settings: ChurnSettings) -> Path:
    return settings.local_state / KEY_FOLDER


def signer(settings: ChurnSettings) -> Signer:
    """Training's key: CHURN_SIGNING_KEY, else the embedded default's pair, made on first use."""
    if settings.signing_key is not None:
        value = settings.signing_key.get_secret_value()
        return Signer(_private(_pem_bytes(value, "CHURN_SIGNING_KEY"), "CHURN_SIGNING_KEY"))
    folder = key_folder(settings)
    private_path = folder / PRIVATE_KEY_FILE
    if not private_path.exists():
        _generate(folder)
    return Signer(_private(private_path.read_bytes(), str(private_path)))


def verifier(settings: ChurnSettings) -> Verifier:
    """The public key loaders verify with: CHURN_VERIFY_KEY, else the one of CHURN_SIGNING_KEY,
    else the embedded default's."""
    if settings.verify_key:
        return Verifier(
            _public(_pem_bytes(settings.verify_key, "CHURN_VERIFY_KEY"), "CHURN_VERIFY_KEY")
        )
    if settings.signing_key is not None:
        return signer(settings).verifier
    public_path = key_folder(settings) / PUBLIC_KEY_FILE
    if not public_path.exists():
        raise SignatureError(
            "no key to verify models with: set CHURN_VERIFY_KEY to the public key training "
            "signs with (the embedded default's is written by the first training run)"
        )
    return Verifier(_public(public_path.read_bytes(), "the embedded verify key"))


def verifier_from_pem(pem: str) -> Verifier:
    return Verifier(_public(pem.encode(), "the verify key"))


def _generate(folder: Path) -> None:
    """A new key pair in `folder`, the private half readable by its owner alone.

    Written under temporary names and linked into place, so two first runs at once end with
    one pair (the second link fails and its pair is dropped).
    """
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = Verifier(key.public_key()).pem().encode()
    staged = folder / f".{PRIVATE_KEY_FILE}.{os.getpid()}"
    descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private)
    try:
        os.link(staged, folder / PRIVATE_KEY_FILE)
    except FileExistsError:
        return
    finally:
        staged.unlink()
    public_staged = folder / f".{PUBLIC_KEY_FILE}.{os.getpid()}"
    public_staged.write_bytes(public)
    public_staged.replace(folder / PUBLIC_KEY_FILE)
    log.warning(
        "generated a signing key pair in %s: %s signs models (keep it secret), %s verifies "
        "them (give it to the API as CHURN_VERIFY_KEY)",
        folder,
        PRIVATE_KEY_FILE,
        PUBLIC_KEY_FILE,
    )


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
