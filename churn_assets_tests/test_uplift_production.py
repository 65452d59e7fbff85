"""The uplift model as a model of its own, on a real MLflow store: registered with its signed
verdict and promoted only when it beats probability targeting; then the graph's scoring offers
by its expected incremental value and the campaign targets by it, and the API returns each
customer's uplift and value. An alias moved by hand to a version that failed its gate is
served by neither."""

import dataclasses
import json
import re
import sys
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from churn_assets.assets.scoring import scoring_model
from churn_assets.ml.campaigns import ledger, registration, uplift
from churn_assets.ml.campaigns.assignment import Arm
from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.evaluation import realized
from churn_assets.ml.registry import artifacts, signing, tracking
from churn_assets.ml.registry import model_registry as registry
from churn_assets.ml.settings import ChurnSettings
from churn_assets_tests.conftest import (
    ChurnEnv,
    PromotedStore,
    copied_store,
    failure_messages,
    materialize_graph,
)
from churn_assets_tests.processes import base_env, run_command
from churn_assets_tests.test_console import PASSWORD
from churn_assets_tests.test_console import _client as console_client
from churn_assets_tests.test_serving import customer_payloads
from churn_assets_tests.test_uplift import COST, SAVED, _world
from console.settings import ConsoleSettings
from console.users import Role, add
from serving.app import create_app
from serving.settings import Settings

TELCO = default_contract()
UPLIFT = "churn-uplift"


#: What a production version that targets clearly better would have measured (per 1,000).
CLEARLY_WORSE = uplift.AgainstProduction("1", -1_000.0, -1_500.0, -500.0)


def _register(
    settings: ChurnSettings, rows: pd.DataFrame, worse: bool = False
) -> registration.Registered:
    """Judge an uplift model on `rows` and register it, in an MLflow run as uplift_model does
    (`worse`: as if production's targeting had measured clearly better on the same customers)."""
    found = uplift.evaluate(rows, TELCO, 1_000, SAVED, COST, uplift.SEED)
    assert isinstance(found, uplift.Evaluation)
    opened = registry.open_registry(settings, settings.uplift_model_name)
    verifier = signing.verifier(settings)
    against = registration.against_production(opened, verifier, found, TELCO, SAVED, COST)
    assert not isinstance(against, str), against
    if worse:
        against = CLEARLY_WORSE
    with mlflow.start_run(experiment_id=tracking.ensure_experiment(settings)):
        return registration.register(
            opened, found, TELCO, SAVED, COST, {"campaigns": "c1"}, against=against
        )


def register_worlds(state_dir: str, worlds: str) -> None:
    """Register an uplift version per world named in `worlds` ("good", "even") in the store
    at `state_dir`, printing each outcome as a JSON line. Run in a process of its own (as the
    graph's step is), so the registrations hold no MLflow engine or SQLite file open in the
    test worker that later tests share (CI saw disk I/O errors on the session's store after
    in-worker registrations)."""
    settings = ChurnSettings(CHURN_STATE_DIR=Path(state_dir))
    rows, _ = _world(30_000, 5)
    for world in worlds.split(","):
        chosen = _as_probability_says(rows, 11) if world == "even" else rows
        done = _register(settings, chosen, worse=world == "worse")
        print(json.dumps(dataclasses.asdict(done)), flush=True)


