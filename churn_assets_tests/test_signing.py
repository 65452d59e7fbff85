"""Production is only what the gate signed: tampered files, hand-moved aliases, leaky URIs.

Each test plays someone who can write to one store (the MLflow database or its artifacts) and
checks that the API, scoring, promotion and rollback refuse what training did not sign.
"""

import json
import pickle
import stat
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from churn_assets.ml.cluster import partitioned_scoring
from churn_assets.ml.cluster.partitioned_scoring import ScoringModel
from churn_assets.ml.registry import artifacts, signing
from churn_assets.ml.registry import model_registry as registry
from churn_assets.ml.registry.signing import SignatureError
from churn_assets.ml.settings import ChurnSettings
from churn_assets.resources import RunScopedIOManager
from churn_assets_tests.conftest import PromotedStore, copied_store, failure_messages
from churn_assets_tests.processes import wait_until
from churn_assets_tests.test_serving import customer_payloads
from serving.app import create_app
from serving.settings import Settings

NAME = "churn-classifier"


class _Payload:
    """Unpickling this creates `marker`: proof that a loader ran a store's pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.fixture
def store(promoted_store: PromotedStore, tmp_path: Path) -> PromotedStore:
    """A copy of the promoted store, its files included, that this test may tamper with."""
    copy = copied_store(promoted_store, tmp_path / "state")
    assert str(promoted_store.state_dir) not in str(_model_folder(copy))
    return copy


def _client(store: PromotedStore) -> MlflowClient:
    return MlflowClient(store.tracking_uri, store.tracking_uri)


def _settings(store: PromotedStore) -> ChurnSettings:
    return ChurnSettings(CHURN_STATE_DIR=store.state_dir)


def _model_folder(store: PromotedStore, version: str = "1") -> Path:
    uri = _client(store).get_model_version_download_uri(NAME, version)
    return Path(uri.removeprefix("file://"))


def _api(store: PromotedStore) -> TestClient:
    return TestClient(create_app(Settings(state_dir=store.state_dir, refresh_interval_s=0.2)))


def test_an_mlmodel_declaring_pickle_is_not_believed(store: PromotedStore, tmp_path: Path) -> None:
    """The reproduction: MLmodel edited to `serialization_format: pickle` beside a model.pkl
    whose __reduce__ runs code. The API reads model.skops, as signed, and never the pickle."""
    marker = tmp_path / "code-ran"
    folder = _model_folder(store)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"]["serialization_format"] = "pickle"
    mlmodel["flavors"]["sklearn"]["pickled_model"] = "model.pkl"
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    (folder / "model.pkl").write_bytes(pickle.dumps(_Payload(marker)))

    with _api(store) as api:
        assert api.get("/ready").json()["ready"] is True
        answer = api.post("/predict", json=customer_payloads(store.holdout.head(1))[0])
        assert answer.status_code == 200
    assert not marker.exists()


def test_a_replaced_pipeline_file_is_refused_before_it_is_read(
    store: PromotedStore, tmp_path: Path
) -> None:
    marker = tmp_path / "code-ran"
    (_model_folder(store) / "model.skops").write_bytes(pickle.dumps(_Payload(marker)))
    production = _client(store).get_model_version(NAME, "1")
    verifier = signing.verifier(_settings(store))
    with pytest.raises(SignatureError, match=r"model/model\.skops is not the file training signed"):
        artifacts.load_version(verifier, production, store.tracking_uri, attested=True)

    with _api(store) as api:
        ready = api.get("/ready")
        assert ready.status_code == 503
        assert "refuses to serve it" in ready.json()["detail"]
        assert "is not the file training signed" in ready.json()["detail"]
        metrics = api.get("/metrics").text
        assert 'churn_api_production_not_served{outcome="refused"} 1.0' in metrics
    assert not marker.exists()


def test_a_contract_changed_in_the_store_is_refused(store: PromotedStore) -> None:
    """The contract is code of a kind (blank rules): it is one of the signed files."""
    production = _client(store).get_model_version(NAME, "1")
    run_folder = Path(
        _client(store).get_run(str(production.run_id)).info.artifact_uri.removeprefix("file://")
    )
    contract = run_folder / "contract" / "contract.yaml"
    contract.write_text(contract.read_text().replace("min: 0", "min: -5", 1))
    with pytest.raises(SignatureError, match=r"run/contract/contract\.yaml is not the file"):
        artifacts.load_version(
            signing.verifier(_settings(store)), production, store.tracking_uri, attested=True
        )


def _refused_version(store: PromotedStore) -> str:
    """What the reproduction registered: a version the gate refused (AUC 0.49), with the
    production version's own files, so only its verdict stands between it and the API."""
    client = _client(store)
    production = client.get_model_version(NAME, "1")
    version = client.create_model_version(
        NAME, source=production.source, run_id=production.run_id
    ).version
    for key, value in {registry.GATE_TAG: registry.GATE_REFUSED, "holdout_auc": "0.49"}.items():
        client.set_model_version_tag(NAME, str(version), key, value)
    return str(version)


