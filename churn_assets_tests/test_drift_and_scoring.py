"""Drift measures (PSI, unseen levels) and the ranked scores files, on generated customers."""

import itertools
import json
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from churn_assets.ml.cluster import partitioned_scoring
from churn_assets.ml.cluster.partitioned_scoring import ScoringModel
from churn_assets.ml.cluster.runners import InProcess
from churn_assets.ml.data.cleaning import clean_customers
from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.synthetic import generate_customers
from churn_assets.ml.evaluation import drift, realized
from churn_assets.ml.model import batch, scoring
from churn_assets.ml.registry import signing
from churn_assets.ml.settings import ChurnSettings
from churn_assets_tests.conftest import PromotedStore, cleaned_table, verified_pipeline

TELCO = default_contract()


def _customers(rows: int, seed: int) -> pd.DataFrame:
    cleaned, _ = clean_customers(generate_customers(rows, seed).astype(str), TELCO)
    return cleaned


@pytest.fixture(scope="module")
def profile() -> dict:
    stored = drift.profile_features(_customers(5000, 1), TELCO)
    return json.loads(json.dumps(stored))  # as it comes back from the MLflow artifact


def test_profile_covers_every_feature_with_shares_summing_to_one(profile: dict) -> None:
    assert profile["rows"] == int((_customers(5000, 1)["Churn"] == 0).sum())  # the active ones
    assert profile["population"] == drift.POPULATION
    assert set(profile["features"]) == set(TELCO.feature_columns)
    for name, feature in profile["features"].items():
        assert sum(feature["shares"].values()) == pytest.approx(1.0), name
    assert profile["features"]["tenure"]["kind"] == "numeric"
    assert len(profile["features"]["tenure"]["edges"]) == 9
    assert profile["features"]["Contract"]["kind"] == "categorical"


def test_same_population_does_not_drift(profile: dict) -> None:
    report = drift.compare(profile, _customers(3000, 2), TELCO, psi_warn=0.2, unseen_warn=0.01)
    assert report.drifted == []
    assert max(f.psi for f in report.features) < 0.05
    assert "no feature drifted" in report.summary()


def test_an_active_extract_is_compared_with_active_training_customers() -> None:
    """The issue's measurement: unshifted data read as PSI 0.06-0.08 against all rows."""
    train, extract = _customers(7043, 42), _customers(1500, 7)
    report = drift.compare(
        drift.profile_features(train, TELCO), extract, TELCO, psi_warn=0.2, unseen_warn=0.01
    )
    assert report.max_psi is not None and report.max_psi < 0.02 and report.drifted == []
    assert report.rows == int((extract["Churn"] == 0).sum()) and report.extract_rows == 1500
    # the comparison it replaces: churners in the profile, an active extract
    everyone = drift.profile_features(train.assign(Churn=0), TELCO)
    unlike = drift.compare(everyone, extract, TELCO, psi_warn=0.2, unseen_warn=0.01)
    assert unlike.max_psi is not None and unlike.max_psi > 0.05


def test_a_handful_of_rows_is_too_few_to_judge(profile: dict) -> None:
    few = _customers(200, 6)
    three = few.loc[few["Churn"] == 0].head(3)
    three.loc[:, "Contract"] = "Two year"  # as far from the profile as three rows can be
    report = drift.compare(profile, three, TELCO, psi_warn=0.2, unseen_warn=0.01)
    assert report.drifted == [] and report.judged == [] and report.max_psi is None
    assert report.summary().startswith("too few rows to judge: 3 active customers")
    # 60 active rows judge the two- and three-level features, not the numeric ones
    sixty = drift.compare(profile, few.loc[few["Churn"] == 0].head(60), TELCO, 0.2, 0.01)
    judged = {f.feature for f in sixty.judged}
    assert "gender" in judged and "Contract" in judged and "tenure" not in judged
    assert "had too few rows to judge" in sixty.summary()


def test_shifted_features_warn_and_come_first(profile: dict) -> None:
    shifted = _customers(3000, 3)
    shifted["tenure"] = np.minimum(shifted["tenure"] + 36, 120)
    shifted.loc[:, "Contract"] = "Month-to-month"
    report = drift.compare(profile, shifted, TELCO, psi_warn=0.2, unseen_warn=0.01)
    assert [f.feature for f in report.drifted] == ["tenure", "Contract"]  # worst first
    assert all(f.psi < 0.05 for f in report.features if f.feature not in ("tenure", "Contract"))
    assert "tenure (PSI" in report.summary()


