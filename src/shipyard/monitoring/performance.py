"""Realized performance per window, once labels are joined, each metric with its interval.

Per window: rows, positives, alerts; ROC AUC and average precision (the project's
:mod:`shipyard.training.metrics`, equal to scikit-learn's) with a seeded percentile
bootstrap; precision@k per day, or Card Precision@k when an entity (card) column is given,
exactly as the fraud protocol defines it; and at the serving threshold (an alert is
``score >= threshold``) precision, recall, false-positive rate and alert rate, each a
proportion with its Wilson interval (``scipy.stats.binomtest``). A metric that cannot be
computed on a window (no positives for AUC, AP and recall, no negatives for AUC and FPR,
no alerts for precision, fewer than ``min_rows`` rows for any metric, fewer than k cards on
a day for CP@k) is reported as "insufficient data", never as a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from shipyard.errors import ParameterError, invalid_parameter

if TYPE_CHECKING:
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float64]


MIN_DAYS_FOR_DAY_BOOTSTRAP = 7
"""A window's AUC and AP intervals resample whole days from this many days on, rows below."""


class MetricStatus(StrEnum):
    """Whether a window could give the metric a value."""

    OK = "ok"
    INSUFFICIENT_DATA = "insufficient data"


@dataclass(frozen=True)
class Metric:
    """One metric of one window: its value and confidence interval, or insufficient data.

    ``method`` says where the interval comes from: ``"bootstrap"`` (percentile, seeded),
    ``"wilson"`` (a proportion's Wilson score interval), ``"parametric bootstrap"`` (an
    estimate's sampling error, see :mod:`shipyard.monitoring.estimation`) or ``"observed"``
    (known without labels, no sampling error).
    """

    name: str
    value: float | None
    low: float | None
    high: float | None
    level: float
    method: str
    status: MetricStatus = MetricStatus.OK

    @classmethod
    def insufficient(cls, name: str, level: float, method: str) -> Metric:
        return cls(name, None, None, None, level, method, MetricStatus.INSUFFICIENT_DATA)

    def __str__(self) -> str:
        if self.value is None:
            return self.status.value
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the interval (bounds included)."""
        if self.low is None or self.high is None:
            return False
        return self.low - 1e-12 <= value <= self.high + 1e-12

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "method": self.method,
            "status": self.status.value,
        }


@dataclass(frozen=True)
class WindowPerformance:
    """The realized metrics of one window."""

    window: str
    n: int
    positives: int
    alerts: int
    metrics: dict[str, Metric]

    def __getitem__(self, name: str) -> Metric:
        return self.metrics[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "n": self.n,
            "positives": self.positives,
            "alerts": self.alerts,
            "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
        }


@dataclass(frozen=True)
class PerformanceReport:
    """Realized metrics of every window, in window order."""

    threshold: float
    level: float
    windows: tuple[WindowPerformance, ...]

    def __getitem__(self, window: str) -> WindowPerformance:
        for w in self.windows:
            if w.window == window:
                return w
        raise KeyError(window)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "level": self.level,
            "windows": [w.to_dict() for w in self.windows],
        }


# ---------------------------------------------------------------- input checks


def as_scores(values: Any, name: str, owner: str, *, probabilities: bool) -> FloatArray:
    """A non-empty 1-D float array of finite values (in [0, 1] for probabilities)."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be a 1-D array of numbers. "
            f"Got values of type {type(values).__name__} instead."
        ) from None
    if array.ndim != 1 or array.size == 0:
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be a non-empty 1-D array. "
            f"Got shape {array.shape} instead."
        )
    bad = ~np.isfinite(array)
    if probabilities:
        bad |= (array < 0) | (array > 1)
    if bad.any():
        expected = "probabilities in [0, 1]" if probabilities else "finite numbers"
        raise ParameterError(
            f"The {name!r} parameter of {owner} must hold {expected}. Got {int(bad.sum())} "
            f"value(s) outside, the first {float(array[bad][0])!r} at position "
            f"{int(np.flatnonzero(bad)[0])}, instead."
        )
    return array


def as_labels(values: Any, n: int, owner: str) -> NDArray[np.int64]:
    """Labels 0/1 (or booleans), as many as the scores."""
    array = np.asarray(values)
    if array.ndim != 1 or array.size != n:
        raise ParameterError(
            f"The 'labels' parameter of {owner} must be a 1-D array as long as 'scores' "
            f"({n}). Got shape {array.shape} instead."
        )
    numeric = array.astype(float) if array.dtype.kind in "biuf" else None
    if numeric is None or not np.isin(numeric, (0.0, 1.0)).all():
        shown = sorted({repr(v) for v in array[:1000].tolist()})[:5]
        raise ParameterError(
            f"The 'labels' parameter of {owner} must hold 0/1 labels. "
            f"Got values such as {', '.join(shown)} instead."
        )
    return numeric.astype(np.int64)


