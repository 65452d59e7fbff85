"""Campaigns: every scoring's offer list made into a measurable campaign, and measured."""

from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
from dagster_mlflow.resources import MlFlow
from mlflow.exceptions import MlflowException
from pydantic import Field

from churn_assets.assets.metadata import (
    GROUP,
    OWNERS,
    RETRAIN_POOL,
    churn_asset,
    model_links,
    retrain_asset,
    table_metadata,
    ui_metadata,
)
from churn_assets.assets.scoring import churn_scores, score_table, scoring_model
from churn_assets.automation import FOLLOWS_PASSED_CHECKS
from churn_assets.ml.campaigns import contacts, effect, ledger, measured, registration, uplift
from churn_assets.ml.campaigns.assignment import Policy, PolicyName
from churn_assets.ml.data.partitioned import CleanedTable
from churn_assets.ml.data.reading import CustomerDataError
from churn_assets.ml.data.snapshots import SnapshotError
from churn_assets.ml.evaluation import decision, plots, realized
from churn_assets.ml.model import scoring
from churn_assets.ml.model.scoring import SCORES_FILE, UPLIFT_VERSION
from churn_assets.ml.registry import model_registry as registry_tags
from churn_assets.ml.registry import signing, tracking
from churn_assets.ml.registry.model_registry import PromotionRefusedError
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store
from churn_assets.resources import (
    ChurnSettingsResource,
    DaskResource,
    ModelRegistryResource,
    RunScopedIOManager,
)


@retrain_asset(deps=[churn_scores], kinds={"parquet", "csv"})
def retention_campaign(
    context: dg.AssetExecutionContext,
    settings: ChurnSettingsResource,
    registry: ModelRegistryResource,
    dask: DaskResource,
    io_manager: dg.ResourceParam[RunScopedIOManager],
    cleaned_customers: CleanedTable,
) -> dg.MaterializeResult:
    """The scoring's offer list as a campaign: treatment, control, exploration; a challenger."""
    # Targets are split at random into treatment and a control group held back; a small random
    # slice below the threshold is offered too (exploration); customers of campaigns still
    # running are held. Assignments: <scores>/campaigns/campaign=<date>-v<version>/ (see
    # ml/campaigns/ledger); offers: <scores>/campaign_offers.csv. CHURN_CONTROL_FRACTION and
    # CHURN_EXPLORE_FRACTION set the shares; the campaign's window is CHURN_OUTCOME_WINDOW_DAYS.
    # CHURN_CHALLENGER_VERSION / _THRESHOLD (or this run's settings resource config) make it a
    # champion/challenger campaign: the challenger scores every customer here (its ranked file:
    # <scores>/challenger/), and CHURN_CHALLENGER_SHARE of them, drawn at random, follow its
    # policy, with their own control group.
    churn_settings = settings.get()
    folder = churn_settings.scores_folder
    scores = folder / f"{SCORES_FILE}.parquet"
    # the version that scored, as the file says: the alias may have moved since
    source = pq.ParquetFile(scores)
    if not source.metadata.num_rows:
        raise dg.Failure(description=f"{scores} holds no scores: no campaign", allow_retries=False)
    by_uplift = UPLIFT_VERSION in source.schema_arrow.names
    wanted = ["model_version", *([UPLIFT_VERSION] if by_uplift else [])]
    first = next(source.iter_batches(batch_size=1, columns=wanted))
    version = str(first.column(0)[0])
    # offered by an uplift model's expected incremental value when the scoring says so
    uplift_version = str(first.column(1)[0]) if by_uplift else None
    scored_on = date.fromisoformat(
        snapshot_store(churn_settings).info(cleaned_customers.snapshot_id).as_of
    )
    threshold = decision.version_threshold(registry.open().version(version).tags or {})
    policy = Policy(threshold, churn_settings.control_fraction, churn_settings.explore_fraction)
    challenger: tuple[str, ledger.Challenger] | None = None
    if churn_settings.challenger_version or churn_settings.challenger_threshold is not None:
        challenger = _challenger(
            context,
            churn_settings,
            registry,
            dask,
            io_manager,
            cleaned_customers,
            version,
            policy,
            uplift_version,
        )
    campaign = ledger.start(
        scores,
        folder,
        ledger.Campaign(
            id=ledger.campaign_id(scored_on, version),
            campaign_date=scored_on.isoformat(),
            window_days=churn_settings.outcome_window_days,
            policy={
                "threshold": threshold,
                "control_fraction": policy.control_fraction,
                "explore_fraction": policy.explore_fraction,
            },
            versions={
                PolicyName.production.value: version,
                **({PolicyName.challenger.value: challenger[0]} if challenger is not None else {}),
            },
            uplift_version=uplift_version,
        ),
        policy,
        cleaned_customers.contract.id_column,
        None if challenger is None else challenger[1],
    )
    return dg.MaterializeResult(
        metadata=ui_metadata(
            {
                **ledger.as_metadata(campaign),
                "dagster/row_count": sum(campaign.counts.values()),
                "offers": dg.MetadataValue.path(str(folder / ledger.OFFERS_FILE)),
                "assignments": dg.MetadataValue.path(
                    str(ledger.assignments_file(folder, campaign.id))
                ),
                "model_version": version,
            },
            settings=campaign.policy,
        )
    )


