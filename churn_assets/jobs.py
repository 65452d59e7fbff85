"""Jobs: named selections of the graph that people, sensors and schedules launch."""

import dagster as dg

from churn_assets.assets.campaigns import campaign_effect, contact_log
from churn_assets.assets.ingest import raw_customers
from churn_assets.assets.landing import customer_snapshot

#: Everything from reading the snapshot on: retrain, evaluate, gate, promote, score.
churn_training = dg.define_asset_job(
    "churn_training",
    selection=dg.AssetSelection.assets(raw_customers).downstream(),
    description="Retrain from the current snapshot: data to a gated, promoted, scored model.",
)

#: What the landing sensor launches for each new extract; the retrain follows by automation.
merge_extract = dg.define_asset_job(
    "merge_extract",
    selection=dg.AssetSelection.assets(customer_snapshot),
    description="Merge one landed extract into the training snapshot and measure its drift.",
)

#: What the contact-log sensor launches for each new log: record it, measure again.
record_contacts = dg.define_asset_job(
    "record_contacts",
    selection=dg.AssetSelection.assets(contact_log, campaign_effect),
    description="Record one contact log and measure every campaign again, per protocol too.",
)
