"""A/A and power simulations: peeking-safe methods hold alpha, the naive peeker does not."""

from __future__ import annotations

import json
import math

import pytest

from shipyard.errors import ParameterError
from shipyard.experiments.fixed import sample_size
from shipyard.experiments.simulation import METHODS, simulate_aa, simulate_power


def mc_ceiling(alpha: float, experiments: int) -> float:
    """Alpha plus three Monte-Carlo standard errors."""
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / experiments)


@pytest.mark.parametrize(
    ("metric", "baseline", "batch"), [("proportion", 0.02, 500), ("mean", 100.0, 100)]
)
def test_aa_peeking_keeps_the_valid_methods_at_alpha_and_the_naive_one_far_above(
    metric: str, baseline: float, batch: int
) -> None:
    result = simulate_aa(
        n_experiments=500, looks=30, batch=batch, metric=metric, baseline=baseline, seed=1
    )
    assert [o.method for o in result.outcomes] == list(METHODS)
    for method in ("msprt", "fixed horizon", "group sequential"):
        assert result.outcome(method).rate <= mc_ceiling(0.05, 500), method
    naive = result.outcome("naive t-test")
    assert naive.rate > 2 * 0.05
    assert naive.low <= naive.rate <= naive.high
    # peeking stops early: the naive test's false alarms come before the end
    assert naive.mean_n_at_stop < 30 * batch
    assert result.outcome("fixed horizon").mean_n_at_stop == 30 * batch


def test_power_grows_with_the_effect_and_sequential_tests_stop_early() -> None:
    n = sample_size(0.10, 0.03)  # ~1,800 units per arm for 80 % power
    results = simulate_power(
        [0.015, 0.03, 0.045],
        n_experiments=300,
        looks=20,
        batch=math.ceil(n / 20),
        baseline=0.10,
        horizon=n,
        seed=2,
    )
    fixed = [r.outcome("fixed horizon").rate for r in results]
    assert fixed == sorted(fixed) and fixed[1] == pytest.approx(0.8, abs=0.08)
    big = results[-1]
    # at a large effect the sequential tests reach a decision well before the end
    for method in ("msprt", "group sequential"):
        assert big.outcome(method).rate > 0.8
        assert (
            big.outcome(method).mean_n_at_stop < 0.8 * big.outcome("fixed horizon").mean_n_at_stop
        )
    # the always-valid test pays for peeking with some power at the planned size
    assert results[1].outcome("msprt").rate < results[1].outcome("fixed horizon").rate
    json.dumps([r.to_dict() for r in results], allow_nan=False)


def test_the_simulation_is_reproducible_from_its_seed() -> None:
    a = simulate_aa(n_experiments=50, looks=5, batch=50, metric="mean", seed=4)
    b = simulate_aa(n_experiments=50, looks=5, batch=50, metric="mean", seed=4)
    assert a == b


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"metric": "median"}, "metric"),
        ({"looks": 0}, "looks"),
        ({"n_experiments": 3}, "n_experiments"),
        ({"baseline": 1.5}, "baseline"),
        ({"alpha": 2.0}, "alpha"),
        ({"spending": "linear"}, "spending"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ParameterError, match=f"'{field}'"):
        simulate_aa(**kwargs)  # type: ignore[arg-type]


def test_bad_effects_name_the_field() -> None:
    with pytest.raises(ParameterError, match="'effects'"):
        simulate_power([])
    with pytest.raises(ParameterError, match="'effects'"):
        simulate_power([0.01, float("nan")])
    with pytest.raises(ParameterError, match="'effects'"):
        simulate_power([0.99], baseline=0.02)