def _registered(state_dir: Path, worlds: str) -> list[registration.Registered]:
    code = (
        "from churn_assets_tests.test_uplift_production import register_worlds; "
        f"register_worlds({str(state_dir)!r}, {worlds!r})"
    )
    done = run_command([sys.executable, "-c", code], base_env(), timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return [registration.Registered(**json.loads(line)) for line in lines]


def _as_probability_says(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The same customers and design, in a world where the offer works on exactly the
    customers probability targeting picks (month-to-month: 0.45 -> 0.15), and on no one else:
    an uplift model can do no better than the threshold there."""
    rng = np.random.default_rng(seed)
    monthly = (rows["Contract"] == "Month-to-month").to_numpy()
    treated = rows[uplift.TREATED].to_numpy(dtype=bool)
    base = np.where(monthly, 0.45, 0.05)
    left = rng.random(len(rows)) < np.where(treated & monthly, base - 0.3, base)
    return rows.assign(**{uplift.LEFT: left})


@pytest.fixture(scope="module")
def two_versions(
    promoted_store: PromotedStore, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ChurnSettings, Path]:
    """A copy of the promoted store with uplift version 1 (beats probability targeting:
    promoted), version 2 (does not: registered, failed, not promoted) and version 3 (beats it,
    but not the production version's targeting: failed, not promoted). Tests that move
    the alias move it back."""
    store = copied_store(promoted_store, tmp_path_factory.mktemp("uplift") / "state")
    settings = ChurnSettings(CHURN_STATE_DIR=store.state_dir)
    assert settings.tracking_uri == store.tracking_uri  # this copy, whatever a module left
    good, bad, worse = _registered(store.state_dir, "good,even,worse")
    assert (good.version, good.promoted) == ("1", True), good
    assert good.promotion == "promoted (production was none)"
    assert (bad.version, bad.promoted) == ("2", False), bad
    assert bad.promotion == "not promoted: probability targeting beats uplift targeting"
    # beats probability targeting, but production's targets clearly better: kept, refused
    assert (worse.version, worse.promoted) == ("3", False), worse
    assert worse.promotion == "not promoted: the production uplift version 1 targets better"
    return settings, store.state_dir


def test_only_a_version_that_beats_probability_targeting_is_promoted(
    two_versions: tuple[ChurnSettings, Path],
) -> None:
    settings, _ = two_versions
    opened = registry.open_registry(settings, UPLIFT)
    production = opened.production()
    assert production is not None and str(production.version) == "1"
    verifier = signing.verifier(settings)
    for number, passed in (("1", True), ("2", False), ("3", False)):
        version = opened.version(number)
        verdict = artifacts.verified_verdict(verifier, version)
        assert verdict["passed"] is passed
        # versions 2 and 3 were also compared with version 1, in production by then
        compared = [registration.AGAINST_PRODUCTION] if number != "1" else []
        assert list(verdict["figures"]) == [registration.CRITERION, *compared]
        assert verdict["judged_on"].endswith("held-out experimental customers")
        assert verdict["thresholds"]["reference_version"] == ("1" if compared else None)
        if compared:
            assert (version.tags or {})["production_uplift_version"] == "1"
            assert float((version.tags or {})["minus_production_high"]) == pytest.approx(
                verdict["figures"][registration.AGAINST_PRODUCTION]
            )
        tags = version.tags or {}
        assert tags[registry.GATE_TAG] == ("passed" if passed else "failed")
        assert float(tags["heldout_difference_low"]) == pytest.approx(
            verdict["figures"][registration.CRITERION]
        )
        # the prices it was judged with are signed with its files
        facts = artifacts.verified_manifest(verifier, version)["facts"]
        assert (facts["saved_customer_value"], facts["offer_cost"]) == ("500.0", "100.0")
    # the churn model's registry is another model: untouched
    churn = registry.open_registry(settings).production()
    assert churn is not None and str(churn.version) == "1"
    # a version that failed its gate is never promoted, by the registry's own rules
    with pytest.raises(registry.PromotionRefusedError, match="failed"):
        opened.promote("2")


def test_a_version_clearly_worse_than_production_uplift_is_refused() -> None:
    """New against production targeting on the same customers: refused only when the whole
    interval is below 0 (a version as good, fitted on more outcomes, replaces it)."""
    rows, _ = _world(20_000, 3)
    rows = rows.reset_index(drop=True)
    ids = rows[TELCO.id_column]
    truth = uplift.prevented(rows)
    order = np.argsort(np.argsort(truth)) / len(rows)  # the estimates' own ranking, in [0, 1)
    knows = order * 0.6 - 0.1  # uplift that offers the top of the estimates
    worse = knows[::-1].copy()  # the same values, offered to the bottom
    clearly = uplift.against_production(rows, worse, knows, "4", SAVED, COST, uplift.SEED, ids)
    assert clearly.difference_high < 0 and not clearly.not_worse
    assert clearly.words == "the production uplift version 4 targets better"
    same = uplift.against_production(rows, knows, knows, "4", SAVED, COST, uplift.SEED, ids)
    assert (same.difference, same.difference_low, same.difference_high) == (0.0, 0.0, 0.0)
    assert same.not_worse
    better = uplift.against_production(rows, knows, worse, "4", SAVED, COST, uplift.SEED, ids)
    assert better.difference_low > 0 and better.not_worse


def test_production_uplift_that_now_loses_to_probability_targeting_is_warned_of() -> None:
    """Production's targeting judged again on the fresh held-out customers, against the
    campaigns' probability targeting: the check warns when it is clearly worse and the run
    promoted nothing better, and names the way back."""
    rows, _ = _world(20_000, 3)
    rows = rows.reset_index(drop=True)
    ids = rows[TELCO.id_column]
    order = np.argsort(np.argsort(uplift.prevented(rows))) / len(rows)
    knows = order * 0.6 - 0.1
    worse = knows[::-1].copy()
    losing = uplift.against_production(rows, knows, worse, "4", SAVED, COST, uplift.SEED, ids)
    assert losing.versus_probability is not None and losing.versus_probability[2] < 0
    kept = {**losing.figures(), "promotion": "not promoted: no better than probability"}
    warning = uplift.production_alert(kept, lambda: "4")
    assert warning is not None and "version 4 targets worse" in warning
    assert "churn rollback --uplift" in warning
    # a run that promoted a better version has nothing to warn of: production is that one;
    # nor once production moved (a rollback, a later promotion), or when there is none
    assert (
        uplift.production_alert({**kept, "promotion": "promoted (production was 4)"}, lambda: "5")
        is None
    )
    assert uplift.production_alert(kept, lambda: "3") is None
    assert uplift.production_alert(kept, lambda: None) is None
    earning = uplift.against_production(rows, worse, knows, "4", SAVED, COST, uplift.SEED, ids)
    assert earning.versus_probability is not None
    assert earning.versus_probability[2] >= 0, earning.versus_probability
    assert (
        uplift.production_alert({**earning.figures(), "promotion": "not promoted"}, lambda: "4")
        is None
    )
    assert uplift.production_alert({}, lambda: "4") is None  # no verdict yet
    # a hand-edited file: figures missing or not numbers say nothing rather than fail
    assert (
        uplift.production_alert({**kept, "production_minus_probability_high": "-1"}, lambda: "4")
        is None
    )
    partial = {k: v for k, v in kept.items() if not k.endswith("_low")}
    assert uplift.production_alert(partial, lambda: "4") is None


def test_a_customer_in_many_campaigns_is_one_draw_of_the_bootstrap() -> None:
    """The same customers seen in four campaigns carry no more evidence than the customers
    themselves: the interval must not narrow as if they were four times as many."""
    rows, _ = _world(8_000, 9)
    rows = rows.reset_index(drop=True)
    order = np.argsort(np.argsort(uplift.prevented(rows))) / len(rows)
    knows = order * 0.6 - 0.1
    once = uplift.against_production(
        rows, knows, knows[::-1].copy(), "1", SAVED, COST, uplift.SEED, rows[TELCO.id_column]
    )
    four = pd.concat([rows] * 4, ignore_index=True)
    again = uplift.against_production(
        four,
        np.tile(knows, 4),
        np.tile(knows[::-1], 4),
        "1",
        SAVED,
        COST,
        uplift.SEED,
        four[TELCO.id_column],
    )
    assert again.difference == pytest.approx(once.difference)
    width = once.difference_high - once.difference_low
    assert again.difference_high - again.difference_low == pytest.approx(width, rel=0.2)


def test_the_api_returns_uplift_and_expected_value_and_refuses_a_hand_moved_alias(
    two_versions: tuple[ChurnSettings, Path], promoted_store: PromotedStore
) -> None:
    settings, state = two_versions
    customers = promoted_store.holdout.head(40)
    payloads = customer_payloads(customers)
    version = registry.open_registry(settings, UPLIFT).version("1")
    pipeline = artifacts.load_version(
        signing.verifier(settings), version, settings.tracking_uri, attested=True
    ).pipeline
    expected = uplift.predicted_uplift(pipeline, customers)
    assert np.ptp(expected) > 0.05  # customers the model tells apart
    uri = settings.tracking_uri
    with TestClient(create_app(Settings(state_dir=state, refresh_interval_s=3600))) as client:
        watcher = client.app.state.watcher  # type: ignore[attr-defined]
        info = client.get("/model").json()
        assert (info["uplift_version"], info["uplift_error"]) == ("1", None)
        batch = client.post("/predict/batch", json={"customers": payloads}).json()
        assert batch["uplift_version"] == "1"
        lift = np.array([p["uplift"] for p in batch["predictions"]])
        np.testing.assert_allclose(lift, expected, rtol=0, atol=1e-9)
        value = np.array([p["expected_incremental_value"] for p in batch["predictions"]])
        np.testing.assert_allclose(value, expected * SAVED - COST, rtol=0, atol=1e-6)
        as_csv = pd.DataFrame(payloads).to_csv(index=False)
        by_csv = client.post(
            "/predict/batch", content=as_csv, headers={"Content-Type": "text/csv"}
        ).json()
        assert [p["uplift"] for p in by_csv["predictions"]] == [
            p["uplift"] for p in batch["predictions"]
        ]
        # a bulk caller asking for Arrow gets the same values as columns
        columnar = client.post(
            "/predict/batch",
            json={"customers": payloads},
            headers={"Accept": "application/vnd.apache.arrow.stream"},
        )
        table = pa.ipc.open_stream(columnar.content).read_all()
        assert table.schema.metadata[b"uplift_version"] == b"1"
        assert table.column("uplift").to_pylist() == lift.tolist()
        assert table.column("expected_incremental_value").to_pylist() == value.tolist()
        one = client.post("/predict?reasons=2", json=payloads[0]).json()
        assert one["uplift"] == pytest.approx(expected[0], abs=1e-9)
        assert len(one["reasons"]) == 2

        # someone with the store moves the alias to the version that failed its gate
        mlflow.MlflowClient(uri, uri).set_registered_model_alias(UPLIFT, "production", "2")
        watcher.refresh()
        info = client.get("/model").json()
        assert info["uplift_version"] is None
        assert "version 2" in info["uplift_error"] and "attestation" in info["uplift_error"]
        answer = client.post("/predict/batch", json={"customers": payloads[:3]})
        assert answer.status_code == 200
        assert "uplift_version" not in answer.json()
        assert all("uplift" not in p for p in answer.json()["predictions"])
        assert client.get("/ready").json()["ready"] is True  # churn scores still answer
        mlflow.MlflowClient(uri, uri).set_registered_model_alias(UPLIFT, "production", "1")

    # the graph's scoring refuses it too, before any task starts
    churn = registry.open_registry(settings).production()
    failed = registry.open_registry(settings, UPLIFT).version("2")
    assert churn is not None
    with pytest.raises(dg.Failure, match="not scoring with uplift model version 2"):
        scoring_model(settings, churn, 0.5, "production", uplift=failed)


def test_churn_rollback_uplift_withdraws_the_first_version_and_restores_a_later_ones_previous(
    two_versions: tuple[ChurnSettings, Path], tmp_path: Path
) -> None:
    """`churn rollback --uplift`: the uplift model's production moves back like the churn
    model's, and its first version, which replaced none, is withdrawn (offers by probability)."""
    _, state = two_versions
    store = copied_store(PromotedStore(state, None), tmp_path / "state")
    env = base_env(CHURN_STATE_DIR=str(store.state_dir))
    rollback = [".venv/bin/churn", "rollback", "--uplift"]
    # a version that failed its gate is not a place to roll back to
    refused = run_command([*rollback, "--to", "2"], env)
    assert refused.returncode == 1
    assert "churn-uplift version 2 never passed the quality gate" in refused.stderr
    warned = _warned_of_losing_production(store, tmp_path, env)
    assert all("the production uplift version 1 targets worse" in said for said in warned)
    done = run_command(rollback, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "churn-uplift@production: version 1 withdrawn; offers go by churn probability at the "
        "decision threshold again"
    )
    # the warning named version 1, which is no longer in production: said no more
    assert _warned_of_losing_production(store, tmp_path, env) == ["", ""]
    again = run_command(rollback, env)
    assert again.returncode == 1
    assert "churn-uplift has no 'production' version to roll back from" in again.stderr
    # the churn model's production is another alias: untouched by all of it
    churn = run_command([".venv/bin/churn", "rollback"], env)
    assert "churn-classifier" in churn.stdout + churn.stderr
    settings = ChurnSettings(CHURN_STATE_DIR=store.state_dir)
    opened = registry.open_registry(settings, UPLIFT)
    assert opened.production() is None
    assert (opened.version("1").tags or {})[registry.ROLLED_BACK_TO_TAG] == "none"
    assert registry.open_registry(settings).production() is not None


def _warned_of_losing_production(
    store: PromotedStore, tmp_path: Path, env: dict[str, str]
) -> list[str]:
    """What `churn campaigns` and the console's overview say of a kept verdict in which
    production's targeting (version 1's) lost to probability targeting beyond doubt: the
    warning the uplift_pays check gives, while that version is in production ("" if none)."""
    losing = uplift.AgainstProduction("1", 0.0, -1.0, 1.0, (-9_000.0, -12_000.0, -6_000.0))
    verdict = {"verdict": "no better", **losing.figures(), "promotion": "not promoted: worse"}
    uplift.keep_verdict(store.state_dir / "scores", verdict)
    listed = run_command([".venv/bin/churn", "campaigns"], env)
    assert listed.returncode == 0, listed.stderr
    shell = [line for line in listed.stdout.splitlines() if line.startswith("  warning: ")]
    users = tmp_path / "users.yaml"
    add(users, "lea", PASSWORD, Role.lead)
    settings = ConsoleSettings(
        CHURN_STATE_DIR=tmp_path / "console",
        CHURN_SCORES_DIR=store.state_dir / "scores",
        MLFLOW_TRACKING_URI=store.tracking_uri,
        CHURN_VERIFY_KEY=str(store.state_dir / "signing" / "verify-key.pem"),
        CHURN_CONSOLE_USERS=users,
    )
    page = console_client(settings, "lea").get("/").text
    shown = re.search(r"<strong>Warning:</strong> ([^<]*)", page)
    return [shell[0] if shell else "", shown.group(1) if shown else ""]


def test_scoring_offers_and_the_campaign_targets_by_expected_incremental_value(
    promoted_store: PromotedStore,
    churn_env: ChurnEnv,
    instance: dg.DagsterInstance,
) -> None:
    store = copied_store(promoted_store, churn_env.state_dir)
    settings = ChurnSettings()
    assert settings.state_dir == store.state_dir
    (good,) = _registered(store.state_dir, "good")
    assert good.promoted

    result = materialize_graph(churn_env, instance)
    assert result.success, failure_messages(result)
    scores = pd.read_parquet(settings.scores_folder / "churn_scores.parquet")
    assert (scores["uplift_version"] == "1").all()
    # realized performance will judge these offers as the uplift model's, not the version's
    latest = realized.scorings(settings.scores_folder)[-1][2]
    assert realized.offers_by(latest) == "uplift v1"
    value = scores["expected_incremental_value"].to_numpy()
    np.testing.assert_allclose(value, scores["uplift"].to_numpy() * SAVED - COST, atol=1e-9)
    # offers go where they pay, whatever the churn probability says
    assert (scores["offer"].to_numpy() == (value > 0)).all()
    assert 0 < scores["offer"].sum() < len(scores)
    threshold_picks = scores["churn_probability"] >= 0.5
    assert (scores["offer"] != threshold_picks).any()
    scoring = result.asset_materializations_for_node("churn_scores")[-1].metadata
    assert "expected incremental value above 0 (churn-uplift version 1)" in str(
        scoring["targeting"].value
    )

    campaign = ledger.campaigns(settings.scores_folder)[-1]
    assert campaign.uplift_version == "1"
    assigned = ledger.read_assignments(settings.scores_folder, campaign.id)
    ids = scores[TELCO.id_column].astype(str)
    paying = set(ids[value > 0])
    aimed = assigned.loc[assigned["arm"].isin([Arm.treatment.value, Arm.control.value])]
    assert len(aimed) > 0
    assert set(aimed.iloc[:, 0].astype(str)) <= paying
    explored = assigned.loc[assigned["arm"] == Arm.explore.value]
    assert not set(explored.iloc[:, 0].astype(str)) & paying
    kept = pq.read_metadata(ledger.assignments_file(settings.scores_folder, campaign.id))
    assert kept.num_rows == len(assigned)
    made = result.asset_materializations_for_node("retention_campaign")[-1].metadata
    assert "uplift model v1" in str(made["targeting"].value)
