"""Guardrails: rules a newly deployed version must keep, judged with intervals, not noise.

A :class:`Guardrail` names a metric of one version's traffic, the bound that must hold
(``alert_rate <= 0.5``) and how many observations it needs before it is judged. Each metric
is computed with a 99 % interval, and a guardrail is **tripped** only when the whole interval
is on the wrong side of the bound (for ``<=``: its lower end is above the bound), so a handful
of unlucky requests never rolls a good model back:

- ``alert_rate``: share of rows scored at or above the version's decision threshold
  (:func:`shipyard.monitoring.thresholds.decision_threshold`), Wilson interval;
- ``alert_rate_lift``: that share divided by the baseline's (the previous champion's recent
  traffic, else the version's own reference scores), Katz log interval of a risk ratio;
- ``score_shift``: the Kolmogorov–Smirnov distance D between the version's live scores and its
  reference scores (:func:`shipyard.monitoring.reference.load_reference_scores`), with the
  two-sample test of :class:`~shipyard.monitoring.drift.KolmogorovSmirnovTest` and the DKW
  interval ``D ± 1.63 sqrt((n + m) / (n m))``;
- ``error_rate``: share of requests answered 5xx, Wilson interval (the in-server watcher sees
  failures; the prediction log holds only answers);
- ``latency_p99_ms``: the 99th percentile of request latency, distribution-free interval
  from the order statistics;
- ``realized_fpr``: share of labelled negatives alerted at the threshold, Wilson interval
  (once labels arrive, :mod:`shipyard.monitoring.labels`).

:func:`evaluate_observations` judges arrays (what the in-server watcher keeps in memory);
:func:`evaluate_guardrails` reads the same arrays from the prediction log, so both share one
implementation. :func:`shipyard.monitoring.trips.act_on_trip` rolls the policy back once
(``expected_revision``), raises an alert and records ``guardrail.trip`` in the audit trail.

Detection: a version that alerts on 90 % of rows where its baseline alerted on 0.1 % has a
Wilson lower end above 0.5 after 12 rows and a lift whose lower end exceeds 3 after about
10, so the default rules trip as soon as they are judged, at ``min_count`` = 200 rows.

Example::

    add_guardrail(ws, "fraud", Guardrail("alerts", "alert_rate", "<=", 0.05))
    for result in evaluate_guardrails(ws, "fraud", 7):
        print(result.status, result.detail)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from shipyard.errors import invalid_parameter
from shipyard.serving.policy import ROLLBACK_PREFIX
from shipyard.times import epoch_seconds

if TYPE_CHECKING:
    from shipyard.serving.policy import TrafficPolicy
    from shipyard.workspace import Workspace

METRICS: dict[str, str] = {
    "alert_rate": "share of rows scored at or above the decision threshold",
    "alert_rate_lift": "alert rate divided by the baseline's alert rate",
    "score_shift": "Kolmogorov-Smirnov distance of the scores from the version's reference",
    "error_rate": "share of requests answered with a 5xx status",
    "latency_p99_ms": "99th percentile of request latency, in milliseconds",
    "realized_fpr": "share of labelled negatives alerted at the decision threshold",
}
"""Every metric a guardrail can watch, with what it measures."""

PER_REQUEST = frozenset({"error_rate", "latency_p99_ms"})
"""Metrics counted in requests; the others in rows."""

LOG_METRICS = frozenset(METRICS) - {"error_rate"}
"""What the prediction log can judge (it records answers, not failed requests)."""

OPS = ("<=", ">=")
Z99 = 2.5758293035489004
"""The standard normal quantile of a two-sided 99 % interval."""
KS99 = math.sqrt(-math.log(0.005) / 2)
"""c(0.01) of the Dvoretzky–Kiefer–Wolfowitz bound for a two-sample KS distance (1.628)."""
KS_ALPHA = 0.01
MAX_COUNT = 10_000_000


@dataclass(frozen=True)
class Guardrail:
    """A bound a version's traffic must keep; violated (by its 99 % interval) -> tripped.

    ``op`` says what must hold (``"<="``: the metric stays at or below ``threshold``);
    ``min_count`` observations (rows, or requests for ``error_rate`` and
    ``latency_p99_ms``) are needed before it is judged, on the version's last ``window``;
    ``rollback``: a trip rolls the endpoint's policy back (else it raises an alert only).

    Example: ``Guardrail("alerts", "alert_rate", "<=", 0.05, min_count=500)``.
    """

    name: str
    metric: str
    op: str
    threshold: float
    min_count: int = 200
    window: int = 2000
    rollback: bool = True

    def __post_init__(self) -> None:
        owner = "Guardrail"
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 200:
            raise invalid_parameter("name", owner, "a non-empty str of <= 200 chars", self.name)
        if self.metric not in METRICS:
            raise invalid_parameter("metric", owner, f"one of {sorted(METRICS)}", self.metric)
        if self.op not in OPS:
            raise invalid_parameter("op", owner, "'<=' or '>=' (what must hold)", self.op)
        threshold = self.threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise invalid_parameter("threshold", owner, "a finite number >= 0", threshold)
        if not math.isfinite(threshold) or threshold < 0:
            raise invalid_parameter("threshold", owner, "a finite number >= 0", threshold)
        object.__setattr__(self, "threshold", float(threshold))
        for name in ("min_count", "window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
                raise invalid_parameter(name, owner, f"an int in [1, {MAX_COUNT:,}]", value)
        if self.window < self.min_count:
            raise invalid_parameter(
                "window", owner, f"an int >= min_count ({self.min_count})", self.window
            )
        if not isinstance(self.rollback, bool):
            raise invalid_parameter("rollback", owner, "a bool", self.rollback)

    def describe(self) -> str:
        """``alert_rate_lift <= 3 (min 200 rows, last 2000; rollback)``."""
        unit = "requests" if self.metric in PER_REQUEST else "rows"
        action = "rollback" if self.rollback else "alert only"
        return (
            f"{self.metric} {self.op} {self.threshold:g} (min {self.min_count} {unit}, "
            f"last {self.window}; {action})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Guardrail:
        """The guardrail :meth:`to_dict` wrote (checked again)."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def default_guardrails() -> list[Guardrail]:
    """The rules an endpoint gets when none are stored (a scoring endpoint's sensible set).

    - ``alert-rate-lift``: alert rate at most 3x the baseline's (a broken deploy multiplies
      it; an honest retrain moves it far less) — rollback;
    - ``alert-rate``: at most half of all rows alerted (no scoring endpoint means that) —
      rollback;
    - ``score-shift``: KS distance from the version's reference scores at most 0.3 (a
      transformation broken at serving time moves the scores away from evaluation) —
      rollback;
    - ``error-rate``: at most 1 % of requests failing — rollback;
    - ``latency-p99``: p99 at most 500 ms — alert only (latency follows load more than the
      version);
    - ``realized-fpr``: at most 5 % of labelled negatives alerted — rollback (judged once
      labels arrive).
    """
    return [
        Guardrail("alert-rate-lift", "alert_rate_lift", "<=", 3.0),
        Guardrail("alert-rate", "alert_rate", "<=", 0.5),
        Guardrail("score-shift", "score_shift", "<=", 0.3),
        Guardrail("error-rate", "error_rate", "<=", 0.01),
        Guardrail("latency-p99", "latency_p99_ms", "<=", 500.0, rollback=False),
        Guardrail("realized-fpr", "realized_fpr", "<=", 0.05),
    ]


