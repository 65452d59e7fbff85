"""Bounded hyperparameter search: random trials within a time budget, judged on training rows.

Off by default: the defaults are good on this data and a retrain should take the same time
every week. When a budget is set, each trial fits LightGBM with early stopping on the same
fit/validation folds of the training rows and is judged by validation log loss (the holdout
is never looked at, so the report stays an honest test). Trials are seeded, so the same budget
on the same machine tries the same candidates; the budget, not a trial count, bounds the time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace

import numpy as np

from churn_assets.ml.model.hyperparameters import Hyperparameters

#: Ranges searched around the defaults: log-uniform where the scale matters more than the step.
SPACE = {
    "learning_rate": (0.01, 0.15, "log"),
    "num_leaves": (4, 63, "int"),
    "min_child_samples": (10, 200, "int"),
    "subsample": (0.5, 1.0, "float"),
    "colsample_bytree": (0.5, 1.0, "float"),
    "reg_lambda": (1e-3, 10.0, "log"),
}


@dataclass(frozen=True)
class Trial:
    number: int
    hyperparameters: Hyperparameters
    validation_log_loss: float
    validation_auc: float
    best_iteration: int
    seconds: float

    def params(self) -> dict[str, float]:
        searched = asdict(self.hyperparameters)
        return {name: searched[name] for name in SPACE}

    def scores(self) -> dict[str, float]:
        return {
            "validation_log_loss": self.validation_log_loss,
            "validation_auc": self.validation_auc,
            "best_iteration": self.best_iteration,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class SearchResult:
    trials: list[Trial]
    budget_s: float
    seconds: float

    @property
    def best(self) -> Trial:
        return min(self.trials, key=lambda t: (t.validation_log_loss, t.number))

    def table(self) -> dict[str, object]:
        """Every trial's parameters and scores, for the training run's artifacts."""
        return {
            "budget_s": self.budget_s,
            "seconds": self.seconds,
            "best_trial": self.best.number,
            "trials": [{"trial": t.number, **t.params(), **t.scores()} for t in self.trials],
        }


def candidates(base: Hyperparameters, seed: int) -> Iterator[Hyperparameters]:
    """The defaults first (so tuning never does worse on validation), then seeded draws."""
    yield base
    rng = np.random.default_rng(seed)
    while True:
        drawn: dict[str, float | int] = {}
        for name, (low, high, kind) in SPACE.items():
            if kind == "log":
                drawn[name] = float(np.exp(rng.uniform(np.log(low), np.log(high))))
            elif kind == "int":
                drawn[name] = int(rng.integers(int(low), int(high) + 1))
            else:
                drawn[name] = float(rng.uniform(low, high))
        yield replace(base, **drawn)  # type: ignore[arg-type]


def search(
    evaluate: Callable[[Hyperparameters], tuple[float, float, int]],
    base: Hyperparameters,
    budget_s: float,
    max_trials: int,
    on_trial: Callable[[Trial], None] = lambda trial: None,
) -> SearchResult:
    """Run trials until the budget or `max_trials` is spent; a trial started is finished.

    `evaluate` fits one candidate and returns (validation log loss, validation AUC, best
    iteration). The next trial starts only if the mean trial so far still fits the budget.
    """
    started = time.perf_counter()
    trials: list[Trial] = []
    for number, hyperparameters in enumerate(candidates(base, base.seed), start=1):
        elapsed = time.perf_counter() - started
        mean = elapsed / len(trials) if trials else 0.0
        if trials and (len(trials) >= max_trials or elapsed + mean > budget_s):
            break
        trial_started = time.perf_counter()
        log_loss, auc, best_iteration = evaluate(hyperparameters)
        trial = Trial(
            number,
            hyperparameters,
            log_loss,
            auc,
            best_iteration,
            time.perf_counter() - trial_started,
        )
        trials.append(trial)
        on_trial(trial)
    return SearchResult(trials, budget_s, time.perf_counter() - started)