def test_levels_training_never_saw_are_reported(profile: dict) -> None:
    narrow = json.loads(json.dumps(profile))
    narrow["features"]["PaymentMethod"]["shares"] = {"Electronic check": 1.0}
    frame = _customers(2000, 4)
    report = drift.compare(narrow, frame, TELCO, psi_warn=100.0, unseen_warn=0.01)
    (payment,) = [f for f in report.features if f.feature == "PaymentMethod"]
    stayed = frame.loc[frame["Churn"] == 0]
    expected = float((stayed["PaymentMethod"] != "Electronic check").mean())
    assert payment.unseen_share == pytest.approx(expected)
    assert payment.warn and len(payment.unseen_levels) == 3
    assert [f.feature for f in report.drifted] == ["PaymentMethod"]


def test_scores_rank_active_customers_only_most_at_risk_first() -> None:
    customers = _customers(1000, 5)
    active = scoring.active_customers(customers, TELCO)
    assert (active[TELCO.target_column] == 0).all() and 0 < len(active) < len(customers)
    probability = np.random.default_rng(0).random(len(active))
    scores = scoring.rank_customers(active, TELCO, probability, "7", 0.5)
    assert scores["rank"].tolist() == list(range(1, len(active) + 1))
    assert scores["churn_probability"].is_monotonic_decreasing
    assert scores["churn_probability"].iloc[0] == probability.max()
    assert set(scores[TELCO.id_column]) == set(active[TELCO.id_column])
    assert set(scores["tenure_band"].astype(str)) <= set(TELCO.band_labels("tenure"))
    assert (scores["model_version"] == "7").all()
    zero = scores.loc[scores["tenure"] == 0, "tenure_band"].astype(str)
    assert (zero == "0-12 months").all()


def test_top_segments_skip_tiny_groups_and_rank_by_mean_risk() -> None:
    active = scoring.active_customers(_customers(4000, 6), TELCO)
    probability = np.where(active["Contract"] == "Month-to-month", 0.6, 0.1)
    scores = scoring.rank_customers(active, TELCO, probability, "1", 0.5)
    segments = scoring.top_segments(scoring.segment_totals(scores, TELCO), limit=5)
    assert list(segments.columns) == [
        *scoring.segment_columns(TELCO),
        "customers",
        "mean_probability",
        "expected_churners",
    ]
    assert len(segments) == 5 and (segments["customers"] >= 20).all()
    assert (segments["Contract"] == "Month-to-month").all()
    assert segments["mean_probability"].is_monotonic_decreasing
    first = segments.iloc[0]
    assert first["expected_churners"] == pytest.approx(first["customers"] * 0.6)


def test_scores_files_are_written_as_parquet_and_csv(tmp_path: Path) -> None:
    active = scoring.active_customers(_customers(500, 7), TELCO)
    scores = scoring.rank_customers(active, TELCO, np.linspace(0.9, 0.1, len(active)), "3", 0.5)
    files = scoring.write_scores(scores, tmp_path / "scores")
    from_parquet = pd.read_parquet(files.parquet)
    from_csv = pd.read_csv(files.csv)
    assert from_parquet[TELCO.id_column].tolist() == scores[TELCO.id_column].tolist()
    assert from_csv["rank"].tolist() == scores["rank"].tolist()
    assert from_csv["churn_probability"].iloc[0] == pytest.approx(0.9)
    assert sorted(p.name for p in files.csv.parent.iterdir()) == [
        "churn_scores.csv",
        "churn_scores.parquet",
    ]


def test_batch_probabilities_equal_the_logged_pipeline(promoted_store: PromotedStore) -> None:
    """churn_scores' matrix skips sklearn; it must give the pipeline's very probabilities,
    for categoricals and plain text, an unseen level and a blank number included."""
    pipeline = verified_pipeline(promoted_store.state_dir)
    holdout = promoted_store.holdout.copy()
    assert isinstance(holdout["Contract"].dtype, pd.CategoricalDtype)
    holdout["Contract"] = holdout["Contract"].cat.add_categories(["Five year"])
    holdout.loc[holdout.index[0], "Contract"] = "Five year"
    holdout.loc[holdout.index[1], "TotalCharges"] = np.nan
    columns = list(pipeline.feature_names_in_)
    expected = pipeline.predict_proba(holdout[columns])[:, 1]
    as_text = holdout.astype({c: object for c in holdout.columns if holdout[c].dtype == "category"})
    for frame in (holdout, as_text):
        fast = batch.churn_probability(pipeline, frame)
        assert len(fast) == len(holdout) > 1000
        assert np.abs(fast - expected).max() <= 1e-9