# -- the store ---------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _check_endpoint(endpoint: object, owner: str) -> str:
    if not isinstance(endpoint, str) or not endpoint.strip() or len(endpoint) > 200:
        raise invalid_parameter("endpoint", owner, "a non-empty str of <= 200 chars", endpoint)
    return endpoint


def add_guardrail(
    workspace: Workspace, endpoint: str, guardrail: Guardrail, *, actor: str | None = None
) -> Guardrail:
    """Store ``guardrail`` for ``endpoint`` (a name already used is refused); audited.

    Once an endpoint has a stored guardrail, only its stored ones apply (not the defaults).
    """
    from sqlalchemy import and_, insert, select

    from shipyard.governance.audit import append, transaction
    from shipyard.registry.models import current_user
    from shipyard.tables import guardrails as table

    owner = "add_guardrail"
    _check_endpoint(endpoint, owner)
    if not isinstance(guardrail, Guardrail):
        raise invalid_parameter("guardrail", owner, "a Guardrail", guardrail)
    who = actor or current_user()
    where = and_(table.c.endpoint == endpoint, table.c.name == guardrail.name)
    with transaction(workspace) as con:
        if con.execute(select(table.c.id).where(where)).first() is not None:
            raise invalid_parameter(
                "name", owner, f"a name not yet used by a guardrail of {endpoint!r}", guardrail.name
            )
        con.execute(
            insert(table).values(
                endpoint=endpoint,
                name=guardrail.name,
                spec=guardrail.to_dict(),
                enabled=True,
                actor=who,
                created_at=_now(),
            )
        )
        append(
            workspace,
            kind="endpoint",
            name=endpoint,
            action="guardrail.add",
            reason=guardrail.describe(),
            actor=who,
            after=guardrail.to_dict(),
            connection=con,
        )
    return guardrail


