"""Alert rules: a threshold on a monitored quantity over N consecutive windows.

A rule watches the points ``shipyard monitor run`` stores (see
:mod:`shipyard.monitoring.points`) of one endpoint: a metric name, or a prefix ending in
``*`` that matches each column separately (``drift.distance.*``), compared with a threshold
(``>``, ``>=``, ``<``, ``<=``). When the newest ``windows`` windows of one (group, metric)
series are consecutive (each starts where the previous ended) and all breach, an alert is
raised; a window with too little data (a NULL value) never breaches, so it breaks the
streak, as does a missing window. An alert stays open, updated with each newer breaching
window, until the newest window no longer breaches (a NULL newest window included): it is
then resolved. A person may acknowledge an open alert (who, when, a note); it still
resolves on its own. Removing a rule, or replacing it so that it no longer watches a
series, resolves its alerts; a disabled rule leaves them as they are.

Every run of ``shipyard monitor run`` evaluates the endpoint's rules; ``evaluate_rules``
does it on demand. Evaluating again on the same points changes nothing and posts nothing.
Rules and alerts are stored in the workspace database (``shipyard_alert_rules``,
``shipyard_alerts``). An alert is stored first, then posted, if its rule has a webhook, as
JSON (the alert's fields plus ``"event": "raised"`` or ``"resolved"``) with
``Authorization: Bearer <monitor_webhook_token>`` when that setting is set: 3 tries, each
within ``monitor_webhook_timeout_s`` (5 s by default), a 4xx answer not retried. A failed
delivery is recorded on the alert (``delivery``) and logged; it never fails the evaluation,
and a webhook that failed is not tried again for the other alerts of that evaluation.

Example::

    from shipyard.monitoring.alerts import (
        AlertRule, acknowledge, add_rule, evaluate_rules, list_alerts)

    add_rule(ws, AlertRule("column-drift", "fraud", "drift.distance.*", ">", 0.1, windows=3,
                           webhook="https://hooks.example.com/shipyard"))
    evaluate_rules(ws, "fraud")            # run_monitor does this after each run
    for alert in list_alerts(ws, "fraud"):  # open and acknowledged ones
        print(alert.id, alert.message)
    # 1 fraud v3: drift.distance.TX_AMOUNT > 0.1 for 3 consecutive windows
    #   (latest 0.31, 2026-11-18 .. 2026-11-21)
    acknowledge(ws, 1, note="new merchant onboarded; retraining")

From the shell: ``shipyard monitor alerts add fraud column-drift --metric 'drift.distance.*'
--op '>' --threshold 0.1 --windows 3``, then ``shipyard monitor alerts list`` and
``shipyard monitor alerts ack 1 --note ...``.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shipyard.errors import invalid_parameter
from shipyard.monitoring.points import Point, load_points

if TYPE_CHECKING:
    from shipyard.workspace import Workspace

logger = logging.getLogger(__name__)

WEBHOOK_TRIES = 3
# seconds to wait before the 2nd and the 3rd try
WEBHOOK_BACKOFF_S = (0.25, 1.0)
# breaching windows kept on one alert (a long-open alert keeps its newest ones)
MAX_BREACHES = 100
MAX_WINDOWS = 1000


class AlertOp(StrEnum):
    """How a value is compared with a rule's threshold to breach it."""

    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="

    def breached(self, value: float | None, threshold: float) -> bool:
        """Whether ``value`` breaches ``threshold``; None (insufficient data) never does."""
        if value is None:
            return False
        if self is AlertOp.GT:
            return value > threshold
        if self is AlertOp.GE:
            return value >= threshold
        if self is AlertOp.LT:
            return value < threshold
        return value <= threshold


