"""ChiSquareTest: SciPy's statistic on the profiles' buckets, sparse buckets pooled."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2_contingency
from scipy.stats.contingency import association

from shipyard.errors import ParameterError
from shipyard.monitoring import CategoricalProfile, ChiSquareTest, NumericProfile, Verdict
from shipyard.monitoring.drift.chi_square import pooled_table


class TestChiSquare:
    def test_statistic_and_p_value_are_scipys_on_the_bins_and_missing_bucket(
        self, numeric_pair: tuple[NumericProfile, NumericProfile, np.ndarray, np.ndarray]
    ) -> None:
        reference, current, _, _ = numeric_pair
        result = ChiSquareTest().compare(reference, current)
        table = np.vstack([reference.histogram().counts, current.histogram().counts])
        table = table[:, table.sum(axis=0) > 0]  # the reference has no missing value
        expected = chi2_contingency(table, correction=False)
        assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
        assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
        assert result.effect_size == pytest.approx(association(table, correction=False))
        assert result.verdict is Verdict.DRIFT  # 0.15 sigma and 2 % missing, 3,000 rows

    def test_categories_unseen_and_missing_are_buckets(
        self, categorical_pair: tuple[CategoricalProfile, CategoricalProfile]
    ) -> None:
        reference, current = categorical_pair
        result = ChiSquareTest().compare(reference, current)
        table = np.vstack([reference.histogram().counts, current.histogram().counts])
        expected = chi2_contingency(table[:, :5], correction=False)  # 4 categories + unseen
        assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
        assert result.verdict is Verdict.DRIFT

    def test_sparse_buckets_are_pooled_so_the_approximation_holds(self) -> None:
        reference = np.array([500, 400, 3, 2, 1, 0])
        current = np.array([480, 410, 1, 0, 4, 0])
        table = pooled_table(reference, current, min_expected=5.0)
        assert table.tolist() == [[500, 400, 6], [480, 410, 5]]
        tiny = pooled_table(np.array([500, 400, 1]), np.array([480, 410, 2]), 5.0)
        assert tiny.tolist() == [[500, 401], [480, 412]]  # a pool too small joins the smallest

    def test_the_unseen_bucket_joins_the_pool_of_rare_categories(self) -> None:
        # 4 kept categories (two rare), then unseen, then missing
        reference = np.array([500, 400, 2, 1, 0, 0])
        current = np.array([480, 410, 1, 2, 30, 0])
        table = pooled_table(reference, current, min_expected=5.0, catch_all=4)
        assert table.tolist() == [[500, 400, 3], [480, 410, 33]]
        alone = pooled_table(np.array([500, 400, 0]), np.array([480, 410, 30]), 5.0, catch_all=2)
        assert alone.tolist() == [[500, 400, 0], [480, 410, 30]]  # no pool: unseen stands alone

    def test_a_long_tail_the_reference_partly_missed_is_not_drift(self) -> None:
        rng = np.random.default_rng(8)
        labels = np.arange(400)  # 400 equally rare categories: the reference misses some
        reference = CategoricalProfile.from_reference("id", rng.choice(labels, 1000))
        current = reference.empty().update(rng.choice(labels, 1000))
        assert current.unseen > 50
        assert ChiSquareTest().compare(reference, current).verdict is Verdict.NO_DRIFT

    def test_identical_constant_columns_are_no_drift(self) -> None:
        reference = NumericProfile.from_reference("x", np.ones(500))
        result = ChiSquareTest().compare(reference, reference.empty().update(np.ones(300)))
        assert (result.p_value, result.verdict) == (1.0, Verdict.NO_DRIFT)

    def test_a_small_window_is_insufficient_data(self) -> None:
        reference = NumericProfile.from_reference("x", np.arange(1000.0))
        result = ChiSquareTest(min_rows=100).compare(reference, reference.empty().update([1.0]))
        assert result.verdict is Verdict.INSUFFICIENT_DATA
        assert np.isnan(result.statistic)

    @pytest.mark.slow
    @pytest.mark.parametrize("column", ["500 Zipf categories", "70 % zeros", "Poisson ties"])
    def test_small_sample_p_values_are_not_too_small_where_benjamini_hochberg_looks(
        self, column: str
    ) -> None:
        # With 25 columns BH compares the smallest p-values with 0.002 ... 0.01: a p-value
        # that is too small there lifts the data set's A/A rate above alpha. 1,000 rows per
        # side, where expected counts are small and the chi-square approximation is weakest.
        from scipy.stats import binom

        rng = np.random.default_rng(20261127)
        zipf = 1.0 / np.arange(1, 501)

        def draw() -> np.ndarray:
            if column == "500 Zipf categories":
                return rng.choice(500, size=1000, p=zipf / zipf.sum())
            if column == "70 % zeros":
                return np.where(rng.random(1000) < 0.7, 0.0, rng.exponential(50.0, 1000))
            return rng.poisson(2.0, 1000).astype(np.float64)

        trials, level = 3000, 0.01
        below = 0
        for _ in range(trials):
            if column == "500 Zipf categories":
                reference: NumericProfile | CategoricalProfile = CategoricalProfile.from_reference(
                    "c", draw()
                )
            else:
                reference = NumericProfile.from_reference("x", draw())
            p_value = ChiSquareTest().compare(reference, reference.empty().update(draw())).p_value
            below += p_value is not None and p_value < level
        assert below <= binom.ppf(0.999, trials, level)  # exceeded by chance once in 1,000

    @pytest.mark.parametrize(
        ("params", "name"),
        [({"alpha": 1.5}, "alpha"), ({"min_rows": 0}, "min_rows"), ({"min_expected": -1}, "min")],
    )
    def test_bad_parameters_are_named(self, params: dict[str, float], name: str) -> None:
        reference = NumericProfile.from_reference("x", np.arange(10.0))
        with pytest.raises(ParameterError, match=f"'{name}.*' parameter of ChiSquareTest"):
            ChiSquareTest(**params).compare(reference, reference)  # type: ignore[arg-type]