def stored_guardrails(workspace: Workspace, endpoint: str) -> list[Guardrail]:
    """The guardrails stored for ``endpoint`` (enabled ones), by name; no defaults."""
    from sqlalchemy import and_, select

    from shipyard.tables import guardrails as table

    query = (
        select(table.c.spec)
        .where(and_(table.c.endpoint == endpoint, table.c.enabled.is_(True)))
        .order_by(table.c.name)
    )
    with workspace.engine.connect() as con:
        return [Guardrail.from_dict(row.spec) for row in con.execute(query)]


def list_guardrails(workspace: Workspace, endpoint: str) -> list[Guardrail]:
    """The guardrails that apply to ``endpoint``: its stored ones, else the defaults."""
    return stored_guardrails(workspace, endpoint) or default_guardrails()


def remove_guardrail(
    workspace: Workspace, endpoint: str, name: str, *, actor: str | None = None
) -> Guardrail:
    """Delete a stored guardrail (audited); ParameterError lists the known names."""
    from sqlalchemy import and_, delete

    from shipyard.governance.audit import append, transaction
    from shipyard.tables import guardrails as table

    stored = {g.name: g for g in stored_guardrails(workspace, endpoint)}
    if name not in stored:
        known = ", ".join(repr(n) for n in stored) or "none stored"
        raise invalid_parameter(
            "name", "remove_guardrail", f"a guardrail of {endpoint!r} ({known})", name
        )
    with transaction(workspace) as con:
        con.execute(delete(table).where(and_(table.c.endpoint == endpoint, table.c.name == name)))
        append(
            workspace,
            kind="endpoint",
            name=endpoint,
            action="guardrail.remove",
            reason=stored[name].describe(),
            actor=actor,
            before=stored[name].to_dict(),
            connection=con,
        )
    return stored[name]


# -- judging arrays ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Observations:
    """What one version answered: per-row scores, per-request latency and failure flags, and
    labels of labelled rows (``labelled_scores`` with their 0/1 ``labels``)."""

    scores: NDArray[np.float64]
    latency_ms: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    errors: NDArray[np.bool_] | None = None
    """One flag per request, answered (False) or failed (True); None: not observed."""
    labelled_scores: NDArray[np.float64] | None = None
    labels: NDArray[np.int64] | None = None

    @property
    def requests(self) -> int:
        """Requests seen (answered and failed)."""
        return int(self.errors.size) if self.errors is not None else int(self.latency_ms.size)


@dataclass(frozen=True)
class GuardrailResult:
    """One guardrail judged on one version: value, count, status and a readable line."""

    guardrail: Guardrail
    version: int
    value: float | None
    n: int
    status: str
    """``"ok"``, ``"tripped"`` or ``"insufficient"`` (too few observations)."""
    detail: str
    interval: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what the audit trail keeps)."""
        return {
            "guardrail": self.guardrail.to_dict(),
            "version": self.version,
            "value": self.value,
            "n": self.n,
            "status": self.status,
            "detail": self.detail,
            "interval": None if self.interval is None else list(self.interval),
        }


@dataclass(frozen=True)
class _Measure:
    value: float
    low: float
    high: float
    n: int
    text: str  # what the value is compared with (baseline, reference ...)


def wilson(successes: int, n: int, z: float = Z99) -> tuple[float, float]:
    """The Wilson score interval of a proportion (99 % by default)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _last(values: NDArray[Any] | None, window: int) -> NDArray[Any]:
    if values is None:
        return np.empty(0)
    return values[-window:] if values.size > window else values


def _rate(k: int, n: int, text: str) -> _Measure:
    low, high = wilson(k, n)
    return _Measure(k / n if n else math.nan, low, high, n, f"{k:,} of {n:,} {text}")


