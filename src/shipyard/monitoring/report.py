"""A data set's drift: every column tested, p-values corrected together, one verdict.

A column drifts when its significance test is significant *after* the correction across
columns **and** its distance reaches the effect-size floor: significance alone fires on
every negligible shift of a large sample, a distance alone fires on the noise of a small
one. A column with too few rows is "insufficient data", and so is the data set when no
column drifted but some could not be tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipyard.errors import invalid_parameter
from shipyard.monitoring.drift import (
    ChiSquareTest,
    DriftResult,
    JensenShannonDistance,
    KolmogorovSmirnovTest,
    PopulationStabilityIndex,
    Verdict,
    WassersteinDistance,
)
from shipyard.monitoring.multiple import Correction, adjust_p_values
from shipyard.monitoring.profiles import ColumnKind, DatasetProfile, NumericProfile

SignificanceTest = ChiSquareTest | KolmogorovSmirnovTest
Distance = JensenShannonDistance | PopulationStabilityIndex | WassersteinDistance


@dataclass(frozen=True)
class ColumnDrift:
    """One column's verdict: its test, its distance and the corrected p-value."""

    column: str
    kind: ColumnKind
    test: DriftResult
    distance: DriftResult
    adjusted_p_value: float | None
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "kind": self.kind.value,
            "verdict": self.verdict.value,
            "adjusted_p_value": self.adjusted_p_value,
            "test": self.test.to_dict(),
            "distance": self.distance.to_dict(),
        }


@dataclass(frozen=True)
class DriftReport:
    """Every column's drift and the data set's verdict (drift if any column drifted)."""

    columns: tuple[ColumnDrift, ...]
    alpha: float
    correction: Correction
    verdict: Verdict
    n_reference: int
    n_current: int

    @property
    def drifted(self) -> list[str]:
        """The columns whose verdict is drift."""
        return [c.column for c in self.columns if c.verdict is Verdict.DRIFT]

    def __getitem__(self, column: str) -> ColumnDrift:
        for c in self.columns:
            if c.column == column:
                return c
        raise KeyError(column)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "alpha": self.alpha,
            "correction": self.correction.value,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "drifted": self.drifted,
            "columns": [c.to_dict() for c in self.columns],
        }


