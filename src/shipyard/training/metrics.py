"""Metrics for fraud detection, with bootstrap confidence intervals.

* threshold-free: ROC AUC, average precision (both with optional sample weights, computed
  from one sort so that bootstrap replicates cost O(n));
* **Card Precision@k** (Fraud Detection Handbook, chapter 4.2): for each test day, group
  transactions by card taking the maximum score and label, rank cards by score, CP@k(day) =
  fraudulent cards among the top k / k; a card *detected* on an earlier day (in a top k and
  fraudulent) is removed from later days; the result is the mean over days;
* calibration: Brier score and reliability-curve data;
* precision and recall at an alert budget of N transactions per day;
* day-block bootstrap confidence intervals, and a paired version for comparing two models
  on the same rows (the promotion gate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.errors import TrainingError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float64]


class RankedScores:
    """Scores sorted once, so that weighted AUC and AP cost O(n) per bootstrap replicate.

    Weights are per row in the original order (bootstrap multiplicities, sample weights).
    """

    def __init__(self, y: Any, score: Any) -> None:
        import numpy as np

        self.y = np.asarray(y, dtype=float)
        score = np.asarray(score, dtype=float)
        self.order = np.argsort(-score, kind="mergesort")
        ranked = score[self.order]
        boundaries = np.r_[True, ranked[1:] != ranked[:-1]] if len(ranked) else np.zeros(0, bool)
        self.starts = np.flatnonzero(boundaries)
        self.y_sorted = self.y[self.order]

    def _grouped(self, weight: Any | None) -> tuple[FloatArray, FloatArray]:
        import numpy as np

        w = np.ones(len(self.y)) if weight is None else np.asarray(weight, dtype=float)[self.order]
        pos = np.add.reduceat(w * self.y_sorted, self.starts)
        neg = np.add.reduceat(w * (1 - self.y_sorted), self.starts)
        return pos, neg

    def roc_auc(self, weight: Any | None = None) -> float:
        """Weighted ROC AUC (ties count one half)."""
        import numpy as np

        if len(self.y) == 0:
            return float("nan")
        pos, neg = self._grouped(weight)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            return float("nan")
        neg_below = total_neg - np.cumsum(neg)  # negatives with a strictly lower score
        return float(np.sum(pos * (neg_below + 0.5 * neg)) / (total_pos * total_neg))

    def average_precision(self, weight: Any | None = None) -> float:
        """Weighted average precision (scikit-learn's step-wise definition)."""
        import numpy as np

        if len(self.y) == 0:
            return float("nan")
        pos, neg = self._grouped(weight)
        total_pos = pos.sum()
        if total_pos == 0:
            return float("nan")
        tp = np.cumsum(pos)
        precision = tp / np.maximum(tp + np.cumsum(neg), 1e-300)
        return float(np.sum(pos / total_pos * precision))


def roc_auc(y: Any, score: Any, weight: Any | None = None) -> float:
    """Area under the ROC curve (ties count one half); equals scikit-learn's roc_auc_score."""
    return RankedScores(y, score).roc_auc(weight)


def average_precision(y: Any, score: Any, weight: Any | None = None) -> float:
    """Average precision; equals scikit-learn's average_precision_score."""
    return RankedScores(y, score).average_precision(weight)


@dataclass(frozen=True)
class CardPrecision:
    """CP@k: the mean over test days and the value of each day."""

    k: int
    mean: float
    per_day: dict[str, float]


def card_precision_at_k(day: Any, card: Any, label: Any, score: Any, k: int = 100) -> CardPrecision:
    """Card Precision@k over the test days present in ``day`` (see the module docstring)."""
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"day": day, "card": card, "label": label, "score": score})
    detected: set[Any] = set()
    per_day: dict[str, float] = {}
    for value, rows in frame.groupby("day", sort=True):
        rows = rows[~rows["card"].isin(detected)]
        cards = rows.groupby("card")[["score", "label"]].max()
        top = cards.sort_values("score", ascending=False, kind="mergesort").head(k)
        hits = top.index[top["label"] == 1]
        detected.update(hits.tolist())
        per_day[str(value)] = len(hits) / k
    mean = float(np.mean(list(per_day.values()))) if per_day else float("nan")
    return CardPrecision(k=k, mean=mean, per_day=per_day)


def brier(y: Any, proba: Any) -> float:
    """Mean squared difference between predicted probability and outcome."""
    import numpy as np

    return float(np.mean((np.asarray(proba, float) - np.asarray(y, float)) ** 2))


def reliability_curve(y: Any, proba: Any, n_bins: int = 10) -> dict[str, list[float]]:
    """Mean predicted probability and observed frequency per quantile bin (calibration plot)."""
    import numpy as np

    y = np.asarray(y, float)
    p = np.asarray(proba, float)
    edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
    bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    predicted, observed, counts = [], [], []
    for b in range(max(len(edges) - 1, 1)):
        mask = bins == b
        if mask.any():
            predicted.append(float(p[mask].mean()))
            observed.append(float(y[mask].mean()))
            counts.append(float(mask.sum()))
    return {"predicted": predicted, "observed": observed, "count": counts}


def alert_budget(day: Any, label: Any, score: Any, per_day: int = 100) -> dict[str, float]:
    """Precision and recall when investigators review the top ``per_day`` transactions a day."""
    import pandas as pd

    frame = pd.DataFrame({"day": day, "label": label, "score": score})
    alerts = (
        frame.sort_values("score", ascending=False, kind="mergesort").groupby("day").head(per_day)
    )
    caught = float(alerts["label"].sum())
    total = float(frame["label"].sum())
    return {
        "precision": caught / len(alerts) if len(alerts) else float("nan"),
        "recall": caught / total if total else float("nan"),
    }


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap confidence interval."""

    estimate: float
    low: float
    high: float
    level: float

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


Statistic = Callable[["FloatArray"], float]
"""A statistic of the rows, given one weight per row (bootstrap multiplicities)."""


def day_bootstrap(
    days: Any,
    statistic: Statistic,
    n_boot: int = 500,
    seed: int = 0,
) -> tuple[float, FloatArray]:
    """Estimate and bootstrap replicates of ``statistic`` resampling whole days.

    Days are the unit of a fraud investigation (and of CP@k), and transactions of one day
    are not independent, so replicates draw days with replacement and give each row its
    day's multiplicity as weight.
    """
    import numpy as np

    codes = np.unique(np.asarray(days), return_inverse=True)[1].astype(np.int64)
    n_days = int(codes.max()) + 1 if len(codes) else 0
    if n_days == 0:
        raise TrainingError("Cannot bootstrap an empty evaluation window.")
    rng = np.random.default_rng(seed)
    estimate = statistic(np.ones(len(codes)))
    replicates = np.empty(n_boot)
    for b in range(n_boot):
        multiplicity = np.bincount(rng.integers(0, n_days, n_days), minlength=n_days)
        replicates[b] = statistic(multiplicity[codes].astype(float))
    return estimate, replicates


def interval(estimate: float, replicates: FloatArray, level: float = 0.95) -> Interval:
    """Percentile interval from bootstrap replicates."""
    import numpy as np

    tail = (1 - level) / 2
    finite = replicates[np.isfinite(replicates)]
    low, high = np.quantile(finite, [tail, 1 - tail]) if len(finite) else (np.nan, np.nan)
    return Interval(float(estimate), float(low), float(high), level)
