"""Evaluation: the registered candidate scored on the holdout beside the production model."""

import dagster as dg

from churn_assets.assets.metadata import mlflow_links, model_links, retrain_asset
from churn_assets.ml import baseline, calibration, evaluation, plots, registry, tracking, training
from churn_assets.ml.decision import Economics, value_curve
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.splitting import CustomerSplits
from churn_assets.ml.tracking import ModelCandidate


@retrain_asset(kinds={"mlflow", "sklearn"}, required_resource_keys={"mlflow"})
def evaluation_report(
    context: dg.AssetExecutionContext, churn_model: ModelCandidate, customer_splits: CustomerSplits
) -> dg.Output:
    """Holdout metrics and plots of the registered candidate, compared with production."""
    settings = ChurnSettings()
    client = tracking.client(settings)
    holdout = customer_splits.holdout
    # Score what the registry serves, not the in-memory object, so a broken artifact fails here.
    candidate_model = evaluation.load_model(churn_model.uri)
    candidate_probability = training.churn_probability(candidate_model, holdout)
    calibrated = getattr(candidate_model.named_steps["model"], "calibrated", False)
    uncalibrated_probability = (
        calibration.uncalibrated_probability(candidate_model, holdout) if calibrated else None
    )
    y = holdout["Churn"].to_numpy()
    economics = Economics(settings.offer_cost, settings.saved_customer_value)
    decision = value_curve(y, candidate_probability, economics)
    production = registry.production_version(client, churn_model.name, settings.production_alias)
    production_probability = (
        None
        if production is None
        else evaluation.score_model_uri(f"models:/{churn_model.name}/{production.version}", holdout)
    )
    # The reference a boosted model has to beat, fitted on the same training rows.
    reference = baseline.fit_baseline(customer_splits.train, seed=0)
    baseline_probability = training.churn_probability(reference, holdout)
    report = evaluation.build_report(
        churn_model.name,
        churn_model.version,
        churn_model.run_id,
        holdout,
        candidate_probability,
        None if production is None else str(production.version),
        production_probability,
        baseline_probability,
        uncalibrated_probability,
        decision,
    )
    curves = {f"candidate v{churn_model.version}": candidate_probability}
    if uncalibrated_probability is not None:
        curves[f"candidate v{churn_model.version} before calibration"] = uncalibrated_probability
    if production_probability is not None:
        curves[f"production v{report.production_version}"] = production_probability
    curves[f"baseline ({baseline.NAME})"] = baseline_probability
    images = {
        "roc": plots.roc_plot(y, curves),
        "precision_recall": plots.precision_recall_plot(y, curves),
        "calibration": plots.calibration_plot(y, curves),
        "value_curve": plots.value_curve_plot(decision),
    }
    mlf = context.resources.mlflow
    mlf.log_metrics({f"holdout_{k}": v for k, v in report.candidate.items()})
    mlf.log_metrics({f"holdout_baseline_{k}": v for k, v in (report.baseline or {}).items()})
    mlf.log_metrics(
        {f"holdout_uncalibrated_{k}": v for k, v in (report.uncalibrated or {}).items()}
    )
    mlf.log_metrics({f"holdout_{k}": v for k, v in decision.summary().items()})
    mlf.log_text(report.to_json(), "evaluation/report.json")
    mlf.log_text(report.to_markdown(), "evaluation/report.md")
    for name, png in images.items():
        tracking.log_png(png, f"evaluation/{name}.png")
    for name in evaluation.VERSION_TAG_METRICS:
        client.set_model_version_tag(
            churn_model.name,
            churn_model.version,
            f"holdout_{name}",
            f"{report.candidate[name]:.6f}",
        )
    # The threshold travels with the version: the API and the scores file read it from here.
    for key, value in decision.version_tags().items():
        client.set_model_version_tag(churn_model.name, churn_model.version, key, value)
    run = mlf.active_run()
    return dg.Output(
        report,
        metadata={
            **model_links(settings, churn_model.name, churn_model.version),
            **mlflow_links(settings, run.info.experiment_id, run.info.run_id),
            **{f"holdout_{k}": v for k, v in report.candidate.items()},
            **report.confusion,
            "production_version": report.production_version or "none",
            "production_auc": (report.production or {}).get("auc", float("nan")),
            "baseline_auc": (report.baseline or {}).get("auc", float("nan")),
            "calibration_applied": calibrated,
            "uncalibrated_brier": (report.uncalibrated or report.candidate)["brier"],
            **decision.summary(),
            "report": dg.MetadataValue.md(report.to_markdown()),
            "plots": dg.MetadataValue.md(
                "\n\n".join(plots.markdown_image(png, name) for name, png in images.items())
            ),
        },
    )
