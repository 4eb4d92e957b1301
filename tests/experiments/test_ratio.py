"""Ratio metrics: the delta-method variance against a bootstrap, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from shipyard.errors import ParameterError
from shipyard.experiments.fixed import fixed_horizon
from shipyard.experiments.ratio import ratio_stats
from shipyard.experiments.sequential import msprt


def customers(rng: np.random.Generator, n: int, amount: float) -> tuple[np.ndarray, np.ndarray]:
    """Alerts per customer (Poisson, clustered) and the fraud amount caught over them."""
    alerts = rng.poisson(rng.gamma(2.0, 1.0, n)) + 1
    caught = np.array([rng.lognormal(np.log(amount), 1.0, k).sum() for k in alerts])
    return caught, alerts.astype(np.float64)


def test_estimate_is_sum_over_sum() -> None:
    arm = ratio_stats([120.0, 0.0, 45.0, 300.0], [2, 1, 1, 3])
    assert arm.mean == pytest.approx(465.0 / 7.0) and arm.n == 4


def test_delta_method_variance_matches_a_bootstrap() -> None:
    rng = np.random.default_rng(5)
    num, den = customers(rng, 2_000, 50.0)
    arm = ratio_stats(num, den)
    draws = rng.integers(0, num.size, (4_000, num.size))
    ratios = num[draws].sum(axis=1) / den[draws].sum(axis=1)
    assert arm.variance / arm.n == pytest.approx(ratios.var(ddof=1), rel=0.1)
    assert arm.mean == pytest.approx(num.sum() / den.sum())


def test_tests_take_ratio_arms_unchanged() -> None:
    rng = np.random.default_rng(6)
    control = ratio_stats(*customers(rng, 3_000, 50.0))
    treatment = ratio_stats(*customers(rng, 3_000, 60.0))
    assert fixed_horizon(control, treatment).decision == "treatment better"
    assert msprt(control, treatment).effect == pytest.approx(treatment.mean - control.mean)


@pytest.mark.parametrize(
    ("num", "den", "field"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], "denominators"),
        ([1.0, float("nan")], [1.0, 2.0], "numerators"),
        ([1.0, 2.0], [0.0, 0.0], "denominators"),
        ([1.0], [1.0], "numerators"),
    ],
)
def test_bad_input_names_the_field(num: list[float], den: list[float], field: str) -> None:
    with pytest.raises(ParameterError, match=f"'{field}' parameter of ratio_stats"):
        ratio_stats(num, den)
