"""Cross-validation for data without a time order: seeded stratified k-fold and its metrics.

Time-ordered data (fraud) is evaluated on prequential folds (:mod:`shipyard.training.splits`).
A data set whose rows carry no time (the credit data sets: German credit, HMDA) has no
future to hold out, so rows are exchangeable and a random split is honest:
:class:`StratifiedKFold` deals the rows into ``n_splits`` folds with the same positive rate,
seeded so that every run sees the same folds. :func:`cross_validate` fits a configuration on
each fold's training rows, scores its test rows and returns the same
:class:`~shipyard.training.evaluation.Evaluation` the registry's model card reads, with row
bootstrap intervals of the mean-over-folds AUC, average precision and Brier score.

Example::

    roles = ColumnRoles(label="bad_risk", time="application_date", entity="application_id")
    split = StratifiedKFold(n_splits=5, seed=0, columns=roles)
    evaluation = cross_validate(frame, features, make_config("lightgbm"), split, n_boot=300)
    evaluation.intervals["roc_auc"]        # Interval(estimate, low, high, level)
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from shipyard.errors import DataValidationError, TrainingError, invalid_parameter
from shipyard.training import metrics as m
from shipyard.types import ColumnRoles

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.training.evaluation import Evaluation, FoldResult
    from shipyard.training.splits import Fold
    from shipyard.training.trainers import ModelConfig

CROSSVAL_METRICS = ("roc_auc", "average_precision", "brier")
"""What :func:`cross_validate` measures on each fold (Brier: lower is better)."""


class StratifiedKFold:
    """``n_splits`` folds of the rows, each with the data's positive rate (seeded shuffle).

    ``columns`` names the label (stratified on), time and entity columns of the frame.
    """

    def __init__(self, n_splits: int = 5, seed: int = 0, *, columns: ColumnRoles) -> None:
        self.n_splits = n_splits
        self.seed = seed
        self.columns = columns

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (what a training run logs)."""
        return {"n_splits": self.n_splits, "seed": self.seed, "columns": self.columns}

    def describe(self) -> dict[str, Any]:
        """The parameters as JSON-serializable values."""
        return {"kind": "stratified k-fold", **self.get_params(), "columns": self.columns.to_dict()}

    def _validate(self) -> ColumnRoles:
        owner = type(self).__name__
        if isinstance(self.n_splits, bool) or not isinstance(self.n_splits, int):
            raise invalid_parameter("n_splits", owner, "an int >= 2", self.n_splits)
        if self.n_splits < 2:
            raise invalid_parameter("n_splits", owner, "an int >= 2", self.n_splits)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise invalid_parameter("seed", owner, "an int >= 0", self.seed)
        if not isinstance(self.columns, ColumnRoles):
            raise invalid_parameter(
                "columns", owner, "a ColumnRoles(label, time, entity)", self.columns
            )
        return self.columns

    def split(self, frame: pd.DataFrame) -> list[Fold]:
        """The folds in index order; every row is a test row of exactly one fold."""
        import numpy as np
        from sklearn.model_selection import StratifiedKFold as Folds

        from shipyard.training.splits import Fold

        roles = self._validate()
        for column in roles.names:
            if column not in frame.columns:
                raise DataValidationError(
                    f"{type(self).__name__} needs column {column!r}; the frame has "
                    f"{', '.join(map(str, frame.columns))}."
                )
        labels = frame[roles.label].to_numpy()
        counts = np.bincount(labels.astype(np.int64), minlength=2)
        if labels.size and int(counts.min()) < self.n_splits:
            raise DataValidationError(
                f"{type(self).__name__} with n_splits={self.n_splits} needs at least "
                f"{self.n_splits} rows of each class in {roles.label!r}; it has "
                f"{int(counts[0])} negatives and {int(counts[1])} positives."
            )
        days = frame[roles.time].to_numpy().astype("datetime64[D]")
        dealer = Folds(n_splits=self.n_splits, shuffle=True, random_state=self.seed)
        folds = []
        for index, (train, test) in enumerate(dealer.split(np.zeros(len(labels)), labels)):
            folds.append(
                Fold(
                    index=index,
                    train=train.astype(np.int64),
                    test=test.astype(np.int64),
                    train_start=days[train].min().item(),
                    train_end=days[train].max().item(),
                    test_start=days[test].min().item(),
                    test_end=days[test].max().item(),
                )
            )
        return folds


def fold_metrics(labels: NDArray[Any], scores: NDArray[np.float64]) -> dict[str, float]:
    """AUC, average precision and Brier score of one fold's test rows."""
    return {
        "roc_auc": m.roc_auc(labels, scores),
        "average_precision": m.average_precision(labels, scores),
        "brier": m.brier(labels, scores),
    }


def cross_validate(
    frame: pd.DataFrame,
    features: list[str],
    config: ModelConfig,
    split: StratifiedKFold,
    *,
    n_boot: int = 300,
    keep_models: bool = False,
    seed: int = 0,
) -> Evaluation:
    """Fit ``config`` on each fold's training rows and measure it on the fold's test rows.

    ``n_boot`` row-bootstrap draws (0 skips them) give 95% intervals of the mean over folds
    of AUC, average precision and Brier score; ``keep_models`` keeps each fold's model.
    """
    from shipyard.training.evaluation import Evaluation, FoldResult, check_features

    roles = split.columns
    check_features(frame, features, roles.label)
    X = frame[features]
    y = frame[roles.label].to_numpy()
    results: list[FoldResult] = []
    for fold in split.split(frame):
        try:
            model = config.fit(X.iloc[fold.train], y[fold.train])
        except TrainingError as exc:
            raise TrainingError(f"Fold {fold.index}: {exc}") from None
        scores = model.predict_proba(X.iloc[fold.test])
        labels = y[fold.test]
        results.append(
            FoldResult(
                fold,
                fold_metrics(labels, scores),
                labels,
                scores,
                {},
                model if keep_models else None,
            )
        )
    evaluation = Evaluation(config, results)
    if n_boot > 0:
        evaluation.intervals = row_intervals(results, n_boot, seed)
    return evaluation


def row_intervals(results: list[FoldResult], n_boot: int, seed: int = 0) -> dict[str, m.Interval]:
    """Row-bootstrap 95% intervals of the mean over folds of each :data:`CROSSVAL_METRICS`.

    Rows are exchangeable here (no time, one application per applicant), so the unit of
    resampling is the row (every fold's test rows, drawn together with replacement).
    """
    import numpy as np

    ranked = [m.RankedScores(r.labels, r.scores) for r in results]
    sizes = np.cumsum([0] + [len(r.labels) for r in results])
    labels = np.concatenate([np.asarray(r.labels, dtype=float) for r in results])
    scores = np.concatenate([r.scores for r in results])
    squared = (scores - labels) ** 2
    bounds = list(itertools.pairwise(sizes.tolist()))

    def mean_over_folds(metric: str) -> m.Statistic:
        def statistic(w: NDArray[np.float64]) -> float:
            if metric == "brier":
                values = [
                    np.average(squared[a:b], weights=w[a:b]) if w[a:b].sum() else np.nan
                    for a, b in bounds
                ]
            else:
                values = [
                    getattr(rs, metric)(w[a:b]) for rs, (a, b) in zip(ranked, bounds, strict=True)
                ]
            return float(np.nanmean(values))

        return statistic

    units = np.arange(len(labels))
    intervals = {}
    for metric in CROSSVAL_METRICS:
        estimate, reps = m.day_bootstrap(units, mean_over_folds(metric), n_boot=n_boot, seed=seed)
        intervals[metric] = m.interval(estimate, reps)
    return intervals
