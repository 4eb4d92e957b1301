"""Pipeline runs on a real SQLite workspace: state written before and after every step, the
step cache, failures, waiting steps, one run at a time, and resuming after a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from shipyard.errors import PipelineError
from shipyard.pipelines.graph import Pipeline, Step, StepContext, Wait
from shipyard.pipelines.runs import (
    PipelineBusyError,
    RunNotFoundError,
    StepRecord,
    get_run,
    list_runs,
    resume_run,
    run_pipeline,
    stale_reason,
)
from shipyard.tables import pipeline_runs, step_cache
from shipyard.workspace import Workspace


class Calls:
    """Step functions that count their calls and pass numbers downstream."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.ready = False

    def window(self, ctx: StepContext) -> Mapping[str, Any]:
        self.calls.append("window")
        ctx.log(f"window of {ctx.params['days']} days")
        return {"rows": 10 * ctx.params["days"]}

    def train(self, ctx: StepContext) -> Mapping[str, Any]:
        self.calls.append("train")
        return {"auc": 0.5 + ctx.upstream["window"]["rows"] / 1000}

    def canary(self, ctx: StepContext) -> Mapping[str, Any] | Wait:
        self.calls.append("canary")
        if not self.ready:
            return Wait("12 of 500 requests seen at 5%", retry_after_s=0)
        return {"promoted": ctx.upstream["train"]["auc"] > 0.55}

    def pipeline(self, days: int = 7, cache: bool = True) -> Pipeline:
        return Pipeline(
            "retrain",
            (
                Step("window", self.window, params={"days": days}, cache=cache),
                Step("train", self.train, inputs=("window",), cache=cache),
                Step("canary", self.canary, inputs=("train",), cache=False),
            ),
        )


def test_a_run_stores_its_graph_first_then_every_step(workspace: Workspace) -> None:
    seen: dict[str, Any] = {}

    def first(ctx: StepContext) -> Mapping[str, Any]:
        stored = get_run(ctx.workspace, ctx.run_id)  # what a crash now would leave behind
        seen.update(graph=stored.graph, status=stored.status, steps=dict(stored.steps))
        return {"n": 1}

    def second(ctx: StepContext) -> Mapping[str, Any]:
        return {"n": ctx.upstream["first"]["n"] + 1}

    pipe = Pipeline("stored", (Step("first", first), Step("second", second, inputs=("first",))))
    transitions: list[tuple[str, str]] = []
    run = run_pipeline(
        workspace,
        pipe,
        trigger={"kind": "schedule", "every": "7 days"},
        actor="ops",
        on_step=lambda r: transitions.append((r.name, str(r.status))),
    )
    assert [s["name"] for s in seen["graph"]["steps"]] == ["first", "second"]
    assert seen["status"] == "running" and seen["steps"]["first"].status == "running"
    assert seen["steps"]["second"].status == "pending"
    assert transitions == [
        ("first", "running"), ("first", "succeeded"),
        ("second", "running"), ("second", "succeeded"),
    ]  # fmt: skip
    assert run.status == "succeeded" and run.finished_at is not None and run.error is None
    assert run.trigger == {"kind": "schedule", "every": "7 days"} and run.actor == "ops"
    assert run.outputs("second") == {"n": 2}
    assert list_runs(workspace) == [run] and list_runs(workspace, "other") == []
    with workspace.engine.connect() as conn:
        (active,) = conn.execute(select(pipeline_runs.c.active_key)).one()
    assert active is None