def _lift(
    scores: NDArray[np.float64], base: NDArray[np.float64], threshold: float, text: str
) -> _Measure | str:
    """Risk ratio of alert rates with the Katz log interval (0.5 added to empty cells)."""
    if base.size == 0:
        return f"no baseline ({text})"
    a, n1 = int(np.count_nonzero(scores >= threshold)), scores.size
    c, n2 = int(np.count_nonzero(base >= threshold)), base.size
    if a == 0 or c == 0:
        a_, c_, n1_, n2_ = a + 0.5, c + 0.5, n1 + 0.5, n2 + 0.5
    else:
        a_, c_, n1_, n2_ = float(a), float(c), float(n1), float(n2)
    ratio = (a_ / n1_) / (c_ / n2_)
    se = math.sqrt(max(1 / a_ - 1 / n1_ + 1 / c_ - 1 / n2_, 0.0))
    low, high = ratio * math.exp(-Z99 * se), ratio * math.exp(Z99 * se)
    described = f"{text} alert rate {c / n2:.3%} of {n2:,} rows"
    return _Measure(ratio, low, high, n1, described)


def _shift(scores: NDArray[np.float64], reference: NDArray[np.float64] | None) -> _Measure | str:
    """KS distance from the reference scores, its DKW interval and the test's p-value."""
    from shipyard.monitoring.drift import KolmogorovSmirnovTest

    if reference is None or reference.size == 0:
        return "no reference scores"
    result = KolmogorovSmirnovTest(alpha=KS_ALPHA, min_rows=1).compare_samples(
        "score", scores, reference
    )
    n, m = scores.size, reference.size
    half = KS99 * math.sqrt((n + m) / (n * m))
    d = float(result.statistic)
    low = d - half if result.p_value is not None and result.p_value <= KS_ALPHA else 0.0
    text = f"reference {m:,} rows, KS p {result.p_value:.2g}"
    return _Measure(d, max(0.0, low), min(1.0, d + half), n, text)


def _p99(latency: NDArray[np.float64]) -> _Measure:
    """The 99th percentile and its distribution-free interval from order statistics."""
    n = latency.size
    ordered = np.sort(latency)
    spread = Z99 * math.sqrt(n * 0.99 * 0.01)
    lo = int(max(0, math.floor(n * 0.99 - spread) - 1))
    hi = int(min(n - 1, math.ceil(n * 0.99 + spread)))
    value = float(np.quantile(ordered, 0.99))
    return _Measure(value, float(ordered[lo]), float(ordered[hi]), n, f"{n:,} requests")


def _measure(
    guardrail: Guardrail,
    current: Observations,
    threshold: float,
    baseline: NDArray[np.float64] | None,
    baseline_text: str,
    reference: NDArray[np.float64] | None,
) -> _Measure | str:
    """The guardrail's metric on the observations, or why it cannot be measured."""
    metric, window = guardrail.metric, guardrail.window
    scores = _last(current.scores, window)
    if metric == "alert_rate":
        return _rate(int(np.count_nonzero(scores >= threshold)), scores.size, "rows")
    if metric == "alert_rate_lift":
        return _lift(scores, _last(baseline, window), threshold, baseline_text)
    if metric == "score_shift":
        return _shift(scores, reference)
    if metric == "error_rate":
        if current.errors is None:
            return "failed requests are not in the prediction log (the in-server watcher sees them)"
        errors = _last(current.errors, window)
        return _rate(int(np.count_nonzero(errors)), errors.size, "requests")
    if metric == "latency_p99_ms":
        return _p99(_last(current.latency_ms, window))
    if current.labels is None or current.labelled_scores is None:
        return "no labels yet"
    negatives = _last(current.labelled_scores[current.labels == 0], window)
    return _rate(int(np.count_nonzero(negatives >= threshold)), negatives.size, "negatives")


def _count(guardrail: Guardrail, current: Observations) -> int:
    """Observations available to the guardrail (its window's unit)."""
    if guardrail.metric in PER_REQUEST:
        return current.requests if guardrail.metric == "error_rate" else current.latency_ms.size
    if guardrail.metric == "realized_fpr":
        if current.labels is None:
            return 0
        return int(np.count_nonzero(current.labels == 0))
    return int(current.scores.size)


