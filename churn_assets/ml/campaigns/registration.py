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

from churn_assets.ml.campaigns import learner, uplift
from churn_assets.ml.campaigns.uplift import AgainstProduction, Evaluation
from churn_assets.ml.data.contract import Contract
from churn_assets.ml.evaluation.gate import GateCriterion, GateResult
from churn_assets.ml.registry import artifacts, model_registry, tracking
from churn_assets.ml.registry.model_registry import WRITE_REFUSALS, ModelRegistry
from churn_assets.ml.registry.signing import SignatureError, Verifier

#: The gate's criteria: the low end of uplift - probability targeting per 1,000 customers must
#: be above 0, and, with an uplift version in production, the high end of new - production
#: targeting must not be below 0 (a new version never replaces a clearly better one).
CRITERION = "uplift_minus_probability_per_1000_low"
AGAINST_PRODUCTION = "uplift_minus_production_per_1000_high"


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
    against: AgainstProduction | None = None,
) -> Registered:
    """Log the judged pipeline in the active MLflow run, register it in `opened` with its
    prices and `facts` signed, sign its verdict, and promote it when it passed: it beats
    probability targeting, and is not clearly worse than the production uplift version it
    was compared with (`against`)."""
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
    criteria = [GateCriterion(CRITERION, verdict.difference_low, 0.0, verdict.beats_probability)]
    if against is not None:
        opened.tag(
            number,
            {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in against.figures().items()},
        )
        criteria.append(
            GateCriterion(AGAINST_PRODUCTION, against.difference_high, 0.0, against.not_worse)
        )
    result = GateResult(
        criteria,
        thresholds=None,
        reference_version=None if against is None else against.version,
        judged_on=f"{verdict.customers} held-out experimental customers",
    )
    # compared with the version the comparison was made against: promotion is refused if
    # production moved since (compare-and-set under the registry's lock)
    if against is not None:
        compared: str | None = against.version
    else:
        compared = opened.production_number()
    opened.record_verdict(number, result, compared)
    if not verdict.beats_probability:
        return Registered(number, False, f"not promoted: {verdict.words}")
    if against is not None and not against.not_worse:
        return Registered(number, False, f"not promoted: {against.words}")
    try:
        move = opened.promote(number, dagster_run_id)
    except WRITE_REFUSALS as refusal:
        return Registered(number, False, f"not promoted: {refusal}")
    return Registered(number, True, f"promoted (production was {move.previous_version or 'none'})")


def against_production(
    opened: ModelRegistry,
    verifier: Verifier,
    found: Evaluation,
    contract: Contract,
    saved_value: float,
    offer_cost: float,
) -> AgainstProduction | str | None:
    """The new version's targeting against the production uplift version's on the same
    held-out customers, at the same prices. None with no uplift version in production; why
    not, when the production version reads another data contract (its features are not
    these) or fails its checks (a hand-moved alias: nothing to defer to)."""
    production = opened.production()
    if production is None:
        return None
    what = f"{production.name} version {production.version}"
    if model_registry.contract_digest(production) != contract.digest:
        return f"{what} reads another data contract"
    try:
        loaded = artifacts.load_version(verifier, production, opened.store, attested=True)
        theirs = uplift.predicted_uplift(loaded.pipeline, found.held_out)
    except SignatureError as refusal:
        return str(refusal)
    except Exception as error:  # unreadable files, not an uplift pipeline: nothing to defer to
        return f"{what} could not be read or run ({type(error).__name__})"
    return uplift.against_production(
        found.held_out,
        found.uplift,
        theirs,
        str(production.version),
        saved_value,
        offer_cost,
        uplift.SEED,
        found.held_out[contract.id_column],
    )
