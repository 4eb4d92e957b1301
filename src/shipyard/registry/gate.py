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

Fairness gates (:class:`FairnessGate`) bound a disparity between the groups of a sensitive
attribute (for example the equalized-odds difference of ``sex`` at most 0.1, the upper end
of its bootstrap interval), measured on the challenger's evaluation window with the
attribute read from its data set; ``ModelRegistry.promote(..., fairness=[...])`` refuses a
version that violates one, and records every result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter
from shipyard.training import metrics as m

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.governance.fairness import FairnessReport
    from shipyard.registry.models import ModelRegistry, ModelVersion

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


# -- fairness gates ------------------------------------------------------------------------

FAIRNESS_METRICS = (
    "equalized_odds_difference",
    "demographic_parity_difference",
    "equalized_odds_ratio",
    "demographic_parity_ratio",
)


@dataclass(frozen=True)
class FairnessGateResult:
    """What one fairness gate measured on the evaluation window and decided."""

    attribute: str
    metric: str
    bound: float
    measured: m.Interval | None
    """The disparity with its interval; ``None`` when fewer than two groups were large enough."""
    passed: bool
    reason: str
    n_rows: int
    insufficient: tuple[str, ...]

    def describe(self) -> str:
        """The gate in words, e.g. ``equalized_odds_difference(sex) <= 0.1``."""
        op = ">=" if self.metric.endswith("_ratio") else "<="
        return f"{self.metric}({self.attribute}) {op} {self.bound:g}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (what the audit trail stores)."""
        measured = self.measured
        return {
            "gate": "fairness",
            "attribute": self.attribute,
            "metric": self.metric,
            "bound": self.bound,
            "estimate": None if measured is None else measured.estimate,
            "low": None if measured is None else measured.low,
            "high": None if measured is None else measured.high,
            "level": None if measured is None else measured.level,
            "passed": self.passed,
            "reason": self.reason,
            "n_rows": self.n_rows,
            "insufficient": list(self.insufficient),
        }


