"""JensenShannonDistance: SciPy's jensenshannon (base 2) on the buckets, missing included."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from shipyard.monitoring import CategoricalProfile, JensenShannonDistance, NumericProfile, Verdict


class TestJensenShannon:
    def test_distance_is_scipys_on_the_bucket_shares(
        self, numeric_pair: tuple[NumericProfile, NumericProfile, np.ndarray, np.ndarray]
    ) -> None:
        reference, current, _, _ = numeric_pair
        result = JensenShannonDistance().compare(reference, current)
        p, q = reference.histogram().counts, current.histogram().counts
        assert result.statistic == pytest.approx(jensenshannon(p, q, base=2), rel=1e-12)
        assert result.effect_size == result.statistic == result.distance

    def test_a_new_category_and_an_all_missing_window_are_distances_not_errors(
        self, categorical_pair: tuple[CategoricalProfile, CategoricalProfile]
    ) -> None:
        reference, current = categorical_pair
        assert JensenShannonDistance().compare(reference, current).verdict is Verdict.DRIFT
        missing = reference.empty().update([None] * 500)
        assert JensenShannonDistance().compare(reference, missing).statistic == pytest.approx(1.0)

    def test_a_missing_rate_jump_from_1_to_10_percent_crosses_the_floor(self) -> None:
        rng = np.random.default_rng(5)
        ref_values, cur_values = rng.normal(size=100_000), rng.normal(size=100_000)
        ref_values[rng.random(100_000) < 0.01] = np.nan
        cur_values[rng.random(100_000) < 0.10] = np.nan
        reference = NumericProfile.from_reference("x", ref_values)
        result = JensenShannonDistance().compare(reference, reference.empty().update(cur_values))
        assert result.verdict is Verdict.DRIFT