incoming_contact_log = dg.AssetSpec(
    "incoming_contact_log",
    group_name=GROUP,
    owners=OWNERS,
    kinds={"csv"},
    description=(
        "Contact logs (customer, campaign, contacted, accepted) the CRM or the retention team "
        "drops into the landing folder's contacts/ subfolder: one materialization per new "
        "file, reported by the incoming_contact_logs sensor with its path and SHA-256."
    ),
)


class ContactLogConfig(dg.Config):
    """Filled in by the incoming_contact_logs sensor; set by hand to record a file from the UI."""

    path: str = Field(description="The contact log (CSV: customer,campaign,contacted,accepted).")
    sha256: str | None = Field(
        None, description="The content the sensor saw; a file changed since then is refused."
    )


def _challenger(
    context: dg.AssetExecutionContext,
    settings: ChurnSettings,
    registry: ModelRegistryResource,
    dask: DaskResource,
    io_manager: RunScopedIOManager,
    table: CleanedTable,
    production: str,
    policy: Policy,
    uplift_version: str | None,
) -> tuple[str, ledger.Challenger]:
    """The challenger's version, and the customers it scored under its threshold (always by
    churn probability: with an uplift model in production, production's own version and
    threshold challenge uplift targeting with probability targeting)."""
    chosen = settings.challenger_version or production
    try:
        version = registry.open().version(chosen)
    except PromotionRefusedError as error:
        raise dg.Failure(
            description=f"challenger version {chosen[:40]!r}: {error}", allow_retries=False
        ) from error
    except MlflowException as error:  # its text may carry the store's address: not shown
        raise dg.Failure(
            description=f"challenger version {chosen[:40]!r}: the registry could not read it "
            f"({error.error_code})",
            allow_retries=False,
        ) from error
    threshold = settings.challenger_threshold or decision.version_threshold(version.tags or {})
    if chosen == production and threshold == policy.threshold and uplift_version is None:
        raise dg.Failure(
            description=f"the challenger is production itself (version {production}, threshold "
            f"{threshold:.3f}): set CHURN_CHALLENGER_VERSION to another version or "
            "CHURN_CHALLENGER_THRESHOLD to another threshold",
            allow_retries=False,
        )
    model = scoring_model(settings, version, threshold, f"challenger version {chosen}")
    scored, _ = score_table(context, dask, io_manager, table, model, settings.scores_reasons)
    files = scoring.write_scores(
        scored.batches(), settings.scores_folder / ledger.CHALLENGER_FOLDER
    )
    scored.remove()
    rules = Policy(threshold, policy.control_fraction, policy.explore_fraction)
    return chosen, ledger.Challenger(files.parquet, rules, settings.challenger_share)