def as_keys(values: Any, name: str, n: int, owner: str) -> NDArray[Any]:
    array = np.asarray(values)
    if array.ndim != 1 or array.size != n:
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be a 1-D array as long as 'scores' "
            f"({n}). Got shape {array.shape} instead."
        )
    import pandas as pd

    missing = int(pd.isna(array).sum())
    if missing:
        raise ParameterError(
            f"The {name!r} parameter of {owner} must have a key for every row. "
            f"Got {missing} missing key(s) instead."
        )
    try:
        np.unique(array)
    except TypeError:
        raise ParameterError(
            f"The {name!r} parameter of {owner} must hold keys of one comparable type. "
            f"Got {sorted({type(v).__name__ for v in array.tolist()})} instead."
        ) from None
    return array


def check_level(value: object, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise invalid_parameter("level", owner, "a float in (0, 1)", value)
    return float(value)


def check_count(value: object, name: str, owner: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise invalid_parameter(name, owner, f"an int >= {minimum}", value)
    return value


def check_threshold(value: object, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid_parameter("threshold", owner, "a finite float", value)
    return float(value)


def window_groups(window: NDArray[Any] | None, n: int) -> list[tuple[str, NDArray[np.int64]]]:
    """Row indices per window, in sorted window order (one window ``"all"`` without keys)."""
    if window is None:
        return [("all", np.arange(n))]
    keys, codes = np.unique(window, return_inverse=True)
    order = np.argsort(codes, kind="mergesort")
    bounds = np.searchsorted(codes[order], np.arange(len(keys) + 1))
    return [
        (str(key), order[bounds[i] : bounds[i + 1]].astype(np.int64)) for i, key in enumerate(keys)
    ]


def wilson(name: str, successes: int, trials: int, level: float) -> Metric:
    """A proportion with its Wilson score interval; insufficient data when ``trials`` is 0."""
    from scipy.stats import binomtest

    if trials == 0:
        return Metric.insufficient(name, level, "wilson")
    ci = binomtest(successes, trials).proportion_ci(confidence_level=level, method="wilson")
    return Metric(name, successes / trials, float(ci.low), float(ci.high), level, "wilson")


# ---------------------------------------------------------------- realized metrics


class RealizedPerformance:
    """Realized metrics per window from scores and joined labels, with confidence intervals.

    ``threshold`` is the serving threshold (an alert is ``score >= threshold``), ``k`` the
    daily alert budget of precision@k / CP@k, ``n_boot`` the bootstrap replicates of AUC and
    AP (rows are resampled, or whole days when ``day`` is given: transactions of one day are
    not independent), ``min_rows`` the fewest rows a window needs for any metric and
    ``min_positives`` the fewest positives for AUC and AP.

    Example::

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> p = rng.beta(1, 30, 5000)
        >>> y = rng.random(5000) < p
        >>> report = RealizedPerformance(threshold=0.1, k=50).compute(p, y)
        >>> round(report["all"]["roc_auc"].value, 2)
        0.76
    """

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        k: int = 100,
        level: float = 0.95,
        n_boot: int = 500,
        min_rows: int = 30,
        min_positives: int = 5,
        seed: int = 0,
    ) -> None:
        self.threshold = threshold
        self.k = k
        self.level = level
        self.n_boot = n_boot
        self.min_rows = min_rows
        self.min_positives = min_positives
        self.seed = seed

    def _validate(self) -> None:
        owner = "RealizedPerformance"
        check_threshold(self.threshold, owner)
        check_count(self.k, "k", owner, 1)
        check_level(self.level, owner)
        check_count(self.n_boot, "n_boot", owner, 10)
        check_count(self.min_rows, "min_rows", owner, 1)
        check_count(self.min_positives, "min_positives", owner, 1)
        check_count(self.seed, "seed", owner, 0)

    def compute(
        self,
        scores: Any,
        labels: Any,
        *,
        window: Any | None = None,
        day: Any | None = None,
        entity: Any | None = None,
    ) -> PerformanceReport:
        """Metrics of every window of ``window`` (one window ``"all"`` when it is None).

        ``day`` (dates or timestamps, truncated to days) drives precision@k per day and the
        day bootstrap (whole days resampled when a window spans at least
        :data:`MIN_DAYS_FOR_DAY_BOOTSTRAP` days, rows otherwise); without it a window is one
        day. With ``entity`` (the card), the
        top-k metric is Card Precision@k, else precision@k of transactions.
        """
        self._validate()
        owner = "RealizedPerformance.compute"
        s = as_scores(scores, "scores", owner, probabilities=False)
        y = as_labels(labels, len(s), owner)
        w = None if window is None else as_keys(window, "window", len(s), owner)
        d = None if day is None else as_keys(day, "day", len(s), owner)
        e = None if entity is None else as_keys(entity, "entity", len(s), owner)
        if d is not None and d.dtype.kind in "mM":
            d = d.astype("datetime64[D]")
        windows = []
        for key, rows in window_groups(w, len(s)):
            windows.append(
                self._window(
                    key,
                    s[rows],
                    y[rows],
                    None if d is None else d[rows],
                    None if e is None else e[rows],
                )
            )
        return PerformanceReport(float(self.threshold), float(self.level), tuple(windows))

    def _window(
        self,
        key: str,
        s: FloatArray,
        y: NDArray[np.int64],
        day: NDArray[Any] | None,
        entity: NDArray[Any] | None,
    ) -> WindowPerformance:
        n, positives = len(s), int(y.sum())
        alert = s >= self.threshold
        alerts, tp = int(alert.sum()), int(y[alert].sum())
        enough = n >= self.min_rows
        level = self.level
        metrics = [
            *self._ranking(s, y, day, enough),
            self._top_k(s, y, day, entity, enough),
            wilson("precision", tp, alerts if enough else 0, level),
            wilson("recall", tp, positives if enough else 0, level),
            wilson("false_positive_rate", alerts - tp, n - positives if enough else 0, level),
            wilson("alert_rate", alerts, n if enough else 0, level),
        ]
        return WindowPerformance(key, n, positives, alerts, {m.name: m for m in metrics})

    def _ranking(
        self, s: FloatArray, y: NDArray[np.int64], day: NDArray[Any] | None, enough: bool
    ) -> list[Metric]:
        from shipyard.training import metrics as m

        positives = int(y.sum())
        out = []
        ranked = m.RankedScores(y, s)
        # whole days are resampled (fraud clusters in time) only when there are enough of
        # them: over one or a few days a day bootstrap gives a zero-width or coarse interval
        clustered = day is not None and len(np.unique(day)) >= MIN_DAYS_FOR_DAY_BOOTSTRAP
        units = day if clustered and day is not None else np.arange(len(s))
        for name, statistic, needs_negatives in (
            ("roc_auc", ranked.roc_auc, True),
            ("average_precision", ranked.average_precision, False),
        ):
            if (
                not enough
                or positives < self.min_positives
                or (needs_negatives and positives == len(y))
            ):
                out.append(Metric.insufficient(name, self.level, "bootstrap"))
                continue
            estimate, replicates = m.day_bootstrap(units, statistic, self.n_boot, self.seed)
            ci = m.interval(estimate, replicates, self.level)
            out.append(Metric(name, ci.estimate, ci.low, ci.high, self.level, "bootstrap"))
        return out

    def _top_k(
        self,
        s: FloatArray,
        y: NDArray[np.int64],
        day: NDArray[Any] | None,
        entity: NDArray[Any] | None,
        enough: bool,
    ) -> Metric:
        """Precision@k per day, or CP@k with cards: hits over k × days, a Wilson interval."""
        from shipyard.training import metrics as m

        days = np.zeros(len(s), dtype=np.int64) if day is None else day
        if entity is None:
            name = f"precision@{self.k}"
            _, day_codes = np.unique(days, return_inverse=True)
            smallest = int(np.bincount(day_codes).min())
        else:
            name = f"card_precision@{self.k}"
            cards_per_day = {v: len(set(entity[days == v].tolist())) for v in np.unique(days)}
            smallest = min(cards_per_day.values())
        if not enough or smallest < self.k:
            return Metric.insufficient(name, self.level, "wilson")
        if entity is None:
            precision = m.alert_budget(days, y, s, per_day=self.k)["precision"]
            n_days = len(np.unique(days))
        else:
            cp = m.card_precision_at_k(days, entity, y, s, k=self.k)
            precision, n_days = cp.mean, len(cp.per_day)
        trials = self.k * n_days
        return wilson(name, round(precision * trials), trials, self.level)

    def __repr__(self) -> str:
        return (
            f"RealizedPerformance(threshold={self.threshold!r}, k={self.k!r}, "
            f"level={self.level!r}, n_boot={self.n_boot!r}, min_rows={self.min_rows!r}, "
            f"min_positives={self.min_positives!r}, seed={self.seed!r})"
        )