def test_a_hand_moved_alias_to_a_refused_version_is_not_served(
    store: PromotedStore, caplog: pytest.LogCaptureFixture
) -> None:
    client = _client(store)
    refused = _refused_version(store)
    payload = customer_payloads(store.holdout.head(1))[0]
    with _api(store) as api:
        assert api.get("/ready").json()["model_version"] == "1"
        client.set_registered_model_alias(NAME, "production", refused)

        def degraded() -> bool:
            return api.get("/ready").json()["degraded"] is True

        wait_until("the API to notice the alias moved", degraded, 60)
        body = api.get("/ready").json()
        assert (body["ready"], body["model_version"], body["production_version"]) == (
            False,
            "1",
            refused,
        )
        assert "refuses to serve it" in body["detail"]
        assert "is not signed" in body["detail"]
        # still answering, with the version the gate signed
        assert api.post("/predict", json=payload).json()["model_version"] == "1"
        # a signature copied from the attested version does not pass for this one
        tags = client.get_model_version(NAME, "1").tags
        for key in (artifacts.MANIFEST_TAG, artifacts.MANIFEST_SIGNATURE_TAG):
            client.set_model_version_tag(NAME, refused, key, tags[key])
        for key in (artifacts.ATTESTATION_TAG, artifacts.ATTESTATION_SIGNATURE_TAG):
            client.set_model_version_tag(NAME, refused, key, tags[key])
        version = client.get_model_version(NAME, refused)
        with pytest.raises(SignatureError, match="signed for another version"):
            artifacts.load_version(
                signing.verifier(_settings(store)), version, store.tracking_uri, attested=True
            )
        metrics = api.get("/metrics").text
        assert 'churn_api_production_not_served{outcome="refused"} 1.0' in metrics
    assert any(f"refused to serve {NAME} version {refused}" in r.message for r in caplog.records)


def test_scoring_refuses_a_version_the_gate_did_not_attest(store: PromotedStore) -> None:
    refused = _refused_version(store)
    production = _client(store).get_model_version(NAME, refused)
    model = ScoringModel(
        store.tracking_uri,
        NAME,
        refused,
        str(production.run_id),
        0.5,
        signing.verifier(_settings(store)).pem(),
    )
    with pytest.raises(SignatureError, match="is not signed"):
        partitioned_scoring._pipeline(model)


def test_a_verdict_tag_edited_to_passed_is_not_promoted(store: PromotedStore) -> None:
    opened = registry.open_registry(_settings(store))
    refused = _refused_version(store)
    opened.client.set_model_version_tag(NAME, refused, registry.GATE_TAG, registry.GATE_PASSED)
    with pytest.raises(registry.PromotionRefusedError, match="no verdict of this platform's gate"):
        opened.promote(refused)
    assert str(opened.production().version) == "1"  # type: ignore[union-attr]


def test_ready_names_no_credentials(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path,
        refresh_interval_s=3600,
        MLFLOW_TRACKING_URI="http://churn-user:s3cret-pass@127.0.0.1:9/",
    )
    with TestClient(create_app(settings)) as api:
        ready = api.get("/ready")
    assert ready.status_code == 503
    text = ready.text
    assert "s3cret-pass" not in text and "churn-user" not in text and "127.0.0.1" not in text
    assert "registry unreachable" in ready.json()["detail"]


def test_rollback_signs_its_own_record(store: PromotedStore) -> None:
    opened = registry.open_registry(_settings(store))
    refused = _refused_version(store)
    with pytest.raises(registry.PromotionRefusedError, match="no signed verdict"):
        opened.rollback(refused)
    verifier = signing.verifier(_settings(store))
    first = artifacts.verified_attestation(verifier, opened.version("1"))
    assert first["signed_by"] == "promotion"