@churn_asset(deps=[incoming_contact_log], kinds={"csv", "parquet"})
def contact_log(config: ContactLogConfig, settings: ChurnSettingsResource) -> dg.MaterializeResult:
    """What the retention team did with campaigns' offers, checked and kept for good."""
    # Held to the extracts' rules, refused whole on one bad row; kept as
    # <scores>/campaigns/contacts/<sha256>.parquet (see ml/campaigns/contacts).
    churn_settings = settings.get()
    try:
        log, new = contacts.record(
            Path(config.path),
            churn_settings.scores_folder,
            churn_settings.extract_limits,
            config.sha256,
        )
    except CustomerDataError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error
    return dg.MaterializeResult(
        metadata=ui_metadata(
            {
                "dagster/row_count": log.rows,
                "source": log.source,
                "sha256": log.sha256,
                "recorded_before": not new,
                "contacted": log.contacted,
                "accepted": log.accepted,
                "control_contacted": log.control_contacted,
                "campaigns": ", ".join(log.campaigns),
                "kept": dg.MetadataValue.path(
                    str(contacts.folder_of(churn_settings.scores_folder) / f"{log.sha256}.parquet")
                ),
            }
        ),
        data_version=dg.DataVersion(log.sha256),
    )


@churn_asset(
    deps=[retention_campaign, contact_log],
    kinds={"parquet", "mlflow"},
    pool=RETRAIN_POOL,
    # a new contact log re-measures through the record_contacts job; a log never recorded
    # must not hold the effect back
    automation_condition=FOLLOWS_PASSED_CHECKS.ignore(dg.AssetSelection.assets(contact_log)),
)
def campaign_effect(
    mlflow: dg.ResourceParam[MlFlow],
    settings: ChurnSettingsResource,
) -> dg.Output:
    """Each campaign's offers measured: treatment against control churn, with its interval."""
    # By assignment (intent to treat), with the churns the current snapshot records in each
    # campaign's window (see ml/campaigns/effect): churn rate per arm, the reduction with a 95%
    # interval, retained customers and value per 1,000 offers, the same below the threshold
    # for the explored, by probability decile, and the Qini curve. Open windows as they stand.
    # Where a contact log mentions a campaign: contact and acceptance rates, the effect per
    # protocol and per contact.
    churn_settings = settings.get()
    try:
        as_of, effects = measured.measured_now(churn_settings)
    except SnapshotError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error
    table = measured.effect_table(
        effects, churn_settings.offer_cost, churn_settings.saved_customer_value
    )
    shown: dict[str, object] = {}
    png: bytes | None = None
    duels: pd.DataFrame | None = None
    if effects:
        latest = effects[-1]
        png = plots.campaign_plot(table, latest.qini, latest.campaign.id)
        shown["plot"] = dg.MetadataValue.md(plots.markdown_image(png, "campaign effects"))
        shown["deciles"] = table_metadata(latest.deciles)
        first = date.fromisoformat(effects[0].campaign.campaign_date).toordinal()
        for judged, row in zip(effects, table.to_dict("records"), strict=True):
            step = date.fromisoformat(judged.campaign.campaign_date).toordinal() - first
            if pd.notna(row.get("reduction")):
                mlflow.log_metric(
                    f"campaign_reduction_v{row['model_version']}", row["reduction"], step
                )
        mlflow.log_text(table.to_csv(index=False), "monitoring/campaign_effect.csv")
        tracking.log_png(png, "monitoring/campaign_effect.png")
        latest_figures = {
            f"latest_{name}": value.item() if hasattr(value, "item") else value
            for name, value in table.iloc[-1].items()
            if name != "window_complete" and pd.notna(value)
        }
        shown |= latest_figures
        comparisons = effect.compare_policies(
            effects, churn_settings.offer_cost, churn_settings.saved_customer_value
        )
        if comparisons:
            duels = pd.DataFrame([c.figures() for c in comparisons])
            shown["champion_vs_challenger"] = table_metadata(duels)
            last = comparisons[-1]
            shown["latest_challenger_verdict"] = (
                f"{last.campaign}: {last.verdict}, challenger - production "
                f"{last.difference:+.1f} per 1,000 customers [{last.difference_low:+.1f}, "
                f"{last.difference_high:+.1f}]"
            )
            mlflow.log_text(duels.to_csv(index=False), "monitoring/champion_challenger.csv")
    measured.keep_effects(churn_settings.scores_folder, table, png, duels)
    return dg.Output(
        table,
        metadata=ui_metadata(
            {
                "dagster/row_count": len(table),
                "outcomes_as_of": as_of,
                "complete_windows": int(table["window_complete"].sum()) if effects else 0,
                "effects": table_metadata(table) if effects else "no campaign has outcomes yet",
                **shown,
            },
            settings={
                "offer_cost": churn_settings.offer_cost,
                "saved_customer_value": churn_settings.saved_customer_value,
                "outcome_window_days": churn_settings.outcome_window_days,
            },
        ),
    )