def test_a_base_scored_a_partition_at_a_time_is_ranked_as_in_one_piece(
    promoted_store: PromotedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sorted runs merged as a stream give the files, totals and top customers that ranking
    the whole base at once gives, ties in the same order."""
    mlflow.set_tracking_uri(promoted_store.tracking_uri)
    mlflow.set_registry_uri(promoted_store.tracking_uri)
    production = MlflowClient().get_model_version_by_alias("churn-classifier", "production")
    model = ScoringModel(
        promoted_store.tracking_uri,
        "churn-classifier",
        production.version,
        production.run_id,
        0.3,
        signing.verifier(ChurnSettings(CHURN_STATE_DIR=promoted_store.state_dir)).pem(),
    )
    table = cleaned_table(generate_customers(9_000, seed=5), tmp_path, 2_000, monkeypatch)
    active = scoring.active_customers(table.read(), TELCO)
    pipeline = verified_pipeline(promoted_store.state_dir)
    probability = batch.churn_probability(pipeline, active)
    whole = scoring.rank_customers(active, TELCO, probability, production.version, 0.3)
    assert whole["churn_probability"].duplicated().any()  # ties whose order must hold

    scored = partitioned_scoring.score_table(table, InProcess(), model, str(tmp_path / "runs"))
    assert table.partitions == 5 and scored.rows == len(whole)
    files = scoring.write_scores(scored.batches(batch_rows=1_000), tmp_path / "scores")
    written = pd.read_parquet(files.parquet)
    assert list(written.columns) == list(whole.columns)
    for column in whole.columns:
        if column != "churn_probability":
            assert written[column].astype(str).tolist() == whole[column].astype(str).tolist()
    assert np.abs(written["churn_probability"] - whole["churn_probability"]).max() <= 1e-12
    assert pd.read_csv(files.csv)[TELCO.id_column].tolist() == whole[TELCO.id_column].tolist()
    assert scored.offered == int(whole["offer"].sum())
    assert scored.probability_sum == pytest.approx(whole["churn_probability"].sum())
    assert scored.top[TELCO.id_column].tolist() == whole[TELCO.id_column].head(10).tolist()
    pd.testing.assert_frame_equal(
        scoring.top_segments(scored.segments),
        scoring.top_segments(scoring.segment_totals(whole, TELCO)),
        check_categorical=False,
    )
    kept = realized.keep_scores(
        files.parquet, tmp_path / "scores", date(2026, 11, 1), "1", TELCO.id_column
    )
    history = pd.read_parquet(kept)
    first = [TELCO.id_column, "churn_probability", "offer"]
    assert list(history.columns) == [
        *first,
        *(c for c in written if c not in (*first, "model_version")),
    ]
    by_id = whole.drop(columns="model_version").sort_values(TELCO.id_column, ignore_index=True)
    for column in history.columns:  # the written file's values, sorted by ID
        if column != "churn_probability":
            assert history[column].astype(str).tolist() == by_id[column].astype(str).tolist()
    assert np.abs(history["churn_probability"] - by_id["churn_probability"]).max() <= 1e-12
    assert realized.read_kept(kept).columns.tolist() == first
    assert realized.offers_by(kept) == "churn probability"  # no uplift model scored it
    # a base larger than one sorted run: each run sorted, its row groups narrow ID ranges
    monkeypatch.setattr(realized, "SORT_ROWS", 2_000)
    monkeypatch.setattr(realized, "GROUP_ROWS", 500)
    kept = realized.keep_scores(
        files.parquet, tmp_path / "scores", date(2026, 11, 2), "1", TELCO.id_column
    )
    ids = pq.read_table(kept, columns=[TELCO.id_column]).column(0).to_pylist()
    assert sorted(ids) == sorted(whole[TELCO.id_column]) and ids != sorted(ids)
    runs = [ids[i : i + 2_000] for i in range(0, len(ids), 2_000)]
    assert all(run == sorted(run) for run in runs) and len(runs) > 1
    meta = pq.ParquetFile(kept).metadata
    groups, start = [], 0  # (run, min ID, max ID) of each row group
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(0).statistics
        groups.append((start // 2_000, stats.min, stats.max))
        start += meta.row_group(group).num_rows
    assert len(groups) > len(runs)
    for (run, _, high), (next_run, low, _) in itertools.pairwise(groups):
        assert run != next_run or high < low  # a lookup reads one row group of a run
    scored.remove()
    assert not (tmp_path / "runs").exists()
