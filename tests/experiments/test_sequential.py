"""The mixture SPRT: the formula by hand, its interval, coverage under peeking, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from shipyard.errors import ParameterError
from shipyard.experiments.sequential import ArmStats, TestResult, msprt, optimal_mixing_ratio


def by_hand(control: ArmStats, treatment: ArmStats, tau: float, alpha: float) -> tuple[float, ...]:
    """Johari et al.'s Λ and Howard et al.'s boundary, transcribed term by term."""
    v = control.variance / control.n + treatment.variance / treatment.n
    d = treatment.mean - control.mean
    lam = math.sqrt(v / (v + tau**2)) * math.exp(tau**2 * d**2 / (2 * v * (v + tau**2)))
    half = math.sqrt(
        v * (v + tau**2) / tau**2 * (2 * math.log(1 / alpha) + math.log((v + tau**2) / v))
    )
    return min(1.0, 1.0 / lam), d - half, d + half


class TestArmStats:
    def test_of_values_uses_the_sample_variance(self) -> None:
        arm = ArmStats.of([1.0, 2.0, 4.0])
        assert (arm.n, arm.mean) == (3, pytest.approx(7 / 3))
        assert arm.variance == pytest.approx(np.var([1.0, 2.0, 4.0], ddof=1))

    def test_of_proportion_equals_the_statistics_of_its_zeros_and_ones(self) -> None:
        ones = np.r_[np.ones(31), np.zeros(969)]
        exact = ArmStats.of(ones)
        arm = ArmStats.of_proportion(31, 1_000)
        assert arm.mean == pytest.approx(exact.mean) and arm.variance == pytest.approx(
            exact.variance
        )

    def test_to_dict_round_trips_through_json(self) -> None:
        arm = ArmStats.of_proportion(3, 10)
        assert ArmStats(**json.loads(json.dumps(arm.to_dict()))) == arm

    @pytest.mark.parametrize(
        ("make", "field"),
        [
            (lambda: ArmStats(n=10, mean=0.1, variance=-1.0), "variance"),
            (lambda: ArmStats(n=-1, mean=0.1, variance=1.0), "n"),
            (lambda: ArmStats(n=10, mean=float("nan"), variance=1.0), "mean"),
            (lambda: ArmStats.of([1.0, float("nan"), 2.0]), "values"),
            (lambda: ArmStats.of([[1.0, 2.0]]), "values"),
            (lambda: ArmStats.of_proportion(11, 10), "successes"),
        ],
    )
    def test_bad_statistics_name_the_field(self, make: object, field: str) -> None:
        with pytest.raises(ParameterError, match=f"'{field}'"):
            make()  # type: ignore[operator]


class TestMsprt:
    @pytest.mark.parametrize("tau", [0.01, 0.05, 0.3])
    def test_p_value_and_interval_equal_the_formula_by_hand(self, tau: float) -> None:
        control = ArmStats(n=800, mean=0.10, variance=0.09)
        treatment = ArmStats(n=1_200, mean=0.125, variance=0.11)  # unequal arm sizes
        result = msprt(control, treatment, alpha=0.05, tau=tau)
        p, low, high = by_hand(control, treatment, tau, 0.05)
        assert (result.p_value, result.low, result.high) == pytest.approx((p, low, high), rel=1e-12)
        assert result.effect == pytest.approx(0.025)
        assert result.relative == pytest.approx(0.25)
        assert (result.n_control, result.n_treatment) == (800, 1_200)

    def test_interval_excludes_zero_exactly_when_p_is_at_most_alpha(self) -> None:
        control = ArmStats(n=5_000, mean=0.0, variance=1.0)
        for effect in np.linspace(-0.15, 0.15, 61):
            result = msprt(control, ArmStats(n=5_000, mean=float(effect), variance=1.0))
            excludes_zero = result.low > 0 or result.high < 0
            assert excludes_zero == (result.p_value <= 0.05)
            expected = "no decision yet"
            if excludes_zero:
                expected = "treatment better" if effect > 0 else "treatment worse"
            assert result.decision == expected

    def test_default_tau_is_narrowest_at_the_horizon(self) -> None:
        control = ArmStats(n=10_000, mean=0.0, variance=1.0)
        treatment = ArmStats(n=10_000, mean=0.02, variance=1.0)
        widths = {
            tau: (r := msprt(control, treatment, tau=tau, horizon=10_000)).high - r.low
            for tau in (0.02, 0.03, 0.05, 0.08)
        }
        default = msprt(control, treatment, horizon=10_000)
        assert all(default.high - default.low <= w + 1e-12 for w in widths.values())
        assert optimal_mixing_ratio(0.05) == pytest.approx(8.212, abs=1e-3)

    def test_the_confidence_sequence_covers_the_true_effect_at_every_look(self) -> None:
        # 400 seeded experiments, a true lift of 0.2 sd, peeked after every 50 units per arm
        rng = np.random.default_rng(7)
        experiments, looks, batch, true = 400, 40, 50, 0.2
        misses = 0
        for _ in range(experiments):
            c = rng.normal(0.0, 1.0, looks * batch)
            t = rng.normal(true, 1.0, looks * batch)
            for k in range(1, looks + 1):
                r = msprt(ArmStats.of(c[: k * batch]), ArmStats.of(t[: k * batch]), horizon=1_000)
                if not r.low <= true <= r.high:
                    misses += 1
                    break
        # at most alpha plus three Monte-Carlo standard errors
        assert misses / experiments <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / experiments)

    def test_arms_without_variation_decide_nothing(self) -> None:
        result = msprt(ArmStats.of_proportion(0, 500), ArmStats.of_proportion(0, 500))
        assert result.decision == "no decision yet" and result.p_value == 1.0
        assert result.to_dict()["low"] is None and result.to_dict()["relative"] is None
        json.dumps(result.to_dict(), allow_nan=False)

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"alpha": 0.0}, "alpha"),
            ({"alpha": 1.5}, "alpha"),
            ({"tau": -0.1}, "tau"),
            ({"tau": float("nan")}, "tau"),
            ({"horizon": 1}, "horizon"),
        ],
    )
    def test_bad_settings_name_the_field(self, kwargs: dict[str, float], field: str) -> None:
        arm = ArmStats(n=100, mean=0.1, variance=0.09)
        with pytest.raises(ParameterError, match=f"'{field}' parameter of msprt"):
            msprt(arm, arm, **kwargs)  # type: ignore[arg-type]

    def test_an_arm_with_fewer_than_two_units_is_refused(self) -> None:
        with pytest.raises(ParameterError, match=r"'treatment\.n'.*at least 2 units\. Got 1"):
            msprt(ArmStats.of([1.0, 2.0]), ArmStats.of([1.0]))

    def test_result_is_a_typed_record(self) -> None:
        result = msprt(ArmStats.of_proportion(200, 10_000), ArmStats.of_proportion(290, 10_000))
        assert isinstance(result, TestResult) and result.method == "msprt"
        assert result.decision == "treatment better" and result.significant
        assert json.loads(json.dumps(result.to_dict()))["decision"] == "treatment better"


def test_statistics_from_numpy_numbers_serialise_to_json() -> None:
    control = ArmStats(n=np.int64(500), mean=np.float64(0.1), variance=np.float64(0.09))
    treatment = ArmStats.of_proportion(np.int64(70), np.int64(500))
    assert type(control.n) is int and type(control.mean) is float
    json.dumps(msprt(control, treatment, horizon=np.int64(1_000)).to_dict())  # type: ignore[arg-type]
