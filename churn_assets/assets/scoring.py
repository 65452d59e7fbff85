"""Scoring: the active customer base ranked by the production model, for the retention team."""

from datetime import date

import dagster as dg
import pandas as pd

from churn_assets.assets.metadata import model_links, retrain_asset, table_metadata
from churn_assets.assets.promotion import production_promotion
from churn_assets.ml.cluster import partitioned_scoring
from churn_assets.ml.cluster.runners import ClusterError
from churn_assets.ml.data import history, reading
from churn_assets.ml.data.snapshots import SnapshotStore
from churn_assets.ml.evaluation import decision, realized
from churn_assets.ml.evaluation import report as evaluation
from churn_assets.ml.model import batch, reasons, scoring
from churn_assets.ml.model.features import model_inputs
from churn_assets.resources import ChurnSettingsResource, DaskResource, ModelRegistryResource


@retrain_asset(deps=[production_promotion], kinds={"parquet", "csv", "mlflow"})
def churn_scores(
    context: dg.AssetExecutionContext,
    settings: ChurnSettingsResource,
    registry: ModelRegistryResource,
    dask: DaskResource,
    cleaned_customers: pd.DataFrame,
) -> dg.MaterializeResult:
    """Active customers ranked by churn probability from the production model (Parquet + CSV)."""
    # Written to CHURN_SCORES_DIR (default .churn/scores) as churn_scores.parquet and .csv,
    # each replaced in one rename, and kept under history/ by scoring date and version.
    # Customers who already churned are not scored. `offer` uses the version's decision
    # threshold; CHURN_SCORES_REASONS=3 adds each customer's reasons. From CHURN_DASK_MIN_ROWS
    # active customers on (or with CHURN_DASK_SCHEDULER), probabilities are computed per
    # partition on the Dask cluster; the ranking and the files are written here.
    churn_settings = settings.get()
    production = registry.open().production()
    if production is None:
        raise dg.Failure(
            description=f"no {churn_settings.model_name}@{churn_settings.production_alias} to "
            "score with: "
            "promote a model first (make run)",
            allow_retries=False,
        )
    contract = churn_settings.contract()
    active = scoring.active_customers(cleaned_customers, contract)
    if active.empty:
        raise dg.Failure(description="no active customers to score: every customer has churned")
    version = str(production.version)
    model_uri = f"models:/{churn_settings.model_name}/{version}"
    pipeline = evaluation.load_model(model_uri)
    cluster = dask.cluster()
    on_cluster = cluster.uses_cluster(len(active))
    if on_cluster:
        context.log.info(f"scoring {len(active):,} customers on {cluster.describe()}")
        try:
            with dask.client() as client:
                probability = partitioned_scoring.churn_probability_on_cluster(
                    client,
                    active,
                    model_inputs(pipeline),
                    model_uri,
                    churn_settings.tracking_uri,
                    cluster,
                    cluster.scratch / context.run_id / "churn_scores",
                )
        except ClusterError as error:
            raise dg.Failure(description=str(error), allow_retries=False) from error
    else:
        probability = batch.churn_probability(pipeline, active)
    threshold = decision.version_threshold(production.tags or {})
    why = (
        reasons.frame_reasons(pipeline, active, churn_settings.scores_reasons)
        if churn_settings.scores_reasons
        else None
    )
    scores = scoring.rank_customers(active, contract, probability, version, threshold, why)
    files = scoring.write_scores(scores, churn_settings.scores_folder)
    # Kept for good, by the date the scored snapshot is true on: realized_performance judges
    # these against the churns that arrive later.
    snapshot_id = str(cleaned_customers.attrs.get(reading.SOURCE_SHA256, ""))
    store = SnapshotStore.from_settings(churn_settings)
    scored_on = (
        date.fromisoformat(store.info(snapshot_id).as_of) if snapshot_id else history.today()
    )
    kept = realized.keep_scores(scores, churn_settings.scores_folder, scored_on, version, contract)
    segments = scoring.top_segments(scores, contract)
    return dg.MaterializeResult(
        metadata={
            **model_links(churn_settings, churn_settings.model_name, version),
            "dagster/row_count": len(scores),
            "parquet": dg.MetadataValue.path(str(files.parquet)),
            "csv": dg.MetadataValue.path(str(files.csv)),
            "scoring_date": scored_on.isoformat(),
            "kept_as": dg.MetadataValue.path(str(kept)),
            "mean_churn_probability": float(scores["churn_probability"].mean()),
            "decision_threshold": threshold,
            "customers_to_offer": int(scores["offer"].sum()),
            "reasons_per_customer": churn_settings.scores_reasons,
            "scored_on": cluster.describe() if on_cluster else "this process",
            "partitions": cluster.partitions(len(active)) if on_cluster else 1,
            "expected_churners": float(scores["churn_probability"].sum()),
            "top_risk_segments": table_metadata(segments),
            "top_customers": table_metadata(scores.head(10).drop(columns=["model_version"])),
        }
    )