def judge(
    guardrail: Guardrail,
    version: int,
    current: Observations,
    *,
    threshold: float,
    baseline: NDArray[np.float64] | None = None,
    baseline_text: str = "baseline",
    reference: NDArray[np.float64] | None = None,
) -> GuardrailResult:
    """Judge one guardrail on arrays: tripped when its 99 % interval is past the bound."""
    n = min(_count(guardrail, current), guardrail.window)
    unit = "requests" if guardrail.metric in PER_REQUEST else "rows"
    if guardrail.metric == "realized_fpr":
        unit = "labelled negatives"
    bound = f"{guardrail.op} {guardrail.threshold:g}"
    if n < guardrail.min_count:
        detail = f"{guardrail.metric}: {n} of {guardrail.min_count} {unit} needed (bound {bound})"
        return GuardrailResult(guardrail, version, None, n, "insufficient", detail)
    measured = _measure(guardrail, current, threshold, baseline, baseline_text, reference)
    if isinstance(measured, str):
        detail = f"{guardrail.metric}: cannot be judged: {measured} (bound {bound})"
        return GuardrailResult(guardrail, version, None, n, "insufficient", detail)
    m = measured
    tripped = m.low > guardrail.threshold if guardrail.op == "<=" else m.high < guardrail.threshold
    detail = (
        f"{guardrail.metric} {_shown(guardrail.metric, m.value)} [99% "
        f"{_shown(guardrail.metric, m.low)}, {_shown(guardrail.metric, m.high)}] on "
        f"{m.n:,} {unit} of v{version}, bound {bound}; {m.text}"
    )
    if guardrail.metric in ("alert_rate", "alert_rate_lift", "realized_fpr"):
        detail += f"; threshold {threshold:g}"
    status = "tripped" if tripped else "ok"
    return GuardrailResult(guardrail, version, m.value, m.n, status, detail, (m.low, m.high))


def _shown(metric: str, value: float) -> str:
    if metric in ("alert_rate", "error_rate", "realized_fpr"):
        return f"{value:.2%}"
    if metric == "latency_p99_ms":
        return f"{value:.1f} ms"
    return f"{value:.3g}"


def evaluate_observations(
    guardrails: Sequence[Guardrail],
    version: int,
    current: Observations,
    *,
    threshold: float,
    baseline: NDArray[np.float64] | None = None,
    baseline_text: str = "baseline",
    reference: NDArray[np.float64] | None = None,
) -> list[GuardrailResult]:
    """Judge every guardrail on one version's arrays (the in-server watcher and the log both
    come here). ``baseline``: the baseline version's recent scores; ``reference``: the
    version's reference scores (a lift without a live baseline uses them)."""
    if baseline is None or baseline.size == 0:
        baseline, baseline_text = reference, f"v{version}'s reference"
    return [
        judge(
            g,
            version,
            current,
            threshold=threshold,
            baseline=baseline,
            baseline_text=baseline_text,
            reference=reference,
        )
        for g in guardrails
    ]


# -- probation: which version a revision introduced, against which baseline --------------------


def _arms(policy: TrafficPolicy) -> set[int]:
    return {a.version for a in policy.arms if a.weight > 0}


def introduction(
    history: Sequence[TrafficPolicy], version: int
) -> tuple[TrafficPolicy, TrafficPolicy | None] | None:
    """The revision that brought ``version`` into the arms for its latest run of revisions
    (the latest ones serving it, without a gap) and the revision before it; None when no
    revision served it."""
    serving = [i for i, policy in enumerate(history) if version in _arms(policy)]
    if not serving:
        return None
    i = serving[-1]
    while i > 0 and version in _arms(history[i - 1]):
        i -= 1
    return history[i], (history[i - 1] if i > 0 else None)


def baseline_version(previous: TrafficPolicy | None, version: int) -> int | None:
    """The previous champion: the heaviest arm of ``previous`` (None: none, or ``version``)."""
    if previous is None:
        return None
    heaviest = max(previous.arms, key=lambda a: a.weight).version
    return None if heaviest == version else heaviest


def on_probation(
    history: Sequence[TrafficPolicy], *, probation_s: float, now: datetime | None = None
) -> dict[int, int | None]:
    """The versions of the latest revision still on probation, each with its baseline version.

    On probation: brought into the arms by a revision (not a rollback) made less than
    ``probation_s`` seconds ago, and served in every revision since.
    """
    if not history:
        return {}
    moment = now or _now()
    found: dict[int, int | None] = {}
    for version in sorted(_arms(history[-1])):
        intro = introduction(history, version)
        if intro is None:
            continue
        introduced, previous = intro
        if previous is None or introduced.reason.startswith(ROLLBACK_PREFIX):
            continue  # the first policy has nothing to compare with; a rollback restores
        created = introduced.created_at
        if created is None or (moment - created).total_seconds() >= probation_s:
            continue
        found[version] = baseline_version(previous, version)
    return found


# -- judging the prediction log ----------------------------------------------------------------


