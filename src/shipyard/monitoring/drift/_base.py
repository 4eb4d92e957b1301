"""What every drift test shares: the verdict, the typed result, parameter checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from shipyard.errors import SchemaError, invalid_parameter
from shipyard.monitoring.profiles import ColumnProfile, NumericProfile


class Verdict(StrEnum):
    """A drift verdict. Too few rows is ``INSUFFICIENT_DATA``, never ``NO_DRIFT``."""

    DRIFT = "drift"
    NO_DRIFT = "no drift"
    INSUFFICIENT_DATA = "insufficient data"


@dataclass(frozen=True)
class DriftResult:
    """One test of one column: its statistic, p-value (tests) or distance, and verdict.

    ``threshold`` is the test's ``alpha`` for a significance test (``p_value`` set) and the
    effect-size floor for a distance (``p_value`` is None, ``statistic`` is the distance).
    ``effect_size`` is Cramér's V for chi-square, D for Kolmogorov–Smirnov and the distance
    itself for PSI, Jensen–Shannon and Wasserstein. With insufficient data the statistic and
    effect size are NaN.
    """

    test: str
    column: str
    statistic: float
    p_value: float | None
    threshold: float
    effect_size: float
    verdict: Verdict
    n_reference: int
    n_current: int

    @property
    def distance(self) -> float | None:
        """The distance, for a distance test; None for a significance test."""
        return self.statistic if self.p_value is None else None

    def to_dict(self) -> dict[str, Any]:
        def number(x: float | None) -> float | None:
            return None if x is None or math.isnan(x) else x

        return {
            "test": self.test,
            "column": self.column,
            "statistic": number(self.statistic),
            "p_value": number(self.p_value),
            "threshold": self.threshold,
            "effect_size": number(self.effect_size),
            "verdict": self.verdict.value,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
        }


class DriftTest(Protocol):
    """The contract of every drift test: compare two profiles of one column."""

    name: str
    min_rows: int

    def compare(self, reference: ColumnProfile, current: ColumnProfile) -> DriftResult: ...


def check_probability(value: object, name: str, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise invalid_parameter(name, owner, "a float in (0, 1)", value)
    return float(value)


def check_floor(value: object, name: str, owner: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise invalid_parameter(name, owner, "a finite float >= 0", value)
    return float(value)


def check_min_rows(value: object, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid_parameter("min_rows", owner, "an int >= 1", value)
    return value


def check_pair(reference: ColumnProfile, current: ColumnProfile) -> None:
    """Both profiles describe one column with the same buckets, or a SchemaError names it."""
    reference.check_compatible(current)


def numeric_pair(
    reference: ColumnProfile, current: ColumnProfile, test: str
) -> tuple[NumericProfile, NumericProfile]:
    check_pair(reference, current)
    if not isinstance(reference, NumericProfile) or not isinstance(current, NumericProfile):
        raise SchemaError(
            f"The {test} test applies to numeric columns; column {reference.name!r} is "
            "categorical. Use the chi-square test or a Jensen–Shannon or PSI distance."
        )
    return reference, current


def insufficient(
    test: str, column: str, threshold: float, n_reference: int, n_current: int, *, p: bool
) -> DriftResult:
    return DriftResult(
        test=test,
        column=column,
        statistic=math.nan,
        p_value=math.nan if p else None,
        threshold=threshold,
        effect_size=math.nan,
        verdict=Verdict.INSUFFICIENT_DATA,
        n_reference=n_reference,
        n_current=n_current,
    )


def distance_result(
    test: str, column: str, distance: float, floor: float, n_reference: int, n_current: int
) -> DriftResult:
    """A distance test's result: drift when the distance reaches its floor."""
    return DriftResult(
        test=test,
        column=column,
        statistic=distance,
        p_value=None,
        threshold=floor,
        effect_size=distance,
        verdict=Verdict.DRIFT if distance >= floor else Verdict.NO_DRIFT,
        n_reference=n_reference,
        n_current=n_current,
    )
