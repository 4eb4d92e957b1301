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

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shipyard.monitoring.points import Point
from shipyard.monitoring.profiles import DatasetProfile
from shipyard.monitoring.report import DriftReport


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
            "groups": list(self.groups),
            "points": [p.to_dict() for p in self.points],
            "alerts": [a.to_dict() for a in self.alerts],
        }
