"""PopulationStabilityIndex: symmetric KL of the (smoothed) bucket shares, with SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import entropy

from shipyard.monitoring import (
    CategoricalProfile,
    NumericProfile,
    PopulationStabilityIndex,
    Verdict,
)


class TestPopulationStabilityIndex:
    def test_psi_is_the_textbook_sum_and_scipys_symmetric_entropy(self) -> None:
        reference = CategoricalProfile.from_reference("c", ["a"] * 500 + ["b"] * 500)
        current = reference.empty().update(["a"] * 300 + ["b"] * 700)
        result = PopulationStabilityIndex().compare(reference, current)
        textbook = (0.3 - 0.5) * np.log(0.3 / 0.5) + (0.7 - 0.5) * np.log(0.7 / 0.5)
        assert result.statistic == pytest.approx(textbook, rel=1e-12)
        p, q = np.array([0.5, 0.5]), np.array([0.3, 0.7])
        assert result.statistic == pytest.approx(entropy(p, q) + entropy(q, p))
        assert (result.p_value, result.threshold, result.verdict) == (None, 0.1, Verdict.DRIFT)

    def test_an_empty_bucket_is_smoothed_not_infinite(
        self, categorical_pair: tuple[CategoricalProfile, CategoricalProfile]
    ) -> None:
        result = PopulationStabilityIndex().compare(*categorical_pair)  # "new" is unseen
        assert np.isfinite(result.statistic)
        assert result.verdict is Verdict.DRIFT

    def test_a_half_sigma_shift_crosses_the_floor_and_a_tenth_does_not(self) -> None:
        rng = np.random.default_rng(4)
        reference = NumericProfile.from_reference("x", rng.normal(size=200_000))
        psi = PopulationStabilityIndex()
        small = psi.compare(reference, reference.empty().update(rng.normal(0.1, 1, 200_000)))
        large = psi.compare(reference, reference.empty().update(rng.normal(0.5, 1, 200_000)))
        assert small.verdict is Verdict.NO_DRIFT
        assert large.verdict is Verdict.DRIFT
        assert large.statistic == pytest.approx(0.25, abs=0.03)  # about k**2 for k sigma
