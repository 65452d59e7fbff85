"""Monitoring: the scores sent out, judged against the churn outcomes that arrived since."""

from datetime import date

import dagster as dg
import pandas as pd
from dagster_mlflow.resources import MlFlow

from churn_assets.assets.metadata import retrain_asset, table_metadata, ui_metadata
from churn_assets.assets.scoring import churn_scores
from churn_assets.ml.data.snapshots import SnapshotError
from churn_assets.ml.evaluation import plots, realized
from churn_assets.ml.registry import tracking
from churn_assets.resources import ChurnSettingsResource, deployment_floor


@retrain_asset(deps=[churn_scores], kinds={"parquet", "mlflow"})
def realized_performance(
    mlflow: dg.ResourceParam[MlFlow],
    settings: ChurnSettingsResource,
) -> dg.Output:
    """Each kept scoring (date, version) against who actually left within the window after it."""
    churn_settings = settings.get()
    try:
        as_of, table = realized.realized_now(churn_settings)
    except SnapshotError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error
    latest = realized.latest_complete(table)
    plot: dict[str, dg.MetadataValue] = {}
    png: bytes | None = None
    if not table.empty:
        png = plots.realized_plot(table, deployment_floor().min_auc)
        plot = {"plot": dg.MetadataValue.md(plots.markdown_image(png, "realized AUC"))}
        first = date.fromisoformat(str(table["scoring_date"].iloc[0])).toordinal()
        for row in table.itertuples():
            step = date.fromisoformat(str(row.scoring_date)).toordinal() - first
            if pd.notna(row.realized_auc):
                mlflow.log_metric(f"realized_auc_v{row.model_version}", row.realized_auc, step)
            mlflow.log_metric(f"realized_value_v{row.model_version}", row.realized_value, step)
        mlflow.log_text(table.to_csv(index=False), "monitoring/realized_performance.csv")
        tracking.log_png(png, "monitoring/realized_performance.png")
    realized.keep_realized(churn_settings.scores_folder, table, png)
    figures: dict[str, str | float] = {}
    if latest is not None:
        figures = {
            "latest_complete_scoring_date": str(latest["scoring_date"]),
            "latest_complete_model_version": str(latest["model_version"]),
            **{
                name: float(latest[name])
                for name in (
                    "realized_auc",
                    "precision_at_offer",
                    "recall_at_offer",
                    "churn_rate_offered",
                    "churn_rate_not_offered",
                    "realized_value_per_1000",
                )
                if pd.notna(latest[name])
            },
        }
    return dg.Output(
        table,
        metadata=ui_metadata(
            {
                "dagster/row_count": len(table),
                "outcomes_as_of": as_of,
                "complete_windows": int(table["window_complete"].sum()) if not table.empty else 0,
                **figures,
                "realized": table_metadata(table) if not table.empty else "no outcomes yet",
                **plot,
            },
            settings={"outcome_window_days": churn_settings.outcome_window_days},
        ),
    )