class AlertStatus(StrEnum):
    """Where an alert stands: open, acknowledged by a person, or resolved."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


ACTIVE = (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED)


class AlertEvent(StrEnum):
    """What a webhook post announces."""

    RAISED = "raised"
    RESOLVED = "resolved"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class AlertRule:
    """A threshold on one endpoint's metric (or ``prefix.*``) over N consecutive windows.

    Example: ``AlertRule("auc-low", "fraud", "estimated.auc", "<", 0.8, windows=2)``.
    """

    name: str
    endpoint: str
    metric: str
    op: AlertOp | str
    threshold: float
    windows: int = 1
    group: str | None = None
    webhook: str | None = None
    description: str = ""
    enabled: bool = True

    def __post_init__(self) -> None:
        owner = "AlertRule"
        for field_name in ("name", "endpoint"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not value.strip() or len(value) > 200:
                raise invalid_parameter(field_name, owner, "a non-empty str of <= 200 chars", value)
        metric = self.metric
        if not isinstance(metric, str) or not metric.strip() or metric == "*" or "*" in metric[:-1]:
            raise invalid_parameter(
                "metric",
                owner,
                "a metric name, or a prefix ending in '*' such as 'drift.distance.*'",
                metric,
            )
        try:
            op = AlertOp(self.op)
        except ValueError:
            choices = ", ".join(repr(o.value) for o in AlertOp)
            raise invalid_parameter("op", owner, f"one of {choices}", self.op) from None
        object.__setattr__(self, "op", op)
        if not _is_number(self.threshold) or not math.isfinite(self.threshold):
            raise invalid_parameter("threshold", owner, "a finite number", self.threshold)
        object.__setattr__(self, "threshold", float(self.threshold))
        windows = self.windows
        if not isinstance(windows, int) or isinstance(windows, bool) or windows < 1:
            raise invalid_parameter("windows", owner, f"an int in [1, {MAX_WINDOWS}]", windows)
        if windows > MAX_WINDOWS:
            raise invalid_parameter("windows", owner, f"an int in [1, {MAX_WINDOWS}]", self.windows)
        if self.group is not None and (not isinstance(self.group, str) or not self.group.strip()):
            expected = "None (every group) or a group name"
            raise invalid_parameter("group", owner, expected, self.group)
        if self.webhook is not None:
            parts = urlsplit(self.webhook) if isinstance(self.webhook, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                raise invalid_parameter(
                    "webhook", owner, "None or an http:// or https:// URL", self.webhook
                )
        if not isinstance(self.description, str):
            raise invalid_parameter("description", owner, "a str", self.description)
        if not isinstance(self.enabled, bool):
            raise invalid_parameter("enabled", owner, "a bool", self.enabled)

    @property
    def comparison(self) -> AlertOp:
        """``op`` as an :class:`AlertOp` (validated at construction)."""
        return AlertOp(self.op)

    def matches(self, metric: str) -> bool:
        """Whether the rule watches ``metric`` (exact name, or under the ``*`` prefix)."""
        if self.metric.endswith("*"):
            return metric.startswith(self.metric[:-1])
        return metric == self.metric

    def describe(self) -> str:
        """``drift.distance.* > 0.1 for 3 consecutive windows``."""
        return f"{self.metric} {self.op} {self.threshold:g} for {_windows(self.windows)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable."""
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "metric": self.metric,
            "op": str(self.op),
            "threshold": self.threshold,
            "windows": self.windows,
            "group": self.group,
            "webhook": self.webhook,
            "description": self.description,
            "enabled": self.enabled,
        }


@dataclass(frozen=True)
class Breach:
    """One window whose value breached the rule."""

    window_start: datetime
    window_end: datetime
    value: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (times as ISO text)."""
        return {
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "value": self.value,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Breach:
        """The breach :meth:`to_dict` wrote."""
        return cls(
            datetime.fromisoformat(data["window_start"]),
            datetime.fromisoformat(data["window_end"]),
            float(data["value"]),
        )


@dataclass(frozen=True)
class Alert:
    """One series (group, metric) of an endpoint that breached a rule, and its history."""

    id: int
    rule: str
    endpoint: str
    group: str
    metric: str
    op: AlertOp
    threshold: float
    windows: int
    status: AlertStatus
    breaches: tuple[Breach, ...]
    first_window_start: datetime
    last_window_end: datetime
    raised_at: datetime
    updated_at: datetime
    resolved_at: datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    note: str = ""
    delivery: str | None = None
    """Webhook delivery of the latest event: ``delivered (HTTP 200)``, ``failed after 3
    tries: Connection refused``; None when the rule has no webhook."""

    @property
    def latest(self) -> float:
        """The value of the newest breaching window."""
        return self.breaches[-1].value

    @property
    def message(self) -> str:
        """One line for a person: group, rule, how long, latest value and the time span."""
        span = _span(self.first_window_start, self.last_window_end)
        return (
            f"{self.group}: {self.metric} {self.op} {self.threshold:g} for "
            f"{_windows(len(self.breaches))} (latest {self.latest:.3g}, {span})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (times as ISO text), with the message."""

        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {
            "id": self.id,
            "rule": self.rule,
            "endpoint": self.endpoint,
            "group": self.group,
            "metric": self.metric,
            "op": str(self.op),
            "threshold": self.threshold,
            "windows": self.windows,
            "status": str(self.status),
            "message": self.message,
            "latest": self.latest,
            "breaches": [b.to_dict() for b in self.breaches],
            "first_window_start": iso(self.first_window_start),
            "last_window_end": iso(self.last_window_end),
            "raised_at": iso(self.raised_at),
            "updated_at": iso(self.updated_at),
            "resolved_at": iso(self.resolved_at),
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": iso(self.acknowledged_at),
            "note": self.note,
            "delivery": self.delivery,
        }


