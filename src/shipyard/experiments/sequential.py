"""The mixture sequential probability ratio test (mSPRT) for the difference of two means.

Valid under continuous peeking: look after every request if you like, and act on the first
look whose decision is not "no decision yet"; the chance that an A/A experiment *ever*
shows a difference stays at most ``alpha``.

The estimate is ``effect = mean_t - mean_c`` with variance ``V = var_c/n_c + var_t/n_t``
(unequal arm sizes are fine). With a normal mixture ``N(0, tau²)`` over the true effect, the
likelihood ratio against "no difference" is (Johari, Pekelis & Walsh, "Always valid
inference: continuous monitoring of A/B tests", Operations Research 2022; written
for the estimate's variance)::

    Λ = sqrt(V / (V + tau²)) * exp(tau² * effect² / (2 V (V + tau²)))

The always-valid p-value at a look is ``min(1, 1/Λ)`` (the p-value of the whole experiment so
far is the smallest over its looks). Inverting ``Λ < 1/alpha`` gives the always-valid
confidence sequence (the normal-mixture boundary of Howard, Ramdas, McAuliffe & Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021)::

    effect ± sqrt(V (V + tau²) / tau² * (2 log(1/alpha) + log((V + tau²) / V)))

It excludes 0 exactly when ``p <= alpha``. The guarantee is exact for normal observations of
known variance; here the variances are estimated (the central limit theorem does the rest),
which the A/A simulation in ``shipyard.experiments.simulation`` checks.

**Choosing tau.** ``tau`` is the scale of effects the test is tuned for, in the metric's
units. By default it is chosen so that the confidence sequence is narrowest when each arm
holds ``horizon`` units (10,000 unless given): ``tau² = r * (var_c + var_t) / horizon`` with
``r = -W₋₁(-alpha²/e) - 1`` (about 8.2 at alpha 0.05; the tuning of the normal mixture in
Howard et al. 2021), using the arms' observed variances. The width is flat around that
point (at ten times the horizon it is 7 % wider than the narrowest possible there, at a
tenth 26 %), so a rough horizon, e.g. :func:`shipyard.experiments.fixed.sample_size`, is enough.

Example::

    >>> control = ArmStats.of_proportion(200, 10_000)
    >>> treatment = ArmStats.of_proportion(290, 10_000)
    >>> result = msprt(control, treatment)
    >>> result.decision, round(result.effect, 4)
    ('treatment better', 0.009)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shipyard.errors import invalid_parameter

BETTER = "treatment better"
WORSE = "treatment worse"
UNDECIDED = "no decision yet"
NOT_SIGNIFICANT = "no significant difference"
DEFAULT_HORIZON = 10_000


@dataclass(frozen=True)
class ArmStats:
    """Sufficient statistics of one arm for one metric: units, mean, variance of one unit.

    ``variance`` is the sample variance of one observation (``ddof=1``); an arm with fewer
    than two units has variance 0 (and an empty arm mean 0), which the tests refuse.

    Example: ``ArmStats.of([1.0, 2.0, 4.0])`` or ``ArmStats.of_proportion(31, 1_000)``.
    """

    n: int
    mean: float
    variance: float

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int | np.integer) or self.n < 0:
            raise invalid_parameter("n", "ArmStats", "an int >= 0", self.n)
        if not math.isfinite(self.mean):
            raise invalid_parameter("mean", "ArmStats", "a finite number", self.mean)
        if not math.isfinite(self.variance) or self.variance < 0:
            raise invalid_parameter("variance", "ArmStats", "a finite number >= 0", self.variance)
        # plain Python numbers, so results built from NumPy counts serialise to JSON
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "mean", float(self.mean))
        object.__setattr__(self, "variance", float(self.variance))

    @classmethod
    def of(cls, values: ArrayLike) -> ArmStats:
        """The statistics of per-unit values (one number per unit, e.g. per customer)."""
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1:
            raise invalid_parameter("values", "ArmStats.of", "a 1-D sequence", array.shape)
        if not np.all(np.isfinite(array)):
            raise invalid_parameter("values", "ArmStats.of", "finite numbers (no NaN)", "NaN/inf")
        n = int(array.size)
        mean = float(array.mean()) if n else 0.0
        variance = float(array.var(ddof=1)) if n >= 2 else 0.0
        return cls(n=n, mean=mean, variance=variance)

    @classmethod
    def of_proportion(cls, successes: int, n: int) -> ArmStats:
        """The statistics of a 0/1 metric from its count of ones among ``n`` units."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise invalid_parameter("n", "ArmStats.of_proportion", "an int >= 0", n)
        if (
            isinstance(successes, bool)
            or not isinstance(successes, int | np.integer)
            or not 0 <= successes <= n
        ):
            raise invalid_parameter(
                "successes", "ArmStats.of_proportion", f"an int in [0, n={n}]", successes
            )
        if n == 0:
            return cls(n=0, mean=0.0, variance=0.0)
        rate = successes / n
        # the ddof=1 sample variance of n zeros and ones
        variance = rate * (1.0 - rate) * n / (n - 1) if n >= 2 else 0.0
        return cls(n=int(n), mean=rate, variance=variance)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"n": ..., "mean": ..., "variance": ...}``."""
        return {"n": int(self.n), "mean": float(self.mean), "variance": float(self.variance)}


@dataclass(frozen=True)
class TestResult:
    """The outcome of one test at one look: effect with interval, p-value and decision.

    ``low``/``high`` are infinite when the arms show no variation at all (nothing to infer
    from yet); ``to_dict`` writes them as None.
    """

    __test__ = False  # not a pytest test class

    method: str
    effect: float
    low: float
    high: float
    p_value: float
    alpha: float
    decision: str
    n_control: int
    n_treatment: int
    relative: float | None

    @property
    def significant(self) -> bool:
        """True when the decision says one arm is better."""
        return self.decision in (BETTER, WORSE)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite numbers become None)."""
        out = asdict(self)
        for key in ("effect", "low", "high", "p_value", "relative"):
            value = out[key]
            out[key] = None if value is None or not math.isfinite(value) else float(value)
        return out


