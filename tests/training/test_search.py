"""Hyper-parameter search: trials in batches through an engine, reproducible by seed."""

from __future__ import annotations

import json
from typing import Any

import optuna
import pandas as pd
import pytest

from shipyard.engines import LocalEngine
from shipyard.errors import ParameterError
from shipyard.features.fraud import BASELINE_FEATURES
from shipyard.solutions.fraud import COLUMNS
from shipyard.training.search import search
from shipyard.training.splits import PrequentialSplit

FEATURES = list(BASELINE_FEATURES)
SPLIT = PrequentialSplit("2018-05-13", n_folds=3, columns=COLUMNS)


def _trials(frame: pd.DataFrame, **kwargs: Any) -> str:
    result = search(frame, FEATURES, "decision_tree", SPLIT, n_trials=5, **kwargs)
    return json.dumps(result.trials, sort_keys=True)


def test_batch_one_asks_after_every_trial_as_optuna_optimize_does(
    small_frame: pd.DataFrame,
) -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    result = search(small_frame, FEATURES, "decision_tree", SPLIT, n_trials=5)
    for trial in result.trials:  # the same suggestions, told the same values, in turn
        asked = study.ask()
        params = {
            "max_depth": asked.suggest_int("max_depth", 2, 20),
            "min_samples_leaf": asked.suggest_int("min_samples_leaf", 1, 50, log=True),
        }
        assert {k: trial[k] for k in params} == params
        study.tell(asked, trial["value"])


@pytest.mark.parametrize("batch", [2, 5])
def test_batched_trials_depend_only_on_seed_and_batch(
    small_frame: pd.DataFrame, batch: int
) -> None:
    sequential = _trials(small_frame, batch=batch)
    threaded = _trials(small_frame, batch=batch, engine=LocalEngine(max_workers=2))
    assert threaded == sequential
    assert [t["number"] for t in json.loads(sequential)] == [0, 1, 2, 3, 4]
    assert _trials(small_frame, batch=batch, seed=1) != sequential


def test_progress_is_reported_after_each_batch(small_frame: pd.DataFrame) -> None:
    seen: list[tuple[str, int, int]] = []
    search(
        small_frame, FEATURES, "decision_tree", SPLIT, n_trials=5, batch=2,
        progress=lambda stage, done, total: seen.append((stage, done, total)),
    )  # fmt: skip
    assert seen == [("search decision_tree", d, 5) for d in (2, 4, 5)]


def test_a_raising_trial_is_named_with_its_parameters(small_frame: pd.DataFrame) -> None:
    def space(trial: optuna.Trial) -> dict[str, Any]:
        return {"max_depth": trial.suggest_int("max_depth", 2, 4), "colour": "red"}

    with pytest.raises(ParameterError, match="no parameter 'colour'") as caught:
        search(small_frame, FEATURES, "decision_tree", SPLIT, n_trials=3, space=space, batch=3)
    assert caught.value.__notes__[0].startswith("(while running trial 0 (max_depth=")
    assert caught.value.__notes__[0].endswith(", colour='red') of 3 on the local engine)")


@pytest.mark.parametrize("batch", [0, -1, 1.5, True])
def test_batch_must_be_a_positive_int(small_frame: pd.DataFrame, batch: object) -> None:
    with pytest.raises(ParameterError, match="'batch' parameter of search must be an int >= 1"):
        search(small_frame, FEATURES, "decision_tree", SPLIT, batch=batch)  # type: ignore[arg-type]
