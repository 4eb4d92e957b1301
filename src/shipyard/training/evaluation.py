"""Evaluate a model configuration on time-ordered folds: fit, score, metrics, intervals."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.engines import Engine, LocalEngine
from shipyard.errors import DataValidationError, TrainingError
from shipyard.training import metrics as m

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.training.splits import Fold, HoldoutSplit
    from shipyard.training.trainers import ModelConfig, TrainedModel

HEADLINE = ("roc_auc", "average_precision", "card_precision@100")


@dataclass
class FoldResult:
    """What one fold produced: metrics, test labels and scores, (optionally) the fitted model.

    ``labels`` and ``scores`` are aligned with ``fold.test`` (one value per test row).
    """

    fold: Fold
    metrics: dict[str, float]
    labels: NDArray[Any]
    scores: NDArray[np.float64]
    cp_per_day: dict[str, float]
    model: TrainedModel | None = None
    fit_seconds: float = 0.0
    """Wall-clock seconds to fit the fold's model."""
    score_seconds: float = 0.0
    """Wall-clock seconds to score the fold's test rows."""


@dataclass
class Evaluation:
    """Metrics of one configuration over all folds, with bootstrap intervals."""

    config: ModelConfig
    folds: list[FoldResult]
    intervals: dict[str, m.Interval] = field(default_factory=dict)

    def mean(self, metric: str) -> float:
        """Mean of ``metric`` over folds."""
        import numpy as np

        return float(np.mean([f.metrics[metric] for f in self.folds]))

    def std(self, metric: str) -> float:
        """Standard deviation of ``metric`` over folds (population, as the handbook reports)."""
        import numpy as np

        return float(np.std([f.metrics[metric] for f in self.folds]))

    def seconds(self) -> tuple[float, float]:
        """Mean (fit, score) wall-clock seconds per fold."""
        n = len(self.folds) or 1
        return (
            sum(f.fit_seconds for f in self.folds) / n,
            sum(f.score_seconds for f in self.folds) / n,
        )

    def summary(self) -> dict[str, float]:
        """``{metric_mean, metric_std}`` for every metric (what a run logs as overall)."""
        names = self.folds[0].metrics.keys() if self.folds else ()
        out: dict[str, float] = {}
        for name in names:
            out[f"{name}_mean"] = self.mean(name)
            out[f"{name}_std"] = self.std(name)
        for name, iv in self.intervals.items():
            out[f"{name}_ci_low"] = iv.low
            out[f"{name}_ci_high"] = iv.high
        return out


def check_features(frame: pd.DataFrame, features: list[str], label: str) -> None:
    """Raise DataValidationError naming the first feature (or label) the frame lacks."""
    for column in [*features, label]:
        if column not in frame.columns:
            raise DataValidationError(
                f"Feature {column!r} is not in the training data; it has "
                f"{', '.join(map(str, frame.columns))}."
            )


