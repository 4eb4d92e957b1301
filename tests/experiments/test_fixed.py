"""Fixed-horizon Welch test, group-sequential boundaries, sample size and power."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from shipyard.errors import ParameterError
from shipyard.experiments.fixed import (
    fixed_horizon,
    group_sequential,
    group_sequential_bounds,
    power,
    sample_size,
)
from shipyard.experiments.sequential import ArmStats


class TestFixedHorizon:
    def test_p_value_and_interval_are_welchs_from_scipy(self) -> None:
        rng = np.random.default_rng(3)
        c, t = rng.normal(10.0, 2.0, 300), rng.normal(10.4, 3.0, 500)
        result = fixed_horizon(ArmStats.of(c), ArmStats.of(t))
        welch = stats.ttest_ind(t, c, equal_var=False)
        assert result.p_value == pytest.approx(welch.pvalue, rel=1e-10)
        ci = welch.confidence_interval(0.95)
        assert (result.low, result.high) == pytest.approx((ci.low, ci.high), rel=1e-10)
        assert result.effect == pytest.approx(t.mean() - c.mean())
        assert result.method == "fixed-horizon"

    def test_decisions(self) -> None:
        control = ArmStats.of_proportion(380, 3_835)
        assert fixed_horizon(control, ArmStats.of_proportion(470, 3_835)).decision == (
            "treatment better"
        )
        assert fixed_horizon(control, ArmStats.of_proportion(300, 3_835)).decision == (
            "treatment worse"
        )
        same = fixed_horizon(control, ArmStats.of_proportion(385, 3_835))
        assert same.decision == "no significant difference" and same.p_value > 0.05

    def test_arms_without_variation_are_not_significant(self) -> None:
        result = fixed_horizon(ArmStats.of_proportion(0, 100), ArmStats.of_proportion(0, 100))
        assert result.p_value == 1.0 and result.decision == "no significant difference"

    def test_bad_input_names_the_field(self) -> None:
        arm = ArmStats.of([1.0, 2.0, 3.0])
        with pytest.raises(ParameterError, match="'alpha' parameter of fixed_horizon"):
            fixed_horizon(arm, arm, alpha=-0.1)
        with pytest.raises(ParameterError, match=r"'control\.n'"):
            fixed_horizon(ArmStats.of([]), arm)


class TestGroupSequential:
    def test_boundaries_match_the_published_lan_demets_tables(self) -> None:
        # Jennison & Turnbull (2000) / gsDesign: 5 looks, two-sided alpha 0.05
        obf = group_sequential_bounds(5)
        assert obf == pytest.approx([4.877, 3.357, 2.680, 2.290, 2.031], abs=1e-3)
        pocock = group_sequential_bounds(5, spending="pocock")
        assert pocock == pytest.approx([2.438, 2.427, 2.410, 2.397, 2.386], abs=1e-3)
        assert group_sequential_bounds(1) == pytest.approx([1.960], abs=1e-3)

    @pytest.mark.parametrize(("looks", "spending"), [(10, "obrien-fleming"), (20, "pocock")])
    def test_the_boundaries_spend_exactly_alpha_under_no_difference(
        self, looks: int, spending: str
    ) -> None:
        # 400,000 seeded paths of the look statistics: Z_k = S_k / sqrt(k)
        rng = np.random.default_rng(11)
        paths = np.cumsum(rng.standard_normal((400_000, looks)), axis=1)
        z = paths / np.sqrt(np.arange(1, looks + 1))
        crossed = (np.abs(z) >= group_sequential_bounds(looks, spending=spending)).any(axis=1)
        assert crossed.mean() == pytest.approx(0.05, abs=3 * math.sqrt(0.05 * 0.95 / 400_000))

    def test_decision_and_stagewise_p_value_agree_with_the_boundary(self) -> None:
        control = ArmStats(n=1_000, mean=0.0, variance=1.0)
        se = math.sqrt(2 / 1_000)
        bounds = group_sequential_bounds(5)
        for look in range(1, 6):
            for z in (bounds[look - 1] - 0.01, bounds[look - 1] + 0.01):
                treatment = ArmStats(n=1_000, mean=z * se, variance=1.0)
                r = group_sequential(control, treatment, look=look, looks=5)
                rejected = z >= bounds[look - 1]
                assert r.significant == rejected
                assert r.low == pytest.approx(z * se - bounds[look - 1] * se)
                if look == 5:
                    assert (r.p_value <= 0.05) == rejected
                    assert rejected or r.decision == "no significant difference"
                elif not rejected:
                    assert r.decision == "no decision yet"

    def test_bad_design_names_the_field(self) -> None:
        arm = ArmStats.of([1.0, 2.0, 3.0])
        with pytest.raises(ParameterError, match="'look' parameter of group_sequential"):
            group_sequential(arm, arm, look=6, looks=5)
        with pytest.raises(ParameterError, match="'spending'"):
            group_sequential_bounds(5, spending="linear")
        with pytest.raises(ParameterError, match="'looks'"):
            group_sequential_bounds(0)


class TestSampleSizeAndPower:
    def test_textbook_rate_example_agrees_with_statsmodels(self) -> None:
        n = sample_size(0.10, 0.02)
        effect = proportion_effectsize(0.12, 0.10)
        expected = NormalIndPower().solve_power(effect_size=effect, alpha=0.05, power=0.8)
        assert n == math.ceil(expected) and 3_800 <= n < 3_900
        # the classical pooled/unpooled normal formula lands within 1 %
        za, zb = stats.norm.isf(0.025), stats.norm.isf(0.2)
        classical = (za * math.sqrt(2 * 0.11 * 0.89) + zb * math.sqrt(0.09 + 0.1056)) ** 2 / 0.02**2
        assert n == pytest.approx(classical, rel=0.01)

    @pytest.mark.parametrize(
        ("baseline", "mde", "sd", "relative"),
        [(0.02, 0.1, None, True), (0.10, -0.02, None, False), (50.0, 2.0, 20.0, False)],
    )
    def test_sample_size_and_power_round_trip(
        self, baseline: float, mde: float, sd: float | None, relative: bool
    ) -> None:
        n = sample_size(baseline, mde, power=0.9, sd=sd, relative=relative)
        assert power(n, baseline, mde, sd=sd, relative=relative) >= 0.9
        assert power(n - 1, baseline, mde, sd=sd, relative=relative) < 0.9

    def test_a_mean_metric_uses_the_t_test(self) -> None:
        # n = 2 (z_a + z_b)^2 sd^2 / mde^2 = 393.5 by the normal formula; t adds a unit
        assert sample_size(10.0, 1.0, sd=5.0) == 394

    @pytest.mark.parametrize(
        ("call", "field"),
        [
            (lambda: sample_size(1.5, 0.1), "baseline"),
            (lambda: sample_size(0.95, 0.1), "mde"),
            (lambda: sample_size(0.1, 0.0), "mde"),
            (lambda: sample_size(0.1, 0.02, power=1.0), "power"),
            (lambda: sample_size(10.0, 1.0, sd=-1.0), "sd"),
            (lambda: power(1, 0.1, 0.02), "n_per_arm"),
            (lambda: power(100, 0.1, float("nan")), "mde"),
        ],
    )
    def test_bad_input_names_the_field(self, call: object, field: str) -> None:
        with pytest.raises(ParameterError, match=f"'{field}'"):
            call()  # type: ignore[operator]


class TestDocs:
    def test_the_worked_example_of_the_docs_runs(self) -> None:
        doc = Path(__file__).resolve().parents[2] / "docs" / "experiments-statistics.md"
        blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
        assert blocks, "docs/experiments-statistics.md has no Python example"
        for code in blocks:
            exec(compile(code, str(doc), "exec"), {})  # the example asserts its own outcome
