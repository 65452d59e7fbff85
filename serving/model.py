"""The served model: loading from the registry, a fast scoring path, and watching the alias.

MLflow's own server resolves an alias once, at start-up. Here a background task polls the
alias; a new version is loaded off the event loop and swapped in with one reference
assignment, so requests in flight finish on the model they started with and none waits.
"""

import logging
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from churn_assets.ml.campaigns.learner import UpliftTLearner, expected_incremental_value, prices
from churn_assets.ml.data.contract import MISSING, Contract
from churn_assets.ml.evaluation import decision
from churn_assets.ml.model.calibration import CalibratedChurnClassifier
from churn_assets.ml.model.features import encoded_levels, model_inputs, output_features
from churn_assets.ml.model.reasons import Explainer
from churn_assets.ml.registry import artifacts, signing, tracking
from churn_assets.ml.registry import model_registry as registry
from churn_assets.ml.registry.signing import SignatureError
from serving.columns import BatchReader, Columns
from serving.schemas import RequestModels, request_models
from serving.settings import Settings

log = logging.getLogger("serving.model")

_HOLDOUT_TAGS = ("holdout_auc", "holdout_accuracy", "holdout_f1")
_PARALLEL_ROWS = 500
#: The input example MLflow logs beside the model; the manifest lists (and signs) it.
_EXAMPLE_FILE = f"{artifacts.MODEL_PREFIX}input_example.json"
_EXAMPLE_ROWS = 3


class ModelMatrix:
    """Customers' columns as the matrix a logged preprocessor would build from them.

    Category codes are the fitted encoder's, NaN for a level it never saw; numbers pass
    through, in the preprocessor's output order; a blank number takes the value its contract
    `blank` rule gives. The reader codes categories by `reader_levels` (the churn model's
    encoder); a model whose encoder lists other levels (the uplift model's) gets its own
    codes from those, by level.
    """

    def __init__(
        self,
        preprocess: Any,
        contract: Contract,
        reader_levels: dict[str, list[str]] | None = None,
    ) -> None:
        order = output_features(preprocess)
        self.levels = encoded_levels(preprocess)
        self.order = order
        self._contract = contract
        # numbers a blank stands for (the contract's `blank` rules), by matrix position
        self._filled = [
            (order.index(column), column)
            for column, spec in contract.features.items()
            if spec.blank not in (None, MISSING) and column in order
        ]
        # the reader's code i -> this encoder's code for the same level
        self._recode: dict[str, np.ndarray] = {}
        self._own: dict[str, dict[str, float]] = {}
        for column, levels in (reader_levels or {}).items():
            mine = self.levels.get(column, [])
            if levels != mine:
                own = {level: float(i) for i, level in enumerate(mine)}
                self._own[column] = own
                self._recode[column] = np.array(
                    [own.get(level, np.nan) for level in levels] + [np.nan]
                )

    def of(self, columns: Columns) -> np.ndarray:
        """Column by column: the encoder's codes the reader found, numbers as they are."""
        matrix = np.empty((columns.rows, len(self.order)), dtype=np.float64)
        for position, column in enumerate(self.order):
            codes = columns.codes.get(column)
            if codes is None:
                matrix[:, position] = columns.numbers[column]
            elif column in self._own and column in columns.texts:  # learned: by the text
                own = self._own[column]
                matrix[:, position] = [own.get(text, np.nan) for text in columns.texts[column]]
            elif column in self._recode:
                recode = self._recode[column]
                index = np.where(np.isnan(codes), len(recode) - 1, codes).astype(np.intp)
                matrix[:, position] = recode[index]
            else:
                matrix[:, position] = codes
        for position, column in self._filled:
            blank = np.isnan(matrix[:, position])
            if blank.any():
                rows = {name: matrix[blank, j] for j, name in enumerate(self.order)}
                matrix[blank, position] = self._contract.blank_fill(column, rows)
        return matrix


