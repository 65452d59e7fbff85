"""Evaluation: the registered candidate scored on the holdout beside the production model."""

from dataclasses import replace
from typing import Any

import dagster as dg
from dagster_mlflow.resources import MlFlow

from churn_assets.assets.metadata import mlflow_links, model_links, retrain_asset, ui_metadata
from churn_assets.ml.campaigns.measured import offer_effect
from churn_assets.ml.data.splitting import CustomerSplits
from churn_assets.ml.evaluation import leakage, plots
from churn_assets.ml.evaluation import report as evaluation
from churn_assets.ml.evaluation.decision import Economics, value_curve
from churn_assets.ml.model import baseline, calibration, training
from churn_assets.ml.registry import artifacts, signing, tracking
from churn_assets.ml.registry import model_registry as registry_versions
from churn_assets.ml.registry.signing import SignatureError
from churn_assets.ml.registry.tracking import ModelCandidate
from churn_assets.resources import ChurnSettingsResource, ModelRegistryResource


@retrain_asset(kinds={"mlflow", "sklearn"})
def evaluation_report(
    context: dg.AssetExecutionContext,
    mlflow: dg.ResourceParam[MlFlow],
    settings: ChurnSettingsResource,
    registry: ModelRegistryResource,
    churn_model: ModelCandidate,
    customer_splits: CustomerSplits,
) -> dg.Output:
    """Holdout metrics and plots of this run's registered candidate, beside recent production."""
    churn_settings = settings.get()
    model_registry = registry.open()
    holdout = customer_splits.holdout
    # Score what the registry serves, not the in-memory object, so a broken artifact fails
    # here: read as every consumer reads a version, from the files its signed manifest lists.
    try:
        verifier = signing.verifier(churn_settings)
        candidate_model = artifacts.load_version(
            verifier,
            model_registry.version(churn_model.version),
            model_registry.store,
            attested=False,
        ).pipeline
        production_version, recent_models = _recent_production(
            model_registry, verifier, churn_settings.gate_history, customer_splits
        )
    except SignatureError as refusal:
        raise dg.Failure(
            description=f"not evaluated: {refusal} (a version registered before models were "
            "signed is attested by `churn attest VERSION`, after a check)",
            allow_retries=False,
        ) from refusal
    candidate_probability = training.churn_probability(candidate_model, holdout)
    calibrated = getattr(candidate_model.named_steps["model"], "calibrated", False)
    uncalibrated_probability = (
        calibration.uncalibrated_probability(candidate_model, holdout) if calibrated else None
    )
    target = customer_splits.contract.target_column
    y = holdout[target].to_numpy()
    economics = Economics(churn_settings.offer_cost, churn_settings.saved_customer_value)
    # what offers do: measured on closed campaigns once there are enough, else assumed
    decision = value_curve(y, candidate_probability, economics, offer_effect(churn_settings))
    recent_probability = {
        version: training.churn_probability(model, holdout)
        for version, model in recent_models.items()
    }
    production_probability = recent_probability.get(production_version or "")
    # The reference a boosted model has to beat, fitted on the same training rows.
    reference = baseline.fit_baseline(customer_splits, seed=0)
    baseline_probability = training.churn_probability(reference, holdout)
    oot = None
    if customer_splits.out_of_time is not None:
        # The newest complete window, which training never saw: what the gate judges.
        later = customer_splits.out_of_time
        oot = evaluation.out_of_time(
            customer_splits.out_of_time_day or "",
            customer_splits.window_days or churn_settings.outcome_window_days,
            later,
            target,
            training.churn_probability(candidate_model, later),
            training.churn_probability(reference, later),
            {
                version: training.churn_probability(model, later)
                for version, model in recent_models.items()
            },
            production_version,
        )
    report = evaluation.build_report(
        churn_model.name,
        churn_model.version,
        churn_model.run_id,
        holdout,
        target,
        candidate_probability,
        production_version,
        production_probability,
        baseline_probability,
        uncalibrated_probability,
        decision,
        recent_probability,
        oot,
    )
    # Too good to be true is judged on the candidate's strongest features alone as well
    alone = leakage.features_alone(candidate_model, customer_splits.train, holdout, target)
    report = replace(report, feature_alone=None if alone is None else alone.auc)
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
    mlflow.log_metrics({f"holdout_{k}": v for k, v in report.candidate.items()})
    mlflow.log_metrics({f"holdout_baseline_{k}": v for k, v in (report.baseline or {}).items()})
    mlflow.log_metrics(
        {f"holdout_uncalibrated_{k}": v for k, v in (report.uncalibrated or {}).items()}
    )
    mlflow.log_metrics({f"holdout_{k}": v for k, v in decision.summary().items()})
    if oot is not None:
        mlflow.log_metrics({f"out_of_time_{k}": v for k, v in oot.candidate.items()})
        mlflow.log_metrics({f"out_of_time_baseline_{k}": v for k, v in oot.baseline.items()})
    mlflow.log_text(report.to_json(), "evaluation/report.json")
    mlflow.log_text(report.to_markdown(), "evaluation/report.md")
    for name, png in images.items():
        tracking.log_png(png, f"evaluation/{name}.png")
    # The metrics and the threshold travel with the version: the API and the scores file
    # read them from the registry.
    model_registry.tag(
        churn_model.version,
        {
            **{
                f"holdout_{name}": f"{report.candidate[name]:.6f}"
                for name in evaluation.VERSION_TAG_METRICS
            },
            **decision.version_tags(),
            **(
                {}
                if oot is None
                else {"out_of_time_auc": f"{oot.candidate['auc']:.6f}", "out_of_time_day": oot.day}
            ),
        },
    )
    run = mlflow.active_run()
    figures = decision.summary()
    # the economics every run is judged by: settings, not figures to plot
    judged_by = {
        "offer_cost": economics.offer_cost,
        "saved_customer_value": economics.saved_value,
        "break_even_probability": figures.pop("break_even_probability"),
        "offer_effect": decision.effect,
    }
    return dg.Output(
        report,
        metadata=ui_metadata(
            {
                **model_links(churn_settings, churn_model.name, churn_model.version),
                **mlflow_links(churn_settings, run.info.experiment_id, run.info.run_id),
                **{f"holdout_{k}": v for k, v in report.candidate.items()},
                **(
                    {} if oot is None else {f"out_of_time_{k}": v for k, v in oot.candidate.items()}
                ),
                "judged_on": report.judged_on,
                **report.confusion,
                "production_version": report.production_version or "none",
                # figures of a model there may not be (yet): left out, never NaN
                "production_auc": (report.production or {}).get("auc"),
                "recent_production_versions": ", ".join(recent_models) or "none",
                "best_recent_production_auc": report.best_recent_production()[1],
                "baseline_auc": (report.baseline or {}).get("auc"),
                **(
                    {"strongest_feature_alone_auc": alone.strongest[1]} if alone is not None else {}
                ),
                "calibration_applied": calibrated,
                "uncalibrated_brier": (report.uncalibrated or report.candidate)["brier"],
                **figures,
                "report": dg.MetadataValue.md(report.to_markdown()),
                "plots": dg.MetadataValue.md(
                    "\n\n".join(plots.markdown_image(png, name) for name, png in images.items())
                ),
            },
            settings=judged_by,
        ),
    )


def _recent_production(
    model_registry: registry_versions.ModelRegistry,
    verifier: signing.Verifier,
    gate_history: int,
    customer_splits: CustomerSplits,
) -> tuple[str | None, dict[str, Any]]:
    """Production's version, and it and the versions promoted before it, loaded: the gate's
    no-slide reference (see churn_assets.ml.evaluation.gate).

    Production is read once: the version the verdict records as compared with is the one
    scored here, and promotion's compare-and-set refuses if the alias moved since.
    """
    production = model_registry.production()
    production_version = None if production is None else str(production.version)
    recent = model_registry.recent_production_versions_from(production, gate_history)
    # a version trained under another data contract reads other columns: it cannot score this
    # holdout, so the gate compares the candidate with the versions of its own contract only
    digest = customer_splits.contract.digest
    versions = [model_registry.version(v) for v in recent]
    # Loaded once each: scored on the holdout and on the out-of-time rows. Only versions the
    # gate attested are a reference (a refused one put in their place could lower the bar).
    return production_version, {
        str(v.version): artifacts.load_version(
            verifier, v, model_registry.store, attested=True
        ).pipeline
        for v in versions
        if registry_versions.contract_digest(v) == digest
    }
