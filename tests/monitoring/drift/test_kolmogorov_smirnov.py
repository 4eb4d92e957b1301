"""KolmogorovSmirnovTest: ks_2samp on raw values; on profiles, ks_2samp of the bin indices."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp

from shipyard.errors import SchemaError
from shipyard.monitoring import CategoricalProfile, KolmogorovSmirnovTest, NumericProfile, Verdict


class TestKolmogorovSmirnov:
    def test_raw_samples_give_scipys_ks_2samp(
        self, numeric_pair: tuple[NumericProfile, NumericProfile, np.ndarray, np.ndarray]
    ) -> None:
        _, _, ref_values, cur_values = numeric_pair
        result = KolmogorovSmirnovTest().compare_samples("x", ref_values, cur_values)
        expected = ks_2samp(ref_values, cur_values[~np.isnan(cur_values)])
        assert (result.statistic, result.p_value) == (expected.statistic, expected.pvalue)
        assert result.verdict is Verdict.DRIFT

    def test_profiles_give_ks_2samp_of_the_bin_indices_a_lower_bound_of_the_raw_one(
        self, numeric_pair: tuple[NumericProfile, NumericProfile, np.ndarray, np.ndarray]
    ) -> None:
        reference, current, ref_values, cur_values = numeric_pair
        result = KolmogorovSmirnovTest().compare(reference, current)
        edges = np.asarray(reference.edges)
        cur_values = cur_values[~np.isnan(cur_values)]
        binned = ks_2samp(
            np.searchsorted(edges, ref_values, side="right"),
            np.searchsorted(edges, cur_values, side="right"),
            method="asymp",
        )
        assert result.statistic == pytest.approx(binned.statistic, abs=1e-12)
        assert result.p_value == pytest.approx(binned.pvalue, rel=1e-9)
        assert result.statistic <= ks_2samp(ref_values, cur_values).statistic
        assert result.n_current == 2940  # missing values are not part of it

    def test_categorical_profiles_are_refused_with_the_column_name(
        self, categorical_pair: tuple[CategoricalProfile, CategoricalProfile]
    ) -> None:
        with pytest.raises(SchemaError, match="numeric columns; column 'c' is categorical"):
            KolmogorovSmirnovTest().compare(*categorical_pair)

    def test_an_all_missing_window_is_insufficient_data(self) -> None:
        reference = NumericProfile.from_reference("x", np.arange(1000.0))
        current = reference.empty().update(np.full(1000, np.nan))
        result = KolmogorovSmirnovTest().compare(reference, current)
        assert result.verdict is Verdict.INSUFFICIENT_DATA
