"""Ingest: the customer export as read, and the cleaned, typed customer table."""

from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from churn_assets.assets.landing import customer_snapshot
from churn_assets.assets.metadata import frame_metadata, retrain_asset
from churn_assets.ml import cleaning, schema
from churn_assets.resources import ChurnSettingsResource


class RawCustomersConfig(dg.Config):
    path: str | None = Field(
        None, description="CSV export to read; defaults to CHURN_DATA_PATH (data/telco_churn.csv)."
    )


@retrain_asset(deps=[customer_snapshot], kinds={"csv", "pandas"})
def raw_customers(
    context: dg.AssetExecutionContext, config: RawCustomersConfig, settings: ChurnSettingsResource
) -> dg.Output:
    """The customer export exactly as read; its data version is the file's SHA-256."""
    churn_settings = settings.get()
    path = Path(config.path) if config.path else churn_settings.data_path
    # hashed in the pass that checks line lengths, not in one more read of the whole file
    frame = cleaning.read_customer_csv(path, None, max_line_bytes=churn_settings.max_line_bytes)
    sha256 = frame.attrs[cleaning.SOURCE_SHA256]
    context.log.info(f"read {len(frame)} rows from {path}")
    return dg.Output(
        frame,
        data_version=dg.DataVersion(sha256),
        metadata={
            **frame_metadata(frame),
            "path": dg.MetadataValue.path(str(path.resolve())),
            "sha256": sha256,
            "size_bytes": path.stat().st_size,
        },
    )


@retrain_asset(kinds={"pandas"})
def cleaned_customers(raw_customers: pd.DataFrame) -> dg.Output:
    """Typed customers: levels validated, blanks filled, one row per customerID, Churn as 0/1."""
    cleaned, report = cleaning.clean_customers(raw_customers)
    churn_rate = float(cleaned[schema.TARGET_COLUMN].mean())
    return dg.Output(
        cleaned,
        metadata={
            **frame_metadata(cleaned),
            "rows_in": report.rows_in,
            "duplicate_ids_dropped": report.duplicate_ids_dropped,
            "total_charges_filled": report.total_charges_filled,
            "extra_columns_ignored": ", ".join(report.extra_columns) or "none",
            "churn_rate": churn_rate,
            "preview": dg.MetadataValue.md(cleaned.head(5).to_markdown(index=False)),
        },
    )