def test_steps_are_cached_by_input_hash(workspace: Workspace) -> None:
    work = Calls()
    work.ready = True
    first = run_pipeline(workspace, work.pipeline(days=7))
    assert first.status == "succeeded" and work.calls == ["window", "train", "canary"]

    work.calls.clear()
    again = run_pipeline(workspace, work.pipeline(days=7))
    assert work.calls == ["canary"]  # cache=False runs every time
    assert {n: str(r.status) for n, r in again.steps.items()} == {
        "window": "cached", "train": "cached", "canary": "succeeded",
    }  # fmt: skip
    assert again.outputs("train") == first.outputs("train")
    assert first.run_id in again.steps["window"].log[0]
    assert again.steps["window"].input_hash == first.steps["window"].input_hash

    work.calls.clear()
    changed = run_pipeline(workspace, work.pipeline(days=14))  # new params: new hashes
    assert work.calls == ["window", "train", "canary"]
    assert changed.outputs("train")["auc"] == pytest.approx(0.64)

    work.calls.clear()
    run_pipeline(workspace, work.pipeline(days=7, cache=False))
    assert work.calls == ["window", "train", "canary"]
    with workspace.engine.connect() as conn:
        rows = conn.execute(select(step_cache.c.step, step_cache.c.run_id)).all()
    assert sorted(step for step, _ in rows) == ["train", "train", "window", "window"]


def test_a_failing_step_fails_the_run_and_skips_its_downstream(workspace: Workspace) -> None:
    attempts: list[str] = []

    def flaky(ctx: StepContext) -> Mapping[str, Any]:
        attempts.append("flaky")
        if len(attempts) == 1:
            raise ValueError("no labels in the window 2026-11-01 .. 2026-11-08")
        return {"ok": True}

    def ok(ctx: StepContext) -> Mapping[str, Any]:
        attempts.append(ctx.step)
        return {"ok": True}

    pipe = Pipeline(
        "fails",
        (
            Step("labels", flaky),
            Step("train", ok, inputs=("labels",)),
            Step("report", ok),  # independent of the failure: it still runs
        ),
    )
    run = run_pipeline(workspace, pipe)
    statuses = {name: str(record.status) for name, record in run.steps.items()}
    assert statuses == {"labels": "failed", "train": "skipped", "report": "succeeded"}
    error = run.steps["labels"].error or ""
    assert error.startswith("ValueError: no labels in the window") and "test_runs.py:" in error
    assert run.status == "failed" and "step 'labels' failed: ValueError" in (run.error or "")
    with pytest.raises(PipelineError, match="it is failed"):
        run.outputs("labels")

    resumed = resume_run(workspace, pipe, run.run_id)  # the failed step is retried
    assert resumed.status == "succeeded" and attempts == ["flaky", "report", "flaky", "train"]
    assert "was failed" in resumed.steps["labels"].log[0]
    with pytest.raises(PipelineError, match="already succeeded"):
        resume_run(workspace, pipe, run.run_id)


def test_outputs_must_be_json_ready_mappings(workspace: Workspace) -> None:
    def frame(ctx: StepContext) -> Mapping[str, Any]:
        return {"data": object()}

    def listing(ctx: StepContext) -> Mapping[str, Any]:
        return [1, 2]  # type: ignore[return-value]

    run = run_pipeline(workspace, Pipeline("bad", (Step("frame", frame), Step("list", listing))))
    assert "outputs of step 'frame'" in (run.steps["frame"].error or "")
    assert "must return a mapping" in (run.steps["list"].error or "")


def test_a_waiting_step_holds_the_pipeline_until_resumed(workspace: Workspace) -> None:
    work = Calls()
    run = run_pipeline(workspace, work.pipeline())
    assert run.status == "waiting" and run.finished_at is None
    assert run.wait is not None and run.wait["step"] == "canary"
    assert run.wait["reason"] == "12 of 500 requests seen at 5%"
    assert run.retry_at is not None and run.steps["canary"].status == "waiting"
    assert run.steps["window"].log == ("window of 7 days",)

    with pytest.raises(PipelineBusyError, match=f"unfinished run {run.run_id}.*12 of 500") as busy:
        run_pipeline(workspace, work.pipeline())
    assert busy.value.run_id == run.run_id

    work.ready = True
    work.calls.clear()
    done = resume_run(workspace, work.pipeline(), run.run_id)
    assert work.calls == ["canary"]  # finished steps are not run again
    assert done.status == "succeeded" and done.wait is None
    assert done.outputs("canary") == {"promoted": True}
    assert run_pipeline(workspace, work.pipeline()).status == "succeeded"  # free again


