"""The population stability index between two profiles of one column."""

from __future__ import annotations

import numpy as np

from shipyard.monitoring.drift._base import (
    DriftResult,
    check_floor,
    check_min_rows,
    check_pair,
    distance_result,
    insufficient,
)
from shipyard.monitoring.profiles import ColumnProfile


class PopulationStabilityIndex:
    """PSI, the symmetric Kullback–Leibler divergence between the two profiles' buckets.

    ``PSI = sum((q - p) * ln(q / p))`` over every bucket (bins and missing, or categories,
    unseen and missing), where ``p`` and ``q`` are the reference and current shares. A
    bucket empty on one side would make it infinite, so every share is raised to at least
    ``epsilon`` (1e-4) and the shares renormalized; buckets empty on both sides are dropped.
    Computed as ``scipy.stats.entropy(q, p) + scipy.stats.entropy(p, q)`` on those shares.

    The floor (0.1 by default) is the industry's "no significant population change below
    0.1" rule. For a normal feature a mean shift of ``k`` standard deviations gives
    ``PSI ~ k**2``, so the default floor sits near a 0.3 sigma shift. Reference: B. Yurdakul,
    "Statistical properties of population stability index" (2018).
    """

    name = "psi"

    def __init__(self, floor: float = 0.1, min_rows: int = 100, epsilon: float = 1e-4) -> None:
        self.floor = floor
        self.min_rows = min_rows
        self.epsilon = epsilon

    def compare(self, reference: ColumnProfile, current: ColumnProfile) -> DriftResult:
        from scipy.stats import entropy

        check_floor(self.floor, "floor", "PopulationStabilityIndex")
        check_min_rows(self.min_rows, "PopulationStabilityIndex")
        check_floor(self.epsilon, "epsilon", "PopulationStabilityIndex")
        check_pair(reference, current)
        ref, cur = reference.histogram().counts, current.histogram().counts
        n, m = int(ref.sum()), int(cur.sum())
        if min(n, m) < self.min_rows:
            return insufficient(self.name, reference.name, self.floor, n, m, p=False)
        keep = (ref + cur) > 0
        p = np.maximum(ref[keep] / n, self.epsilon)
        q = np.maximum(cur[keep] / m, self.epsilon)
        p, q = p / p.sum(), q / q.sum()
        psi = float(entropy(q, p) + entropy(p, q))
        return distance_result(self.name, reference.name, psi, self.floor, n, m)

    def __repr__(self) -> str:
        return (
            f"PopulationStabilityIndex(floor={self.floor!r}, min_rows={self.min_rows!r}, "
            f"epsilon={self.epsilon!r})"
        )
