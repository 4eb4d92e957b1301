"""The root cause of a bad deploy: which version, since when, which outputs, inputs and segments.

``root_cause(ws, "fraud", 2)`` reads the endpoint's traffic policy history, audit trail and
prediction log and answers, in the order an on-call engineer asks:

1. **Which version, since when**: the policy revision that put the suspect version into
   traffic (when, who, why), its first and last logged request, and the guardrail trips and
   rollbacks recorded since.
2. **Which outputs shifted**: the suspect's score distribution and alert rate (each at its
   version's decision threshold) against the baseline version's, with intervals; and, on the
   *same* requests, how often the two versions' decisions differ.
3. **Which input features shifted**, ranked by effect size, two ways:

   - *traffic drift*: the suspect's requests against the baseline's most recent requests up
     to the suspect's last one (the monitoring drift test, :class:`DatasetDriftTest`, on
     profiles binned at the baseline's quantiles): an upstream change of the data;
   - *what each model sees*: both versions loaded from the registry, each version's packaged
     preprocessing (``model.preprocess(matrix)``, or a scikit-learn Pipeline's transform
     stage; identity when it has none) applied to the suspect's logged inputs. A feature the
     two versions see differently on the same request was transformed differently (amounts in
     cents instead of units: seen x100), which traffic drift cannot see, because the
     traffic did not change.

4. **Which segments are most affected**: quantile bins (or values) of the top features,
   ranked by the change in alert rate between the versions on the same requests.

The baseline is, unless given, the version the endpoint returned to after the suspect (a
rollback), else the main arm of the revision before the suspect's. :meth:`RootCauseReport.text`
is a few lines for a terminal or an alert, naming the top feature first; :func:`write_rca`
writes it with the HTML report (:mod:`shipyard.monitoring.rca_html`).

Example::

    report = root_cause(ws, "fraud", 2)
    print(report.text())
    write_rca(report, "incident-42/")
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shipyard.errors import DataValidationError, ModelNotFoundError, invalid_parameter
from shipyard.monitoring.performance import Metric, wilson
from shipyard.serialize import jsonable
from shipyard.times import epoch_seconds

if TYPE_CHECKING:
    import pyarrow as pa
    from numpy.typing import NDArray

    from shipyard.serving.policy import TrafficPolicy
    from shipyard.workspace import Workspace

LEVEL = 0.95
"""The confidence level of every interval in the report."""
SMALL_SEGMENT = 30
"""Segments with fewer rows are marked small: their rates move with a handful of rows."""
SEGMENT_BINS = 5
"""Quantile bins per numeric feature in the segment table (values, for up to 10 distinct)."""
SCORE_BINS = 20
"""Equal-width score bins of the distribution overlay, over [0, 1]."""
INCIDENT_ACTIONS = ("guardrail.trip", "policy.rollback")
_OWNER = "root_cause"
Time = datetime | str | float | None


@dataclass(frozen=True)
class Incident:
    """A guardrail trip or a rollback of the endpoint, from the audit trail."""

    action: str
    at: datetime
    actor: str
    reason: str
    revision: int | None


@dataclass(frozen=True)
class Deployment:
    """Which version, since when: the revision that introduced it and its logged traffic."""

    endpoint: str
    model: str
    version: int
    revision: int | None
    introduced_at: datetime | None
    introduced_by: str | None
    introduced_because: str | None
    first_request: datetime
    last_request: datetime
    n_requests: int
    n_rows: int
    incidents: tuple[Incident, ...]
    baseline: int
    baseline_source: str
    """Why this baseline: ``"given"``, ``"rolled back to"`` or ``"previous revision"``."""


@dataclass(frozen=True)
class OutputShift:
    """The suspect's scores and alert rate against the baseline's, and on the same requests."""

    suspect_threshold: float
    baseline_threshold: float
    suspect_rows: int
    baseline_rows: int
    suspect_alert_rate: Metric
    baseline_alert_rate: Metric
    alert_rate_change: Metric
    """Suspect minus baseline (Newcombe's interval from the two Wilson intervals)."""
    suspect_mean: float
    baseline_mean: float
    mean_change: Metric
    """Suspect minus baseline mean score (normal interval, unequal variances)."""
    ks_statistic: float
    """Kolmogorov-Smirnov distance between the two score distributions (0 to 1)."""
    bins: tuple[float, ...]
    suspect_histogram: tuple[float, ...]
    baseline_histogram: tuple[float, ...]
    """Share of rows per score bin (``bins`` are the edges)."""
    paired_rows: int
    paired_mean_change: Metric
    """Mean of (suspect - baseline score) on the suspect's requests, both versions scoring."""
    paired_flip_rate: Metric
    """Share of the suspect's requests on which the two versions decide differently."""
    paired_up: int
    """Rows the suspect alerts on and the baseline does not."""
    paired_down: int


@dataclass(frozen=True)
class TrafficShift:
    """One input's drift: the suspect's requests against the baseline's."""

    column: str
    distance: float | None
    """Jensen-Shannon distance of the two histograms (the drift test's effect size)."""
    adjusted_p_value: float | None
    verdict: str
    suspect_mean: float | None
    baseline_mean: float | None
    standardized_difference: float | None
    """(suspect mean - baseline mean) / baseline standard deviation."""


@dataclass(frozen=True)
class SeenShift:
    """How differently the two versions see one input on the same requests."""

    column: str
    effect: float
    """Mean |suspect's - baseline's view| / the standard deviation of the baseline's view."""
    share_changed: float
    """Share of rows whose value the two versions see differently."""
    median_abs_log_ratio: float | None
    typical_ratio: float | None
    """The median ratio suspect / baseline over the changed rows (100.0: seen x100)."""
    standardized_difference: float | None


@dataclass(frozen=True)
class Segment:
    """Requests whose ``column`` falls in ``label``: both versions' decisions on them."""

    column: str
    label: str
    n: int
    suspect_alert_rate: float
    baseline_alert_rate: float
    mean_score_change: float
    small: bool

    @property
    def alert_rate_change(self) -> float:
        return self.suspect_alert_rate - self.baseline_alert_rate


@dataclass(frozen=True)
class RootCauseReport:
    """What :func:`root_cause` found; ``text()`` for a terminal, ``write_rca`` for files."""

    deployment: Deployment
    outputs: OutputShift
    traffic: tuple[TrafficShift, ...]
    traffic_note: str
    seen: tuple[SeenShift, ...]
    seen_note: str
    segments: tuple[Segment, ...]
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))

    @property
    def top_feature(self) -> str | None:
        """The feature the report names first: seen differently, else drifted, else none."""
        if self.seen and self.seen[0].share_changed > 0:
            return self.seen[0].column
        drifted = [t for t in self.traffic if t.verdict == "drift"]
        return drifted[0].column if drifted else None

    def text(self) -> str:
        """A few lines for a terminal or an alert, the top feature first."""
        from shipyard.monitoring.rca_html import render_text

        return render_text(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (datetimes in ISO 8601)."""
        out: dict[str, Any] = jsonable({**asdict(self), "top_feature": self.top_feature})
        return out


# -- the entry point ------------------------------------------------------------------------


def root_cause(
    workspace: Workspace,
    endpoint: str,
    version: int,
    *,
    baseline: int | None = None,
    since: Time = None,
    until: Time = None,
    threshold: float | None = None,
) -> RootCauseReport:
    """Why ``version`` misbehaved on ``endpoint``: see the module doc for what it answers.

    ``baseline``: the version to compare with (default: the one the endpoint returned to,
    else the previous revision's main arm); ``since`` / ``until``: the span of the log read
    (ISO text, datetime or epoch seconds; default all of it); ``threshold``: one decision
    threshold for both versions (default: each version's ``decision_threshold``).
    Example: ``print(root_cause(ws, "fraud", 2).text())``.
    """
    from shipyard.monitoring.logstore import predictions
    from shipyard.monitoring.thresholds import decision_threshold
    from shipyard.registry.models import ModelRegistry
    from shipyard.serving.policy import policy_history

    _check_int(version, "version")
    if baseline is not None:
        _check_int(baseline, "baseline")
    lo, hi = epoch_seconds(since, "since", _OWNER), epoch_seconds(until, "until", _OWNER)
    if threshold is not None:
        from shipyard.monitoring.performance import check_threshold

        check_threshold(threshold, _OWNER)
    history = policy_history(workspace, endpoint)
    table = predictions(workspace, endpoint, lo, hi)
    model = _model_of(endpoint, history, table)
    registry = ModelRegistry(workspace)
    names = registry.get(model, version).input_schema.names
    suspect = _rows(_select(table, model, version), names)
    if suspect.n_rows == 0:
        span = f" since {_when(lo)}" if lo is not None else ""
        span += f" until {_when(hi)}" if hi is not None else ""
        raise DataValidationError(
            f"No logged prediction of {model} v{version} on endpoint {endpoint!r}{span}: "
            "nothing to analyse. Check the version (shipyard endpoint status) and the span."
        )
    deployment = _deployment(workspace, endpoint, model, version, baseline, history, suspect)
    base = deployment.baseline
    registry.get(model, base)  # a clear error for a baseline that was never registered
    t_suspect = (
        threshold if threshold is not None else decision_threshold(workspace, model, version)
    )
    t_base = threshold if threshold is not None else decision_threshold(workspace, model, base)
    before, note = _baseline_traffic(_rows(_select(table, model, base), names), suspect)
    suspect_model, base_model = registry.load(model, version), registry.load(model, base)
    paired = np.asarray(base_model.predict(suspect.matrix.copy()), dtype=np.float64)
    outputs = _outputs(suspect.scores, before.scores, paired, t_suspect, t_base)
    seen, seen_note = _seen_shifts(names, suspect.matrix, suspect_model, base_model, model)
    traffic = _traffic(names, before.matrix, suspect.matrix)
    top = [s.column for s in seen if s.share_changed > 0][:3]
    top += [t.column for t in traffic if t.column not in top][: max(0, 4 - len(top))]
    segments = _segments(names, top, suspect.matrix, suspect.scores, paired, t_suspect, t_base)
    return RootCauseReport(
        deployment, outputs, traffic, note, seen, seen_note, segments
    )  # fmt: skip


def write_rca(report: RootCauseReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write the report as ``rca-<endpoint>-v<version>.html`` and ``.txt`` in ``out_dir``."""
    from shipyard.integrity import write_atomically
    from shipyard.monitoring.rca_html import render_rca

    if not isinstance(report, RootCauseReport):
        raise invalid_parameter("report", "write_rca", "a RootCauseReport", report)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    d = report.deployment
    stem = f"rca-{d.endpoint}-v{d.version}"
    html_path, text_path = folder / f"{stem}.html", folder / f"{stem}.txt"
    write_atomically(html_path, render_rca(report).encode("utf-8"))
    write_atomically(text_path, (report.text() + "\n").encode("utf-8"))
    return html_path, text_path


# -- reading the log ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    """One version's logged rows: inputs, scores and log times (epoch s), request count."""

    matrix: NDArray[np.float64]
    scores: NDArray[np.float64]
    times: NDArray[np.float64]
    n_requests: int

    @property
    def n_rows(self) -> int:
        return int(self.scores.size)

    def take(self, index: NDArray[np.int64]) -> _Rows:
        return _Rows(self.matrix[index], self.scores[index], self.times[index], self.n_requests)


def _check_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid_parameter(name, _OWNER, "a registered version number (an int >= 1)", value)


def _naive(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def _when(epoch: float) -> str:
    return _naive(epoch).strftime("%Y-%m-%d %H:%M:%S UTC")


def _model_of(endpoint: str, history: list[TrafficPolicy], table: pa.Table) -> str:
    if history:
        return history[-1].model
    models = [m for m in table.column("model").unique().to_pylist() if m is not None]
    if len(models) == 1:
        return str(models[0])
    if not models:
        raise ModelNotFoundError(
            f"Endpoint {endpoint!r} has no traffic policy and no logged prediction in the "
            "span: check its name (shipyard endpoint list)."
        )
    raise ModelNotFoundError(
        f"Endpoint {endpoint!r} has no traffic policy and logs several models {models}."
    )


def _select(table: pa.Table, model: str, version: int) -> pa.Table:
    import pyarrow.compute as pc

    mask = pc.and_(pc.equal(table["model"], model), pc.equal(table["version"], version))
    return table.filter(pc.fill_null(mask, False)).sort_by("time")


def _rows(table: pa.Table, names: list[str]) -> _Rows:
    """Every logged row of the records: one per input row with its score (records whose
    inputs and outputs do not pair up row for row, an error answer, are left out)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from shipyard.errors import SchemaError

    n_in = np.asarray(pc.fill_null(pc.list_value_length(table["inputs"]), 0), dtype=np.int64)
    n_out = np.asarray(pc.fill_null(pc.list_value_length(table["outputs"]), 0), dtype=np.int64)
    keep = (n_in == n_out) & (n_in > 0)
    table = table.filter(pa.array(keep))
    n_in = n_in[keep]
    rows = pc.list_flatten(table["inputs"])
    widths = np.asarray(pc.fill_null(pc.list_value_length(rows), 0), dtype=np.int64)
    if widths.size and (widths != len(names)).any():
        bad = int(widths[widths != len(names)][0])
        raise SchemaError(
            f"A logged input row has {bad} values; the version's input schema has "
            f"{len(names)} columns ({', '.join(names)})."
        )
    values = pc.list_flatten(rows).to_numpy(zero_copy_only=False).astype(np.float64)
    scores = pc.list_flatten(table["outputs"]).to_numpy(zero_copy_only=False).astype(np.float64)
    times = np.asarray(table["time"].to_numpy(zero_copy_only=False), dtype=np.float64)
    return _Rows(
        values.reshape(-1, len(names)), scores, np.repeat(times, n_in), int(table.num_rows)
    )


def _baseline_traffic(base: _Rows, suspect: _Rows) -> tuple[_Rows, str]:
    """The baseline's most recent rows up to the suspect's last request (as many as the
    suspect's, at least 1,000), else its first rows after, with a note saying which."""
    n = max(suspect.n_rows, 1_000)
    last = float(suspect.times.max())
    before = np.flatnonzero(base.times <= last)
    if before.size:
        chosen = before[-n:]
        note = "the baseline's most recent requests up to the suspect's last one"
    else:
        chosen = np.arange(min(n, base.n_rows))
        note = "the baseline's first requests after the suspect's (none before)"
    if chosen.size == 0:
        return base, "no logged request of the baseline in the span: no traffic comparison"
    picked = base.take(chosen)
    span = f"{_when(float(picked.times.min()))} to {_when(float(picked.times.max()))}"
    return picked, f"{note}: {picked.n_rows:,} rows, {span}"


# -- which version, since when --------------------------------------------------------------


def _deployment(
    workspace: Workspace,
    endpoint: str,
    model: str,
    version: int,
    baseline: int | None,
    history: list[TrafficPolicy],
    suspect: _Rows,
) -> Deployment:
    first, last = float(suspect.times.min()), float(suspect.times.max())
    introduced, previous, after = _introduction(history, version, last)
    source = "given"
    if baseline is None:
        if after is not None:
            baseline, source = _main_arm(after), "rolled back to"
        elif previous is not None and _main_arm(previous) != version:
            baseline, source = _main_arm(previous), "previous revision"
        else:
            raise invalid_parameter(
                "baseline", _OWNER,
                f"a version to compare {model} v{version} with (endpoint {endpoint!r} served "
                "no other version before or after it)",
                baseline,
            )  # fmt: skip
    if baseline == version:
        raise invalid_parameter("baseline", _OWNER, f"a version other than {version}", baseline)
    since = introduced.created_at if introduced is not None else None
    return Deployment(
        endpoint=endpoint,
        model=model,
        version=version,
        revision=introduced.revision if introduced is not None else None,
        introduced_at=since,
        introduced_by=introduced.actor if introduced is not None else None,
        introduced_because=introduced.reason if introduced is not None else None,
        first_request=_naive(first),
        last_request=_naive(last),
        n_requests=suspect.n_requests,
        n_rows=suspect.n_rows,
        incidents=_incidents(workspace, endpoint, since),
        baseline=baseline,
        baseline_source=source,
    )


def _serves(policy: TrafficPolicy, version: int) -> bool:
    return any(a.version == version and a.weight > 0 for a in policy.arms) or (
        version in policy.shadows
    )


def _main_arm(policy: TrafficPolicy) -> int:
    return max(policy.arms, key=lambda a: a.weight).version


def _introduction(
    history: list[TrafficPolicy], version: int, last: float
) -> tuple[TrafficPolicy | None, TrafficPolicy | None, TrafficPolicy | None]:
    """(the revision that put ``version`` into traffic, the one before, the first after it
    without ``version``): the latest introduction before the suspect's last request (the
    first one when all came later)."""
    found: list[tuple[TrafficPolicy, TrafficPolicy | None, TrafficPolicy | None]] = []
    for i, policy in enumerate(history):
        earlier = history[i - 1] if i else None
        if _serves(policy, version) and (earlier is None or not _serves(earlier, version)):
            after = next((p for p in history[i + 1 :] if not _serves(p, version)), None)
            found.append((policy, earlier, after))
    if not found:
        return None, None, None
    before = [f for f in found if f[0].created_at is None or _stamp(f[0].created_at) <= last]
    return before[-1] if before else found[0]


def _stamp(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _incidents(workspace: Workspace, endpoint: str, since: datetime | None) -> tuple[Incident, ...]:
    from shipyard.governance.audit import entries

    found = []
    for entry in entries(workspace, name=endpoint):
        if entry.action not in INCIDENT_ACTIONS or entry.kind == "model":
            continue
        if since is not None and entry.at < since:
            continue
        revision = (entry.details or {}).get("revision")
        found.append(
            Incident(
                entry.action, entry.at, entry.actor, entry.reason,
                int(revision) if isinstance(revision, int) else None,
            )
        )  # fmt: skip
    return tuple(found)


# -- which outputs shifted ------------------------------------------------------------------


def _difference(a: Metric, b: Metric, name: str) -> Metric:
    """a - b with Newcombe's hybrid score interval from two Wilson intervals."""
    if a.value is None or b.value is None or None in (a.low, a.high, b.low, b.high):
        return Metric.insufficient(name, LEVEL, "newcombe")
    assert a.low is not None and a.high is not None and b.low is not None and b.high is not None
    d = a.value - b.value
    low = d - math.hypot(a.value - a.low, b.high - b.value)
    high = d + math.hypot(a.high - a.value, b.value - b.low)
    return Metric(name, d, low, high, LEVEL, "newcombe")


def _mean_change(a: NDArray[np.float64], b: NDArray[np.float64] | None, name: str) -> Metric:
    """mean(a) - mean(b) (or mean(a) when b is None) with a normal interval."""
    from scipy.stats import norm

    a = a[np.isfinite(a)]
    if b is not None:
        b = b[np.isfinite(b)]
    if a.size < 2 or (b is not None and b.size < 2):
        return Metric.insufficient(name, LEVEL, "normal")
    d = float(a.mean() - (b.mean() if b is not None else 0.0))
    se = math.sqrt(a.var(ddof=1) / a.size + (b.var(ddof=1) / b.size if b is not None else 0.0))
    z = float(norm.ppf(0.5 + LEVEL / 2))
    return Metric(name, d, d - z * se, d + z * se, LEVEL, "normal")


def _outputs(
    suspect: NDArray[np.float64],
    baseline: NDArray[np.float64],
    paired: NDArray[np.float64],
    t_suspect: float,
    t_base: float,
) -> OutputShift:
    from scipy.stats import ks_2samp

    s, b = suspect[np.isfinite(suspect)], baseline[np.isfinite(baseline)]
    rate_s = wilson("alert_rate", int((s >= t_suspect).sum()), int(s.size), LEVEL)
    rate_b = wilson("alert_rate", int((b >= t_base).sum()), int(b.size), LEVEL)
    bins = np.linspace(0.0, 1.0, SCORE_BINS + 1)

    def shares(x: NDArray[np.float64]) -> tuple[float, ...]:
        counts = np.histogram(np.clip(x, 0.0, 1.0), bins=bins)[0]
        return tuple(float(c) / max(1, x.size) for c in counts)

    ok = np.isfinite(suspect) & np.isfinite(paired)
    up = (suspect >= t_suspect) & (paired < t_base) & ok
    down = (suspect < t_suspect) & (paired >= t_base) & ok
    flips = int(up.sum() + down.sum())
    return OutputShift(
        suspect_threshold=t_suspect,
        baseline_threshold=t_base,
        suspect_rows=int(s.size),
        baseline_rows=int(b.size),
        suspect_alert_rate=rate_s,
        baseline_alert_rate=rate_b,
        alert_rate_change=_difference(rate_s, rate_b, "alert_rate_change"),
        suspect_mean=float(s.mean()) if s.size else math.nan,
        baseline_mean=float(b.mean()) if b.size else math.nan,
        mean_change=_mean_change(s, b, "mean_score_change"),
        ks_statistic=float(ks_2samp(s, b).statistic) if s.size and b.size else math.nan,
        bins=tuple(float(e) for e in bins),
        suspect_histogram=shares(s),
        baseline_histogram=shares(b),
        paired_rows=int(ok.sum()),
        paired_mean_change=_mean_change(suspect[ok] - paired[ok], None, "paired_mean_change"),
        paired_flip_rate=wilson("paired_flip_rate", flips, int(ok.sum()), LEVEL),
        paired_up=int(up.sum()),
        paired_down=int(down.sum()),
    )


# -- which inputs shifted -------------------------------------------------------------------


def seen_inputs(predictor: Any, matrix: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """The inputs a loaded version's model core sees for ``matrix`` (rows x columns).

    ``predictor.model.preprocess(matrix)`` where the model packages one, else a scikit-learn
    Pipeline's transform stage, else ``matrix`` itself; None when the result has another
    shape (a transform that adds or removes columns cannot be compared column by column).
    """
    model = getattr(predictor, "model", predictor)
    preprocess = getattr(model, "preprocess", None)
    if callable(preprocess):
        seen = preprocess(matrix.copy())
    elif _is_pipeline(model):
        seen = model[:-1].transform(matrix.copy())
    else:
        return matrix
    out = np.asarray(seen, dtype=np.float64)
    return out if out.shape == matrix.shape else None


def _is_pipeline(model: Any) -> bool:
    """A scikit-learn Pipeline with a transform stage before its estimator."""
    steps = getattr(model, "steps", None)
    return isinstance(steps, list) and len(steps) > 1 and hasattr(model, "__getitem__")


def _preprocessing(predictor: Any) -> str:
    model = getattr(predictor, "model", predictor)
    if callable(getattr(model, "preprocess", None)):
        return f"packaged preprocess ({type(model).__name__})"
    if _is_pipeline(model):
        return "pipeline transform (" + ", ".join(n for n, _ in model.steps[:-1]) + ")"
    return "none (inputs as logged)"


def _seen_shifts(
    names: list[str], matrix: NDArray[np.float64], suspect: Any, base: Any, model: str
) -> tuple[tuple[SeenShift, ...], str]:
    """Per feature, how differently the two versions see the suspect's requests."""
    suspect_view = seen_inputs(suspect, matrix)
    base_view = seen_inputs(base, matrix)
    what = f"preprocessing: suspect {_preprocessing(suspect)}; baseline {_preprocessing(base)}"
    if suspect_view is None or base_view is None:
        return (), f"{what}; a transform changes the number of columns: not compared per column"
    out = [_seen_column(n, base_view[:, j], suspect_view[:, j]) for j, n in enumerate(names)]
    out.sort(key=lambda s: (-s.effect, -s.share_changed, s.column))
    return tuple(out), what


def _seen_column(name: str, a: NDArray[np.float64], b: NDArray[np.float64]) -> SeenShift:
    both_missing = np.isnan(a) & np.isnan(b)
    same = np.isclose(a, b, rtol=1e-7, atol=1e-12) | both_missing
    changed = ~same
    share = float(changed.mean()) if a.size else 0.0
    finite = np.isfinite(a) & np.isfinite(b)
    scale = float(np.std(a[finite])) if finite.any() else 0.0
    if not math.isfinite(scale) or scale == 0.0:
        scale = float(np.mean(np.abs(a[finite]))) if finite.any() else 0.0
    scale = scale if scale > 0 else 1.0
    diff = (b - a)[finite]
    effect = float(np.mean(np.abs(diff)) / scale) if diff.size else (1.0 if share else 0.0)
    ratio_rows = finite & (a != 0) & (b != 0)
    log_ratio = np.log(np.abs(b[ratio_rows]) / np.abs(a[ratio_rows]))
    moved = log_ratio[changed[ratio_rows]]
    return SeenShift(
        column=name,
        effect=effect if share else 0.0,
        share_changed=share,
        median_abs_log_ratio=float(np.median(np.abs(log_ratio))) if log_ratio.size else None,
        typical_ratio=float(np.exp(np.median(moved))) if moved.size else None,
        standardized_difference=float(diff.mean() / scale) if diff.size else None,
    )


def _traffic(
    names: list[str], before: NDArray[np.float64], suspect: NDArray[np.float64]
) -> tuple[TrafficShift, ...]:
    """Each input's drift, the suspect's rows against the baseline's, largest distance first."""
    from shipyard.monitoring.profiles import DatasetProfile
    from shipyard.monitoring.report import DatasetDriftTest

    if before.shape[0] == 0:
        return ()
    reference = DatasetProfile.from_reference({n: before[:, j] for j, n in enumerate(names)})
    current = reference.empty().update({n: suspect[:, j] for j, n in enumerate(names)})
    drift = DatasetDriftTest().compare(reference, current)
    out = []
    for j, name in enumerate(names):
        column = drift[name]
        b, s = before[:, j], suspect[:, j]
        b, s = b[np.isfinite(b)], s[np.isfinite(s)]
        sd = float(b.std()) if b.size > 1 else 0.0
        mean_b = float(b.mean()) if b.size else None
        mean_s = float(s.mean()) if s.size else None
        standardized = (
            (mean_s - mean_b) / sd if sd > 0 and mean_s is not None and mean_b is not None else None
        )
        out.append(
            TrafficShift(
                name, column.distance.statistic, column.adjusted_p_value, column.verdict.value,
                mean_s, mean_b, standardized,
            )
        )  # fmt: skip
    out.sort(key=lambda t: (t.verdict != "drift", -(t.distance or 0.0), t.column))
    return tuple(out)


# -- which segments -------------------------------------------------------------------------


def _segments(
    names: list[str],
    columns: list[str],
    matrix: NDArray[np.float64],
    scores: NDArray[np.float64],
    paired: NDArray[np.float64],
    t_suspect: float,
    t_base: float,
) -> tuple[Segment, ...]:
    """Bins of ``columns`` ranked by the change in alert rate (then mean score) on the same
    requests; at most 12."""
    alert_s = (scores >= t_suspect).astype(np.float64)
    alert_b = (paired >= t_base).astype(np.float64)
    out: list[Segment] = []
    for column in columns:
        values = matrix[:, names.index(column)]
        for label, rows in _bins(values):
            n = int(rows.sum())
            if n == 0:
                continue
            out.append(
                Segment(
                    column, label, n, float(alert_s[rows].mean()), float(alert_b[rows].mean()),
                    float(np.nanmean(scores[rows] - paired[rows])), n < SMALL_SEGMENT,
                )
            )  # fmt: skip
    out.sort(key=lambda s: (-abs(s.alert_rate_change), -abs(s.mean_score_change)))
    return tuple(out[:12])


def _bins(values: NDArray[np.float64]) -> list[tuple[str, NDArray[np.bool_]]]:
    """(label, rows) per value (10 distinct or fewer) or quantile bin, and missing."""
    finite = np.isfinite(values)
    distinct = np.unique(values[finite])
    out: list[tuple[str, NDArray[np.bool_]]] = []
    if distinct.size <= 10:
        out = [(f"= {v:g}", values == v) for v in distinct]
    else:
        edges = np.unique(np.quantile(values[finite], np.linspace(0, 1, SEGMENT_BINS + 1)))
        for low, high in itertools.pairwise(edges):
            last = high == edges[-1]
            rows = (values >= low) & ((values <= high) if last else (values < high))
            out.append((f"[{low:.4g}, {high:.4g}{']' if last else ')'}", rows))
    if not finite.all():
        out.append(("missing", ~finite))
    return out
