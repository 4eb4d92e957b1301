"""Monitored quantities per window: what ``shipyard monitor run`` computes and alerts read.

A :class:`Point` is one quantity of one endpoint's group (a model version, or an arm of a
version) over one window ``[window_start, window_end)`` (naive datetimes, UTC). Points are
stored in the workspace database (table ``shipyard_monitor_points``), one row per
(endpoint, group, metric, window): computing a window again replaces its points, so a run
can be repeated, and a window whose labels arrived later gains its realized metrics.

Metric names (a column name follows the last dot where there is one):

========================== ===============================================================
``records``                predictions logged in the window
``prediction.mean``        mean score
``alert_rate``             share of scores at or above the serving threshold
``drift.verdict``          1 drift, 0 no drift, NULL insufficient data (whole data set)
``drift.columns_drifted``  number of columns whose verdict is drift
``drift.distance.<col>``   the column's distance (Jensen–Shannon by default)
``drift.p_value.<col>``    the column's p-value after the correction across columns
``estimated.<m>``          CBPE estimate without labels (roc_auc, precision, recall,
                           false_positive_rate)
``realized.<m>``           from joined labels (roc_auc, average_precision, precision,
                           recall, false_positive_rate, ...)
``labelled``               share of the window's predictions that have a label
========================== ===============================================================

``value`` is NULL when the window has too little data for the quantity (never 0);
``low``/``high`` bound it where it has an interval.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    from shipyard.workspace import Workspace


@dataclass(frozen=True)
class Point:
    """One monitored quantity of one group of an endpoint over one window."""

    endpoint: str
    group: str
    metric: str
    window_start: datetime
    window_end: datetime
    value: float | None
    low: float | None = None
    high: float | None = None
    n: int | None = None
    run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (times as ISO text)."""
        return {
            "endpoint": self.endpoint,
            "group": self.group,
            "metric": self.metric,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "run_id": self.run_id,
        }


def new_run_id() -> str:
    """A fresh id for one monitoring run (stored with each of its points)."""
    return uuid.uuid4().hex[:16]


def _naive(moment: datetime, name: str) -> datetime:
    if not isinstance(moment, datetime):
        raise invalid_parameter(name, "Point", "a datetime (naive is UTC)", moment)
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None


def store_points(workspace: Workspace, points: Iterable[Point], run_id: str | None = None) -> int:
    """Store ``points``, replacing any earlier point of the same (endpoint, group, metric,
    window); returns how many were stored. One transaction: all or none.

    Non-finite values are stored as NULL (insufficient data).
    """
    from sqlalchemy import and_, delete, insert

    from shipyard.tables import monitor_points as table

    run = run_id or new_run_id()
    now = datetime.now(UTC).replace(tzinfo=None)
    rows: list[dict[str, Any]] = []
    for point in points:
        start = _naive(point.window_start, "window_start")
        end = _naive(point.window_end, "window_end")
        if end <= start:
            raise invalid_parameter(
                "window_end", "store_points", f"a time after window_start {start}", end
            )
        rows.append(
            {
                "endpoint": point.endpoint,
                "group": point.group,
                "metric": point.metric,
                "window_start": start,
                "window_end": end,
                "value": _finite(point.value),
                "low": _finite(point.low),
                "high": _finite(point.high),
                "n": None if point.n is None else int(point.n),
                "run_id": point.run_id or run,
                "computed_at": now,
            }
        )
    if not rows:
        return 0
    # one DELETE per (endpoint, group, window) with the metrics it replaces, not per point
    replaced: dict[tuple[str, str, datetime, datetime], set[str]] = {}
    for row in rows:
        key = (str(row["endpoint"]), str(row["group"]), row["window_start"], row["window_end"])
        replaced.setdefault(key, set()).add(str(row["metric"]))
    with workspace.engine.begin() as con:
        for (endpoint, group, start, end), metrics in replaced.items():
            con.execute(
                delete(table).where(
                    and_(
                        table.c.endpoint == endpoint,
                        table.c.group == group,
                        table.c.window_start == start,
                        table.c.window_end == end,
                        table.c.metric.in_(sorted(metrics)),
                    )
                )
            )
        con.execute(insert(table), rows)
    return len(rows)


def load_points(
    workspace: Workspace,
    endpoint: str,
    *,
    metric: str | Sequence[str] | None = None,
    group: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Point]:
    """The stored points of ``endpoint``, oldest window first.

    ``metric`` is a name, a list of names, or a prefix ending in ``*``
    (``"drift.distance.*"``); ``since``/``until`` keep windows starting in ``[since, until)``.
    """
    from sqlalchemy import and_, or_, select

    from shipyard.tables import monitor_points as table

    conditions: list[Any] = [table.c.endpoint == endpoint]
    if metric is not None:
        names = [metric] if isinstance(metric, str) else list(metric)
        clauses = [
            table.c.metric.startswith(name[:-1], autoescape=True)
            if name.endswith("*")
            else table.c.metric == name
            for name in names
        ]
        conditions.append(or_(*clauses))
    if group is not None:
        conditions.append(table.c.group == group)
    if since is not None:
        conditions.append(table.c.window_start >= _naive(since, "since"))
    if until is not None:
        conditions.append(table.c.window_start < _naive(until, "until"))
    query = (
        select(table)
        .where(and_(*conditions))
        .order_by(table.c.window_start, table.c.group, table.c.metric)
    )
    with workspace.engine.connect() as con:
        rows = con.execute(query).mappings().all()
    return [
        Point(
            endpoint=row["endpoint"],
            group=row["group"],
            metric=row["metric"],
            window_start=row["window_start"],
            window_end=row["window_end"],
            value=row["value"],
            low=row["low"],
            high=row["high"],
            n=row["n"],
            run_id=row["run_id"],
        )
        for row in rows
    ]


def with_run(points: Iterable[Point], run_id: str) -> list[Point]:
    """``points`` stamped with ``run_id``."""
    return [replace(p, run_id=run_id) for p in points]
