"""WassersteinDistance: SciPy's wasserstein_distance over reference std, raw or per bin."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from shipyard.errors import SchemaError
from shipyard.monitoring import CategoricalProfile, NumericProfile, Verdict, WassersteinDistance


class TestWasserstein:
    def test_raw_samples_give_scipys_distance_over_the_reference_std(
        self, numeric_pair: tuple[NumericProfile, NumericProfile, np.ndarray, np.ndarray]
    ) -> None:
        _, _, ref_values, cur_values = numeric_pair
        result = WassersteinDistance().compare_samples("x", ref_values, cur_values)
        cur_values = cur_values[~np.isnan(cur_values)]
        expected = wasserstein_distance(ref_values, cur_values) / np.std(ref_values, ddof=1)
        assert result.statistic == pytest.approx(expected, rel=1e-12)

    def test_profiles_give_scipys_distance_between_bin_means(
        self, numeric_pair: tuple[NumericProfile, NumericProfile, np.ndarray, np.ndarray]
    ) -> None:
        reference, current, ref_values, _ = numeric_pair
        result = WassersteinDistance().compare(reference, current)
        expected = wasserstein_distance(
            reference.bin_means, current.bin_means, reference.counts, current.counts
        ) / np.std(ref_values, ddof=1)
        assert result.statistic == pytest.approx(expected, rel=1e-9)
        assert result.statistic == pytest.approx(0.15, abs=0.05)  # a 0.15 sigma mean shift

    def test_a_mean_shift_of_k_sigma_reads_k(self) -> None:
        rng = np.random.default_rng(6)
        reference = NumericProfile.from_reference("x", rng.normal(10, 3, 200_000))
        current = reference.empty().update(rng.normal(10 + 0.3 * 3, 3, 200_000))
        assert WassersteinDistance().compare(reference, current).statistic == pytest.approx(
            0.3, abs=0.01
        )

    def test_a_constant_reference_that_moved_is_infinitely_far(self) -> None:
        reference = NumericProfile.from_reference("x", np.zeros(500))
        moved = WassersteinDistance().compare(reference, reference.empty().update(np.ones(500)))
        still = WassersteinDistance().compare(reference, reference.empty().update(np.zeros(500)))
        assert (moved.statistic, moved.verdict) == (np.inf, Verdict.DRIFT)
        assert (still.statistic, still.verdict) == (0.0, Verdict.NO_DRIFT)

    def test_categorical_profiles_are_refused(
        self, categorical_pair: tuple[CategoricalProfile, CategoricalProfile]
    ) -> None:
        with pytest.raises(SchemaError, match="column 'c' is categorical"):
            WassersteinDistance().compare(*categorical_pair)
