"""Fixed-horizon and group-sequential tests, sample size and power for two-arm experiments.

- :func:`fixed_horizon`: Welch's two-sample t-test (``scipy.stats.ttest_ind_from_stats``,
  ``equal_var=False``); valid **once**, at the sample size planned with :func:`sample_size`.
  Looking earlier and stopping at the first ``p < alpha`` inflates false positives (to
  about 30 % with 50 looks at alpha 0.05; see ``benchmarks/experiments``).
- :func:`group_sequential`: a fixed number of equally spaced looks with Lan–DeMets alpha
  spending (O'Brien–Fleming-like: almost nothing spent early; Pocock-like: evenly spent).
  Boundaries come from :func:`group_sequential_bounds`, computed by recursive numerical
  integration of the joint normal law of the look statistics (Armitage, McPherson & Rowe
  1969; Jennison & Turnbull, *Group Sequential Methods*, 2000, ch. 19), not by simulation.
- :func:`sample_size` / :func:`power`: statsmodels' power classes — ``NormalIndPower`` on
  Cohen's arcsine effect size for a rate, ``TTestIndPower`` on ``mde / sd`` for a mean.

Example::

    >>> sample_size(0.10, 0.02)            # a 10 % rate, detect +2 points, alpha .05, power .8
    3835
    >>> [round(float(z), 3) for z in group_sequential_bounds(5)]
    [4.877, 3.357, 2.68, 2.29, 2.031]
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from shipyard.errors import invalid_parameter
from shipyard.experiments.sequential import (
    BETTER,
    NOT_SIGNIFICANT,
    UNDECIDED,
    WORSE,
    ArmStats,
    TestResult,
    check_alpha,
    check_arms,
    relative_effect,
)

SPENDING = ("obrien-fleming", "pocock")
# integration grid, in units of one look's increment sd: step 0.02, at most 401 points
# (Simpson's rule; the 5-look boundaries agree with published tables to 1e-4)
_GRID_STEP, _GRID_HALF = 0.02, 200


def fixed_horizon(control: ArmStats, treatment: ArmStats, *, alpha: float = 0.05) -> TestResult:
    """Welch's t-test of ``treatment.mean - control.mean``; decide only at the planned size.

    Example: ``fixed_horizon(ArmStats.of_proportion(380, 3_835), ArmStats.of_proportion(
    470, 3_835)).decision`` is ``"treatment better"``.
    """
    from scipy import stats

    alpha = check_alpha(alpha, "fixed_horizon")
    check_arms(control, treatment, "fixed_horizon")
    effect = treatment.mean - control.mean
    a = control.variance / control.n
    b = treatment.variance / treatment.n
    if a + b == 0:  # no variation in either arm: nothing to infer
        p_value, low, high = 1.0, -math.inf, math.inf
    else:
        p_value = float(
            stats.ttest_ind_from_stats(
                treatment.mean,
                math.sqrt(treatment.variance),
                treatment.n,
                control.mean,
                math.sqrt(control.variance),
                control.n,
                equal_var=False,
            ).pvalue
        )
        # Welch–Satterthwaite degrees of freedom, as in scipy's test
        df = (a + b) ** 2 / (a**2 / (control.n - 1) + b**2 / (treatment.n - 1))
        half = float(stats.t.isf(alpha / 2, df)) * math.sqrt(a + b)
        low, high = effect - half, effect + half
    decision = NOT_SIGNIFICANT
    if p_value <= alpha:
        decision = BETTER if effect > 0 else WORSE
    return TestResult(
        method="fixed-horizon",
        effect=effect,
        low=low,
        high=high,
        p_value=p_value,
        alpha=alpha,
        decision=decision,
        n_control=control.n,
        n_treatment=treatment.n,
        relative=relative_effect(effect, control),
    )


def spent(fraction: NDArray[np.float64], alpha: float, spending: str) -> NDArray[np.float64]:
    """Lan–DeMets cumulative alpha spent at information fractions ``fraction`` (two-sided)."""
    from scipy.stats import norm

    fraction = np.asarray(fraction, dtype=np.float64)
    if spending == "obrien-fleming":
        # alpha/2 on each side, each spent as 2 - 2 Phi(z_{alpha/4} / sqrt(t))
        with np.errstate(divide="ignore"):
            scaled = norm.isf(alpha / 4) / np.sqrt(fraction)
        return np.asarray(4.0 * norm.sf(scaled), np.float64)
    return np.asarray(alpha * np.log1p((math.e - 1.0) * fraction), np.float64)


def _grid(bound: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Points and Simpson weights on [-bound, bound] (an odd number of points)."""
    m = 2 * min(max(math.ceil(bound / _GRID_STEP), 2), _GRID_HALF) + 1
    points = np.linspace(-bound, bound, m, dtype=np.float64)
    weights = np.ones(m, dtype=np.float64)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return points, weights * (points[1] - points[0]) / 3.0