def _legacy_version(store: PromotedStore, verdict: str = registry.GATE_PASSED) -> str:
    """A version as registered before signing: its files and recorded verdict, no records."""
    client = _client(store)
    version = _refused_version(store)
    tags = client.get_model_version(NAME, "1").tags
    for key in (registry.GATE_THRESHOLDS_TAG, registry.CONTRACT_TAG, "holdout_auc"):
        client.set_model_version_tag(NAME, version, key, tags[key])
    client.set_model_version_tag(NAME, version, registry.GATE_TAG, verdict)
    return version


def test_churn_attest_signs_a_legacy_version_after_checking_it(store: PromotedStore) -> None:
    opened = registry.open_registry(_settings(store))
    failed = _legacy_version(store, registry.GATE_FAILED)
    with pytest.raises(registry.PromotionRefusedError, match="recorded quality gate is failed"):
        opened.attest(failed, "alice")
    with pytest.raises(registry.PromotionRefusedError, match="signed when it was registered"):
        opened.attest("1", "alice")

    legacy = _legacy_version(store)
    attestation = opened.attest(legacy, "alice")
    assert (attestation["signed_by"], attestation["operator"]) == ("attest", "alice")
    verifier = signing.verifier(_settings(store))
    loaded = artifacts.load_version(
        verifier, opened.version(legacy), store.tracking_uri, attested=True
    )
    assert loaded.version == legacy

    # a legacy version whose contract is not the one it recorded is not signed at all
    other = _legacy_version(store)
    opened.client.set_model_version_tag(NAME, other, registry.CONTRACT_TAG, "0" * 64)
    with pytest.raises(SignatureError, match="contract is not the one recorded"):
        opened.attest(other, "alice")
    assert artifacts.MANIFEST_TAG not in (opened.version(other).tags or {})


def test_the_embedded_key_pair_is_made_once_and_kept_private(tmp_path: Path) -> None:
    settings = ChurnSettings(CHURN_STATE_DIR=tmp_path)
    with pytest.raises(SignatureError, match="no key to verify models with"):
        signing.verifier(settings)
    first = signing.signer(settings)
    assert signing.signer(settings).verifier.key_id == first.verifier.key_id
    assert signing.verifier(settings).key_id == first.verifier.key_id
    private = tmp_path / signing.KEY_FOLDER / signing.PRIVATE_KEY_FILE
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    text, signature = first.sign({"kind": signing.VERDICT_KIND, "passed": True})
    assert first.verifier.record(signing.VERDICT_KIND, text, signature, "x")["passed"] is True
    forged = json.dumps({**json.loads(text), "passed": False}, separators=(",", ":"))
    with pytest.raises(SignatureError, match="does not verify"):
        first.verifier.record(signing.VERDICT_KIND, forged, signature, "x")
    with pytest.raises(SignatureError, match="does not verify"):  # no record passes as another
        first.verifier.record(signing.ATTESTATION_KIND, text, signature, "x")


def test_a_run_output_rewritten_in_the_store_is_never_unpickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> None:
    """Run outputs other than tables are pickles on a shared store: a pickle put in place of
    one is refused by its signature instead of run by the next step that reads it."""
    monkeypatch.setenv("CHURN_STATE_DIR", str(tmp_path / "state"))
    marker = tmp_path / "code-ran"

    @dg.asset
    def upstream() -> dict[str, int]:
        return {"customers": 3}

    @dg.asset
    def downstream(upstream: dict[str, int]) -> int:
        return upstream["customers"]

    io_manager = RunScopedIOManager(base_dir=str(tmp_path / "runs"))
    first = dg.materialize(
        [upstream, downstream], instance=instance, resources={"io_manager": io_manager}
    )
    assert first.success and first.output_for_node("downstream") == 3
    (stored,) = (tmp_path / "runs").rglob("upstream.pkl")
    assert stored.with_name("upstream.pkl.sig").exists()
    again = dg.materialize(
        [upstream, downstream],
        selection=[downstream],
        instance=instance,
        resources={"io_manager": io_manager},
    )
    assert again.success and again.output_for_node("downstream") == 3
    stored.write_bytes(pickle.dumps(_Payload(marker)))
    tampered = dg.materialize(
        [upstream, downstream],
        selection=[downstream],
        instance=instance,
        resources={"io_manager": io_manager},
        raise_on_error=False,
    )
    assert not tampered.success
    assert "is not the file its run wrote" in failure_messages(tampered)
    assert not marker.exists()