def log_observations(
    workspace: Workspace,
    endpoint: str,
    version: int,
    *,
    start: float | datetime | None = None,
    end: float | datetime | None = None,
    limit: int = 2000,
) -> Observations:
    """The latest ``limit`` answers of ``version`` (shadows excluded) with ``start <= time <
    end`` from the prediction log, as :class:`Observations` (no failures: not logged)."""
    from shipyard.monitoring.logstore import query

    lo, hi = (
        epoch_seconds(start, "start", "log_observations"),
        epoch_seconds(end, "end", "log_observations"),
    )
    where = [f"version = {int(version)}", "arm IS DISTINCT FROM 'shadow'", "outputs IS NOT NULL"]
    where += [f"time >= {lo!r}"] * (lo is not None) + [f"time < {hi!r}"] * (hi is not None)
    sql = (
        f"SELECT time, outputs, latency_ms FROM predictions WHERE {' AND '.join(where)} "
        f"ORDER BY time DESC LIMIT {int(limit)}"
    )
    frame = query(workspace, endpoint, sql).iloc[::-1]
    outputs = [np.asarray(o, dtype=np.float64).ravel() for o in frame["outputs"]]
    scores = np.concatenate(outputs) if outputs else np.empty(0)
    latency = frame["latency_ms"].to_numpy(dtype=np.float64)
    return Observations(scores[-limit:], latency)


def _with_labels(
    workspace: Workspace, endpoint: str, version: int, start: float | None, current: Observations
) -> Observations:
    from shipyard.monitoring.labels import labelled_predictions

    frame = labelled_predictions(workspace, endpoint, start, versions=[version])
    # a list output (a recommender's) has labels but no score: nothing a score guardrail reads
    frame = frame[frame["label"].notna() & frame["score"].notna()]
    return Observations(
        current.scores,
        current.latency_ms,
        current.errors,
        frame["score"].to_numpy(dtype=np.float64),
        frame["label"].to_numpy(dtype=np.int64),
    )


def reference_scores(workspace: Workspace, model: str, version: int) -> NDArray[np.float64] | None:
    """The version's reference scores, or None when it has none (no evaluation window)."""
    from shipyard.errors import ShipyardError
    from shipyard.monitoring.reference import load_reference_scores

    try:
        return load_reference_scores(workspace, model, version)[0]
    except (ShipyardError, OSError):
        return None


def evaluate_guardrails(
    workspace: Workspace,
    endpoint: str,
    version: int,
    *,
    since: float | datetime | None = None,
    baseline: int | None = None,
    guardrails: Sequence[Guardrail] | None = None,
) -> list[GuardrailResult]:
    """Judge ``version``'s guardrails on the prediction log (and labels, for realized FPR).

    ``since`` (epoch seconds or datetime; default: when the policy brought ``version`` in)
    starts the version's records; ``baseline`` (default: the previous champion, the heaviest
    arm before that) is judged on its records before ``since``, else the version's reference
    scores. ``guardrails`` default to :func:`list_guardrails`.

    Example: ``evaluate_guardrails(ws, "fraud", 7)``.
    """
    from shipyard.monitoring.thresholds import decision_threshold
    from shipyard.serving.policy import policy_history

    owner = "evaluate_guardrails"
    if isinstance(version, bool) or not isinstance(version, int):
        raise invalid_parameter("version", owner, "a model version number", version)
    history = policy_history(workspace, endpoint)
    if not history:
        raise invalid_parameter("endpoint", owner, "an endpoint with a traffic policy", endpoint)
    intro = introduction(history, version)
    if since is None and intro is not None:
        since = intro[0].created_at
    if baseline is None and intro is not None:
        baseline = baseline_version(intro[1], version)
    rules = list(guardrails) if guardrails is not None else list_guardrails(workspace, endpoint)
    window = max((g.window for g in rules), default=2000)
    model = history[-1].model
    lo = epoch_seconds(since, "since", "evaluate_guardrails")
    current = log_observations(workspace, endpoint, version, start=lo, limit=window)
    if any(g.metric == "realized_fpr" for g in rules):
        current = _with_labels(workspace, endpoint, version, lo, current)
    base_scores, base_text = None, "baseline"
    if baseline is not None:
        base_scores = log_observations(workspace, endpoint, baseline, end=lo, limit=window).scores
        base_text = f"v{baseline}'s live traffic"
    needs_reference = any(g.metric in ("score_shift", "alert_rate_lift") for g in rules)
    reference = reference_scores(workspace, model, version) if needs_reference else None
    return evaluate_observations(
        rules,
        version,
        current,
        threshold=decision_threshold(workspace, model, version),
        baseline=base_scores,
        baseline_text=base_text,
        reference=reference,
    )
