"""Pearson's chi-square test of homogeneity on the buckets of two profiles."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from shipyard.errors import invalid_parameter
from shipyard.monitoring.drift._base import (
    DriftResult,
    Verdict,
    check_min_rows,
    check_pair,
    check_probability,
    insufficient,
)
from shipyard.monitoring.profiles import CategoricalProfile, ColumnProfile


def pooled_table(
    reference: NDArray[np.int64],
    current: NDArray[np.int64],
    min_expected: float,
    catch_all: int | None = None,
) -> NDArray[np.int64]:
    """The 2 x k table the test runs on, with sparse buckets pooled.

    Buckets empty on both sides are dropped. Buckets whose smaller expected count is under
    ``min_expected`` are pooled into one (Cochran's rule, so the chi-square approximation
    holds); if that pool is still too small it joins the smallest remaining bucket.

    ``catch_all`` (the unseen bucket of a categorical profile) joins the pool whenever
    there is one: which rare categories a reference happened to see depends on that
    reference's own sample, so its unseen count is biased low; the pool of "every rare or
    unseen value" is defined alike on both sides and carries no such bias.
    """
    table = np.vstack([reference, current]).astype(np.int64)
    filled = table.sum(axis=0) > 0
    table = table[:, filled]
    rows = table.sum(axis=1)
    if table.shape[1] < 2 or rows.min() == 0:
        return table
    expected = rows.min() * table.sum(axis=0) / rows.sum()
    sparse = expected < min_expected
    if not sparse.any():
        return table
    if catch_all is not None and filled[catch_all]:
        sparse[int(filled[:catch_all].sum())] = True
    pool = table[:, sparse].sum(axis=1, keepdims=True)
    kept = table[:, ~sparse]
    if kept.shape[1] and rows.min() * pool.sum() / rows.sum() < min_expected:
        smallest = int(np.argmin(kept.sum(axis=0)))
        kept = kept.copy()
        kept[:, smallest] += pool[:, 0]
        return kept
    return np.hstack([kept, pool])


class ChiSquareTest:
    """Chi-square test that two profiles of one column come from one distribution.

    Runs on every bucket of the profiles: the reference-quantile bins and the missing
    bucket of a numeric column, the categories plus unseen and missing of a categorical
    one, so a jump in the missing rate or a new category counts as a change. The statistic
    and p-value are ``scipy.stats.chi2_contingency(table, correction=False)`` on the 2 x k
    table of counts (sparse buckets pooled, and the unseen bucket with them, see
    :func:`pooled_table`); the effect size is
    Cramér's V (``scipy.stats.contingency.association``). Reference: K. Pearson (1900);
    W. G. Cochran, "Some methods for strengthening the common chi-square tests" (1954).

    Standalone, the verdict is drift when ``p <= alpha`` (no effect-size floor: a data-set
    check adds one, see :class:`~shipyard.monitoring.report.DatasetDriftTest`).

    Example::

        >>> import numpy as np
        >>> from shipyard.monitoring.profiles import NumericProfile
        >>> rng = np.random.default_rng(1)
        >>> ref = NumericProfile.from_reference("x", rng.normal(size=5000))
        >>> cur = ref.empty().update(rng.normal(0.5, 1, size=5000))
        >>> ChiSquareTest().compare(ref, cur).verdict.value
        'drift'
    """

    name = "chi-square"

    def __init__(self, alpha: float = 0.05, min_rows: int = 100, min_expected: float = 5.0):
        self.alpha = alpha
        self.min_rows = min_rows
        self.min_expected = min_expected

    def _validate(self) -> None:
        check_probability(self.alpha, "alpha", "ChiSquareTest")
        check_min_rows(self.min_rows, "ChiSquareTest")
        if isinstance(self.min_expected, bool) or not (
            isinstance(self.min_expected, int | float) and self.min_expected > 0
        ):
            raise invalid_parameter(
                "min_expected", "ChiSquareTest", "a float > 0", self.min_expected
            )

    def compare(self, reference: ColumnProfile, current: ColumnProfile) -> DriftResult:
        """Test ``current`` against ``reference`` (profiles of one column, same buckets)."""
        from scipy.stats import chi2_contingency
        from scipy.stats.contingency import association

        self._validate()
        check_pair(reference, current)
        ref, cur = reference.histogram().counts, current.histogram().counts
        n_ref, n_cur = int(ref.sum()), int(cur.sum())
        if min(n_ref, n_cur) < self.min_rows:
            return insufficient(self.name, reference.name, self.alpha, n_ref, n_cur, p=True)
        catch_all = len(reference.categories) if isinstance(reference, CategoricalProfile) else None
        table = pooled_table(ref, cur, self.min_expected, catch_all)
        if table.shape[1] < 2 and np.count_nonzero(ref + cur) > 1:
            # every bucket too sparse to test: too few rows for this many buckets
            return insufficient(self.name, reference.name, self.alpha, n_ref, n_cur, p=True)
        if table.shape[1] < 2:  # everything in one bucket on both sides: nothing differs
            statistic, p_value, effect = 0.0, 1.0, 0.0
        else:
            result = chi2_contingency(table, correction=False)
            statistic, p_value = float(result.statistic), float(result.pvalue)
            effect = float(association(table, method="cramer", correction=False))
        return DriftResult(
            test=self.name,
            column=reference.name,
            statistic=statistic,
            p_value=p_value,
            threshold=self.alpha,
            effect_size=effect,
            verdict=Verdict.DRIFT if p_value <= self.alpha else Verdict.NO_DRIFT,
            n_reference=n_ref,
            n_current=n_cur,
        )

    def __repr__(self) -> str:
        return (
            f"ChiSquareTest(alpha={self.alpha!r}, min_rows={self.min_rows!r}, "
            f"min_expected={self.min_expected!r})"
        )