class FastScorer:
    """Scores customers' columns straight into LightGBM, skipping pandas and sklearn.

    The matrix is built exactly as the logged preprocessor builds it (`ModelMatrix`), and
    LightGBM's booster is called as the sklearn wrapper calls it, so scores equal the logged
    pipeline's; a test holds them to 1e-9 on the whole holdout.
    """

    def __init__(self, pipeline: Any, contract: Contract) -> None:
        preprocess = pipeline.named_steps["preprocess"]
        model = pipeline.named_steps["model"]
        transformers = {
            name: (fitted, columns) for name, fitted, columns in preprocess.transformers_
        }
        _, categorical = transformers["categorical"]
        _, numeric = transformers["numeric"]
        self._matrix = ModelMatrix(preprocess, contract)
        order = self._matrix.order
        if sorted(order) != sorted([*categorical, *numeric]):
            raise ValueError(f"unexpected preprocessor output {order}")
        #: Each category's levels in the fitted encoder's order: what `BatchReader` codes.
        self.levels = self._matrix.levels
        self._level_names = {column: np.array(levels) for column, levels in self.levels.items()}
        self._order = order
        self._booster = model.booster_
        # Versions logged before calibration existed are a bare LGBMClassifier.
        self._calibrate = (
            model.calibrate_raw if isinstance(model, CalibratedChurnClassifier) else None
        )
        self._explainer = Explainer(self._booster, order)

    def matrix(self, columns: Columns) -> np.ndarray:
        return self._matrix.of(columns)

    def score(self, columns: Columns) -> np.ndarray:
        return self._probability(self.matrix(columns))

    def score_with_reasons(
        self, columns: Columns, count: int
    ) -> tuple[np.ndarray, list[list[dict[str, Any]]]]:
        """Probabilities and each customer's `count` top reasons, levels as sent, numbers as
        the model saw them (a blank number shows the value its `blank` rule stood for)."""
        matrix = self.matrix(columns)
        values = [
            self._as_sent(columns, column, matrix[:, j]) for j, column in enumerate(self._order)
        ]
        threads = _threads(columns.rows)
        return self._probability(matrix), self._explainer.top(matrix, values, count, threads)

    def _as_sent(self, columns: Columns, column: str, encoded: np.ndarray) -> Any:
        """A column's values as its reasons show them: a category as sent, a number as used."""
        if column in columns.texts:
            return columns.texts[column]
        if column in columns.codes:  # a listed level, never unseen: its code names it
            return self._level_names[column][encoded.astype(np.intp)]
        return encoded

    def _probability(self, matrix: np.ndarray) -> np.ndarray:
        threads = _threads(len(matrix))
        if self._calibrate is None:
            return np.asarray(self._booster.predict(matrix, num_threads=threads), dtype=np.float64)
        raw = self._booster.predict(matrix, raw_score=True, num_threads=threads)
        return self._calibrate(raw)


def _threads(rows: int) -> int:
    # Below a few hundred rows LightGBM's OpenMP threads cost more than they save, and on a
    # busy machine the barrier waits for a descheduled thread (measured: ~0.5 ms a row).
    return 1 if rows < _PARALLEL_ROWS else 0


@dataclass(frozen=True)
class LoadedModel:
    name: str
    alias: str
    version: str
    run_id: str | None
    git_sha: str | None
    holdout_metrics: dict[str, float]
    quality_gate: str | None
    #: Who let this version through a gate below the floor, and why (None: no override).
    gate_override: dict[str, Any] | None
    #: `churn` is true at or above this; `threshold_source` says where it came from.
    threshold: float
    threshold_source: str
    loaded_at: datetime
    scorer: FastScorer
    #: The request bodies of the contract the version was trained under.
    requests: RequestModels
    #: Reads batch bodies (JSON or CSV) into the columns `scorer` takes.
    reader: BatchReader
    #: Customers from the input example training logged with the version, for /docs.
    examples: tuple[dict[str, Any], ...] = ()


class UpliftMismatchError(ValueError):
    """The uplift model reads another data contract than the churn model served."""


@dataclass(frozen=True)
class LoadedUplift:
    """The uplift model in production, bound to the churn version whose reader codes the
    columns it reads (`bound_to`); priced as it was judged (its signed registration)."""

    version: str
    bound_to: str
    matrix: ModelMatrix
    model: UpliftTLearner
    saved_value: float
    offer_cost: float

    def score(self, columns: Columns) -> tuple[np.ndarray, np.ndarray]:
        """Each customer's uplift and expected incremental value."""
        lift = self.model.uplift_of_matrix(self.matrix.of(columns), _threads(columns.rows))
        return lift, expected_incremental_value(lift, self.saved_value, self.offer_cost)


@dataclass
class RegistryState:
    checked_at: datetime | None = None
    reachable: bool = False
    error: str | None = None


@dataclass(frozen=True)
class LoadFailure:
    """Production points at a version this process could not load: it serves the old one."""

    version: str
    #: "refused" (not signed, not attested, not the files training signed) or "failed"
    outcome: str
    #: Why, in words that name no URI, path or credential (the log has the stack).
    error: str
    at: datetime