class FairnessGate:
    """A bound on one disparity of one sensitive attribute, checked before promotion.

    A difference (``*_difference``, 0 is parity) passes when the upper end of its bootstrap
    interval is at most ``bound``; a ratio (``*_ratio``, 1 is parity) when the lower end is
    at least ``bound``. ``require_significance=False`` compares the point estimate instead.
    An attribute with fewer than two groups large enough to compare fails the gate (nothing
    shows it is fair). The attribute is read from the data set, not from the model's inputs.

    Example::

        gate = FairnessGate("sex", "equalized_odds_difference", bound=0.1, threshold=0.3)
        registry.promote("credit", 4, reason="fairer", fairness=[gate])
    """

    def __init__(
        self,
        attribute: str,
        metric: str = "equalized_odds_difference",
        bound: float = 0.1,
        *,
        threshold: float = 0.5,
        require_significance: bool = True,
        min_rows: int = 30,
        min_positives: int = 5,
        n_boot: int = 500,
        level: float = 0.95,
        seed: int = 0,
    ) -> None:
        self.attribute = attribute
        self.metric = metric
        self.bound = bound
        self.threshold = threshold
        self.require_significance = require_significance
        self.min_rows = min_rows
        self.min_positives = min_positives
        self.n_boot = n_boot
        self.level = level
        self.seed = seed

    def __repr__(self) -> str:
        return f"FairnessGate({self.attribute!r}, {self.metric!r}, bound={self.bound!r})"

    def _validate(self) -> None:
        owner = type(self).__name__
        if not isinstance(self.attribute, str) or not self.attribute:
            raise invalid_parameter("attribute", owner, "a column name", self.attribute)
        if self.metric not in FAIRNESS_METRICS:
            raise invalid_parameter(
                "metric", owner, f"one of {', '.join(FAIRNESS_METRICS)}", self.metric
            )
        if self.metric.endswith("_ratio") and not 0 < self.bound <= 1:
            raise invalid_parameter("bound", owner, "a ratio in (0, 1]", self.bound)
        if self.metric.endswith("_difference") and not 0 <= self.bound < 1:
            raise invalid_parameter("bound", owner, "a difference in [0, 1)", self.bound)

    def check(self, y: Any, scores: Any, data: pd.DataFrame) -> FairnessGateResult:
        """Assess ``scores`` on ``data[attribute]`` and decide; DataValidationError if the
        data lacks the attribute (or it has missing values or one group)."""
        from shipyard.governance.fairness import assess_fairness

        self._validate()
        report = assess_fairness(
            y,
            scores,
            data,
            [self.attribute],
            threshold=self.threshold,
            min_rows=self.min_rows,
            min_positives=self.min_positives,
            n_boot=self.n_boot,
            level=self.level,
            seed=self.seed,
        )
        return self.decide(report)

    def decide(self, report: FairnessReport) -> FairnessGateResult:
        """Decide on an existing assessment (which must cover :attr:`attribute`)."""
        self._validate()
        assessed = report.attribute(self.attribute)
        measured = assessed.disparity(self.metric)
        ratio = self.metric.endswith("_ratio")
        if measured is None:
            passed = False
            reason = (
                f"{self.metric} of {self.attribute!r} cannot be assessed: fewer than two groups "
                f"hold {report.min_rows} rows and {report.min_positives} positive and negative "
                f"labels (insufficient: {', '.join(assessed.insufficient)})"
            )
        else:
            if self.require_significance:
                value, what = (measured.low, "lower") if ratio else (measured.high, "upper")
                what = f"the {what} end of its {measured.level:.0%} interval"
            else:
                value, what = measured.estimate, "the estimate"
            passed = bool(value >= self.bound) if ratio else bool(value <= self.bound)
            verdict = (
                ("is at least" if passed else "is below")
                if ratio
                else ("is at most" if passed else "exceeds")
            )
            reason = (
                f"{self.metric} of {self.attribute!r} at threshold {report.threshold:g} is "
                f"{measured} ({report.n_rows:,} rows); {what}, {value:.3f}, {verdict} the "
                f"bound {self.bound:g}"
            )
        return FairnessGateResult(
            self.attribute,
            self.metric,
            float(self.bound),
            measured,
            passed,
            reason,
            report.n_rows,
            assessed.insufficient,
        )


def check_fairness(
    registry: ModelRegistry, version: ModelVersion, gates: Sequence[FairnessGate]
) -> list[FairnessGateResult]:
    """Score ``version`` on its evaluation window and apply each fairness gate.

    The sensitive attributes are read from the version's data set (they need not be model
    inputs); an attribute the data set lacks is a DataValidationError naming it.
    """
    from shipyard.data.catalog import get_dataset
    from shipyard.errors import DataValidationError
    from shipyard.training.frames import Window, load_frame

    if not gates:
        return []
    attributes = list(dict.fromkeys(g.attribute for g in gates))
    window = Window.from_dict(version.eval_window)
    dataset = get_dataset(registry.workspace, window.dataset, window.version)
    missing = [a for a in attributes if a not in dataset.columns]
    if missing:
        raise DataValidationError(
            f"The fairness gate's sensitive attribute {missing[0]!r} is not a column of data "
            f"set {dataset.name} v{dataset.version} ({version.name} v{version.version}'s "
            f"evaluation data); its columns are {', '.join(dataset.columns)}."
        )
    roles = version.lineage.columns
    kept = tuple(dict.fromkeys([*roles.names, *attributes]))
    frame = load_frame(registry.workspace, replace(window, columns=kept))
    predictor = registry.load(version.name, version.version)
    scores = predictor.predict(frame[version.input_schema.names].to_numpy(dtype="float64"))
    return [gate.check(frame[roles.label], scores, frame) for gate in gates]
