"""The uplift model as a registered model of its own: logged, signed, gated and promoted through
the same registry machinery as the churn model (`ModelRegistry` for CHURN_UPLIFT_MODEL_NAME).

Its gate is the judgement on held-out experimental customers (`uplift.judge`): it passes when
targeting by its expected incremental value beats targeting by churn probability, the bootstrap
interval of the difference lying above 0. The verdict is signed on the version like the churn
gate's, so promotion, the scoring and the API believe the signature, not a tag; the production
alias then moves under the registry's lock, compared with the uplift version in production as
the verdict recorded it. A version that does not beat probability targeting is registered with
its failed verdict (the evidence is kept) and never promoted.

The prices its expected incremental value was judged with (the value of a kept customer, the
offer's cost) are signed with its files (the manifest's facts): scoring and the API price its
uplift with those, so what was gated is what decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow

from churn_assets.ml.campaigns import learner
from churn_assets.ml.campaigns.uplift import Evaluation
from churn_assets.ml.data.contract import Contract
from churn_assets.ml.evaluation.gate import GateCriterion, GateResult
from churn_assets.ml.registry import model_registry, tracking
from churn_assets.ml.registry.model_registry import WRITE_REFUSALS, ModelRegistry

#: The gate's one criterion: the low end of uplift - probability targeting per 1,000 customers.
CRITERION = "uplift_minus_probability_per_1000_low"


@dataclass(frozen=True)
class Registered:
    """A registered uplift version and what became of it."""

    version: str
    promoted: bool
    #: in words: promoted (and what production was), or why not
    promotion: str


def register(
    opened: ModelRegistry,
    found: Evaluation,
    contract: Contract,
    saved_value: float,
    offer_cost: float,
    facts: Mapping[str, str],
    dagster_run_id: str | None = None,
) -> Registered:
    """Log the judged pipeline in the active MLflow run, register it in `opened` with its
    prices and `facts` signed, sign its verdict, and promote it when it passed."""
    # the contract the version reads its inputs by, with its run, unless the churn model
    # trained in the same run logged it already (its version signed that file: never rewritten)
    run = mlflow.active_run()
    logged = run is not None and any(
        item.path == tracking.CONTRACT_ARTIFACT
        for item in mlflow.MlflowClient().list_artifacts(
            run.info.run_id, str(Path(tracking.CONTRACT_ARTIFACT).parent)
        )
    )
    if not logged:
        mlflow.log_text(contract.to_yaml(), tracking.CONTRACT_ARTIFACT)
    example = tracking.input_example(found.held_out, contract)
    uri = tracking.log_model(
        found.pipeline, example, name=tracking.UPLIFT_ARTIFACT, predict="predict"
    )
    version = opened.register(
        uri,
        {
            **facts,
            model_registry.CONTRACT_TAG: contract.digest,
            model_registry.CONTRACT_VERSION_TAG: str(contract.version),
            learner.SAVED_VALUE_FACT: repr(float(saved_value)),
            learner.OFFER_COST_FACT: repr(float(offer_cost)),
            **({model_registry.DAGSTER_RUN_TAG: dagster_run_id} if dagster_run_id else {}),
        },
        check=tracking.same_predictions(found.pipeline, example, "predict"),
    )
    number = str(version.version)
    verdict = found.verdict
    opened.tag(
        number,
        {
            f"heldout_{k}": f"{v:.6g}" if isinstance(v, float) else str(v)
            for k, v in verdict.figures().items()
        },
    )
    result = GateResult(
        [GateCriterion(CRITERION, verdict.difference_low, 0.0, verdict.beats_probability)],
        thresholds=None,
        judged_on=f"{verdict.customers} held-out experimental customers",
    )
    production = opened.production()
    opened.record_verdict(number, result, None if production is None else str(production.version))
    if not verdict.beats_probability:
        return Registered(number, False, f"not promoted: {verdict.words}")
    try:
        move = opened.promote(number, dagster_run_id)
    except WRITE_REFUSALS as refusal:
        return Registered(number, False, f"not promoted: {refusal}")
    return Registered(number, True, f"promoted (production was {move.previous_version or 'none'})")
