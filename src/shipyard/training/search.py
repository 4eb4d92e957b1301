"""Hyper-parameter search with Optuna over time-ordered validation folds.

Every trial evaluates a configuration on the same prequential validation folds (never a
random K-fold on time-ordered data); the folds of a trial run through the workspace's
:class:`~shipyard.engines.Engine`, so a Ray engine can spread them without changing this.

Example::

    split = PrequentialSplit("2018-07-11", columns=ColumnRoles("label", "time", "entity"))
    result = search(frame, features, "lightgbm", split, n_trials=20)
    config = make_config("lightgbm", **result.best_params)

The search space of a model type is its configuration's ``search_space``; pass ``space``
to search another one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.errors import ParameterError
from shipyard.training.evaluation import evaluate
from shipyard.training.trainers import make_config

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from shipyard.engines import Engine
    from shipyard.training.splits import HoldoutSplit

Space = Callable[["optuna.Trial"], dict[str, Any]]
"""Parameters for one trial; each ModelConfig declares its own as ``search_space``."""


@dataclass
class SearchResult:
    """The best parameters found and every trial's parameters and score."""

    model_type: str
    metric: str
    best_params: dict[str, Any]
    best_value: float
    trials: list[dict[str, Any]] = field(default_factory=list)


def search(
    frame: pd.DataFrame,
    features: list[str],
    model_type: str,
    split: HoldoutSplit,
    *,
    n_trials: int = 20,
    metric: str = "average_precision",
    space: Space | None = None,
    engine: Engine | None = None,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> SearchResult:
    """Maximize the mean of ``metric`` over ``split``'s folds with Optuna's TPE sampler."""
    import optuna

    config_class = type(make_config(model_type))  # an unknown type raises the one error
    if not isinstance(n_trials, int) or n_trials < 1:
        raise ParameterError(
            f"The 'n_trials' parameter of search must be an int >= 1. Got {n_trials!r} instead."
        )
    suggest = space or config_class.search_space
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))

    def objective(trial: optuna.Trial) -> float:
        config = make_config(model_type, **suggest(trial))
        return evaluate(frame, features, config, split, n_boot=0, engine=engine).mean(metric)

    for i in range(n_trials):
        study.optimize(objective, n_trials=1)
        if progress is not None:
            progress(f"search {model_type}", i + 1, n_trials)
    trials = [
        {"number": t.number, "value": t.value, **t.params}
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE
    ]
    return SearchResult(
        model_type, metric, dict(study.best_params), float(study.best_value), trials
    )
