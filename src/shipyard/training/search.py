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

from shipyard.engines import LocalEngine
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
    batch: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
) -> SearchResult:
    """Maximize the mean of ``metric`` over ``split``'s folds with Optuna's TPE sampler.

    ``batch`` trials are asked of Optuna at a time and evaluated as one ``engine.map`` (one
    task per trial, its folds in turn inside it), then told; with ``batch=1`` each trial's
    folds go through the engine instead. The trials depend only on ``seed`` and ``batch``:
    every engine finds the same ones (a larger batch samples from fewer finished trials).

    Example::

        result = search(frame, features, "lightgbm", split, n_trials=40, batch=8,
                        engine=get_engine(ws))
    """
    import optuna

    config_class = type(make_config(model_type))  # an unknown type raises the one error
    for name, given in (("n_trials", n_trials), ("batch", batch)):
        if not isinstance(given, int) or isinstance(given, bool) or given < 1:
            raise ParameterError(
                f"The {name!r} parameter of search must be an int >= 1. Got {given!r} instead."
            )
    suggest = space or config_class.search_space
    engine = engine or LocalEngine()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    trial_of = _TrialRun(frame, features, model_type, split, metric)
    done = 0
    while done < n_trials:
        asked = [study.ask() for _ in range(min(batch, n_trials - done))]
        try:
            specs = [TrialSpec(t.number, suggest(t)) for t in asked]
            if batch == 1:
                values = [trial_of(specs[0], engine)]
            else:
                values = engine.map(trial_of, specs, label="trial", describe=_describe)
        except BaseException:
            for trial in asked:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        for trial, value in zip(asked, values, strict=True):
            study.tell(trial, value)
        done += len(asked)
        if progress is not None:
            progress(f"search {model_type}", done, n_trials)
    trials = [
        {"number": t.number, "value": t.value, **t.params}
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE
    ]
    return SearchResult(
        model_type, metric, dict(study.best_params), float(study.best_value), trials
    )


@dataclass(frozen=True)
class TrialSpec:
    """One trial to evaluate: Optuna's number for it and the parameters it suggested."""

    number: int
    params: dict[str, Any]


def _describe(index: int, spec: object) -> str:
    if not isinstance(spec, TrialSpec):
        return f"trial {index}"
    shown = ", ".join(f"{k}={v!r}" for k, v in spec.params.items())
    return f"trial {spec.number} ({shown})"


@dataclass(frozen=True)
class _TrialRun:
    """Evaluates one trial's configuration (what travels to a worker: data and split once)."""

    frame: pd.DataFrame
    features: list[str]
    model_type: str
    split: HoldoutSplit
    metric: str

    def __call__(self, spec: TrialSpec, engine: Engine | None = None) -> float:
        config = make_config(self.model_type, **spec.params)
        evaluation = evaluate(
            self.frame, self.features, config, self.split, n_boot=0, engine=engine
        )
        return evaluation.mean(self.metric)