@dataclass
class ModelWatcher:
    """Holds the current model and keeps it on the alias's version."""

    settings: Settings
    current: LoadedModel | None = None
    registry: RegistryState = field(default_factory=RegistryState)
    #: Set while the alias's version failed to load (the API is degraded), cleared once the
    #: alias points at a version that is loaded.
    load_failure: LoadFailure | None = None
    #: The uplift model's production version, once loaded for the churn version served.
    uplift: LoadedUplift | None = None
    #: Why the uplift model's production version is not served (None: it is, or there is none).
    uplift_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _client: Any = None

    def _registry(self) -> Any:
        """The registry client, made on the first check. Making it points MLflow's
        process-wide URIs and environment at the store (model loading goes through them):
        once, not on every check from the refresh thread, which would race with anything else
        in the process that reads them."""
        if self._client is None:
            self._client = tracking.client(self.settings)
        return self._client

    def refresh(self) -> None:
        """Check the aliases once; load and swap in new versions. Never raises."""
        with self._lock:  # one refresh at a time; requests never take this lock
            client = self._refresh_churn()
            if client is not None and self.current is not None:
                self._refresh_uplift(client, self.current)

    def _refresh_uplift(self, client: Any, served: LoadedModel) -> None:
        """Load the uplift model's production version for the churn version served; a
        version that is not attested, or reads another data contract, is not served."""
        name, alias = self.settings.uplift_model_name, self.settings.production_alias
        try:
            version = registry.production_version(client, name, alias)
        except Exception as error:  # the churn check just answered: keep what we have
            log.warning("uplift registry check failed: %s", type(error).__name__)
            return
        if version is None:
            self.uplift, self.uplift_error = None, None
            return
        number = str(version.version)
        now = self.uplift
        if now is not None and (now.version, now.bound_to) == (number, served.version):
            return
        try:
            loaded = _load_uplift(self.settings, version, served)
        except Exception as error:
            # Our own refusals in words; anything else by its kind only (a client error's
            # text may carry the store's address and credentials).
            ours = isinstance(error, SignatureError | UpliftMismatchError)
            said = f"version {number}: {error if ours else type(error).__name__}"
            if self.uplift_error != said:  # once per version and reason, not every check
                log.error("not serving %s %s", name, said)
            self.uplift, self.uplift_error = None, said
            return
        self.uplift, self.uplift_error = loaded, None
        log.info("now serving %s version %s beside %s", name, number, served.version)

    def _refresh_churn(self) -> Any:
        """The churn model's alias; returns the registry client when the store answered."""
        name, alias = self.settings.model_name, self.settings.production_alias
        try:
            client = self._registry()
            version = registry.production_version(client, name, alias)
        except Exception as error:  # network, database: keep serving what we have
            # The error's text can hold the store's URI and its password: the log has it
            # (once per kind of failure), the API's answers name only its kind.
            if self.registry.reachable or self.registry.error != type(error).__name__:
                log.warning("registry check failed: %s", error)
            self._checked(reachable=False, error=type(error).__name__)
            return None
        if version is None:
            self._checked(reachable=True, error=f"{name} has no {alias!r} version yet")
            return client
        self._checked(reachable=True, error=None)
        if self.current is not None and self.current.version == str(version.version):
            self.load_failure = None
            return client
        try:
            loaded = _load(self.settings, alias, version)
        except SignatureError as error:
            # Not a fault to retry: production names a version this code will not serve.
            # One line per version an operator can alert on (and /metrics counts it).
            self._failed(str(version.version), "refused", str(error))
            return client
        except Exception as error:
            self._failed(str(version.version), "failed", type(error).__name__)
            return client
        # the uplift model rebound to the new version first, so answers carry uplift across
        # the swap (it never raises)
        self._refresh_uplift(client, loaded)
        previous = self.current
        self.load_failure = None
        self.current = loaded  # the swap: one assignment, atomic for readers
        log.info(
            "now serving %s version %s (was %s)",
            name,
            loaded.version,
            previous.version if previous else "none",
        )
        return client

    def _checked(self, reachable: bool, error: str | None) -> None:
        self.registry = RegistryState(datetime.now(UTC), reachable, error)

    def _failed(self, version: str, outcome: str, reason: str) -> None:
        """Keep serving what we have; say once per version why the new one is not served."""
        name = self.settings.model_name
        if self.load_failure is None or self.load_failure.version != version:
            # once per version: the next checks retry quietly; the stack goes to the log only
            if outcome == "refused":
                log.error("refused to serve %s version %s: %s", name, version, reason)
            else:
                log.exception("loading %s version %s failed", name, version)
        self.load_failure = LoadFailure(version, outcome, reason, datetime.now(UTC))