def check_alpha(alpha: float, owner: str) -> float:
    """``alpha`` as a float in (0, 1), or a ParameterError naming ``owner``."""
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise invalid_parameter("alpha", owner, "a number in (0, 1)", alpha)
    return float(alpha)


def check_arms(control: ArmStats, treatment: ArmStats, owner: str) -> None:
    """Refuse arms a two-sample test cannot use (not ArmStats, fewer than 2 units)."""
    for name, arm in (("control", control), ("treatment", treatment)):
        if not isinstance(arm, ArmStats):
            raise invalid_parameter(name, owner, "an ArmStats", type(arm).__name__)
        if arm.n < 2:
            raise invalid_parameter(f"{name}.n", owner, "at least 2 units", arm.n)


def relative_effect(effect: float, control: ArmStats) -> float | None:
    """``effect / control.mean``, or None when the control mean is 0."""
    return effect / control.mean if control.mean != 0 else None


def optimal_mixing_ratio(alpha: float) -> float:
    """``tau² / V`` that makes the mSPRT's interval narrowest at variance ``V``.

    Solves ``r = 2 log(1/alpha) + log(1 + r)``: ``r = -W₋₁(-alpha²/e) - 1``.
    """
    from scipy.special import lambertw

    return float(-lambertw(-(alpha**2) / math.e, k=-1).real - 1.0)


def default_tau(control: ArmStats, treatment: ArmStats, alpha: float, horizon: int) -> float:
    """The mixing scale whose confidence sequence is narrowest at ``horizon`` units per arm."""
    spread = (control.variance + treatment.variance) / horizon
    return math.sqrt(optimal_mixing_ratio(alpha) * spread)


def msprt_p_values(
    effect: NDArray[np.float64], variance: NDArray[np.float64], tau2: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Element-wise ``min(1, 1/Λ)`` for estimates ``effect`` of variance ``variance``.

    Where ``variance`` is 0 (no variation observed) the p-value is 1.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        total = variance + tau2
        log_lr = 0.5 * np.log(variance / total) + tau2 * effect**2 / (2.0 * variance * total)
        p = np.exp(-np.maximum(log_lr, 0.0))
    return np.where(variance > 0, p, 1.0)


def msprt_half_widths(
    variance: NDArray[np.float64], tau2: NDArray[np.float64], alpha: float
) -> NDArray[np.float64]:
    """Element-wise half-width of the always-valid confidence sequence (inf where V is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        total = variance + tau2
        radius = variance * total / tau2 * (2.0 * math.log(1.0 / alpha) + np.log(total / variance))
    return np.where(variance > 0, np.sqrt(radius), np.inf)


def msprt(
    control: ArmStats,
    treatment: ArmStats,
    *,
    alpha: float = 0.05,
    tau: float | None = None,
    horizon: int | None = None,
) -> TestResult:
    """Always-valid test of ``treatment.mean - control.mean``; act on any look's decision.

    ``tau`` is the mixing scale in the metric's units; by default it is tuned so the
    interval is narrowest at ``horizon`` units per arm (10,000 unless given; see the module
    docstring).

    Example: ``msprt(ArmStats.of_proportion(200, 10_000), ArmStats.of_proportion(290,
    10_000)).decision`` is ``"treatment better"``.
    """
    alpha = check_alpha(alpha, "msprt")
    check_arms(control, treatment, "msprt")
    if horizon is not None and (
        isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 2
    ):
        raise invalid_parameter("horizon", "msprt", "an int >= 2 (units per arm)", horizon)
    if tau is not None and (
        isinstance(tau, bool) or not isinstance(tau, int | float) or not 0 < tau < math.inf
    ):
        raise invalid_parameter("tau", "msprt", "a finite number > 0 (metric units)", tau)
    if tau is None:
        tau = default_tau(control, treatment, alpha, horizon or DEFAULT_HORIZON)
    effect = treatment.mean - control.mean
    variance = np.array(control.variance / control.n + treatment.variance / treatment.n)
    tau2 = np.array(float(tau) ** 2)
    if tau2 == 0:  # both arms constant: the default tau is 0 too
        tau2 = np.array(1.0)
    p_value = float(msprt_p_values(np.array(effect), variance, tau2))
    half = float(msprt_half_widths(variance, tau2, alpha))
    decision = UNDECIDED
    if p_value <= alpha:
        decision = BETTER if effect > 0 else WORSE
    return TestResult(
        method="msprt",
        effect=effect,
        low=effect - half,
        high=effect + half,
        p_value=p_value,
        alpha=alpha,
        decision=decision,
        n_control=control.n,
        n_treatment=treatment.n,
        relative=relative_effect(effect, control),
    )
