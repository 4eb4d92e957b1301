"""When pipelines run: a schedule, an alert on an endpoint, or a command; and the watch loop.

A trigger answers one question, "should the pipeline run now?", from the stored runs:

* :class:`Schedule` — due when the pipeline's last run started more than ``every`` ago, or
  it never ran;
* :class:`OnAlert` — due when an open alert on the endpoint (optionally of given rules,
  :func:`shipyard.monitoring.alerts.list_alerts`) was raised after the last run started;
* :class:`Command` — always due when asked.

:func:`due` returns the trigger that fires, as the JSON stored with the run. :func:`watch`
polls: it first resumes waiting runs whose retry time passed (and takes over runs whose
process died), then starts the pipelines that are due; a pipeline that already has an
unfinished run is skipped (and logged), never run twice.

Example::

    spec = WatchSpec(load_pipeline("my_project.pipelines:retrain"),
                     (Schedule("7D"), OnAlert("fraud")))
    watch(workspace, [spec], poll_s=60)
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shipyard.errors import PipelineBusyError, PipelineError, ShipyardError
from shipyard.pipelines.graph import Pipeline
from shipyard.pipelines.runs import (
    DEFAULT_STALE_S,
    PipelineRun,
    RunStatus,
    active_run,
    list_runs,
    resume_run,
    run_pipeline,
    stale_reason,
)

if TYPE_CHECKING:
    from shipyard.workspace import Workspace

logger = logging.getLogger(__name__)

_UNITS = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\w*\s*", re.IGNORECASE)


def parse_duration(
    value: timedelta | str, name: str = "every", owner: str = "Schedule"
) -> timedelta:
    """A positive timedelta from a timedelta or text such as ``"7D"``, ``"12h"``, ``"30 min"``,
    ``"2 weeks"`` (units s, m, h, d, w)."""
    if isinstance(value, timedelta):
        length = value
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        length = float(match.group(1)) * _UNITS[match.group(2).lower()]
    else:
        length = timedelta(0)
        if not isinstance(value, str):
            raise PipelineError(
                f"The {name!r} parameter of {owner} must be a timedelta or text such as '7D', "
                f"'12h', '30m'. Got {value!r} instead."
            )
    if length <= timedelta(0):
        raise PipelineError(
            f"The {name!r} parameter of {owner} must be a positive duration such as '7D', "
            f"'12h', '30m' (units s, m, h, d, w). Got {value!r} instead."
        )
    return length


def _describe(length: timedelta) -> str:
    seconds = length.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} s"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Schedule:
    """Due when the pipeline's last run started more than ``every`` ago, or it never ran."""

    every: timedelta | str

    def __post_init__(self) -> None:
        object.__setattr__(self, "every", parse_duration(self.every))

    @property
    def length(self) -> timedelta:
        """The period as a timedelta."""
        return parse_duration(self.every)

    def fires(
        self, workspace: Workspace, last: PipelineRun | None, now: datetime
    ) -> dict[str, Any] | None:
        """The trigger as JSON when due, else None."""
        base = {
            "kind": "schedule",
            "every": _describe(self.length),
            "every_s": self.length.total_seconds(),
        }
        if last is None:
            return base | {"reason": "the pipeline never ran"}
        age = now - last.started_at
        if age < self.length:
            return None
        return base | {
            "reason": f"the last run started {_describe_age(age)} ago",
            "last_run": last.run_id,
            "last_started_at": last.started_at.isoformat(),
        }


def _describe_age(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"


@dataclass(frozen=True)
class OnAlert:
    """Due when an open alert on ``endpoint`` (of one of ``rules`` when given) was raised
    after the pipeline's last run started (or the pipeline never ran)."""

    endpoint: str
    rules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.endpoint, str) or not self.endpoint.strip():
            raise PipelineError(
                f"The 'endpoint' parameter of OnAlert must be a non-empty string. "
                f"Got {self.endpoint!r} instead."
            )
        rules = (self.rules,) if isinstance(self.rules, str) else tuple(self.rules)
        object.__setattr__(self, "rules", rules)

    def fires(
        self, workspace: Workspace, last: PipelineRun | None, now: datetime
    ) -> dict[str, Any] | None:
        """The trigger as JSON (naming the alert) when due, else None."""
        from shipyard.monitoring.alerts import list_alerts

        for alert in list_alerts(workspace, self.endpoint, status="open"):
            if self.rules and alert.rule not in self.rules:
                continue
            if last is not None and alert.raised_at <= last.started_at:
                continue
            return {
                "kind": "alert",
                "endpoint": self.endpoint,
                "alert_id": alert.id,
                "rule": alert.rule,
                "message": alert.message,
                "raised_at": alert.raised_at.isoformat(),
                "reason": f"alert {alert.id} ({alert.rule}) on {self.endpoint}: {alert.message}",
            }
        return None


@dataclass(frozen=True)
class Command:
    """Always due: a person (or a script) asked for a run."""

    reason: str = "asked for by a command"

    def fires(
        self, workspace: Workspace, last: PipelineRun | None, now: datetime
    ) -> dict[str, Any] | None:
        """The trigger as JSON; always."""
        return {"kind": "command", "reason": self.reason}


Trigger = Schedule | OnAlert | Command