def _windows(n: int) -> str:
    return "1 window" if n == 1 else f"{n} consecutive windows"


def _span(start: datetime, end: datetime) -> str:
    midnight = all(m.time() == datetime.min.time() for m in (start, end))
    shape = "%Y-%m-%d" if midnight else "%Y-%m-%d %H:%M"
    return f"{start.strftime(shape)} .. {end.strftime(shape)}"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _actor(actor: str | None) -> str:
    from shipyard.registry.models import current_user

    return actor or current_user()


# -- rules ------------------------------------------------------------------------------------


def add_rule(
    workspace: Workspace, rule: AlertRule, *, replace: bool = False, actor: str | None = None
) -> AlertRule:
    """Store ``rule`` for its endpoint; a rule of the same name is refused unless ``replace``.

    Replacing keeps the rule's open alerts (the next evaluation applies the new threshold).
    """
    from sqlalchemy import and_, insert, select, update

    from shipyard.tables import alert_rules as table

    if not isinstance(rule, AlertRule):
        raise invalid_parameter("rule", "add_rule", "an AlertRule", rule)
    row = {**rule.to_dict(), "op": str(rule.op), "actor": _actor(actor), "created_at": _now()}
    where = and_(table.c.endpoint == rule.endpoint, table.c.name == rule.name)
    with workspace.engine.begin() as con:
        exists = con.execute(select(table.c.id).where(where)).first() is not None
        if exists and not replace:
            raise invalid_parameter(
                "name",
                "add_rule",
                f"a name not yet used by a rule of endpoint {rule.endpoint!r} "
                "(or pass replace=True)",
                rule.name,
            )
        if exists:
            con.execute(update(table).where(where).values(**row))
        else:
            con.execute(insert(table).values(**row))
    return rule


def list_rules(workspace: Workspace, endpoint: str | None = None) -> list[AlertRule]:
    """The stored rules (of ``endpoint``, or of every endpoint), by endpoint and name."""
    from sqlalchemy import select

    from shipyard.tables import alert_rules as table

    query = select(table).order_by(table.c.endpoint, table.c.name)
    if endpoint is not None:
        query = query.where(table.c.endpoint == endpoint)
    with workspace.engine.connect() as con:
        rows = con.execute(query).mappings().all()
    return [
        AlertRule(
            name=row["name"],
            endpoint=row["endpoint"],
            metric=row["metric"],
            op=row["op"],
            threshold=row["threshold"],
            windows=row["windows"],
            group=row["group"],
            webhook=row["webhook"],
            description=row["description"],
            enabled=bool(row["enabled"]),
        )
        for row in rows
    ]


def remove_rule(workspace: Workspace, endpoint: str, name: str) -> AlertRule:
    """Delete a rule and resolve its open alerts (noted 'rule removed'; nothing is posted)."""
    from sqlalchemy import and_, delete, update

    from shipyard.tables import alert_rules as table
    from shipyard.tables import alerts

    rules = list_rules(workspace, endpoint)
    found = [r for r in rules if r.name == name]
    if not found:
        known = ", ".join(repr(r.name) for r in rules) or "none"
        raise invalid_parameter(
            "name", "remove_rule", f"a rule of endpoint {endpoint!r} (known: {known})", name
        )
    now = _now()
    with workspace.engine.begin() as con:
        con.execute(delete(table).where(and_(table.c.endpoint == endpoint, table.c.name == name)))
        con.execute(
            update(alerts)
            .where(
                and_(
                    alerts.c.endpoint == endpoint,
                    alerts.c.rule == name,
                    alerts.c.active_key.is_not(None),
                )
            )
            .values(**_resolution(now, note="rule removed"))
        )
    return found[0]


