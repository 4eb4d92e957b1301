"""Simulated experiments peeked after every batch: false-positive rate and power per method.

Each simulated experiment feeds ``batch`` new units to each arm ``looks`` times and, after
every batch, applies four methods to everything seen so far:

- ``msprt``: :func:`~shipyard.experiments.sequential.msprt`, stopping at the first look
  with ``p <= alpha`` (valid under peeking);
- ``naive t-test``: Welch's fixed-horizon test at every look, stopping at the first
  ``p < alpha`` — what a dashboard refreshed daily invites; **not** valid under peeking;
- ``fixed horizon``: Welch's test once, after the last batch (valid, but no early stop);
- ``group sequential``: Lan–DeMets boundaries for ``looks`` equally spaced looks (every
  batch is a planned look here).

Everything is vectorised over experiments with NumPy (500 experiments x 50 looks run in a
second or two). Rates carry a Wilson 95 % interval (statsmodels' ``proportion_confint``).

Example::

    >>> result = simulate_aa(n_experiments=200, looks=10, batch=100, metric="mean")
    >>> [o.method for o in result.outcomes]
    ['msprt', 'naive t-test', 'fixed horizon', 'group sequential']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shipyard.errors import invalid_parameter
from shipyard.experiments.fixed import SPENDING, group_sequential_bounds
from shipyard.experiments.sequential import (
    DEFAULT_HORIZON,
    check_alpha,
    msprt_p_values,
    optimal_mixing_ratio,
)

METHODS = ("msprt", "naive t-test", "fixed horizon", "group sequential")
METRICS = ("proportion", "mean")

Array = NDArray[np.float64]


@dataclass(frozen=True)
class MethodOutcome:
    """How one method fared over all simulated experiments.

    ``rate`` is the share of experiments that declared a difference: the false-positive
    rate in an A/A simulation, the power (in the direction of the effect) otherwise;
    ``low``/``high`` its Wilson 95 % interval. ``mean_n_at_stop`` is the mean number of units
    per arm when the method stopped (the full size when it never did).
    """

    method: str
    experiments: int
    rejections: int
    rate: float
    low: float
    high: float
    mean_n_at_stop: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class SimulationResult:
    """One simulated effect (0 for A/A): its settings and one outcome per method."""

    metric: str
    effect: float
    baseline: float
    looks: int
    batch: int
    alpha: float
    experiments: int
    outcomes: tuple[MethodOutcome, ...]

    def outcome(self, method: str) -> MethodOutcome:
        """The outcome of one method by name (one of ``METHODS``)."""
        for outcome in self.outcomes:
            if outcome.method == method:
                return outcome
        raise invalid_parameter("method", "SimulationResult.outcome", f"one of {METHODS}", method)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = asdict(self)
        out["outcomes"] = [o.to_dict() for o in self.outcomes]
        return out


@dataclass(frozen=True)
class _Looks:
    """Running statistics at every look: arrays of shape (experiments, looks)."""

    n: Array  # units per arm at each look, shape (looks,)
    mean_c: Array
    mean_t: Array
    var_c: Array
    var_t: Array


def _draw(
    rng: np.random.Generator,
    metric: str,
    baseline: float,
    sd: float,
    effect: float,
    shape: tuple[int, int, int],
) -> _Looks:
    """Cumulative per-arm statistics of ``shape = (experiments, looks, batch)`` draws."""
    experiments, looks, batch = shape
    n = batch * np.arange(1, looks + 1, dtype=np.float64)
    if metric == "proportion":
        ones_c = np.cumsum(rng.binomial(batch, baseline, (experiments, looks)), axis=1)
        ones_t = np.cumsum(rng.binomial(batch, baseline + effect, (experiments, looks)), axis=1)
        p_c, p_t = ones_c / n, ones_t / n
        return _Looks(n, p_c, p_t, p_c * (1 - p_c) * n / (n - 1), p_t * (1 - p_t) * n / (n - 1))
    # a skewed amount-like metric: log-normal with mean ``baseline`` and sd ``sd``
    sigma2 = math.log1p((sd / baseline) ** 2)
    mu = math.log(baseline) - sigma2 / 2
    sums: Array = np.zeros((2, experiments, looks))
    squares: Array = np.zeros((2, experiments, looks))
    for k in range(looks):  # one look at a time keeps memory at experiments x batch
        for arm, shift in ((0, 0.0), (1, effect)):
            values = rng.lognormal(mu, math.sqrt(sigma2), (experiments, batch)) + shift
            sums[arm, :, k] = values.sum(axis=1)
            squares[arm, :, k] = np.square(values).sum(axis=1)
    sums, squares = np.cumsum(sums, axis=2), np.cumsum(squares, axis=2)
    means = sums / n
    variances = np.maximum(squares - n * means**2, 0.0) / (n - 1)
    return _Looks(n, means[0], means[1], variances[0], variances[1])


def _first_stop(rejected: NDArray[np.bool_], n: Array) -> tuple[NDArray[np.bool_], Array]:
    """Whether each experiment ever rejected, and its units per arm at the first rejection."""
    ever: NDArray[np.bool_] = np.asarray(rejected.any(axis=1), dtype=np.bool_)
    first = np.argmax(rejected, axis=1)
    return ever, np.asarray(np.where(ever, n[first], n[-1]), dtype=np.float64)


def _decisions(
    looks: _Looks, alpha: float, horizon: int, spending: str
) -> dict[str, tuple[NDArray[np.bool_], Array, Array]]:
    """Per method: rejected?, units per arm at stop, effect sign at stop."""
    from scipy.stats import ttest_ind_from_stats

    effect = looks.mean_t - looks.mean_c
    variance = looks.var_c / looks.n + looks.var_t / looks.n
    tau2 = optimal_mixing_ratio(alpha) * (looks.var_c + looks.var_t) / horizon
    tau2 = np.where(tau2 > 0, tau2, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        welch = ttest_ind_from_stats(
            looks.mean_t,
            np.sqrt(looks.var_t),
            looks.n,
            looks.mean_c,
            np.sqrt(looks.var_c),
            looks.n,
            equal_var=False,
        ).pvalue
        z = np.where(variance > 0, effect / np.sqrt(variance), 0.0)
    welch = np.where(np.isnan(welch), 1.0, welch)
    bounds = group_sequential_bounds(looks.n.size, alpha=alpha, spending=spending)
    rejected = {
        "msprt": msprt_p_values(effect, variance, tau2) <= alpha,
        "naive t-test": welch < alpha,
        "group sequential": np.abs(z) >= bounds,
    }
    out = {}
    for method, flags in rejected.items():
        ever, n_stop = _first_stop(flags, looks.n)
        sign = np.sign(np.take_along_axis(effect, np.argmax(flags, axis=1)[:, None], 1)[:, 0])
        out[method] = (ever, n_stop, sign)
    final = welch[:, -1] < alpha
    out["fixed horizon"] = (final, np.full(final.shape, looks.n[-1]), np.sign(effect[:, -1]))
    return out


def _check(
    n_experiments: int, looks: int, batch: int, metric: str, baseline: float, sd: float | None
) -> float:
    owner = "simulate"
    for name, value, low in (
        ("n_experiments", n_experiments, 10),
        ("looks", looks, 1),
        ("batch", batch, 2),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise invalid_parameter(name, owner, f"an int >= {low}", value)
    if metric not in METRICS:
        raise invalid_parameter("metric", owner, f"one of {list(METRICS)}", metric)
    if metric == "proportion":
        if not 0 < baseline < 1:
            raise invalid_parameter("baseline", owner, "a rate in (0, 1)", baseline)
        return math.sqrt(baseline * (1 - baseline))
    if not 0 < baseline < math.inf:
        raise invalid_parameter("baseline", owner, "a mean > 0 (log-normal metric)", baseline)
    sd = baseline if sd is None else sd
    if not 0 < sd < math.inf:
        raise invalid_parameter("sd", owner, "a number > 0", sd)
    return float(sd)


def _simulate(
    effect: float,
    *,
    n_experiments: int,
    looks: int,
    batch: int,
    alpha: float,
    seed: int,
    metric: str,
    baseline: float,
    sd: float | None,
    horizon: int | None,
    spending: str,
) -> SimulationResult:
    from statsmodels.stats.proportion import proportion_confint  # type: ignore[import-untyped]

    alpha = check_alpha(alpha, "simulate")
    scale = _check(n_experiments, looks, batch, metric, baseline, sd)
    if spending not in SPENDING:
        raise invalid_parameter("spending", "simulate", f"one of {list(SPENDING)}", spending)
    if metric == "proportion" and not 0 < baseline + effect < 1:
        raise invalid_parameter("effects", "simulate", "rates kept in (0, 1)", effect)
    rng = np.random.default_rng(seed)
    drawn = _draw(rng, metric, baseline, scale, effect, (n_experiments, looks, batch))
    outcomes = []
    for method, (ever, n_stop, sign) in _decisions(
        drawn, alpha, horizon or DEFAULT_HORIZON, spending
    ).items():
        hits = ever if effect == 0 else ever & (sign == np.sign(effect))
        count = int(hits.sum())
        low, high = proportion_confint(count, n_experiments, alpha=0.05, method="wilson")
        outcomes.append(
            MethodOutcome(
                method,
                n_experiments,
                count,
                count / n_experiments,
                float(low),
                float(high),
                float(n_stop.mean()),
            )
        )
    outcomes.sort(key=lambda o: METHODS.index(o.method))
    return SimulationResult(
        metric, float(effect), float(baseline), looks, batch, alpha, n_experiments, tuple(outcomes)
    )


def simulate_aa(
    n_experiments: int = 500,
    looks: int = 50,
    batch: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    metric: str = "proportion",
    *,
    baseline: float = 0.02,
    sd: float | None = None,
    horizon: int | None = None,
    spending: str = "obrien-fleming",
) -> SimulationResult:
    """A/A experiments peeked after every batch: each method's false-positive rate.

    ``metric="proportion"`` draws 0/1 outcomes at rate ``baseline`` (2 %, a fraud-like alert
    rate); ``"mean"`` draws a skewed log-normal amount of mean ``baseline`` and sd ``sd``
    (default: equal to the mean). ``horizon`` is the mSPRT's tuning horizon (units per arm;
    default as :func:`~shipyard.experiments.sequential.msprt`).

    Example: ``simulate_aa().outcome("naive t-test").rate`` is far above 0.05.
    """
    return _simulate(
        0.0,
        n_experiments=n_experiments,
        looks=looks,
        batch=batch,
        alpha=alpha,
        seed=seed,
        metric=metric,
        baseline=baseline,
        sd=sd,
        horizon=horizon,
        spending=spending,
    )


def simulate_power(
    effects: Sequence[float],
    n_experiments: int = 500,
    looks: int = 50,
    batch: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    metric: str = "proportion",
    *,
    baseline: float = 0.02,
    sd: float | None = None,
    horizon: int | None = None,
    spending: str = "obrien-fleming",
) -> list[SimulationResult]:
    """Power and mean units per arm at stopping, per method, for each absolute effect.

    ``effects`` are ``treatment - control`` in the metric's units (e.g. ``[0.002, 0.004]``
    on a 2 % rate). Example: ``simulate_power([0.004])[0].outcome("msprt").rate``.
    """
    if isinstance(effects, str | bytes) or not len(effects):
        raise invalid_parameter("effects", "simulate_power", "a non-empty list of numbers", effects)
    for effect in effects:
        if (
            isinstance(effect, bool)
            or not isinstance(effect, int | float)
            or not math.isfinite(effect)
        ):
            raise invalid_parameter("effects", "simulate_power", "finite numbers", effect)
    results = []
    for i, effect in enumerate(effects):
        results.append(
            _simulate(
                float(effect),
                n_experiments=n_experiments,
                looks=looks,
                batch=batch,
                alpha=alpha,
                seed=seed + i,
                metric=metric,
                baseline=baseline,
                sd=sd,
                horizon=horizon,
                spending=spending,
            )
        )
    return results