class DatasetDriftTest:
    """Compare a current profile with its reference, column by column, at a stated error rate.

    Defaults: chi-square on every bucket (bins and missing, or categories, unseen and
    missing) for significance, Jensen–Shannon distance with a floor of 0.05 for effect
    size, Benjamini–Hochberg across columns at ``alpha = 0.05``. When nothing changed, the
    data set alarms at most ``alpha`` of the time (calibrated in
    ``benchmarks/monitoring/calibration.md``). The ``alpha`` of the column tests themselves
    is not used here: only this ``alpha``, on corrected p-values.

    Example::

        >>> import numpy as np
        >>> rng = np.random.default_rng(3)
        >>> reference = DatasetProfile.from_reference(
        ...     {"x": rng.normal(size=20_000), "y": rng.normal(size=20_000)})
        >>> current = reference.empty().update(
        ...     {"x": rng.normal(0.5, 1, 20_000), "y": rng.normal(0.01, 1, 20_000)})
        >>> DatasetDriftTest().compare(reference, current).drifted
        ['x']
    """

    def __init__(
        self,
        *,
        alpha: float = 0.05,
        correction: Correction | str = Correction.BENJAMINI_HOCHBERG,
        numeric_test: SignificanceTest | None = None,
        numeric_distance: Distance | None = None,
        categorical_test: ChiSquareTest | None = None,
        categorical_distance: JensenShannonDistance | PopulationStabilityIndex | None = None,
    ) -> None:
        self.alpha = alpha
        self.correction = correction
        self.numeric_test = numeric_test
        self.numeric_distance = numeric_distance
        self.categorical_test = categorical_test
        self.categorical_distance = categorical_distance

    def _checked(self) -> tuple[float, Correction]:
        owner = "DatasetDriftTest"
        if isinstance(self.alpha, bool) or not (
            isinstance(self.alpha, int | float) and 0 < self.alpha < 1
        ):
            raise invalid_parameter("alpha", owner, "a float in (0, 1)", self.alpha)
        try:
            correction = Correction(self.correction)
        except ValueError:
            raise invalid_parameter(
                "correction", owner, f"one of {[c.value for c in Correction]}", self.correction
            ) from None
        rules: list[tuple[str, object, tuple[type, ...]]] = [
            ("numeric_test", self.numeric_test, (ChiSquareTest, KolmogorovSmirnovTest)),
            (
                "numeric_distance",
                self.numeric_distance,
                (JensenShannonDistance, PopulationStabilityIndex, WassersteinDistance),
            ),
            ("categorical_test", self.categorical_test, (ChiSquareTest,)),
            (
                "categorical_distance",
                self.categorical_distance,
                (JensenShannonDistance, PopulationStabilityIndex),
            ),
        ]
        for name, value, kinds in rules:
            if value is not None and not isinstance(value, kinds):
                expected = "None or an instance of " + " or ".join(k.__name__ for k in kinds)
                raise invalid_parameter(name, owner, expected, value)
        return float(self.alpha), correction

    def compare(self, reference: DatasetProfile, current: DatasetProfile) -> DriftReport:
        """Test every column of ``current`` against ``reference`` (same columns and buckets)."""
        alpha, correction = self._checked()
        reference.check_compatible(current)
        pairs: list[tuple[str, ColumnKind, DriftResult, DriftResult]] = []
        for name, ref in reference.columns.items():
            cur = current.columns[name]
            if isinstance(ref, NumericProfile):
                test: SignificanceTest = self.numeric_test or ChiSquareTest()
                distance: Distance = self.numeric_distance or JensenShannonDistance()
            else:
                test = self.categorical_test or ChiSquareTest()
                distance = self.categorical_distance or JensenShannonDistance()
            pairs.append((name, ref.kind, test.compare(ref, cur), distance.compare(ref, cur)))
        tested = [
            i
            for i, (_, _, t, d) in enumerate(pairs)
            if Verdict.INSUFFICIENT_DATA not in (t.verdict, d.verdict)
        ]
        adjusted = dict(
            zip(
                tested,
                adjust_p_values([float(pairs[i][2].p_value or 0.0) for i in tested], correction),
                strict=True,
            )
        )
        columns = []
        for i, (name, kind, t, d) in enumerate(pairs):
            p = adjusted.get(i)
            if p is None:
                verdict = Verdict.INSUFFICIENT_DATA
            elif p <= alpha and d.verdict is Verdict.DRIFT:
                verdict = Verdict.DRIFT
            else:
                verdict = Verdict.NO_DRIFT
            columns.append(ColumnDrift(name, kind, t, d, p, verdict))
        return DriftReport(
            columns=tuple(columns),
            alpha=alpha,
            correction=correction,
            verdict=_dataset_verdict([c.verdict for c in columns]),
            n_reference=reference.n_rows,
            n_current=current.n_rows,
        )

    def __repr__(self) -> str:
        return (
            f"DatasetDriftTest(alpha={self.alpha!r}, correction={self.correction!r}, "
            f"numeric_test={self.numeric_test!r}, numeric_distance={self.numeric_distance!r}, "
            f"categorical_test={self.categorical_test!r}, "
            f"categorical_distance={self.categorical_distance!r})"
        )


def _dataset_verdict(verdicts: list[Verdict]) -> Verdict:
    if Verdict.DRIFT in verdicts:
        return Verdict.DRIFT
    if not verdicts or Verdict.INSUFFICIENT_DATA in verdicts:
        return Verdict.INSUFFICIENT_DATA
    return Verdict.NO_DRIFT