def evaluate(
    frame: pd.DataFrame,
    features: list[str],
    config: ModelConfig,
    split: HoldoutSplit,
    *,
    top_k: int = 100,
    n_boot: int = 300,
    keep_models: bool = False,
    engine: Engine | None = None,
    seed: int = 0,
) -> Evaluation:
    """Fit ``config`` on each fold's training window and measure it on its test window.

    The label, time and entity columns are the split's ``columns``; CP@k ranks entities.
    ``n_boot`` day-bootstrap draws give confidence intervals of the mean-over-folds AUC, AP
    and CP@k (0 skips them). ``keep_models`` keeps each fold's fitted model.
    """
    roles = split.columns
    check_features(frame, features, roles.label)
    folds = split.split(frame)
    X = frame[features]
    y = frame[roles.label].to_numpy()
    days = frame[roles.time].to_numpy().astype("datetime64[D]")
    cards = frame[roles.entity].to_numpy()

    def run(fold: Fold) -> FoldResult:
        if len(fold.test) == 0:
            raise TrainingError(
                f"Fold {fold.index} ({fold.test_start}..{fold.test_end}) has no test rows."
            )
        started = time.perf_counter()
        try:
            model = config.fit(X.iloc[fold.train], y[fold.train])
        except TrainingError as exc:
            raise TrainingError(
                f"Fold {fold.index} ({fold.train_start}..{fold.train_end}): {exc}"
            ) from None
        fitted = time.perf_counter()
        scores = model.predict_proba(X.iloc[fold.test])
        scored = time.perf_counter()
        yt, dt, ct = y[fold.test], days[fold.test], cards[fold.test]
        cp = m.card_precision_at_k(dt, ct, yt, scores, k=top_k)
        budget = m.alert_budget(dt, yt, scores, per_day=top_k)
        values = {
            "roc_auc": m.roc_auc(yt, scores),
            "average_precision": m.average_precision(yt, scores),
            f"card_precision@{top_k}": cp.mean,
            "brier": m.brier(yt, scores),
            f"precision@{top_k}_per_day": budget["precision"],
            f"recall@{top_k}_per_day": budget["recall"],
        }
        return FoldResult(
            fold,
            values,
            yt,
            scores,
            cp.per_day,
            model if keep_models else None,
            fit_seconds=fitted - started,
            score_seconds=scored - fitted,
        )

    results = (engine or LocalEngine()).map(run, folds, label="fold", describe=_describe_fold)
    evaluation = Evaluation(config, results)
    if n_boot > 0:
        evaluation.intervals = _intervals(results, days, top_k, n_boot, seed)
    return evaluation


def _describe_fold(index: int, fold: object) -> str:
    """``fold 2 (test 2018-05-20..2018-05-26)``: how an error note names a fold."""
    start, end = getattr(fold, "test_start", None), getattr(fold, "test_end", None)
    return f"fold {getattr(fold, 'index', index)} (test {start}..{end})"


def _intervals(
    results: list[FoldResult],
    days: NDArray[Any],
    top_k: int,
    n_boot: int,
    seed: int,
) -> dict[str, m.Interval]:
    """Bootstrap over (fold, day) units of the mean-over-folds AUC, AP and CP@k."""
    import numpy as np

    ranked = [m.RankedScores(r.labels, r.scores) for r in results]
    sizes = np.cumsum([0] + [len(r.fold.test) for r in results])
    unit = np.concatenate(
        [
            r.fold.index * 100_000 + (days[r.fold.test] - days[r.fold.test].min()).astype(int)
            for r in results
        ]
    )

    def mean_over_folds(metric: str) -> m.Statistic:
        def statistic(w: NDArray[np.float64]) -> float:
            values = [
                getattr(rs, metric)(w[a:b])
                for rs, a, b in zip(ranked, sizes[:-1], sizes[1:], strict=True)
            ]
            return float(np.nanmean(values))

        return statistic

    intervals = {}
    for metric in ("roc_auc", "average_precision"):
        estimate, reps = m.day_bootstrap(unit, mean_over_folds(metric), n_boot=n_boot, seed=seed)
        intervals[metric] = m.interval(estimate, reps)

    # CP@k is a mean of per-day values: resample (fold, day) units directly.
    per_day = [(r.fold.index, v) for r in results for v in r.cp_per_day.values()]
    fold_of = np.array([f for f, _ in per_day])
    values = np.array([v for _, v in per_day])

    def cp_statistic(w: NDArray[np.float64]) -> float:
        means = [
            np.average(values[fold_of == f], weights=w[fold_of == f])
            if w[fold_of == f].sum()
            else np.nan
            for f in np.unique(fold_of)
        ]
        return float(np.nanmean(means))

    estimate, reps = m.day_bootstrap(np.arange(len(values)), cp_statistic, n_boot=n_boot, seed=seed)
    intervals[f"card_precision@{top_k}"] = m.interval(estimate, reps)
    return intervals
