"""N processes promote N gated candidates against the same champion at the same moment.

Without the registry lock both of two promoters reported a win in 10 of 10 trials (the last
writer held the alias, the other carried `promoted_at` anyway). With it exactly one wins and
every other one is told why, on the local SQLite store (file lock) and on PostgreSQL
(advisory lock).
"""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from churn_assets.ml.evaluation.gate import GateThresholds, evaluate_gate
from churn_assets.ml.evaluation.report import EvaluationReport
from churn_assets.ml.registry import model_registry as registry
from churn_assets.ml.registry.locks import registry_lock
from churn_assets_tests.conftest import session_signer, signing_key_pem
from churn_assets_tests.processes import REPO, Postgres, base_env, wait_until

NAME = "churn-classifier"
PROCESSES = 6
PROMOTER = """
import json, pathlib, sys, time
from churn_assets.ml.registry import model_registry as registry
from churn_assets.ml.settings import ChurnSettings
store = registry.open_registry(ChurnSettings())
store.production()  # connected and warm before the start signal
go = pathlib.Path(sys.argv[2])
(go.parent / f"ready-{sys.argv[1]}").touch()
while not go.exists():
    time.sleep(0.001)
try:
    move = store.promote(sys.argv[1], f"promoter-{sys.argv[1]}")
    print(json.dumps({"version": sys.argv[1], "changed": move.changed}))
except registry.PromotionRefusedError as refusal:
    print(json.dumps({"version": sys.argv[1], "refused": str(refusal)}))
"""


def _store(uri: str) -> registry.ModelRegistry:
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return registry.ModelRegistry(
        MlflowClient(uri, uri), NAME, "production", registry_lock(uri, None, NAME), session_signer
    )


def _gated(store: registry.ModelRegistry, source: Path, against: str | None) -> str:
    version = str(store.register(source.as_uri(), {}).version)
    report = EvaluationReport(NAME, version, "run", 1000, {"auc": 0.86, "accuracy": 0.8}, {})
    thresholds = GateThresholds(min_auc=0.82, min_accuracy=0.78, max_auc_drop=0.01)
    store.record_verdict(version, evaluate_gate(report, thresholds), against)
    return version


def _race(uri: str, tmp_path: Path) -> None:
    store = _store(uri)
    store.client.create_registered_model(NAME)
    source = tmp_path / "artifacts"
    source.mkdir()
    (source / "MLmodel").write_text("artifact_path: model\nflavors: {}\n")
    champion = _gated(store, source, None)
    store.promote(champion)
    candidates = [_gated(store, source, champion) for _ in range(PROCESSES)]
    go = tmp_path / "go"
    env = base_env(MLFLOW_TRACKING_URI=uri, CHURN_SIGNING_KEY=signing_key_pem())
    promoters = [
        subprocess.Popen(
            [sys.executable, "-c", PROMOTER, version, str(go)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for version in candidates
    ]
    # every promoter imported MLflow and connected before any of them starts
    wait_until(
        "every promoter to be ready",
        lambda: all((tmp_path / f"ready-{v}").exists() for v in candidates),
        timeout=300,
    )
    go.touch()
    outcomes = []
    for process in promoters:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        outcomes.append(json.loads(out.strip().splitlines()[-1]))

    winners = [o["version"] for o in outcomes if o.get("changed")]
    assert len(winners) == 1, outcomes
    (winner,) = winners
    assert str(store.production().version) == winner
    for outcome in outcomes:
        if outcome["version"] != winner:
            assert f"'production' is now version {winner}" in outcome["refused"]
    promoted = {
        str(v.version)
        for v in store.versions()
        if registry.PROMOTED_AT_TAG in v.tags and str(v.version) != champion
    }
    assert promoted == {winner}  # no loser carries promoted_at
    refused = {str(v.version) for v in store.versions() if registry.PROMOTION_REFUSED_TAG in v.tags}
    assert refused == set(candidates) - {winner}


def test_concurrent_promotions_on_sqlite_leave_one_winner(tmp_path: Path) -> None:
    _race(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)


@pytest.fixture
def postgres_uri(postgres: Postgres) -> Iterator[str]:
    with postgres.databases("churn_race") as (name,):
        yield postgres.url(name, "postgresql+psycopg2")


def test_concurrent_promotions_on_postgres_leave_one_winner(
    postgres_uri: str, tmp_path: Path
) -> None:
    _race(postgres_uri, tmp_path)
