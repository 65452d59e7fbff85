"""Scoring: the active customer base ranked by the production model, for the retention team."""

import dataclasses
from datetime import date

import dagster as dg
from mlflow.entities.model_registry import ModelVersion

from churn_assets.assets.metadata import model_links, retrain_asset, table_metadata, ui_metadata
from churn_assets.assets.promotion import production_promotion
from churn_assets.ml.campaigns import learner
from churn_assets.ml.cluster import partitioned_scoring
from churn_assets.ml.cluster.partitioned_scoring import ScoringModel, UpliftScoring
from churn_assets.ml.cluster.runners import ClusterError
from churn_assets.ml.data.partitioned import CleanedTable
from churn_assets.ml.evaluation import decision, realized
from churn_assets.ml.model import scoring
from churn_assets.ml.registry import artifacts, signing
from churn_assets.ml.registry.model_registry import contract_digest
from churn_assets.ml.registry.signing import SignatureError
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store
from churn_assets.resources import (
    ChurnSettingsResource,
    DaskResource,
    ModelRegistryResource,
    RunScopedIOManager,
)


@retrain_asset(deps=[production_promotion], kinds={"parquet", "csv", "mlflow"})
def churn_scores(
    context: dg.AssetExecutionContext,
    settings: ChurnSettingsResource,
    registry: ModelRegistryResource,
    dask: DaskResource,
    io_manager: dg.ResourceParam[RunScopedIOManager],
    cleaned_customers: CleanedTable,
) -> dg.MaterializeResult:
    """Active customers ranked by churn probability from the production model (Parquet + CSV)."""
    # Written to CHURN_SCORES_DIR (default .churn/scores) as churn_scores.parquet and .csv,
    # each replaced in one rename, and kept under history/ by scoring date and version.
    # Customers who already churned are not scored. `offer` uses the version's decision
    # threshold; CHURN_SCORES_REASONS=3 adds each customer's reasons. Scored a partition of
    # cleaned_customers at a time, on the Dask cluster from CHURN_DASK_MIN_ROWS customers on
    # (or with CHURN_DASK_SCHEDULER), each sorted into a run in the run's folder; the runs are
    # merged into the files here as a stream, so this process never holds the scored base.
    churn_settings = settings.get()
    production = registry.open().production()
    if production is None:
        raise dg.Failure(
            description=f"no {churn_settings.model_name}@{churn_settings.production_alias} to "
            "score with: "
            "promote a model first (make run)",
            allow_retries=False,
        )
    version = str(production.version)
    uplift = registry.open_uplift().production()
    if uplift is not None and contract_digest(uplift) != contract_digest(production):
        context.log.warning(
            f"not offering by {uplift.name} version {uplift.version}: it reads data contract "
            f"{contract_digest(uplift)[:12]}, production version {version} reads "
            f"{contract_digest(production)[:12]}; offers go by the threshold until an uplift "
            "model is fitted under the new contract"
        )
        uplift = None
    model = scoring_model(
        churn_settings,
        production,
        decision.version_threshold(production.tags or {}),
        "production",
        uplift=uplift,
    )
    table = cleaned_customers
    scored, where = score_table(
        context, dask, io_manager, table, model, churn_settings.scores_reasons
    )
    files = scoring.write_scores(scored.batches(), churn_settings.scores_folder)
    # Kept for good, by the date the scored snapshot is true on: realized_performance judges
    # these against the churns that arrive later.
    store = snapshot_store(churn_settings)
    scored_on = date.fromisoformat(store.info(table.snapshot_id).as_of)
    kept = realized.keep_scores(
        files.parquet, churn_settings.scores_folder, scored_on, version, table.contract.id_column
    )
    scored.remove()
    return dg.MaterializeResult(
        metadata=ui_metadata(
            {
                **model_links(churn_settings, churn_settings.model_name, version),
                "dagster/row_count": scored.rows,
                "parquet": dg.MetadataValue.path(str(files.parquet)),
                "csv": dg.MetadataValue.path(str(files.csv)),
                "scoring_date": scored_on.isoformat(),
                "kept_as": dg.MetadataValue.path(str(kept)),
                "mean_churn_probability": scored.probability_sum / scored.rows,
                "decision_threshold": model.threshold,
                "targeting": (
                    "churn probability at or above the decision threshold"
                    if model.uplift is None
                    else f"expected incremental value above 0 ({model.uplift.model.name} "
                    f"version {model.uplift.model.version})"
                ),
                "customers_to_offer": scored.offered,
                "scored_on": where,
                "partitions": table.partitions,
                "expected_churners": scored.probability_sum,
                "top_risk_segments": table_metadata(scoring.top_segments(scored.segments)),
                "top_customers": table_metadata(scored.top.drop(columns=["model_version"])),
            },
            settings={"reasons_per_customer": churn_settings.scores_reasons},
        )
    )


def scoring_model(
    settings: ChurnSettings,
    version: ModelVersion,
    threshold: float,
    what: str,
    uplift: ModelVersion | None = None,
) -> ScoringModel:
    """The version as scoring tasks load it, after checking here, before a task starts, that
    the gate attested it: a version it did not fails the step with its reason, once (every
    worker checks the files it reads again). `what` names the version in that reason. With
    `uplift` (the uplift model's production version, checked the same way), customers are
    offered by its expected incremental value, priced as it was judged."""
    verifier = signing.verifier(settings)
    checked = [(version, what)]
    if uplift is not None:
        checked.append((uplift, f"uplift model version {uplift.version}"))
    manifests = []
    for candidate, named in checked:
        try:
            manifests.append(artifacts.verified_manifest(verifier, candidate))
            artifacts.verified_attestation(verifier, candidate)
        except SignatureError as refusal:
            raise dg.Failure(
                description=f"not scoring with {named}: {refusal}", allow_retries=False
            ) from refusal

    def loaded(candidate: ModelVersion, cut: float) -> ScoringModel:
        return ScoringModel(
            settings.tracking_uri,
            str(candidate.name),
            str(candidate.version),
            str(candidate.run_id),
            cut,
            verifier.pem(),
        )

    priced = None
    if uplift is not None:
        priced = UpliftScoring(loaded(uplift, 0.0), *learner.prices(manifests[1]["facts"]))
    return dataclasses.replace(loaded(version, threshold), uplift=priced)


def score_table(
    context: dg.AssetExecutionContext,
    dask: DaskResource,
    io_manager: RunScopedIOManager,
    table: CleanedTable,
    model: ScoringModel,
    reasons: int,
) -> tuple[partitioned_scoring.ScoredTable, str]:
    """The table's active customers scored by `model`, a partition at a time (on the Dask
    cluster from CHURN_DASK_MIN_ROWS customers on), each sorted into a run in the step's
    folder of the run, ready to be merged as a stream; and where they were scored."""
    folder = io_manager.folder_uri(context.run_id, context.asset_key)
    with dask.runner(table.rows) as runner:
        where = runner.describe()
        context.log.info(f"scoring {table.partitions} partition(s) in {where}")
        try:
            scored = partitioned_scoring.score_table(table, runner, model, folder, reasons)
        except ClusterError as error:
            raise dg.Failure(description=str(error), allow_retries=False) from error
    if not scored.rows:
        raise dg.Failure(description="no active customers to score: every customer has churned")
    return scored, where
