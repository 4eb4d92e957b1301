"""Multiple-testing corrections: one data-set verdict from many column p-values."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np

from shipyard.errors import invalid_parameter


class Correction(StrEnum):
    """How the p-values of the columns of one data set are adjusted before ``alpha``.

    - ``BENJAMINI_HOCHBERG`` (default) controls the false discovery rate; when nothing
      drifted it controls the chance of any alarm at ``alpha`` (it is then Simes' test),
      for independent or positively dependent columns. Benjamini & Hochberg, "Controlling
      the false discovery rate" (1995); Simes (1986).
    - ``BONFERRONI`` controls the chance of any false alarm at ``alpha`` under any
      dependence, at some loss of power: ``min(1, m * p)``.
    - ``NONE`` leaves p-values as they are; with 25 columns a data set then alarms about
      70 % of the time when nothing changed. For comparison only.
    """

    BENJAMINI_HOCHBERG = "benjamini-hochberg"
    BONFERRONI = "bonferroni"
    NONE = "none"


def adjust_p_values(p_values: Sequence[float], correction: Correction | str) -> list[float]:
    """Adjusted p-values, in the input order; reject where ``adjusted <= alpha``.

    Benjamini–Hochberg is ``scipy.stats.false_discovery_control(p, method="bh")``.

    Example::

        >>> [round(p, 3) for p in adjust_p_values([0.01, 0.04, 0.03], "benjamini-hochberg")]
        [0.03, 0.04, 0.04]
        >>> adjust_p_values([0.01, 0.5], "bonferroni")
        [0.02, 1.0]
    """
    try:
        method = Correction(correction)
    except ValueError:
        raise invalid_parameter(
            "correction", "adjust_p_values", f"one of {[c.value for c in Correction]}", correction
        ) from None
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return []
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise invalid_parameter("p_values", "adjust_p_values", "numbers in [0, 1]", p_values)
    if method is Correction.BENJAMINI_HOCHBERG:
        from scipy.stats import false_discovery_control

        return [float(x) for x in false_discovery_control(p, method="bh")]
    if method is Correction.BONFERRONI:
        return [float(x) for x in np.minimum(1.0, p * p.size)]
    return [float(x) for x in p]