# -- evaluation -------------------------------------------------------------------------------


def _resolution(now: datetime, note: str | None = None) -> dict[str, Any]:
    """The column values of a resolved alert; ``note`` replaces none a person wrote."""
    from sqlalchemy import case

    from shipyard.tables import alerts as table

    values: dict[str, Any] = {
        "status": str(AlertStatus.RESOLVED),
        "active_key": None,
        "resolved_at": now,
        "updated_at": now,
    }
    if note is not None:
        values["note"] = case((table.c.note == "", note), else_=table.c.note)
    return values


def _streak(points: Sequence[Point], rule: AlertRule) -> tuple[Point, list[Point]]:
    """The newest window and the consecutive breaching windows that end with it."""
    newest = max(points, key=lambda p: (p.window_end, p.window_start))
    # of two windows ending at the same time, the shorter (later start) is the neighbour
    by_end: dict[datetime, Point] = {}
    for point in sorted(points, key=lambda p: (p.window_end, p.window_start)):
        by_end[point.window_end] = point
    streak: list[Point] = []
    current: Point | None = newest
    while current is not None and rule.comparison.breached(current.value, rule.threshold):
        streak.append(current)
        current = by_end.get(current.window_start)
    streak.reverse()
    return newest, streak


def _key(endpoint: str, rule: str, group: str, metric: str) -> str:
    return json.dumps([endpoint, rule, group, metric])


def _breaches(points: Iterable[Point]) -> list[dict[str, Any]]:
    return [
        Breach(p.window_start, p.window_end, float(p.value)).to_dict()
        for p in points
        if p.value is not None
    ]


def _evaluate_series(
    workspace: Workspace, rule: AlertRule, group: str, metric: str, points: Sequence[Point]
) -> tuple[int, AlertEvent] | None:
    """Raise, update or resolve the series' alert; the event to post, if any."""
    from sqlalchemy import and_, insert, select, update
    from sqlalchemy.exc import IntegrityError

    from shipyard.tables import alerts as table

    newest, streak = _streak(points, rule)
    key = _key(rule.endpoint, rule.name, group, metric)
    now = _now()
    rule_fields = {
        "op": str(rule.op),
        "threshold": rule.threshold,
        "windows": rule.windows,
        "webhook": rule.webhook,
    }
    try:
        with workspace.engine.begin() as con:
            active = con.execute(select(table).where(table.c.active_key == key)).mappings().first()
            if active is None:
                if len(streak) < rule.windows:
                    return None
                result = con.execute(
                    insert(table).values(
                        endpoint=rule.endpoint,
                        rule=rule.name,
                        group=group,
                        metric=metric,
                        status=str(AlertStatus.OPEN),
                        active_key=key,
                        breaches=_breaches(streak)[-MAX_BREACHES:],
                        first_window_start=streak[0].window_start,
                        last_window_end=newest.window_end,
                        raised_at=now,
                        updated_at=now,
                        note="",
                        delivery=None,
                        **rule_fields,
                    )
                )
                assert result.inserted_primary_key is not None
                return int(result.inserted_primary_key[0]), AlertEvent.RAISED
            # only while still active: of two evaluations at once, one resolves and posts
            still_active = and_(table.c.id == active["id"], table.c.active_key == key)
            if not streak:
                done = con.execute(update(table).where(still_active).values(**_resolution(now)))
                return (int(active["id"]), AlertEvent.RESOLVED) if done.rowcount else None
            # still breaching: earlier breaches kept, the streak's windows (re)written
            kept = [
                b
                for b in active["breaches"]
                if datetime.fromisoformat(b["window_end"]) <= streak[0].window_start
            ]
            ours = [p for p in streak if p.window_start >= active["first_window_start"]]
            breaches = (kept + _breaches(ours))[-MAX_BREACHES:]
            changed = (
                breaches != list(active["breaches"])
                or newest.window_end != active["last_window_end"]
                or any(active[name] != value for name, value in rule_fields.items())
            )
            if changed:
                con.execute(
                    update(table)
                    .where(still_active)
                    .values(
                        breaches=breaches,
                        last_window_end=newest.window_end,
                        updated_at=now,
                        **rule_fields,
                    )
                )
            return None
    except IntegrityError:
        # a concurrent evaluation raised this series' alert first: it posts it, not us
        return None


