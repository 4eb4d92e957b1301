"""Lifecycle pipelines: step graphs validated before they run, steps cached by the hash of
their inputs, runs that survive a restart and never overlap, triggers (a schedule, an alert,
a command), the gated canary rollout and the automated retraining loop. Names load lazily.

Example::

    from shipyard.pipelines import load_pipeline, run_pipeline
    pipeline = load_pipeline("shipyard.pipelines.retrain:retraining_pipeline", now="2018-07-01")
    run = run_pipeline(ws, pipeline, trigger={"kind": "command"})
    print(run.status, run.outputs("decision")["reasons"])

See ``docs/pipelines.md``, ``docs/retraining.md`` and ``docs/guardrails.md`` (the canary).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Pipeline": "shipyard.pipelines.graph",
    "Step": "shipyard.pipelines.graph",
    "StepContext": "shipyard.pipelines.graph",
    "Wait": "shipyard.pipelines.graph",
    "input_hash": "shipyard.pipelines.graph",
    "load_pipeline": "shipyard.pipelines.graph",
    "PipelineRun": "shipyard.pipelines.runs",
    "StepRecord": "shipyard.pipelines.runs",
    "RunStatus": "shipyard.pipelines.runs",
    "StepStatus": "shipyard.pipelines.runs",
    "run_pipeline": "shipyard.pipelines.runs",
    "resume_run": "shipyard.pipelines.runs",
    "get_run": "shipyard.pipelines.runs",
    "list_runs": "shipyard.pipelines.runs",
    "active_run": "shipyard.pipelines.runs",
    "Schedule": "shipyard.pipelines.triggers",
    "OnAlert": "shipyard.pipelines.triggers",
    "Command": "shipyard.pipelines.triggers",
    "WatchSpec": "shipyard.pipelines.triggers",
    "due": "shipyard.pipelines.triggers",
    "poll": "shipyard.pipelines.triggers",
    "watch": "shipyard.pipelines.triggers",
    "CanaryResult": "shipyard.pipelines.canary",
    "CanaryStep": "shipyard.pipelines.canary",
    "run_canary": "shipyard.pipelines.canary",
    "RetrainWindow": "shipyard.pipelines.windows",
    "labelled_window": "shipyard.pipelines.windows",
    "plan_window": "shipyard.pipelines.windows",
    "CanarySettings": "shipyard.pipelines.retrain",
    "retraining_pipeline": "shipyard.pipelines.retrain",
}

if TYPE_CHECKING:
    from shipyard.pipelines.canary import (
        CanaryResult,
        CanaryStep,
        run_canary,
    )
    from shipyard.pipelines.graph import (
        Pipeline,
        Step,
        StepContext,
        Wait,
        input_hash,
        load_pipeline,
    )
    from shipyard.pipelines.retrain import (
        CanarySettings,
        retraining_pipeline,
    )
    from shipyard.pipelines.runs import (
        PipelineRun,
        RunStatus,
        StepRecord,
        StepStatus,
        active_run,
        get_run,
        list_runs,
        resume_run,
        run_pipeline,
    )
    from shipyard.pipelines.triggers import (
        Command,
        OnAlert,
        Schedule,
        WatchSpec,
        due,
        poll,
        watch,
    )
    from shipyard.pipelines.windows import (
        RetrainWindow,
        labelled_window,
        plan_window,
    )

__all__ = [
    "CanaryResult",
    "CanarySettings",
    "CanaryStep",
    "Command",
    "OnAlert",
    "Pipeline",
    "PipelineRun",
    "RetrainWindow",
    "RunStatus",
    "Schedule",
    "Step",
    "StepContext",
    "StepRecord",
    "StepStatus",
    "Wait",
    "WatchSpec",
    "active_run",
    "due",
    "get_run",
    "input_hash",
    "labelled_window",
    "list_runs",
    "load_pipeline",
    "plan_window",
    "poll",
    "resume_run",
    "retraining_pipeline",
    "run_canary",
    "run_pipeline",
    "watch",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shipyard.pipelines' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
