"""Ingest: the customer snapshot as stored, and the cleaned, typed customer table."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from churn_assets.assets.landing import customer_snapshot
from churn_assets.assets.metadata import retrain_asset, table_schema, ui_metadata
from churn_assets.ml.cluster.runners import ClusterError
from churn_assets.ml.data import partitioned, reading
from churn_assets.ml.data.partitioned import SnapshotTable
from churn_assets.ml.data.snapshots import SnapshotError, SnapshotInfo, SnapshotStore
from churn_assets.ml.data.snapshots import columns as snapshot_columns
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import open_location, snapshot_store
from churn_assets.resources import ChurnSettingsResource, DaskResource, RunScopedIOManager


class RawCustomersConfig(dg.Config):
    path: str | None = Field(
        None,
        description="A CSV export to train on instead of the current snapshot (it is kept as "
        "a snapshot of its own, so the model can be reproduced; the pointer stays).",
    )
    snapshot: str | None = Field(
        None, description="A snapshot ID (or 6+ characters of one) to train on instead."
    )


@retrain_asset(deps=[customer_snapshot], kinds={"parquet"})
def raw_customers(
    context: dg.AssetExecutionContext, config: RawCustomersConfig, settings: ChurnSettingsResource
) -> dg.Output:
    """The training snapshot exactly as stored; its data version is the snapshot's SHA-256."""
    # Passed on by reference (partitioned.SnapshotTable), once its bytes match its ID: the
    # data checks and cleaning read it a partition at a time, on the Dask cluster for big
    # tables, so no step holds the raw table whole.
    churn_settings = settings.get()
    store = snapshot_store(churn_settings)
    try:
        snapshot = _chosen_snapshot(config, churn_settings, store)
        table = SnapshotTable.of(store, snapshot.id, open_location)
    except SnapshotError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error
    if table.rows == 0:
        raise dg.Failure(f"snapshot {snapshot.short_id} has no customer rows", allow_retries=False)
    context.log.info(
        f"snapshot {snapshot.short_id} ({snapshot.kind}): {table.rows} rows in "
        f"{table.partitions} partition(s)"
    )
    schema = dg.TableSchema(
        columns=[dg.TableColumn(c, "string") for c in snapshot_columns(store.contract)]
    )
    return dg.Output(
        table,
        data_version=dg.DataVersion(snapshot.id),
        metadata=ui_metadata(
            {
                "dagster/row_count": table.rows,
                "dagster/column_schema": schema,
                "partitions": table.partitions,
                "snapshot_id": snapshot.id,
                "snapshot": dg.MetadataValue.url(store.data_uri(snapshot.id)),
                "snapshot_kind": snapshot.kind,
                "snapshot_source": snapshot.source,
                "snapshot_created_at": snapshot.created_at,
                "churn_rate": snapshot.churn_rate,
            }
        ),
    )


def _chosen_snapshot(
    config: RawCustomersConfig, settings: ChurnSettings, store: SnapshotStore
) -> SnapshotInfo:
    """The run's config choice, else the current snapshot (after a new seed is imported)."""
    limits = settings.extract_limits
    if config.snapshot:
        return store.resolve(config.snapshot)
    if config.path:
        return store.write_export(Path(config.path), limits, kind="file", parent=store.current_id())
    current = store.sync_seed(settings.data_path, limits)
    if current is None:
        # the message read_customer_csv gives for a missing file, with what to do about it
        reading.read_customer_csv(settings.data_path, "", store.contract)
        raise SnapshotError(f"no snapshot in {store.uri}")
    return current


@retrain_asset(kinds={"pandas", "parquet"})
def cleaned_customers(
    context: dg.AssetExecutionContext,
    settings: ChurnSettingsResource,
    dask: DaskResource,
    io_manager: dg.ResourceParam[RunScopedIOManager],
    raw_customers: SnapshotTable,
) -> dg.Output:
    """Typed customers by the data contract: blanks filled, one row per ID, the target as 0/1."""
    # One Parquet file per snapshot partition, written by whoever cleans it (a Dask worker
    # for big tables) into the folder the run's I/O manager keeps beside its outputs; the
    # output is a reference to them (partitioned.CleanedTable), which is all that travels.
    contract = settings.get().contract()
    folder = io_manager.folder_uri(context.run_id, context.asset_key)
    # the blocking customer_data_contract checks on raw_customers have judged it
    with dask.runner(raw_customers.rows) as runner:
        context.log.info(f"cleaning {raw_customers.partitions} partition(s) in {runner.describe()}")
        try:
            cleaned = partitioned.clean_table(raw_customers, runner, folder)
        except ClusterError as error:
            raise dg.Failure(description=str(error), allow_retries=False) from error
    report = cleaned.report
    preview = cleaned.read_partition(0).head(5)
    return dg.Output(
        cleaned,
        metadata=ui_metadata(
            {
                "dagster/row_count": cleaned.rows,
                "dagster/column_schema": table_schema(preview),
                "partitions": cleaned.partitions,
                "files": dg.MetadataValue.path(folder),
                "rows_in": report.rows_in,
                "duplicate_ids_dropped": report.duplicate_ids_dropped,
                **{f"blanks_filled_{c}": n for c, n in report.blanks_filled.items() if n},
                "contract_digest": contract.digest[:12],
                "extra_columns_ignored": ", ".join(report.extra_columns) or "none",
                "churn_rate": cleaned.class_counts[1] / max(cleaned.rows, 1),
                "preview": dg.MetadataValue.md(preview.to_markdown(index=False)),
            }
        ),
    )
