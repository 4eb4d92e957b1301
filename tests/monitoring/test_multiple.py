"""Multiple-testing corrections: Benjamini–Hochberg by SciPy, Bonferroni, none."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from shipyard.errors import ParameterError
from shipyard.monitoring import Correction, adjust_p_values


class TestAdjustPValues:
    def test_benjamini_hochberg_is_scipys_and_rejects_like_the_step_up_rule(self) -> None:
        p = np.random.default_rng(0).uniform(0, 0.2, 30)
        adjusted = np.array(adjust_p_values(p.tolist(), Correction.BENJAMINI_HOCHBERG))
        assert np.allclose(adjusted, false_discovery_control(p, method="bh"))
        ranked = np.sort(p)
        passing = np.nonzero(ranked <= 0.05 * np.arange(1, 31) / 30)[0]
        k = passing.max() + 1 if passing.size else 0  # the step-up rule, by hand
        assert (adjusted <= 0.05).sum() == k

    def test_bonferroni_multiplies_by_the_number_of_tests(self) -> None:
        assert adjust_p_values([0.01, 0.2, 0.6], "bonferroni") == pytest.approx([0.03, 0.6, 1.0])

    def test_none_and_empty(self) -> None:
        assert adjust_p_values([0.01, 0.2], "none") == [0.01, 0.2]
        assert adjust_p_values([], "benjamini-hochberg") == []

    def test_unknown_correction_or_bad_p_value_is_a_parameter_error(self) -> None:
        with pytest.raises(ParameterError, match="'correction' parameter of adjust_p_values"):
            adjust_p_values([0.1], "holm")
        with pytest.raises(ParameterError, match="'p_values'"):
            adjust_p_values([1.5], "none")
