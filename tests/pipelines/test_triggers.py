"""Triggers (schedule, alert, command) read the stored runs and alerts; the watch loop resumes
waiting and dead runs and never starts a pipeline twice at once."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest

from shipyard.errors import PipelineError
from shipyard.monitoring.alerts import AlertRule, add_rule, evaluate_rules
from shipyard.monitoring.points import Point, store_points
from shipyard.pipelines.graph import Pipeline, Step, StepContext, Wait
from shipyard.pipelines.runs import get_run, list_runs, run_pipeline
from shipyard.pipelines.triggers import (
    Command,
    OnAlert,
    Schedule,
    WatchSpec,
    due,
    parse_duration,
    poll,
    watch,
)
from shipyard.workspace import Workspace


def step(ctx: StepContext) -> Mapping[str, Any]:
    return {"ok": True}


PIPE = Pipeline("nightly", (Step("only", step, cache=False),))


def test_durations() -> None:
    assert parse_duration("7D") == timedelta(days=7)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("30 min") == timedelta(minutes=30)
    assert parse_duration("2 weeks") == timedelta(weeks=2)
    assert parse_duration(timedelta(seconds=5)) == timedelta(seconds=5)
    for bad in ("soon", "0D", "-1h", 7):
        with pytest.raises(PipelineError, match="'every' parameter of Schedule"):
            Schedule(bad)  # type: ignore[arg-type]


def test_schedule_is_due_when_the_last_run_is_older_than_its_period(
    workspace: Workspace,
) -> None:
    weekly = (Schedule("7D"),)
    fired = due(workspace, "nightly", weekly)
    assert fired is not None and fired["kind"] == "schedule"
    assert fired["reason"] == "the pipeline never ran" and fired["every"] == "7 days"

    run = run_pipeline(workspace, PIPE, trigger=fired)
    assert get_run(workspace, run.run_id).trigger == fired
    assert due(workspace, "nightly", weekly) is None
    later = run.started_at + timedelta(days=7, hours=1)
    fired = due(workspace, "nightly", weekly, now=later)
    assert fired is not None and fired["last_run"] == run.run_id
    assert fired["reason"] == "the last run started 7.0 days ago"
    assert due(workspace, "other", weekly) is not None  # per pipeline


def raise_alert(workspace: Workspace, rule: str = "score-drift") -> None:
    add_rule(
        workspace,
        AlertRule(name=rule, endpoint="fraud", metric="drift.score", op=">", threshold=0.1),
    )
    start = datetime(2026, 11, 20)
    store_points(
        workspace, [Point("fraud", "fraud v3", "drift.score", start, start + timedelta(1), 0.4)]
    )
    (alert,) = evaluate_rules(workspace, "fraud", post=False)
    assert alert.rule == rule


def test_an_alert_raised_after_the_last_run_fires_once(workspace: Workspace) -> None:
    on_alert = (OnAlert("fraud"),)
    assert due(workspace, "nightly", on_alert) is None
    raise_alert(workspace)
    assert due(workspace, "nightly", (OnAlert("fraud", rules=("latency",)),)) is None
    assert due(workspace, "nightly", (OnAlert("payments"),)) is None
    fired = due(workspace, "nightly", on_alert)
    assert fired is not None and fired["kind"] == "alert" and fired["rule"] == "score-drift"
    assert "drift.score > 0.1" in fired["message"]

    run_pipeline(workspace, PIPE, trigger=fired)  # the retraining the alert asked for
    assert due(workspace, "nightly", on_alert) is None  # the same open alert does not refire
    command = due(workspace, "nightly", (*on_alert, Command("by hand")))
    assert command == {"kind": "command", "reason": "by hand"}


def test_watch_starts_due_pipelines_and_resumes_waiting_runs(workspace: Workspace) -> None:
    state = {"ready": False, "calls": 0}

    def canary(ctx: StepContext) -> Mapping[str, Any] | Wait:
        state["calls"] += 1
        return {"promoted": True} if state["ready"] else Wait("too few requests", 0)

    spec = WatchSpec(
        Pipeline("canary", (Step("canary", canary, cache=False),)),
        (Schedule("7D"),),
    )
    (started,) = watch(workspace, [spec], once=True)
    assert started.action == "started" and started.status == "waiting"
    assert started.trigger is not None and started.trigger["kind"] == "schedule"
    assert "waiting at 'canary': too few requests" in started.message

    state["ready"] = True
    (resumed,) = poll(workspace, [spec])  # retry time passed: resumed, not a second run
    assert resumed.action == "resumed" and resumed.status == "succeeded"
    assert resumed.run_id == started.run_id and state["calls"] == 2
    assert poll(workspace, [spec]) == []  # the schedule is not due again for 7 days
    assert len(list_runs(workspace, "canary")) == 1


def test_a_due_pipeline_with_an_unfinished_run_is_skipped(workspace: Workspace) -> None:
    def later(ctx: StepContext) -> Wait:
        return Wait("guardrail data: 3 of 200 requests", retry_after_s=3600)

    spec = WatchSpec(Pipeline("held", (Step("canary", later),)), (Command(),))
    (started,) = poll(workspace, [spec])
    (skipped,) = poll(workspace, [spec])
    assert skipped.action == "skipped" and skipped.run_id == started.run_id
    assert f"run {started.run_id} is still waiting until" in skipped.message
    assert len(list_runs(workspace, "held")) == 1


class ProcessGone(BaseException):
    """Stands for the process dying mid-step: nothing in the runner gets to record it."""


def test_watch_takes_over_a_run_whose_process_stopped(workspace: Workspace) -> None:
    attempts: list[str] = []

    def crashy(ctx: StepContext) -> Mapping[str, Any]:
        attempts.append(ctx.run_id)
        if len(attempts) == 1:
            raise ProcessGone
        return {"ok": True}

    pipe = Pipeline("crashy", (Step("prepare", step), Step("train", crashy, inputs=("prepare",))))
    with pytest.raises(ProcessGone):
        run_pipeline(workspace, pipe)
    (stuck,) = list_runs(workspace, "crashy")
    assert stuck.status == "running" and stuck.steps["train"].status == "running"

    spec = WatchSpec(pipe, (Schedule("7D"),))
    assert poll(workspace, [spec]) == []  # alive as far as anyone can tell: left alone
    (taken,) = poll(workspace, [spec], stale_after_s=0.0)  # no update "for too long"
    assert taken.action == "resumed" and taken.status == "succeeded"
    assert taken.trigger is not None and "not updated for" in taken.trigger["reason"]
    assert attempts == [stuck.run_id, stuck.run_id]


def test_watch_spec_needs_a_trigger_and_poll_a_positive_period(workspace: Workspace) -> None:
    with pytest.raises(PipelineError, match="at least one trigger"):
        WatchSpec(PIPE, ())
    with pytest.raises(PipelineError, match="'poll_s' parameter of watch"):
        watch(workspace, [WatchSpec(PIPE, (Command(),))], poll_s=0)
    with pytest.raises(PipelineError, match="'endpoint' parameter of OnAlert"):
        OnAlert("")