@retrain_asset(deps=[campaign_effect], kinds={"lightgbm", "mlflow"})
def uplift_model(
    context: dg.AssetExecutionContext,
    mlflow: dg.ResourceParam[MlFlow],
    settings: ChurnSettingsResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    """Who stays because of an offer: a T-learner, judged held out, promoted if it pays more."""
    # Fitted once each arm has CHURN_UPLIFT_MIN_OUTCOMES customers with a closed window; judged
    # on customers held out by ID: targeting by expected incremental value against targeting
    # by churn probability as the campaigns did, value per 1,000 customers with a bootstrap
    # interval, and each ranking's Qini coefficient (see ml/campaigns/uplift). Registered as
    # CHURN_UPLIFT_MODEL_NAME with its signed verdict; its production alias moves only when
    # the interval lies above 0. From then on scoring offers by expected incremental value.
    churn_settings = settings.get()
    store = snapshot_store(churn_settings)
    current = store.current()
    closed = current is not None and any(
        c.closes <= date.fromisoformat(current.as_of)
        for c in ledger.campaigns(churn_settings.scores_folder)
    )
    if current is None or closed:  # the churn dates are read only when a campaign closed
        try:
            as_of, churn_dates = realized.outcomes_now(churn_settings)
        except SnapshotError as error:
            raise dg.Failure(description=str(error), allow_retries=False) from error
        rows = uplift.experiments(
            store, churn_settings.scores_folder, date.fromisoformat(as_of), churn_dates
        )
    else:
        as_of, rows = current.as_of, pd.DataFrame()
    found = uplift.evaluate(
        rows,
        store.contract,
        churn_settings.uplift_min_outcomes,
        churn_settings.saved_customer_value,
        churn_settings.offer_cost,
        uplift.SEED,
    )
    if isinstance(found, uplift.TooFewOutcomes):
        uplift.keep_verdict(
            churn_settings.scores_folder, {"verdict": found.words, "outcomes_as_of": as_of}
        )
        return dg.MaterializeResult(
            metadata=ui_metadata(
                {
                    "verdict": found.words,
                    "treated_outcomes": found.treated,
                    "untreated_outcomes": found.untreated,
                },
                settings={"uplift_min_outcomes": found.needed},
            )
        )
    opened = registry.open_uplift()
    against = registration.against_production(
        opened,
        signing.verifier(churn_settings),
        found,
        store.contract,
        churn_settings.saved_customer_value,
        churn_settings.offer_cost,
    )
    if isinstance(against, str):
        context.log.warning(f"not compared with the production uplift version: {against}")
        against = None
    figures = {**found.verdict.figures(), **({} if against is None else against.figures())}
    for name, value in figures.items():
        if isinstance(value, int | float):
            mlflow.log_metric(f"uplift_{name}", float(value))
    mlflow.log_text(found.verdict.words, "uplift/verdict.txt")
    campaigns_used = sorted(set(rows[uplift.CAMPAIGN]))
    facts = {"git_sha": tracking.git_sha(churn_settings), "outcomes_as_of": as_of}
    facts["campaigns"] = ",".join(campaigns_used)[:4000]
    if current is not None:
        facts[registry_tags.SNAPSHOT_TAG] = current.id
    registered = registration.register(
        opened,
        found,
        store.contract,
        churn_settings.saved_customer_value,
        churn_settings.offer_cost,
        facts,
        context.run_id,
        against,
    )
    outcome = {"uplift_version": registered.version, "promotion": registered.promotion}
    uplift.keep_verdict(
        churn_settings.scores_folder,
        {**figures, **outcome, "outcomes_as_of": as_of, "campaigns": campaigns_used},
    )
    return dg.MaterializeResult(
        metadata=ui_metadata(
            {
                **figures,
                **outcome,
                **model_links(churn_settings, churn_settings.uplift_model_name, registered.version),
                "dagster/row_count": len(rows),
                "campaigns": ", ".join(campaigns_used),
                "outcomes_as_of": as_of,
            },
            settings={
                "uplift_min_outcomes": churn_settings.uplift_min_outcomes,
                "offer_cost": churn_settings.offer_cost,
                "saved_customer_value": churn_settings.saved_customer_value,
            },
        )
    )