def _retire(workspace: Workspace, rule: AlertRule) -> list[int]:
    """Resolve the rule's active alerts on series it no longer watches (a replaced rule)."""
    from sqlalchemy import and_, select, update

    from shipyard.tables import alerts as table

    mine = and_(
        table.c.endpoint == rule.endpoint,
        table.c.rule == rule.name,
        table.c.active_key.is_not(None),
    )
    retired: list[int] = []
    now = _now()
    with workspace.engine.begin() as con:
        for row in con.execute(select(table.c.id, table.c.group, table.c.metric).where(mine)):
            watched = rule.matches(row.metric) and rule.group in (None, row.group)
            if not watched:
                retired.append(int(row.id))
        if retired:
            con.execute(
                update(table)
                .where(and_(mine, table.c.id.in_(retired)))
                .values(**_resolution(now, note="rule no longer watches this series"))
            )
    return retired


def evaluate_rules(workspace: Workspace, endpoint: str, *, post: bool = True) -> list[Alert]:
    """Apply ``endpoint``'s enabled rules to its stored points; the alerts raised or still
    open or acknowledged, oldest first.

    Alerts raised or resolved are stored, then posted to their rule's webhook (``post``).
    """
    rules = [rule for rule in list_rules(workspace, endpoint) if rule.enabled]
    events: list[tuple[int, AlertEvent]] = []
    for rule in rules:
        series: dict[tuple[str, str], list[Point]] = {}
        for point in load_points(workspace, endpoint, metric=rule.metric, group=rule.group):
            if rule.matches(point.metric):  # load_points' prefix is a LIKE pattern
                series.setdefault((point.group, point.metric), []).append(point)
        for (group, metric), points in sorted(series.items()):
            outcome = _evaluate_series(workspace, rule, group, metric, points)
            if outcome is not None:
                events.append(outcome)
        events.extend((alert_id, AlertEvent.RESOLVED) for alert_id in _retire(workspace, rule))
    failed: dict[str, str] = {}  # webhook -> why: one dead receiver costs its tries once
    for alert_id, event in events:
        _deliver(workspace, alert_id, event, post=post, failed=failed)
    names = {rule.name for rule in rules}
    return [a for a in list_alerts(workspace, endpoint) if a.rule in names]


# -- webhook ----------------------------------------------------------------------------------


def _deliver(
    workspace: Workspace, alert_id: int, event: AlertEvent, *, post: bool, failed: dict[str, str]
) -> None:
    from sqlalchemy import select, update

    from shipyard.tables import alerts as table

    with workspace.engine.connect() as con:
        row = con.execute(select(table).where(table.c.id == alert_id)).mappings().first()
    if row is None:
        return
    logger.info(
        "alert %s %s: %s",
        alert_id,
        event,
        _alert(row).message,
        extra={"endpoint": row["endpoint"], "alert_id": alert_id},
    )
    if row["webhook"] is None:
        return
    url = row["webhook"]
    if not post:
        status = "not posted (evaluated with post=False)"
    elif url in failed:
        status = f"not posted: {failed[url]}"
    else:
        payload = {**_alert(row).to_dict(), "event": str(event)}
        settings = workspace.settings
        delivered, status = post_webhook(
            row["webhook"],
            payload,
            token=settings.monitor_webhook_token,
            timeout_s=settings.monitor_webhook_timeout_s,
        )
        if status.startswith("failed"):
            failed[url] = f"the webhook {status} for alert {alert_id} in this evaluation"
        if not delivered:
            logger.warning(
                "alert %s (%s) of %s: webhook to %s %s",
                alert_id,
                event,
                row["endpoint"],
                urlsplit(row["webhook"]).hostname,
                status,
                extra={"endpoint": row["endpoint"], "alert_id": alert_id},
            )
    with workspace.engine.begin() as con:
        con.execute(update(table).where(table.c.id == alert_id).values(delivery=status))


