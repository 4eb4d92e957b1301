"""The promotion gate: a challenger replaces the champion only if it is significantly better.

Both models score the same out-of-time window. A paired day-block bootstrap (days drawn
with replacement, the same draws for both models) gives a confidence interval for the
difference challenger - champion on the chosen metric; the gate passes only if the whole
interval lies above ``min_improvement`` (configurable: ``require_significance=False``
compares the point estimate instead).

Example::

    gate = PromotionGate(metric="average_precision", n_boot=1000)
    result = gate.compare(y, days, cards, champion_scores, challenger_scores)
    print(result.passed, result.delta)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter
from shipyard.training import metrics as m

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

METRICS = ("roc_auc", "average_precision", "card_precision@100")


@dataclass(frozen=True)
class GateResult:
    """What the gate measured and decided."""

    metric: str
    champion: float
    challenger: float
    delta: m.Interval
    passed: bool
    reason: str
    n_rows: int
    n_days: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (what the registry's audit trail stores)."""
        return {
            "metric": self.metric,
            "champion": self.champion,
            "challenger": self.challenger,
            "delta": self.delta.estimate,
            "delta_low": self.delta.low,
            "delta_high": self.delta.high,
            "level": self.delta.level,
            "passed": self.passed,
            "reason": self.reason,
            "n_rows": self.n_rows,
            "n_days": self.n_days,
        }


class PromotionGate:
    """Paired bootstrap comparison of a challenger against the champion on one metric."""

    def __init__(
        self,
        metric: str = "average_precision",
        n_boot: int = 1000,
        level: float = 0.95,
        min_improvement: float = 0.0,
        require_significance: bool = True,
        seed: int = 0,
    ) -> None:
        self.metric = metric
        self.n_boot = n_boot
        self.level = level
        self.min_improvement = min_improvement
        self.require_significance = require_significance
        self.seed = seed

    def _validate(self) -> None:
        owner = type(self).__name__
        if self.metric not in METRICS:
            raise invalid_parameter("metric", owner, f"one of {', '.join(METRICS)}", self.metric)
        if not isinstance(self.n_boot, int) or self.n_boot < 100:
            raise invalid_parameter("n_boot", owner, "an int >= 100", self.n_boot)
        if not 0.5 < self.level < 1:
            raise invalid_parameter("level", owner, "a float in (0.5, 1)", self.level)

    def compare(
        self,
        y: Any,
        days: Any,
        cards: Any,
        champion_scores: Any,
        challenger_scores: Any,
    ) -> GateResult:
        """Measure both models on the same rows; decide whether the challenger passes."""
        import numpy as np

        self._validate()
        y = np.asarray(y)
        day_values = np.asarray(days).astype("datetime64[D]")
        if self.metric.startswith("card_precision@"):
            estimate, reps, base, challenger = self._card_precision(
                y, day_values, np.asarray(cards), champion_scores, challenger_scores
            )
        else:
            a = m.RankedScores(y, champion_scores)
            b = m.RankedScores(y, challenger_scores)
            name = self.metric

            def difference(w: NDArray[np.float64]) -> float:
                return float(getattr(b, name)(w) - getattr(a, name)(w))

            estimate, reps = m.day_bootstrap(day_values, difference, self.n_boot, seed=self.seed)
            base, challenger = getattr(a, name)(), getattr(b, name)()
        delta = m.interval(estimate, reps, self.level)
        bound = delta.low if self.require_significance else delta.estimate
        passed = bool(bound > self.min_improvement)
        what = "lower bound of the interval" if self.require_significance else "estimate"
        reason = (
            f"{self.metric}: challenger {challenger:.4f} vs champion {base:.4f}, difference "
            f"{delta} ({self.level:.0%} paired day-bootstrap, {self.n_boot} draws); the {what} "
            f"{'exceeds' if passed else 'does not exceed'} {self.min_improvement:g}"
        )
        return GateResult(
            self.metric, base, challenger, delta, passed, reason, len(y), len(np.unique(day_values))
        )

    def _card_precision(
        self, y: Any, days: Any, cards: Any, champion: Any, challenger: Any
    ) -> tuple[float, NDArray[np.float64], float, float]:
        import numpy as np

        k = int(self.metric.split("@")[1])
        a = m.card_precision_at_k(days, cards, y, champion, k)
        b = m.card_precision_at_k(days, cards, y, challenger, k)
        diffs = np.array([b.per_day[d] - a.per_day[d] for d in a.per_day])

        def mean_difference(w: NDArray[np.float64]) -> float:
            return float(np.average(diffs, weights=w)) if w.sum() else float("nan")

        estimate, reps = m.day_bootstrap(
            np.arange(len(diffs)), mean_difference, self.n_boot, seed=self.seed
        )
        return estimate, reps, a.mean, b.mean
