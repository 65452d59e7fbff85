"""Campaigns: every scoring's offer list made into a measurable campaign."""

from datetime import date

import dagster as dg
import pyarrow.parquet as pq

from churn_assets.assets.metadata import retrain_asset, ui_metadata
from churn_assets.assets.scoring import churn_scores
from churn_assets.ml.campaigns import ledger
from churn_assets.ml.campaigns.assignment import Policy
from churn_assets.ml.data.partitioned import CleanedTable
from churn_assets.ml.evaluation import decision
from churn_assets.ml.model.scoring import SCORES_FILE
from churn_assets.ml.stores import snapshot_store
from churn_assets.resources import ChurnSettingsResource, ModelRegistryResource


@retrain_asset(deps=[churn_scores], kinds={"parquet", "csv"})
def retention_campaign(
    settings: ChurnSettingsResource,
    registry: ModelRegistryResource,
    cleaned_customers: CleanedTable,
) -> dg.MaterializeResult:
    """The scoring's offer list as a campaign: treatment, a random control group, exploration."""
    # Targets are split at random into treatment and a control group held back; a small random
    # slice below the threshold is offered too (exploration); customers of campaigns still
    # running are held. Assignments: <scores>/campaigns/campaign=<date>-v<version>/ (see
    # ml/campaigns/ledger); offers: <scores>/campaign_offers.csv. CHURN_CONTROL_FRACTION and
    # CHURN_EXPLORE_FRACTION set the shares; the campaign's window is CHURN_OUTCOME_WINDOW_DAYS.
    churn_settings = settings.get()
    folder = churn_settings.scores_folder
    scores = folder / f"{SCORES_FILE}.parquet"
    # the version that scored, as the file says: the alias may have moved since
    first = next(pq.ParquetFile(scores).iter_batches(batch_size=1, columns=["model_version"]))
    version = str(first.column(0)[0])
    scored_on = date.fromisoformat(
        snapshot_store(churn_settings).info(cleaned_customers.snapshot_id).as_of
    )
    threshold = decision.version_threshold(registry.open().version(version).tags or {})
    policy = Policy(threshold, churn_settings.control_fraction, churn_settings.explore_fraction)
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
            versions={"production": version},
        ),
        policy,
        cleaned_customers.contract.id_column,
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
