"""``shipyard monitor run``: every monitored quantity of an endpoint, per window, stored.

One run reads a span of the prediction log, splits it into windows (a day by default) and,
for each model version (or arm) in each window, computes the quantities named in
:mod:`shipyard.monitoring.points`: volume, score mean and alert rate, drift of every input
and of the score against the version's reference profile, CBPE-estimated performance (no
labels needed) and realized performance where labels were joined. The points are stored
(a window computed again is replaced), alert rules are evaluated on them, and the result
feeds ``shipyard monitor status`` and the HTML report.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from shipyard.errors import invalid_parameter
from shipyard.monitoring.drift import Verdict
from shipyard.monitoring.points import Point, new_run_id, store_points
from shipyard.monitoring.profiles import DatasetProfile
from shipyard.monitoring.report import DatasetDriftTest, DriftReport
from shipyard.times import epoch_seconds

if TYPE_CHECKING:
    import pyarrow as pa
    from numpy.typing import NDArray

    from shipyard.workspace import Workspace

logger = logging.getLogger(__name__)

_UNITS = {"h": 3600.0, "d": 86_400.0, "w": 7 * 86_400.0}
TIMES = ("event", "log")
"""Which moment places a prediction in a window: its request's event time (``X-Event-Time``,
the log time where a request has none) or when the server logged it."""


@dataclass(frozen=True)
class GroupWindow:
    """One group's drift in one window, with the profiles behind it (for the plots)."""

    group: str
    window_start: datetime
    window_end: datetime
    n_records: int
    drift: DriftReport
    reference: DatasetProfile
    current: DatasetProfile


@dataclass(frozen=True)
class MonitorRun:
    """What one run computed: its points and, per group, the drift of each window."""

    endpoint: str
    run_id: str
    start: datetime
    end: datetime
    window: timedelta
    threshold: float | None
    groups: tuple[str, ...]
    points: tuple[Point, ...]
    windows: tuple[GroupWindow, ...] = field(default=())
    alerts: tuple[Any, ...] = field(default=())
    """Alerts raised or still open after this run (``shipyard.monitoring.alerts.Alert``)."""
    thresholds: dict[str, float] = field(default_factory=dict)
    """The decision threshold each group was measured at (its version's, unless the run was
    given one for all)."""

    def series(self, metric: str, group: str) -> list[Point]:
        """The points of one metric of one group, oldest window first."""
        return sorted(
            (p for p in self.points if p.metric == metric and p.group == group),
            key=lambda p: p.window_start,
        )

    def latest(self, group: str) -> GroupWindow | None:
        """The group's newest window with a drift report, or None."""
        mine = [w for w in self.windows if w.group == group]
        return max(mine, key=lambda w: w.window_start) if mine else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable: the run's span, groups, points and alerts."""
        return {
            "endpoint": self.endpoint,
            "run_id": self.run_id,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "window_seconds": self.window.total_seconds(),
            "threshold": self.threshold,
            "thresholds": dict(self.thresholds),
            "groups": list(self.groups),
            "points": [p.to_dict() for p in self.points],
            "alerts": [a.to_dict() for a in self.alerts],
        }


# -- computing a run ------------------------------------------------------------------------


def parse_window(text: str) -> timedelta:
    """``"1D"``, ``"6h"``, ``"1W"`` as a timedelta (units h, D, W; case-insensitive)."""
    match = re.fullmatch(r"\s*(\d+)\s*([hHdDwW])\s*", text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) == 0:
        raise invalid_parameter("window", "run_monitor", "a length like 1D, 6h or 1W", text)
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2).lower()])