def due(
    workspace: Workspace,
    pipeline_name: str,
    triggers: Iterable[Trigger],
    *,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """The first of ``triggers`` that fires for the pipeline, as JSON (stored with the run
    it starts), or None when none is due."""
    moment = _now() if now is None else now
    runs = list_runs(workspace, pipeline_name, limit=1)
    last = runs[0] if runs else None
    for trigger in triggers:
        if not isinstance(trigger, Schedule | OnAlert | Command):
            raise PipelineError(
                f"The 'triggers' parameter of due must hold Schedule, OnAlert or Command. "
                f"Got {trigger!r} instead."
            )
        fired = trigger.fires(workspace, last, moment)
        if fired is not None:
            return fired
    return None


@dataclass(frozen=True)
class WatchSpec:
    """A pipeline and the triggers that start it, for :func:`watch`."""

    pipeline: Pipeline
    triggers: tuple[Trigger, ...]

    def __post_init__(self) -> None:
        self.pipeline.validate()
        object.__setattr__(self, "triggers", tuple(self.triggers))
        if not self.triggers:
            raise PipelineError(
                f"The 'triggers' parameter of WatchSpec for {self.pipeline.name!r} must name "
                "at least one trigger (Schedule, OnAlert, Command). Got () instead."
            )


@dataclass(frozen=True)
class WatchEvent:
    """What one poll did for one pipeline: ``action`` is resumed, started, skipped or error."""

    pipeline: str
    action: str
    message: str
    run_id: str | None = None
    status: str | None = None
    trigger: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable."""
        return {
            "pipeline": self.pipeline,
            "action": self.action,
            "message": self.message,
            "run_id": self.run_id,
            "status": self.status,
            "trigger": self.trigger,
        }


def _finished(
    name: str, action: str, run: PipelineRun, trigger: dict[str, Any] | None
) -> WatchEvent:
    detail = f"; {run.error}" if run.error else ""
    if run.wait:
        detail = f"; waiting at {run.wait['step']!r}: {run.wait['reason']}"
    message = f"{action} run {run.run_id}: {run.status}{detail}"
    return WatchEvent(name, action, message, run.run_id, str(run.status), trigger)


def _resume_due(
    workspace: Workspace, spec: WatchSpec, active: PipelineRun, now: datetime, stale_after_s: float
) -> WatchEvent:
    name = spec.pipeline.name
    retry_at = active.retry_at
    if active.status == RunStatus.WAITING and retry_at is not None and retry_at <= now:
        return _finished(name, "resumed", resume_run(workspace, spec.pipeline, active.run_id), None)
    reason = stale_reason(active, stale_after_s)
    if reason is not None:
        resumed = resume_run(workspace, spec.pipeline, active.run_id, stale_after_s=stale_after_s)
        return _finished(name, "resumed", resumed, {"kind": "restart", "reason": reason})
    later = f" until {retry_at:%Y-%m-%d %H:%M:%S} UTC" if retry_at else ""
    message = f"skipped: run {active.run_id} is still {active.status}{later}"
    return WatchEvent(name, "skipped", message, active.run_id, str(active.status))


def poll(
    workspace: Workspace,
    specs: Sequence[WatchSpec],
    *,
    now: datetime | None = None,
    stale_after_s: float = DEFAULT_STALE_S,
) -> list[WatchEvent]:
    """One pass of :func:`watch`: resume what is due to resume, start what is due to start."""
    events: list[WatchEvent] = []
    for spec in specs:
        name = spec.pipeline.name
        moment = _now() if now is None else now
        try:
            active = active_run(workspace, name)
            if active is not None:
                event = _resume_due(workspace, spec, active, moment, stale_after_s)
                if event.action == "skipped" and due(workspace, name, spec.triggers, now=moment):
                    events.append(event)  # a trigger fired while the run is unfinished
                elif event.action != "skipped":
                    events.append(event)
                continue
            trigger = due(workspace, name, spec.triggers, now=moment)
            if trigger is None:
                continue
            run = run_pipeline(workspace, spec.pipeline, trigger=trigger, actor="watch")
            events.append(_finished(name, "started", run, trigger))
        except PipelineBusyError as exc:
            events.append(WatchEvent(name, "skipped", f"skipped: {exc}", exc.run_id))
        except ShipyardError as exc:
            events.append(WatchEvent(name, "error", f"{type(exc).__name__}: {exc}"))
    for event in events:
        level = logging.WARNING if event.action == "error" else logging.INFO
        logger.log(level, "pipeline %s: %s", event.pipeline, event.message)
    return events


def watch(
    workspace: Workspace,
    specs: Sequence[WatchSpec],
    *,
    poll_s: float = 30.0,
    once: bool = False,
    on_event: Callable[[WatchEvent], None] | None = None,
    stale_after_s: float = DEFAULT_STALE_S,
) -> list[WatchEvent]:
    """Poll every ``poll_s`` seconds: resume waiting runs whose retry time passed, take over
    runs whose process died, start pipelines whose triggers are due (a pipeline with an
    unfinished run is skipped). Runs until interrupted; one pass with ``once=True``,
    whose events are returned."""
    if isinstance(poll_s, bool) or not isinstance(poll_s, int | float) or not poll_s > 0:
        raise PipelineError(
            f"The 'poll_s' parameter of watch must be a number of seconds > 0. "
            f"Got {poll_s!r} instead."
        )
    specs = list(specs)
    while True:
        events = poll(workspace, specs, stale_after_s=stale_after_s)
        if on_event is not None:
            for event in events:
                on_event(event)
        if once:
            return events
        time.sleep(poll_s)