def test_resume_with_the_flag_takes_over_the_waiting_run(workspace: Workspace) -> None:
    work = Calls()
    run = run_pipeline(workspace, work.pipeline())
    work.ready = True
    resumed = run_pipeline(workspace, work.pipeline(), resume=True)
    assert resumed.run_id == run.run_id and resumed.status == "succeeded"


def test_resume_refuses_another_pipeline_or_a_changed_graph(workspace: Workspace) -> None:
    work = Calls()
    run = run_pipeline(workspace, work.pipeline(days=7))
    with pytest.raises(PipelineError, match="changed since run"):
        resume_run(workspace, work.pipeline(days=8), run.run_id)
    other = Pipeline("other", work.pipeline().steps)
    with pytest.raises(PipelineError, match="belongs to pipeline 'retrain'"):
        resume_run(workspace, other, run.run_id)
    with pytest.raises(RunNotFoundError, match="No pipeline run 'nope'"):
        get_run(workspace, "nope")


def test_two_runs_started_together_exactly_one_runs(workspace: Workspace) -> None:
    gate = threading.Barrier(2)
    release = threading.Event()
    ran: list[str] = []

    def step(ctx: StepContext) -> Mapping[str, Any]:
        ran.append(ctx.run_id)
        release.wait(30)
        return {}

    outcomes: list[object] = []

    def start() -> None:
        # each thread opens its own workspace, as two processes would
        ws = Workspace.open(workspace.root)
        gate.wait()
        try:
            outcomes.append(run_pipeline(ws, Pipeline("nightly", (Step("only", step),))))
        except PipelineBusyError as exc:
            outcomes.append(exc)
            release.set()
        finally:
            ws.close()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    errors = [o for o in outcomes if isinstance(o, PipelineBusyError)]
    assert len(outcomes) == 2 and len(errors) == 1 and len(ran) == 1
    assert errors[0].run_id == ran[0]
    assert [str(r.status) for r in list_runs(workspace, "nightly")] == ["succeeded"]


KILLABLE = """
import time
from pathlib import Path
from shipyard.pipelines.graph import Pipeline, Step

def build(folder):
    root = Path(folder)

    def count(name):
        with open(root / f"{name}.calls", "a") as calls:
            calls.write("x\\n")

    def prepare(ctx):
        count("prepare")
        return {"rows": 10}

    def train(ctx):
        count("train")
        while not (root / "go").exists():  # the test kills the process here
            time.sleep(0.02)
        return {"auc": 0.5 + ctx.upstream["prepare"]["rows"] / 100}

    steps = (Step("prepare", prepare), Step("train", train, inputs=("prepare",)))
    return Pipeline("killable", steps)
"""


def _calls(folder: Path, name: str) -> int:
    path = folder / f"{name}.calls"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_run_survives_sigkill_and_resumes_without_rerunning_finished_steps(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shipyard.pipelines.graph import load_pipeline

    folder = tmp_path / "killable"
    folder.mkdir()
    (folder / "killable_mod.py").write_text(KILLABLE)
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from shipyard.workspace import Workspace;"
        "from shipyard.pipelines.graph import load_pipeline;"
        "from shipyard.pipelines.runs import run_pipeline;"
        "pipe = load_pipeline('killable_mod:build', folder=sys.argv[1]);"
        "run_pipeline(Workspace.open(sys.argv[2]), pipe)"
    )  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", script, str(folder), str(workspace.root)])
    try:
        deadline = time.monotonic() + 120
        while _calls(folder, "train") == 0:
            assert child.poll() is None, "the pipeline process ended before its step"
            assert time.monotonic() < deadline, "the pipeline never reached its second step"
            time.sleep(0.05)

        monkeypatch.syspath_prepend(str(folder))
        pipe = load_pipeline("killable_mod:build", folder=str(folder))
        (run,) = list_runs(workspace, "killable")
        assert run.status == "running" and run.pid == child.pid
        assert stale_reason(run) is None
        with pytest.raises(PipelineBusyError, match=f"running in process {child.pid}"):
            resume_run(workspace, pipe, run.run_id)
        with pytest.raises(PipelineBusyError):
            run_pipeline(workspace, pipe)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()

    crashed = get_run(workspace, run.run_id)
    assert crashed.status == "running"  # the record a crash leaves: accurate, unfinished
    assert crashed.steps["prepare"].status == "succeeded"
    assert crashed.steps["train"].status == "running"
    assert f"process {child.pid} is no longer running" in (stale_reason(crashed) or "")

    (folder / "go").touch()
    seen: list[StepRecord] = []
    resumed = resume_run(workspace, pipe, run.run_id, on_step=seen.append)
    assert resumed.status == "succeeded" and resumed.outputs("train") == {"auc": 0.6}
    assert _calls(folder, "prepare") == 1 and _calls(folder, "train") == 2
    assert [r.name for r in seen] == ["train", "train"]
    assert "resumed by process" in resumed.steps["train"].log[0]
    assert "no longer running" in resumed.steps["train"].log[0]
    assert resumed.pid == os.getpid()