def _threshold(tags: dict[str, str], configured: float | None) -> tuple[float, str]:
    """An operator's CHURN_DECISION_THRESHOLD wins; else the version's cost-based one."""
    if configured is not None:
        return configured, "CHURN_DECISION_THRESHOLD"
    if decision.THRESHOLD_TAG in tags:
        source = f"model version tag {decision.THRESHOLD_TAG}"
    else:
        source = "default (the version has no decision_threshold tag)"
    return decision.version_threshold(tags), source


def _load(settings: Settings, alias: str, version: Any) -> LoadedModel:
    """The version, only if its files are the ones training signed and its gate attestation
    says it passed; its pipeline and contract are read from those checked files alone."""
    tags = version.tags or {}
    name = settings.model_name
    verifier = signing.verifier(settings)
    verified = artifacts.load_version(verifier, version, settings.tracking_uri, attested=True)
    pipeline, contract = verified.pipeline, verified.contract
    if model_inputs(pipeline) != list(contract.feature_columns):
        raise ValueError(
            f"version {version.version} reads {model_inputs(pipeline)} but its data contract "
            f"declares {list(contract.feature_columns)}"
        )
    holdout = {k.removeprefix("holdout_"): float(tags[k]) for k in _HOLDOUT_TAGS if k in tags}
    chosen, source = _threshold(tags, settings.threshold)
    requests = request_models(contract)
    scorer = FastScorer(pipeline, contract)
    examples = _examples(version, verified.manifest["files"], settings.tracking_uri, requests)
    return LoadedModel(
        name=name,
        alias=alias,
        version=str(version.version),
        run_id=version.run_id,
        git_sha=tags.get("git_sha"),
        holdout_metrics=holdout,
        quality_gate=tags.get(registry.GATE_TAG),
        gate_override=registry.override_of(version),
        threshold=chosen,
        threshold_source=source,
        loaded_at=datetime.now(UTC),
        scorer=scorer,
        requests=requests,
        reader=BatchReader(requests, scorer.levels),
        examples=examples,
    )


def _load_uplift(settings: Settings, version: Any, served: LoadedModel) -> LoadedUplift:
    """The uplift model's version, as the churn model's is loaded (signed files, attested),
    for the columns `served` reads: only under the same data contract."""
    verifier = signing.verifier(settings)
    verified = artifacts.load_version(verifier, version, settings.tracking_uri, attested=True)
    model = verified.pipeline.named_steps["model"]
    if not isinstance(model, UpliftTLearner):
        raise SignatureError(f"its pipeline is a {type(model).__name__}, not an uplift model")
    contract = served.requests.contract
    if verified.contract.digest != contract.digest:
        raise UpliftMismatchError(
            f"it reads data contract {verified.contract.digest[:12]}, production version "
            f"{served.version} reads {contract.digest[:12]}"
        )
    saved_value, offer_cost = prices(verified.manifest.get("facts", {}))
    return LoadedUplift(
        version=str(version.version),
        bound_to=served.version,
        matrix=ModelMatrix(
            verified.pipeline.named_steps["preprocess"], contract, served.scorer.levels
        ),
        model=model,
        saved_value=saved_value,
        offer_cost=offer_cost,
    )


def _examples(
    version: Any, listed: dict[str, str], store: str, requests: RequestModels
) -> tuple[dict[str, Any], ...]:
    """Up to three customers of the version's logged input example (MLflow's split format),
    for /docs: read only from the copy its signed manifest vouches for, and only the rows the
    request model accepts. A version without one (or whose file fails its check) shows none."""
    if _EXAMPLE_FILE not in listed:
        return ()
    try:
        with tempfile.TemporaryDirectory(prefix="churn-example-") as folder:
            path = artifacts.checked_copy(version, listed, _EXAMPLE_FILE, Path(folder), store)
            example = orjson.loads(path.read_bytes())
        rows = [dict(zip(example["columns"], row, strict=True)) for row in example["data"]]
    except (SignatureError, OSError, KeyError, TypeError, ValueError):  # ValueError: not JSON
        log.warning("version %s's input example cannot be shown in /docs", version.version)
        return ()
    customers = []
    for row in rows[:_EXAMPLE_ROWS]:
        try:
            customer = requests.customer.model_validate(row)
        except ValidationError:
            continue
        customers.append(customer.model_dump(exclude_none=True))
    return tuple(customers)
