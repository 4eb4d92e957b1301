"""The two-sample Kolmogorov–Smirnov test, on raw samples or on two profiles' bins."""

from __future__ import annotations

from typing import Any

import numpy as np

from shipyard.monitoring.drift._base import (
    DriftResult,
    Verdict,
    check_min_rows,
    check_probability,
    insufficient,
    numeric_pair,
)
from shipyard.monitoring.profiles import ColumnProfile, numeric_values


class KolmogorovSmirnovTest:
    """Kolmogorov–Smirnov test that a numeric column's distribution has not changed.

    Two ways, stated exactly:

    - :meth:`compare_samples` on raw values: ``scipy.stats.ks_2samp`` (two-sided, SciPy's
      ``method="auto"``: exact for small samples, asymptotic from 10,000 rows), after
      dropping missing values.
    - :meth:`compare` on two profiles: ``D`` is the largest gap between the two empirical
      CDFs *at the reference-quantile bin edges*, which is exactly
      ``ks_2samp(bin_index(reference), bin_index(current)).statistic``. It is never larger
      than the KS statistic of the raw values, so the p-value, taken from the two-sample
      KS distribution (``scipy.stats.kstwo.sf(D, round(n*m/(n+m)))``, SciPy's asymptotic
      two-sample formula), is conservative: the false-alarm rate stays at or below
      ``alpha``, at some loss of power within bins.

    Missing values are not part of either (the chi-square test sees them). The effect size
    is D itself. Reference: N. Smirnov, "Table for estimating the goodness of fit of
    empirical distributions" (1948).

    Example::

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> test = KolmogorovSmirnovTest()
        >>> test.compare_samples("x", rng.normal(size=2000), rng.normal(size=2000)).verdict.value
        'no drift'
    """

    name = "kolmogorov-smirnov"

    def __init__(self, alpha: float = 0.05, min_rows: int = 100) -> None:
        self.alpha = alpha
        self.min_rows = min_rows

    def _validate(self) -> None:
        check_probability(self.alpha, "alpha", "KolmogorovSmirnovTest")
        check_min_rows(self.min_rows, "KolmogorovSmirnovTest")

    def _result(self, column: str, d: float, p: float, n: int, m: int) -> DriftResult:
        return DriftResult(
            test=self.name,
            column=column,
            statistic=d,
            p_value=p,
            threshold=self.alpha,
            effect_size=d,
            verdict=Verdict.DRIFT if p <= self.alpha else Verdict.NO_DRIFT,
            n_reference=n,
            n_current=m,
        )

    def compare(self, reference: ColumnProfile, current: ColumnProfile) -> DriftResult:
        """Test two numeric profiles on their bins (conservative, see the class docstring)."""
        from scipy.stats import kstwo

        self._validate()
        ref, cur = numeric_pair(reference, current, self.name)
        n, m = ref.count, cur.count
        if min(n, m) < self.min_rows:
            return insufficient(self.name, ref.name, self.alpha, n, m, p=True)
        gaps = np.cumsum(ref.counts) / n - np.cumsum(cur.counts) / m
        d = float(np.max(np.abs(gaps)))
        p = float(np.clip(kstwo.sf(d, np.round(n * m / (n + m))), 0.0, 1.0))
        return self._result(ref.name, d, p, n, m)

    def compare_samples(self, column: str, reference: Any, current: Any) -> DriftResult:
        """Test raw values with ``scipy.stats.ks_2samp`` (missing values dropped)."""
        from scipy.stats import ks_2samp

        self._validate()
        x, y = numeric_values(reference, column), numeric_values(current, column)
        x, y = x[np.isfinite(x)], y[np.isfinite(y)]
        if min(x.size, y.size) < self.min_rows:
            return insufficient(self.name, column, self.alpha, x.size, y.size, p=True)
        result = ks_2samp(x, y)
        return self._result(column, float(result.statistic), float(result.pvalue), x.size, y.size)

    def __repr__(self) -> str:
        return f"KolmogorovSmirnovTest(alpha={self.alpha!r}, min_rows={self.min_rows!r})"