def post_webhook(
    url: str, payload: dict[str, Any], *, token: str | None = None, timeout_s: float = 5.0
) -> tuple[bool, str]:
    """POST ``payload`` as JSON to ``url`` (3 tries on errors and 5xx answers); returns
    (delivered, status) such as ``(True, "delivered (HTTP 200)")``. Never raises."""
    data = json.dumps(payload).encode("utf-8")
    headers = {"Content-Type": "application/json", "User-Agent": "shipyard-alerts"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    reason = ""
    for attempt in range(WEBHOOK_TRIES):
        if attempt:
            time.sleep(WEBHOOK_BACKOFF_S[attempt - 1])
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return True, f"delivered (HTTP {response.status})"
        except urllib.error.HTTPError as exc:
            exc.close()
            reason = f"HTTP {exc.code}"
            if exc.code < 500 and exc.code not in (408, 429):
                return False, f"refused ({reason})"
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            cause = getattr(exc, "reason", exc)
            reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
    return False, f"failed after {WEBHOOK_TRIES} tries: {reason}"


# -- alerts -----------------------------------------------------------------------------------


def _alert(row: Any) -> Alert:
    return Alert(
        id=int(row["id"]),
        rule=row["rule"],
        endpoint=row["endpoint"],
        group=row["group"],
        metric=row["metric"],
        op=AlertOp(row["op"]),
        threshold=float(row["threshold"]),
        windows=int(row["windows"]),
        status=AlertStatus(row["status"]),
        breaches=tuple(Breach.from_dict(b) for b in row["breaches"]),
        first_window_start=row["first_window_start"],
        last_window_end=row["last_window_end"],
        raised_at=row["raised_at"],
        updated_at=row["updated_at"],
        resolved_at=row["resolved_at"],
        acknowledged_by=row["acknowledged_by"],
        acknowledged_at=row["acknowledged_at"],
        note=row["note"],
        delivery=row["delivery"],
    )


def _statuses(status: AlertStatus | str | Iterable[AlertStatus | str] | None) -> list[str]:
    if status is None or status == "all":
        return [str(s) for s in AlertStatus]
    wanted = [status] if isinstance(status, str) else list(status)
    try:
        return [str(AlertStatus(s)) for s in wanted]
    except ValueError:
        choices = ", ".join(repr(s.value) for s in AlertStatus)
        expected = f"None or 'all' (every alert), or {choices}"
        raise invalid_parameter("status", "list_alerts", expected, status) from None


def list_alerts(
    workspace: Workspace,
    endpoint: str | None = None,
    status: AlertStatus | str | Iterable[AlertStatus | str] | None = ACTIVE,
) -> list[Alert]:
    """Stored alerts, oldest first: open and acknowledged ones by default, every one with
    ``status=None`` or ``"all"``; of ``endpoint`` only when given."""
    from sqlalchemy import select

    from shipyard.tables import alerts as table

    query = select(table).where(table.c.status.in_(_statuses(status))).order_by(table.c.id)
    if endpoint is not None:
        query = query.where(table.c.endpoint == endpoint)
    with workspace.engine.connect() as con:
        rows = con.execute(query).mappings().all()
    return [_alert(row) for row in rows]


def get_alert(workspace: Workspace, alert_id: int) -> Alert:
    """The stored alert of that id; a clear error when there is none."""
    from sqlalchemy import select

    from shipyard.tables import alerts as table

    if not isinstance(alert_id, int) or isinstance(alert_id, bool):
        raise invalid_parameter("alert_id", "get_alert", "an int (an alert's id)", alert_id)
    with workspace.engine.connect() as con:
        row = con.execute(select(table).where(table.c.id == alert_id)).mappings().first()
    if row is None:
        raise invalid_parameter(
            "alert_id", "get_alert", "the id of a stored alert (see list_alerts)", alert_id
        )
    return _alert(row)


def acknowledge(
    workspace: Workspace, alert_id: int, *, actor: str | None = None, note: str = ""
) -> Alert:
    """Record that a person has seen an open alert (who, when, a note); returns it.

    The alert still resolves on its own when its metric is back within the threshold.
    """
    from sqlalchemy import update

    from shipyard.tables import alerts as table

    get_alert(workspace, alert_id)  # an unknown id is refused with its own message
    if not isinstance(note, str):
        raise invalid_parameter("note", "acknowledge", "a str", note)
    now = _now()
    with workspace.engine.begin() as con:
        done = con.execute(
            update(table)
            .where(table.c.id == alert_id, table.c.active_key.is_not(None))
            .values(
                status=str(AlertStatus.ACKNOWLEDGED),
                acknowledged_by=_actor(actor),
                acknowledged_at=now,
                note=note,
                updated_at=now,
            )
        )
    alert = get_alert(workspace, alert_id)
    if done.rowcount == 0:
        raise invalid_parameter(
            "alert_id",
            "acknowledge",
            f"the id of an open alert (alert {alert_id} was resolved at {alert.resolved_at})",
            alert_id,
        )
    return alert
