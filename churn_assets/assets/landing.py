"""Landing: extracts dropped by the billing system, and the training snapshot they update."""

from datetime import date
from pathlib import Path

import dagster as dg
from pydantic import Field

from churn_assets.assets.metadata import (
    GROUP,
    OWNERS,
    churn_asset,
    frame_metadata,
    ui_metadata,
)
from churn_assets.ml.data import history, landing
from churn_assets.ml.data.history import ExtractKind
from churn_assets.ml.data.reading import CustomerDataError
from churn_assets.ml.stores import snapshot_store
from churn_assets.resources import ChurnSettingsResource, ModelRegistryResource

incoming_extract = dg.AssetSpec(
    "incoming_extract",
    group_name=GROUP,
    owners=OWNERS,
    kinds={"csv"},
    description=(
        "Customer extracts the billing system drops into the landing folder "
        "(CHURN_INCOMING_DIR, data/incoming): one materialization per new file, reported by "
        "the incoming_extracts sensor with the file's path and SHA-256."
    ),
)


class CustomerSnapshotConfig(dg.Config):
    """Filled in by the incoming_extracts sensor; set by hand to merge a file from the UI."""

    extract_path: str = Field(description="The extract (CSV in the export's format) to merge.")
    extract_sha256: str | None = Field(
        None, description="The content the sensor saw; a file changed since then is refused."
    )
    extract_kind: ExtractKind | None = Field(
        None,
        description="full (the whole active base: missing customers have churned) or delta; "
        "default: the word in the file's name, else CHURN_EXTRACT_KIND (delta).",
    )
    as_of: str | None = Field(
        None,
        description="The date (YYYY-MM-DD) the extract is true on; default: the ISO date in "
        "its name, else today.",
    )


@churn_asset(deps=[incoming_extract], kinds={"csv", "pandas"})
def customer_snapshot(
    config: CustomerSnapshotConfig,
    settings: ChurnSettingsResource,
    registry: ModelRegistryResource,
) -> dg.Output:
    """A new training snapshot: the current one with an extract upserted by customerID."""
    # The snapshot itself is kept in the snapshot store, which raw_customers reads; the value
    # stored here is the extract's cleaned rows, which the drift check compares with the
    # production model's data.
    extract = Path(config.extract_path)
    churn_settings = settings.get()
    store = snapshot_store(churn_settings)
    named = history.terms_of(extract, churn_settings.extract_kind)
    try:
        as_of = date.fromisoformat(config.as_of) if config.as_of else named.as_of
    except ValueError as error:
        raise dg.Failure(
            description=f"as_of {(config.as_of or '')[:40]!r} is not a date (YYYY-MM-DD)",
            allow_retries=False,
        ) from error
    terms = history.ExtractTerms(config.extract_kind or named.kind, as_of)
    try:
        report, cleaned = landing.merge_extract(
            store,
            extract,
            config.extract_sha256,
            churn_settings.extract_limits,
            seed=churn_settings.data_path,
            terms=terms,
        )
    except CustomerDataError as error:
        raise dg.Failure(
            description=str(error),
            metadata={"extract": dg.MetadataValue.path(str(extract))},
            allow_retries=False,
        ) from error
    # Retention: the newest CHURN_SNAPSHOT_KEEP stay, and every one a model version needs.
    pruned = store.prune(churn_settings.snapshot_keep, registry.open().versions_by_snapshot())
    return dg.Output(
        cleaned,
        data_version=dg.DataVersion(report.snapshot.id),
        metadata=ui_metadata(
            {
                **frame_metadata(cleaned),
                "extract": dg.MetadataValue.path(report.extract),
                "extract_sha256": report.extract_sha256,
                "extract_kind": report.extract_kind,
                "as_of": report.as_of,
                "extract_rows": report.extract_rows,
                "new_customers": report.new_customers,
                "updated_customers": report.updated_customers,
                "churned_customers": report.churned_customers,
                "returned_customers": report.returned_customers,
                "duplicate_ids_in_extract": report.duplicate_ids_in_extract,
                "extra_columns_dropped": ", ".join(report.extra_columns) or "none",
                "snapshot_id": report.snapshot.id,
                "snapshot": dg.MetadataValue.url(store.data_uri(report.snapshot.id)),
                "snapshot_parent": report.snapshot.parent or "none",
                "snapshot_rows_before": report.snapshot_rows_before,
                "snapshot_rows_after": report.snapshot_rows_after,
                "snapshot_churn_rate": report.snapshot.churn_rate,
                "snapshots_pruned": len(pruned),
            }
        ),
    )
