"""Ingest: the customer export as read, and the cleaned, typed customer table."""

from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from churn_assets.assets.landing import customer_snapshot
from churn_assets.assets.metadata import frame_metadata, retrain_asset
from churn_assets.ml.data import cleaning, history, reading
from churn_assets.ml.data.snapshots import SnapshotError, SnapshotInfo, SnapshotStore, read_export
from churn_assets.ml.settings import ChurnSettings
from churn_assets.resources import ChurnSettingsResource


class RawCustomersConfig(dg.Config):
    path: str | None = Field(
        None,
        description="A CSV export to train on instead of the current snapshot (it is kept as "
        "a snapshot of its own, so the model can be reproduced; the pointer stays).",
    )
    snapshot: str | None = Field(
        None, description="A snapshot ID (or 6+ characters of one) to train on instead."
    )


@retrain_asset(deps=[customer_snapshot], kinds={"csv", "pandas"})
def raw_customers(
    context: dg.AssetExecutionContext, config: RawCustomersConfig, settings: ChurnSettingsResource
) -> dg.Output:
    """The training snapshot exactly as stored; its data version is the snapshot's SHA-256."""
    churn_settings = settings.get()
    store = SnapshotStore.from_settings(churn_settings)
    try:
        snapshot = _chosen_snapshot(config, churn_settings, store)
    except SnapshotError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error
    frame = store.read(snapshot.id, categorical=True)
    context.log.info(f"read {len(frame)} rows of snapshot {snapshot.short_id} ({snapshot.kind})")
    return dg.Output(
        frame,
        data_version=dg.DataVersion(snapshot.id),
        metadata={
            **frame_metadata(frame),
            "snapshot_id": snapshot.id,
            "snapshot": dg.MetadataValue.url(store.data_uri(snapshot.id)),
            "snapshot_kind": snapshot.kind,
            "snapshot_source": snapshot.source,
            "snapshot_created_at": snapshot.created_at,
            "churn_rate": snapshot.churn_rate,
        },
    )


def _chosen_snapshot(
    config: RawCustomersConfig, settings: ChurnSettings, store: SnapshotStore
) -> SnapshotInfo:
    """The run's config choice, else the current snapshot (after a new seed is imported)."""
    limits = settings.extract_limits
    if config.snapshot:
        return store.resolve(config.snapshot)
    with store.locked():
        if config.path:
            path = Path(config.path)
            frame = read_export(path, limits, store.contract)
            return store.write(
                frame,
                kind="file",
                source=str(path.resolve()),
                source_sha256=str(frame.attrs[reading.SOURCE_SHA256]),
                parent=store.current_id(),
                as_of=history.terms_of(path, history.ExtractKind.full).as_of,
            )
        current = store.sync_seed(settings.data_path, limits)
    if current is None:
        # the message read_customer_csv gives for a missing file, with what to do about it
        reading.read_customer_csv(settings.data_path, "", store.contract)
        raise SnapshotError(f"no snapshot in {store.uri}")
    return current


@retrain_asset(kinds={"pandas"})
def cleaned_customers(settings: ChurnSettingsResource, raw_customers: pd.DataFrame) -> dg.Output:
    """Typed customers by the data contract: blanks filled, one row per ID, the target as 0/1."""
    contract = settings.get().contract()
    # the blocking customer_data_contract checks on raw_customers have judged it
    cleaned, report = cleaning.clean_customers(raw_customers, contract, validated=True)
    churn_rate = float(cleaned[contract.target_column].mean())
    return dg.Output(
        cleaned,
        metadata={
            **frame_metadata(cleaned),
            "rows_in": report.rows_in,
            "duplicate_ids_dropped": report.duplicate_ids_dropped,
            **{f"blanks_filled_{c}": n for c, n in report.blanks_filled.items() if n},
            "contract_digest": contract.digest[:12],
            "extra_columns_ignored": ", ".join(report.extra_columns) or "none",
            "churn_rate": churn_rate,
            "preview": dg.MetadataValue.md(cleaned.head(5).to_markdown(index=False)),
        },
    )
