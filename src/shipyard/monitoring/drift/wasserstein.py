"""The Wasserstein distance between two numeric columns, in reference standard deviations."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from shipyard.monitoring.drift._base import (
    DriftResult,
    check_floor,
    check_min_rows,
    distance_result,
    insufficient,
    numeric_pair,
)
from shipyard.monitoring.profiles import ColumnProfile, NumericProfile, numeric_values


def _normalize(distance: float, scale: float) -> float:
    if scale > 0:
        return distance / scale
    return 0.0 if distance == 0 else math.inf  # a constant reference column that moved


class WassersteinDistance:
    """Earth mover's distance between two numeric columns, divided by the reference's std.

    A normalized distance of 0.1 reads "the distribution moved by a tenth of a reference
    standard deviation"; a pure mean shift of ``k`` sigma gives ``k``. Normalizing by the
    standard deviation (not the IQR) keeps it defined for columns with a zero IQR (mostly
    zeros); a constant reference gives 0 if nothing moved, else infinity.

    - :meth:`compare` on profiles: ``scipy.stats.wasserstein_distance`` between the two
      profiles' bins, each bin a point mass at the mean of its values (profiles keep each
      bin's sum). This keeps every bin's mean exact, so a mean shift is measured in full;
      only movement within a bin is missed.
    - :meth:`compare_samples` on raw values: ``scipy.stats.wasserstein_distance`` of the
      values divided by the reference's sample standard deviation.

    Missing values are ignored (the chi-square test and Jensen–Shannon see them). Floor:
    0.1 standard deviations by default.
    """

    name = "wasserstein"

    def __init__(self, floor: float = 0.1, min_rows: int = 100) -> None:
        self.floor = floor
        self.min_rows = min_rows

    def _validate(self) -> None:
        check_floor(self.floor, "floor", "WassersteinDistance")
        check_min_rows(self.min_rows, "WassersteinDistance")

    def compare(self, reference: ColumnProfile, current: ColumnProfile) -> DriftResult:
        from scipy.stats import wasserstein_distance

        self._validate()
        ref, cur = numeric_pair(reference, current, self.name)
        n, m = ref.count, cur.count
        if min(n, m) < self.min_rows:
            return insufficient(self.name, ref.name, self.floor, n, m, p=False)
        u, u_weights = _point_masses(ref)
        v, v_weights = _point_masses(cur)
        distance = float(wasserstein_distance(u, v, u_weights, v_weights))
        return distance_result(self.name, ref.name, _normalize(distance, ref.std), self.floor, n, m)

    def compare_samples(self, column: str, reference: Any, current: Any) -> DriftResult:
        from scipy.stats import wasserstein_distance

        self._validate()
        x, y = numeric_values(reference, column), numeric_values(current, column)
        x, y = x[np.isfinite(x)], y[np.isfinite(y)]
        if min(x.size, y.size) < self.min_rows:
            return insufficient(self.name, column, self.floor, x.size, y.size, p=False)
        distance = float(wasserstein_distance(x, y))
        scale = float(np.std(x, ddof=1))
        return distance_result(
            self.name, column, _normalize(distance, scale), self.floor, x.size, y.size
        )

    def __repr__(self) -> str:
        return f"WassersteinDistance(floor={self.floor!r}, min_rows={self.min_rows!r})"


def _point_masses(profile: NumericProfile) -> tuple[Any, Any]:
    """Each non-empty bin as a point at the mean of its values, weighted by its count."""
    filled = profile.counts > 0
    return profile.bin_means[filled], profile.counts[filled]
