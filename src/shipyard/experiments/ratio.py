"""Ratio metrics (sum of numerators / sum of denominators) by the delta method.

A ratio metric such as *fraud amount caught per alert* is randomised by unit (customer)
but measured per event (alert), so events of one unit are correlated and the naive
per-event variance is wrong. Treat each unit's ``(numerator, denominator)`` pair as one
observation: the estimate is ``R = mean(num) / mean(den)`` and, to first order (Deng,
Knoblich & Lu, "Applying the delta method in metric analytics", KDD 2018),

    Var(R) ≈ (var_num - 2 R cov + R² var_den) / (n mean_den²)

:func:`ratio_stats` returns an :class:`ArmStats` whose ``variance / n`` is that variance, so
:func:`~shipyard.experiments.sequential.msprt` and
:func:`~shipyard.experiments.fixed.fixed_horizon` take it unchanged.

Example::

    >>> arm = ratio_stats([120.0, 0.0, 45.0, 300.0], [2, 1, 1, 3])   # amount, alerts per customer
    >>> round(arm.mean, 2), arm.n
    (66.43, 4)
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from shipyard.errors import invalid_parameter
from shipyard.experiments.sequential import ArmStats


def ratio_stats(numerators: ArrayLike, denominators: ArrayLike) -> ArmStats:
    """Per-unit numerators and denominators -> ``ArmStats`` of their ratio (delta method)."""
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    for name, values in (("numerators", num), ("denominators", den)):
        if values.ndim != 1:
            raise invalid_parameter(
                name, "ratio_stats", "a 1-D sequence (one per unit)", values.shape
            )
        if not np.all(np.isfinite(values)):
            raise invalid_parameter(name, "ratio_stats", "finite numbers (no NaN)", "NaN/inf")
    if num.size != den.size:
        raise invalid_parameter(
            "denominators", "ratio_stats", f"{num.size} values, one per numerator", den.size
        )
    n = int(num.size)
    if n < 2:
        raise invalid_parameter("numerators", "ratio_stats", "at least 2 units", n)
    mean_den = float(den.mean())
    if mean_den == 0:
        raise invalid_parameter("denominators", "ratio_stats", "a non-zero total", 0.0)
    ratio = float(num.mean()) / mean_den
    covariance = np.cov(num, den, ddof=1)
    variance = (
        covariance[0, 0] - 2.0 * ratio * covariance[0, 1] + ratio**2 * covariance[1, 1]
    ) / mean_den**2
    return ArmStats(n=n, mean=ratio, variance=max(float(variance), 0.0))