def _naive(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class _Span:
    first: float
    width: float
    count: int

    def bounds(self, k: int) -> tuple[datetime, datetime]:
        start = self.first + k * self.width
        return _naive(start), _naive(start + self.width)

    def index(self, t: NDArray[np.float64]) -> NDArray[np.int64]:
        return np.floor((t - self.first) / self.width).astype(np.int64)


def _span(t: NDArray[np.float64], lo: float | None, hi: float | None, width: float) -> _Span:
    """Windows of ``width`` from ``lo`` (else the first time, floored to a multiple of the
    width since the epoch) to ``hi`` (else past the last time)."""
    first = lo if lo is not None else math.floor(float(t.min()) / width) * width
    last = hi if hi is not None else float(t.max()) + 1e-6
    return _Span(first, width, max(1, math.ceil((last - first) / width - 1e-9)))


def _moments(table: pa.Table, time: str) -> NDArray[np.float64]:
    import pyarrow.compute as pc

    column = table.column("time")
    if time == "event" and "event_time" in table.column_names:
        column = pc.coalesce(table.column("event_time"), column)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def _row_scores(table: pa.Table) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Every logged score of the records and the index of its record."""
    import pyarrow.compute as pc

    outputs = table.column("outputs")
    lengths = np.asarray(pc.fill_null(pc.list_value_length(outputs), 0), dtype=np.int64)
    scores = pc.list_flatten(outputs).to_numpy(zero_copy_only=False).astype(np.float64)
    return scores, np.repeat(np.arange(table.num_rows), lengths)


def run_monitor(
    workspace: Workspace,
    endpoint: str,
    *,
    start: datetime | str | float | None = None,
    end: datetime | str | float | None = None,
    window: str = "1D",
    threshold: float | None = None,
    by: str = "version",
    time: str = "event",
    test: DatasetDriftTest | None = None,
    store: bool = True,
    evaluate_alerts: bool = True,
    post: bool = True,
) -> MonitorRun:
    """Compute, store and alert on every monitored quantity of ``endpoint`` per window.

    The log span ``[start, end)`` (default: all of it) is cut into windows of ``window``
    (aligned to multiples of the length since the epoch, UTC, unless ``start`` is given);
    each model version (``by="version"``) or arm of a version (``by="arm"``) gets, per
    window: volume, score mean, alert rate at ``threshold`` (the serving decision
    threshold; default: each version's own, :func:`shipyard.monitoring.thresholds.
    decision_threshold`), drift of every input and of the score against the version's reference
    profile (``test``, default :class:`DatasetDriftTest`), CBPE-estimated performance fitted
    on the version's reference scores, and realized performance over the labels joined so
    far. Points replace those of an earlier run for the same windows (``store``); alert
    rules are then evaluated (``evaluate_alerts``; webhooks posted unless ``post`` is False).

    Example::

        run = run_monitor(ws, "fraud", window="1D", threshold=0.3)
        print(run.series("drift.columns_drifted", run.groups[0]))
    """
    owner = "run_monitor"
    if by not in ("version", "arm"):
        raise invalid_parameter("by", owner, "'version' or 'arm'", by)
    if time not in TIMES:
        raise invalid_parameter("time", owner, f"one of {list(TIMES)}", time)
    from shipyard.monitoring.performance import check_threshold

    if threshold is not None:
        check_threshold(threshold, owner)
    width = parse_window(window)
    test = test if test is not None else DatasetDriftTest()
    lo, hi = epoch_seconds(start, "start", owner), epoch_seconds(end, "end", owner)
    if lo is not None and hi is not None and hi <= lo:
        raise invalid_parameter("end", owner, f"a time after start ({start})", end)

    from shipyard.monitoring.logstore import predictions

    # event times are not bounded by log times: an event-time run reads the whole log
    table = predictions(workspace, endpoint, *((lo, hi) if time == "log" else (None, None)))
    t = _moments(table, time)
    keep = np.isfinite(t)
    if lo is not None:
        keep &= t >= lo
    if hi is not None:
        keep &= t < hi
    import pyarrow as pa

    table = table.filter(pa.array(keep))
    t = t[keep]
    run_id = new_run_id()
    if table.num_rows == 0 and (lo is None or hi is None):
        logger.info("endpoint %s: no prediction in the span; nothing to monitor", endpoint)
        alerts = _alerts(workspace, endpoint, evaluate_alerts, post)
        now = datetime.now(UTC).replace(tzinfo=None)
        empty_start = _naive(lo) if lo is not None else now
        return MonitorRun(
            endpoint, run_id, empty_start, _naive(hi) if hi is not None else now, width,
            threshold, (), (), (), alerts,
        )  # fmt: skip
    span = _span(t, lo, hi, width.total_seconds())
    table = table.append_column("_window", pa.array(span.index(t)))
    points: list[Point] = []
    windows: list[GroupWindow] = []
    labels_of: dict[tuple[int, str | None], str] = {}
    thresholds: dict[str, float] = {}
    groups = _group_tables(table, by == "arm")
    for group, records in groups.items():
        labels_of[(group.version, group.arm)] = group.label()
        thresholds[group.label()] = _threshold(workspace, group, threshold)
        group_points, group_windows = _group(
            workspace, endpoint, group, records, span, thresholds[group.label()], test
        )
        points += group_points
        windows += group_windows
    points += _realized(workspace, endpoint, span, time, thresholds, by, labels_of)
    if store:
        store_points(workspace, points, run_id)
    alerts = _alerts(workspace, endpoint, evaluate_alerts and store, post)
    first, last = span.bounds(0)[0], span.bounds(span.count - 1)[1]
    return MonitorRun(
        endpoint=endpoint,
        run_id=run_id,
        start=first,
        end=last,
        window=width,
        threshold=None if threshold is None else float(threshold),
        groups=tuple(labels_of.values()),
        points=tuple(p if p.run_id else _stamped(p, run_id) for p in points),
        windows=tuple(windows),
        alerts=alerts,
        thresholds=thresholds,
    )


def _threshold(workspace: Workspace, group: Any, given: float | None) -> float:
    """The threshold a group is measured at: the run's, else its version's decision threshold."""
    if given is not None:
        return float(given)
    from shipyard.monitoring.thresholds import decision_threshold

    return decision_threshold(workspace, group.model, group.version)


def _stamped(point: Point, run_id: str) -> Point:
    from dataclasses import replace

    return replace(point, run_id=run_id)


def _group_tables(table: pa.Table, by_arm: bool) -> dict[Any, pa.Table]:
    from shipyard.monitoring.reference import _groups

    return _groups(table, by_arm)


def _alerts(workspace: Workspace, endpoint: str, evaluate: bool, post: bool) -> tuple[Any, ...]:
    if not evaluate:
        return ()
    from shipyard.monitoring.alerts import evaluate_rules

    return tuple(evaluate_rules(workspace, endpoint, post=post))


def _group(
    workspace: Workspace,
    endpoint: str,
    group: Any,
    records: pa.Table,
    span: _Span,
    threshold: float,
    test: DatasetDriftTest,
) -> tuple[list[Point], list[GroupWindow]]:
    """One version's (or arm's) volume, scores, drift and estimated performance per window."""
    import pyarrow.compute as pc

    from shipyard.monitoring.reference import (
        _input_names,
        _profile,
        load_reference_profile,
        load_reference_scores,
    )

    label = group.label()
    reference = load_reference_profile(workspace, group.model, group.version)
    names = _input_names(workspace, group.model, group.version)
    index = np.asarray(records.column("_window").to_numpy(), dtype=np.int64)
    scores, owner = _row_scores(records)
    row_window = index[owner]
    points: list[Point] = []
    windows: list[GroupWindow] = []

    def point(metric: str, k: int, value: float | None, **extra: Any) -> Point:
        first, last = span.bounds(k)
        return Point(endpoint, label, metric, first, last, value, **extra)

    for k in range(span.count):
        chosen = records.filter(pc.equal(records.column("_window"), k))
        current = _profile(reference, chosen, names)
        drift = test.compare(reference, current)
        first, last = span.bounds(k)
        windows.append(GroupWindow(label, first, last, chosen.num_rows, drift, reference, current))
        window_scores = scores[row_window == k]
        n = int(window_scores.size)
        points.append(point("records", k, float(chosen.num_rows), n=n))
        points.append(point("prediction.mean", k, float(window_scores.mean()) if n else None, n=n))
        rate = float((window_scores >= threshold).mean()) if n else None
        points.append(point("alert_rate", k, rate, n=n))
        points += [point(m, k, v, n=drift.n_current) for m, v in _drift_values(drift)]
    try:
        from shipyard.monitoring.estimation import ConfidenceBasedEstimator

        ref_scores, ref_labels = load_reference_scores(workspace, group.model, group.version)
        estimator = ConfidenceBasedEstimator(threshold=threshold).fit(ref_scores, ref_labels)
    except Exception as exc:  # no labels in the reference, too few positives ...
        logger.warning("%s: no performance estimate (%s: %s)", label, type(exc).__name__, exc)
        return points, windows
    if scores.size:
        keys = np.array([str(k) for k in row_window], dtype=object)
        report = estimator.estimate(scores, window=keys)
        for estimated in report.windows:
            k = int(estimated.window)
            for name, metric in estimated.metrics.items():
                if name == "alert_rate":
                    continue  # observed, already a point
                points.append(
                    point(
                        f"estimated.{name}", k, metric.value,
                        low=metric.low, high=metric.high, n=estimated.n,
                    )
                )  # fmt: skip
    return points, windows


def _drift_values(drift: DriftReport) -> list[tuple[str, float | None]]:
    """(metric, value) of a window's drift: verdict, columns drifted, each column's distance
    and adjusted p-value."""
    verdict = {Verdict.DRIFT: 1.0, Verdict.NO_DRIFT: 0.0}.get(drift.verdict)
    out: list[tuple[str, float | None]] = [
        ("drift.verdict", verdict),
        ("drift.columns_drifted", None if verdict is None else float(len(drift.drifted))),
    ]
    for column in drift.columns:
        out.append((f"drift.distance.{column.column}", column.distance.statistic))
        out.append((f"drift.p_value.{column.column}", column.adjusted_p_value))
    return out


def _realized(
    workspace: Workspace,
    endpoint: str,
    span: _Span,
    time: str,
    thresholds: dict[str, float],
    by: str,
    labels_of: dict[tuple[int, str | None], str],
) -> list[Point]:
    """The share labelled and the realized metrics of every group and window with labels."""
    from shipyard.monitoring.labels import labelled_predictions
    from shipyard.monitoring.performance import RealizedPerformance

    first = span.first
    last = span.first + span.count * span.width
    frame = labelled_predictions(workspace, endpoint, first, last, time=time)
    frame = frame[frame["time"].notna() & frame["score"].notna()]
    if frame.empty:
        return []
    t = frame["time"].to_numpy(dtype=float)
    index = span.index(t)
    versions = frame["version"].to_numpy(dtype=object)
    arms = frame["arm"].to_numpy(dtype=object) if by == "arm" else np.full(len(frame), None)
    labelled = frame["label"].notna().to_numpy()
    points: list[Point] = []
    for (version, arm), label in labels_of.items():
        engine = RealizedPerformance(threshold=thresholds[label])
        mine = (versions == version) & np.array([a == arm for a in arms], dtype=bool)
        for k in np.unique(index[mine]).tolist():
            rows = mine & (index == k)
            first_k, last_k = span.bounds(int(k))
            share = float(labelled[rows].mean())
            points.append(
                Point(endpoint, label, "labelled", first_k, last_k, share, n=int(rows.sum()))
            )
        rows = mine & labelled
        if not rows.any():
            continue
        days = (np.floor(t[rows] / 86_400.0)).astype(np.int64)
        report = engine.compute(
            frame["score"].to_numpy(dtype=float)[rows],
            frame["label"].to_numpy(dtype=np.int64, na_value=0)[rows],
            window=np.array([str(k) for k in index[rows]], dtype=object),
            day=days,
        )
        for realized in report.windows:
            first_k, last_k = span.bounds(int(realized.window))
            for name, metric in realized.metrics.items():
                points.append(
                    Point(
                        endpoint, label, f"realized.{name}", first_k, last_k, metric.value,
                        low=metric.low, high=metric.high, n=realized.n,
                    )
                )  # fmt: skip
    return points