def _exit_probability(
    points: NDArray[np.float64], mass: NDArray[np.float64], bound: float
) -> float:
    """P(|S_k| >= bound, still running at k-1); ``mass`` = density x weights on ``points``."""
    from scipy.special import ndtr

    return float(mass @ (ndtr(points - bound) + ndtr(-bound - points)))


def _advance(
    points: NDArray[np.float64], mass: NDArray[np.float64], bound: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The sub-density of ``S_k`` on the continuation region ``|S_k| < bound``, as mass."""
    from scipy.stats import norm

    new_points, weights = _grid(bound)
    density = norm.pdf(new_points[:, None] - points[None, :]) @ mass
    return new_points, density * weights


def _solve_bound(points: NDArray[np.float64], mass: NDArray[np.float64], target: float) -> float:
    """The bound on ``S_k`` whose exit probability is ``target`` (60 when nothing is spent)."""
    from scipy.optimize import brentq

    def excess(s: float) -> float:
        return _exit_probability(points, mass, s) - target

    if excess(60.0) >= 0:  # spends nothing measurable at this look
        return 60.0
    return float(brentq(excess, 0.0, 60.0, xtol=1e-10))


@lru_cache(maxsize=64)
def _bounds(looks: int, alpha: float, spending: str) -> tuple[float, ...]:
    from scipy.stats import norm

    increments = np.diff(spent(np.arange(0, looks + 1) / looks, alpha, spending))
    # S_k = Z_k * sqrt(k): a sum of k independent N(0, 1) increments under "no difference"
    first = float(norm.isf(increments[0] / 2))
    bounds = [first]
    points, mass = _grid(first)
    mass = norm.pdf(points) * mass
    for k in range(2, looks + 1):
        s_k = _solve_bound(points, mass, float(increments[k - 1]))
        bounds.append(s_k / math.sqrt(k))
        points, mass = _advance(points, mass, s_k)
    return tuple(bounds)


def _check_design(looks: int, alpha: float, spending: str, owner: str) -> float:
    alpha = check_alpha(alpha, owner)
    if isinstance(looks, bool) or not isinstance(looks, int | np.integer) or not 1 <= looks <= 200:
        raise invalid_parameter("looks", owner, "an int in [1, 200]", looks)
    if spending not in SPENDING:
        raise invalid_parameter("spending", owner, f"one of {list(SPENDING)}", spending)
    return alpha


def group_sequential_bounds(
    looks: int, *, alpha: float = 0.05, spending: str = "obrien-fleming"
) -> NDArray[np.float64]:
    """Two-sided z boundaries for ``looks`` equally spaced looks; stop at ``|z| >= bound``.

    Example: ``group_sequential_bounds(5, spending="pocock")`` is about
    ``[2.438, 2.427, 2.410, 2.397, 2.386]``.
    """
    alpha = _check_design(looks, alpha, spending, "group_sequential_bounds")
    return np.array(_bounds(int(looks), alpha, spending), dtype=np.float64)


def _stagewise_p_value(look: int, looks: int, alpha: float, spending: str, z: float) -> float:
    """P(stop earlier, or reach ``look`` and ``|Z| >= |z|``) under "no difference"."""
    from scipy.stats import norm

    bounds = _bounds(looks, alpha, spending)
    before = float(spent(np.array([(look - 1) / looks]), alpha, spending)[0])
    if look == 1:
        return min(1.0, float(2.0 * norm.sf(abs(z))))
    points, mass = _grid(bounds[0])
    mass = norm.pdf(points) * mass
    for k in range(2, look):
        points, mass = _advance(points, mass, bounds[k - 1] * math.sqrt(k))
    return min(1.0, before + _exit_probability(points, mass, abs(z) * math.sqrt(look)))


def group_sequential(
    control: ArmStats,
    treatment: ArmStats,
    *,
    look: int,
    looks: int,
    alpha: float = 0.05,
    spending: str = "obrien-fleming",
) -> TestResult:
    """The test at look ``look`` of ``looks`` equally spaced ones (Lan–DeMets spending).

    The interval is the repeated confidence interval ``effect ± bound × se`` (valid at every
    look); the p-value is the stage-wise one (it is ``<= alpha`` at the final look exactly
    when the test rejects). Example: at look 3 of 5, ``group_sequential(c, t, look=3,
    looks=5)`` rejects when ``|z| >= 2.680``.
    """
    alpha = _check_design(looks, alpha, spending, "group_sequential")
    check_arms(control, treatment, "group_sequential")
    if isinstance(look, bool) or not isinstance(look, int | np.integer) or not 1 <= look <= looks:
        raise invalid_parameter("look", "group_sequential", f"an int in [1, looks={looks}]", look)
    look, looks = int(look), int(looks)
    bound = _bounds(looks, alpha, spending)[look - 1]
    effect = treatment.mean - control.mean
    se = math.sqrt(control.variance / control.n + treatment.variance / treatment.n)
    if se == 0:
        p_value, low, high = 1.0, -math.inf, math.inf
    else:
        z = effect / se
        p_value = _stagewise_p_value(look, looks, alpha, spending, z)
        low, high = effect - bound * se, effect + bound * se
    decision = UNDECIDED if look < looks else NOT_SIGNIFICANT
    if se > 0 and abs(effect) / se >= bound:
        decision = BETTER if effect > 0 else WORSE
    return TestResult(
        method="group-sequential",
        effect=effect,
        low=low,
        high=high,
        p_value=p_value,
        alpha=alpha,
        decision=decision,
        n_control=control.n,
        n_treatment=treatment.n,
        relative=relative_effect(effect, control),
    )


def _effect_size(
    baseline: float, mde: float, sd: float | None, relative: bool, owner: str
) -> float:
    """Cohen's h for a rate (``sd`` None), ``mde / sd`` for a mean; checked."""
    for name, value in (("baseline", baseline), ("mde", mde)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise invalid_parameter(name, owner, "a finite number", value)
    if not isinstance(relative, bool):
        raise invalid_parameter("relative", owner, "a bool", relative)
    delta = mde * baseline if relative else mde
    if delta == 0:
        raise invalid_parameter("mde", owner, "a non-zero effect", mde)
    if sd is None:
        from statsmodels.stats.proportion import (  # type: ignore[import-untyped]
            proportion_effectsize,
        )

        if not 0 < baseline < 1:
            raise invalid_parameter("baseline", owner, "a rate in (0, 1) when sd is None", baseline)
        if not 0 < baseline + delta < 1:
            raise invalid_parameter(
                "mde", owner, f"an effect keeping the rate in (0, 1) from {baseline}", mde
            )
        return abs(float(proportion_effectsize(baseline + delta, baseline)))
    if isinstance(sd, bool) or not isinstance(sd, int | float) or not 0 < sd < math.inf:
        raise invalid_parameter("sd", owner, "a finite number > 0 (or None for a rate)", sd)
    return abs(delta) / sd


def sample_size(
    baseline: float,
    mde: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    sd: float | None = None,
    relative: bool = False,
) -> int:
    """Units per arm for a two-sided fixed-horizon test to detect ``mde`` with ``power``.

    A rate metric when ``sd`` is None (``baseline`` is the control rate); a mean metric of
    standard deviation ``sd`` otherwise. ``relative=True`` reads ``mde`` as a fraction of
    ``baseline``. Example: ``sample_size(0.10, 0.02)`` is 3,835;
    ``sample_size(0.02, 0.10, relative=True)`` (a 2 % rate, +10 %) is 80,638.
    """
    from statsmodels.stats.power import (  # type: ignore[import-untyped]
        NormalIndPower,
        TTestIndPower,
    )

    alpha = check_alpha(alpha, "sample_size")
    if isinstance(power, bool) or not isinstance(power, int | float) or not 0 < power < 1:
        raise invalid_parameter("power", "sample_size", "a number in (0, 1)", power)
    h = _effect_size(baseline, mde, sd, relative, "sample_size")
    solver = NormalIndPower() if sd is None else TTestIndPower()
    n = solver.solve_power(effect_size=h, alpha=alpha, power=power, ratio=1.0)
    return max(2, math.ceil(float(np.squeeze(n))))


def power(
    n_per_arm: int,
    baseline: float,
    mde: float,
    *,
    alpha: float = 0.05,
    sd: float | None = None,
    relative: bool = False,
) -> float:
    """The chance a two-sided fixed-horizon test with ``n_per_arm`` units detects ``mde``.

    Same conventions as :func:`sample_size`. Example: ``power(3_835, 0.10, 0.02)`` ≈ 0.80.
    """
    from statsmodels.stats.power import (
        NormalIndPower,
        TTestIndPower,
    )

    alpha = check_alpha(alpha, "power")
    if isinstance(n_per_arm, bool) or not isinstance(n_per_arm, int | np.integer) or n_per_arm < 2:
        raise invalid_parameter("n_per_arm", "power", "an int >= 2", n_per_arm)
    h = _effect_size(baseline, mde, sd, relative, "power")
    solver = NormalIndPower() if sd is None else TTestIndPower()
    return float(np.squeeze(solver.power(effect_size=h, nobs1=n_per_arm, alpha=alpha, ratio=1.0)))
