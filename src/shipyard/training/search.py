"""Hyper-parameter search with Optuna over time-ordered validation folds.

Every trial evaluates a configuration on the same prequential validation folds (never a
random K-fold on time-ordered data); the folds of a trial run through the workspace's
:class:`~shipyard.engines.Engine`, so a Ray engine can spread them without changing this.

Example::

    result = search(frame, features, "lightgbm", PrequentialSplit("2018-07-11"), n_trials=20)
    config = make_config("lightgbm", **result.best_params)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.errors import ParameterError
from shipyard.training.evaluation import evaluate
from shipyard.training.trainers import MODEL_TYPES, make_config

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from shipyard.engines import Engine
    from shipyard.training.splits import HoldoutSplit

Space = Callable[["optuna.Trial"], dict[str, Any]]


def _logistic(trial: optuna.Trial) -> dict[str, Any]:
    return {"C": trial.suggest_float("C", 1e-3, 10.0, log=True)}


def _tree(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "max_depth": trial.suggest_int("max_depth", 2, 20),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 50, log=True),
    }


def _forest(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 25, 150, step=25),
        "max_depth": trial.suggest_int("max_depth", 5, 30),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20, log=True),
    }


def _xgboost(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 25, 300, step=25),
        "max_depth": trial.suggest_int("max_depth", 2, 8),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.5, log=True),
    }


def _lightgbm(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 50, 400, step=50),
        "num_leaves": trial.suggest_int("num_leaves", 7, 63),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 5, 100, log=True),
    }


SPACES: dict[str, Space] = {
    "logistic_regression": _logistic,
    "decision_tree": _tree,
    "random_forest": _forest,
    "xgboost": _xgboost,
    "lightgbm": _lightgbm,
}


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

    if model_type not in MODEL_TYPES:
        make_config(model_type)  # raises the one unknown-model error
    if not isinstance(n_trials, int) or n_trials < 1:
        raise ParameterError(
            f"The 'n_trials' parameter of search must be an int >= 1. Got {n_trials!r} instead."
        )
    suggest = space or SPACES[model_type]
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
