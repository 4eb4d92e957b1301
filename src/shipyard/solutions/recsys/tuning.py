"""Tuning on validation, refitting on train + validation, testing once: the same loop for
every model (baselines and ours), so that no model is tuned more seriously than another.

:func:`tune` evaluates every setting of a grid on the validation stage (fitted on train),
keeps the one with the best mean NDCG@10 (ties: the earlier setting in the grid), refits it
on train + validation and evaluates it on test exactly once. The trials are kept for the
report (each with its validation NDCG@10 and recall@10 and its fit time).

Example::

    tuned = tune("ease", lambda p: EASE(**p), [{"l2": 100.0}, {"l2": 500.0}], split)
    print(tuned.describe())   # ease (l2=500.0): validation ndcg@10 ..., test ndcg@10 ...
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    from shipyard.solutions.recsys.data import Split
    from shipyard.solutions.recsys.metrics import Evaluation, Scorer

__all__ = ["Trial", "Tuned", "tune"]

logger = logging.getLogger(__name__)

Params = Mapping[str, Any]


@dataclass(frozen=True)
class Trial:
    """One setting of the grid, measured on validation."""

    params: dict[str, Any]
    ndcg: float
    recall: float
    fit_seconds: float


@dataclass(frozen=True)
class Tuned:
    """A model tuned on validation and tested once (module doc)."""

    name: str
    params: dict[str, Any]
    trials: list[Trial]
    validation: Evaluation
    """The chosen setting on validation (fitted on train)."""
    test: Evaluation
    """The chosen setting on test (refitted on train + validation)."""
    scorer: Scorer
    """The refitted scorer (fitted on train + validation)."""

    def describe(self) -> str:
        """One line: the chosen parameters, validation and test NDCG@10."""
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items()) or "no parameters"
        return (
            f"{self.name} ({shown}; {len(self.trials)} settings tried): validation "
            f"ndcg@10 {self.validation.ndcg.mean():.4f}, test ndcg@10 {self.test.ndcg.mean():.4f}"
        )


def tune(
    name: str,
    factory: Callable[[Params], Scorer],
    grid: Sequence[Params],
    split: Split,
    *,
    progress: Callable[[str], None] | None = None,
) -> Tuned:
    """Choose ``factory``'s parameters from ``grid`` on validation, refit on train +
    validation, test once (module doc). ``progress`` receives one line per setting."""
    from shipyard.solutions.recsys.metrics import evaluate

    if not grid:
        raise invalid_parameter("grid", f"tune({name!r})", "at least one setting", list(grid))
    trials: list[Trial] = []
    best: tuple[float, int, Evaluation] | None = None
    for i, params in enumerate(grid):
        result = evaluate(factory(params), split, "validation")
        ndcg = float(result.ndcg.mean())
        trials.append(Trial(dict(params), ndcg, float(result.recall.mean()), result.fit_seconds))
        line = f"{name} {dict(params)}: validation ndcg@10 {ndcg:.4f} ({result.fit_seconds:.1f} s)"
        logger.debug(line)
        if progress is not None:
            progress(line)
        if best is None or ndcg > best[0]:
            best = (ndcg, i, result)
    assert best is not None
    chosen = dict(grid[best[1]])
    scorer = factory(chosen)
    test = evaluate(scorer, split, "test")
    return Tuned(name, chosen, trials, best[2], test, scorer)