def test_a_live_running_run_is_taken_over_only_when_forced(workspace: Workspace) -> None:
    holder: dict[str, str] = {}
    entered = threading.Event()
    release = threading.Event()

    def slow(ctx: StepContext) -> Mapping[str, Any]:
        holder["run"] = ctx.run_id
        entered.set()
        release.wait(30)
        ctx.log("still here")  # the run was taken over meanwhile: this write is refused
        return {"n": 1}

    def fast(ctx: StepContext) -> Mapping[str, Any]:
        return {"n": 2}

    outcome: list[object] = []

    def first() -> None:
        try:
            outcome.append(run_pipeline(workspace, Pipeline("p", (Step("s", slow),))))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    assert entered.wait(30)
    fresh = Pipeline("p", (Step("s", fast),))
    with pytest.raises(PipelineBusyError):
        resume_run(workspace, fresh, holder["run"])
    taken = resume_run(workspace, fresh, holder["run"], force=True)
    assert taken.status == "succeeded" and taken.outputs("s") == {"n": 2}
    assert "forced" in taken.steps["s"].log[0]
    release.set()
    thread.join(30)
    (error,) = outcome
    assert "was taken over by process" in str(error)
    assert get_run(workspace, holder["run"]).outputs("s") == {"n": 2}


RACER = """
import sys, time
from pathlib import Path
from shipyard.pipelines.graph import Pipeline, Step
from shipyard.errors import PipelineBusyError
from shipyard.pipelines.runs import run_pipeline
from shipyard.workspace import Workspace

folder, root, name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
workspace = Workspace.open(root)

def step(ctx):
    (folder / f"ran-{name}").write_text(ctx.run_id)
    while not (folder / "finish").exists():
        time.sleep(0.02)
    return {}

(folder / f"ready-{name}").touch()
while not (folder / "start").exists():  # both processes imported: released together
    time.sleep(0.002)
try:
    run_pipeline(workspace, Pipeline("nightly", (Step("only", step),)))
except PipelineBusyError as exc:
    (folder / f"busy-{name}").write_text(exc.run_id)
    (folder / "finish").touch()
"""


def test_two_processes_started_together_exactly_one_runs(
    workspace: Workspace, tmp_path: Path
) -> None:
    folder = tmp_path / "race"
    folder.mkdir()
    children = [
        subprocess.Popen([sys.executable, "-c", RACER, str(folder), str(workspace.root), name])
        for name in ("a", "b")
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(folder.glob("ready-*"))) < 2:
            assert time.monotonic() < deadline, "the processes never got ready"
            time.sleep(0.01)
        (folder / "start").touch()
        codes = [child.wait(120) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert codes == [0, 0]
    ran = sorted(p.name for p in folder.glob("ran-*"))
    busy = sorted(p.name for p in folder.glob("busy-*"))
    assert len(ran) == 1 and len(busy) == 1 and ran[0][4:] != busy[0][5:]
    run_id = (folder / ran[0]).read_text()
    assert (folder / busy[0]).read_text() == run_id
    (run,) = list_runs(workspace, "nightly")
    assert run.run_id == run_id and run.status == "succeeded"
