"""Running pipelines: durable state, the step cache, resuming, one run of a pipeline at a time.

:func:`run_pipeline` validates the graph and stores it with the run (table
``pipeline_runs``) before any step runs, then writes the run's state after every step
transition, so a crash leaves an accurate record. A step is run when its inputs succeeded:

* with ``cache=True`` and a ``step_cache`` row for its input hash it is "cached": its stored
  outputs are reused and it is not run;
* a step that raises is "failed" (error type, message and the line that raised are
  stored), the steps downstream of it "skipped" and the run "failed";
* a step that returns :class:`~shipyard.pipelines.graph.Wait` is "waiting": the run waits
  (its reason and retry time stored) until :func:`resume_run` runs it again.

**Never two runs at once**: the run's ``active_key`` (unique) holds the pipeline's name while
the run is unfinished (running or waiting), so a second :func:`run_pipeline` raises
:class:`PipelineBusyError` naming the unfinished run. **Restarts**: a run whose process died
stays "running"; :func:`resume_run` takes it over when it is stale (its process, recorded
with the host in the state, is gone from this host, or the run was not updated for
``stale_after_s``) or when forced, and continues from the first unfinished step, reusing the
outputs of finished ones. A step that was running when its process died runs again.

Example::

    run = run_pipeline(workspace, load_pipeline("my_project.pipelines:retrain"))
    print(run.status, {name: s.status for name, s in run.steps.items()})
"""

from __future__ import annotations

import os
import secrets
import socket
import traceback
from collections.abc import Callable, Mapping
from copy import deepcopy
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shipyard.errors import (
    ConcurrentChangeError,
    PipelineBusyError,
    PipelineError,
    RunNotFoundError,
)
from shipyard.pipelines.graph import (
    Pipeline,
    Step,
    StepContext,
    Wait,
    canonical_json,
    input_hash,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from shipyard.workspace import Workspace

DEFAULT_STALE_S = 3600.0
"""A "running" run not updated for this long is taken to be dead (its process may be on
another host, where its pid cannot be checked)."""


class StepStatus(StrEnum):
    """Where a step of a run stands."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CACHED = "cached"
    WAITING = "waiting"
    FAILED = "failed"
    SKIPPED = "skipped"


class RunStatus(StrEnum):
    """Where a run stands; running and waiting runs are unfinished."""

    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


_DONE = (StepStatus.SUCCEEDED, StepStatus.CACHED)
_UNFINISHED = (RunStatus.RUNNING, RunStatus.WAITING)


class _TakenOverError(ConcurrentChangeError):
    """Another process took the run over (it was stale): this one must stop working on it."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


@dataclass(frozen=True)
class StepRecord:
    """One step of a run: status, input hash, outputs, times, error and its log lines."""

    name: str
    status: StepStatus
    input_hash: str | None = None
    outputs: dict[str, Any] | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    log: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (times as ISO text)."""
        return {
            "name": self.name,
            "status": str(self.status),
            "input_hash": self.input_hash,
            "outputs": self.outputs,
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "error": self.error,
            "log": list(self.log),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepRecord:
        """The record :meth:`to_dict` wrote."""
        return cls(
            name=data["name"],
            status=StepStatus(data["status"]),
            input_hash=data.get("input_hash"),
            outputs=data.get("outputs"),
            started_at=_moment(data.get("started_at")),
            ended_at=_moment(data.get("ended_at")),
            error=data.get("error"),
            log=tuple(data.get("log", ())),
        )


@dataclass(frozen=True)
class PipelineRun:
    """A stored run: its status, trigger, graph and every step's record.

    ``wait`` holds ``{"step", "reason", "retry_at"}`` while the run waits; ``pid`` and
    ``host`` name the process that last worked on it.
    """

    run_id: str
    pipeline: str
    status: RunStatus
    trigger: dict[str, Any]
    steps: dict[str, StepRecord]
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    updated_at: datetime
    actor: str
    graph: dict[str, Any] = field(default_factory=dict)
    wait: dict[str, Any] | None = None
    pid: int | None = None
    host: str | None = None

    @property
    def finished(self) -> bool:
        """True once the run succeeded or failed (no longer holds its pipeline)."""
        return self.status not in _UNFINISHED

    @property
    def retry_at(self) -> datetime | None:
        """When a waiting run should be resumed (None unless it waits)."""
        return None if self.wait is None else _moment(self.wait["retry_at"])

    def outputs(self, step: str) -> dict[str, Any]:
        """The outputs of a finished step (PipelineError naming its status otherwise)."""
        record = self.steps.get(step)
        if record is None:
            names = ", ".join(self.steps)
            raise PipelineError(f"Run {self.run_id} has no step {step!r} (steps: {names}).")
        if record.status not in _DONE or record.outputs is None:
            raise PipelineError(
                f"Step {step!r} of run {self.run_id} has no outputs: it is {record.status}."
            )
        return dict(record.outputs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (times as ISO text), steps in run order."""
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "status": str(self.status),
            "trigger": self.trigger,
            "started_at": _iso(self.started_at),
            "updated_at": _iso(self.updated_at),
            "finished_at": _iso(self.finished_at),
            "error": self.error,
            "actor": self.actor,
            "wait": self.wait,
            "pid": self.pid,
            "host": self.host,
            "steps": [record.to_dict() for record in self.steps.values()],
        }


def _run(row: Any) -> PipelineRun:
    state = row["state"]
    return PipelineRun(
        run_id=row["run_id"],
        pipeline=row["pipeline"],
        status=RunStatus(row["status"]),
        trigger=row["trigger"],
        steps={r["name"]: StepRecord.from_dict(r) for r in state["steps"]},
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        updated_at=row["updated_at"],
        actor=row["actor"],
        graph=row["graph"],
        wait=state.get("wait"),
        pid=state.get("pid"),
        host=state.get("host"),
    )


def get_run(workspace: Workspace, run_id: str) -> PipelineRun:
    """The stored run of that id; RunNotFoundError when there is none."""
    from sqlalchemy import select

    from shipyard.tables import pipeline_runs as table

    with workspace.engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.run_id == run_id)).mappings().first()
    if row is None:
        raise RunNotFoundError(
            f"No pipeline run {run_id!r} in this workspace; `shipyard pipeline list` shows them."
        )
    return _run(row)


def list_runs(
    workspace: Workspace, pipeline: str | None = None, *, limit: int | None = None
) -> list[PipelineRun]:
    """Stored runs, newest first; of one pipeline (by its name) when given."""
    from sqlalchemy import select

    from shipyard.tables import pipeline_runs as table

    query = select(table).order_by(table.c.started_at.desc(), table.c.id.desc())
    if pipeline is not None:
        query = query.where(table.c.pipeline == pipeline)
    if limit is not None:
        query = query.limit(limit)
    with workspace.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [_run(row) for row in rows]


def active_run(workspace: Workspace, pipeline: str) -> PipelineRun | None:
    """The unfinished (running or waiting) run of the pipeline, if there is one."""
    from sqlalchemy import select

    from shipyard.tables import pipeline_runs as table

    query = select(table).where(table.c.active_key == pipeline)
    with workspace.engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return None if row is None else _run(row)


def _busy(run: PipelineRun) -> PipelineBusyError:
    where = f"process {run.pid} on {run.host}" if run.pid else "another process"
    detail = (
        f"waiting at step {run.wait['step']!r}: {run.wait['reason']}"
        if run.wait
        else f"running in {where}, last updated {run.updated_at:%Y-%m-%d %H:%M:%S} UTC"
    )
    return PipelineBusyError(
        f"Pipeline {run.pipeline!r} already has an unfinished run {run.run_id} ({detail}); "
        f"one run at a time: resume it (`shipyard pipeline resume {run.run_id}`) "
        "or wait for it to finish.",
        run.run_id,
    )


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # cannot tell here: rely on the run's last update
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not waited for yet is a zombie: dead
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stale_reason(run: PipelineRun, stale_after_s: float = DEFAULT_STALE_S) -> str | None:
    """Why a "running" run is taken to be dead (its process is gone from this host, or no
    update for ``stale_after_s``), or None while it may still be alive."""
    if run.status != RunStatus.RUNNING:
        return None
    here = run.host == socket.gethostname() and run.pid not in (None, os.getpid())
    if here and run.pid is not None and not _pid_alive(run.pid):
        return f"its process {run.pid} is no longer running on {run.host}"
    idle = (_now() - run.updated_at).total_seconds()
    if idle > stale_after_s:
        return f"it was not updated for {idle:.0f} s (more than {stale_after_s:g} s)"
    return None


def _trigger(trigger: Mapping[str, Any] | None) -> dict[str, Any]:
    value = {"kind": "command"} if trigger is None else dict(trigger)
    try:
        canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise PipelineError(
            f"The 'trigger' parameter of run_pipeline must be a JSON-ready mapping. "
            f"Got {trigger!r} instead ({exc})."
        ) from None
    return value


def _new_state() -> dict[str, Any]:
    return {"owner": secrets.token_hex(8), "pid": os.getpid(), "host": socket.gethostname()}


def run_pipeline(
    workspace: Workspace,
    pipeline: Pipeline,
    *,
    trigger: Mapping[str, Any] | None = None,
    actor: str | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
    resume: bool = False,
    stale_after_s: float = DEFAULT_STALE_S,
) -> PipelineRun:
    """Validate the pipeline, store its graph, then run its steps in order; the finished (or
    waiting, or failed) run is returned, a step's exception is stored, not raised.

    PipelineBusyError when another run of the pipeline is unfinished; with ``resume=True``
    that run is resumed instead when it can be (waiting, or running but stale).
    ``on_step(record)`` is called after every step transition (to show progress).
    """
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError

    from shipyard.registry.models import current_user
    from shipyard.tables import pipeline_runs as table

    graph = pipeline.describe()  # validates
    kind = _trigger(trigger)
    steps = [StepRecord(s.name, StepStatus.PENDING).to_dict() for s in pipeline.order()]
    for _ in range(5):
        now = _now()
        run_id = f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"
        state = {**_new_state(), "steps": steps, "wait": None}
        row = {
            "run_id": run_id,
            "pipeline": pipeline.name,
            "status": str(RunStatus.RUNNING),
            "trigger": kind,
            "graph": graph,
            "state": state,
            "active_key": pipeline.name,
            "started_at": now,
            "updated_at": now,
            "actor": actor or current_user(),
        }
        try:
            with workspace.engine.begin() as conn:
                conn.execute(insert(table).values(**row))
        except IntegrityError:
            other = active_run(workspace, pipeline.name)
            if other is None:
                continue  # it finished in between: try again
            if resume and (other.status == RunStatus.WAITING or stale_reason(other, stale_after_s)):
                return resume_run(
                    workspace, pipeline, other.run_id, on_step=on_step, stale_after_s=stale_after_s
                )
            raise _busy(other) from None
        return _Runner(workspace, pipeline, run_id, state, on_step).execute()
    raise ConcurrentChangeError(
        f"Could not start pipeline {pipeline.name!r}: its runs kept changing; try again."
    )


def _signature(graph: Mapping[str, Any]) -> list[dict[str, Any]]:
    keys = ("name", "inputs", "params", "cache", "version")
    return [{key: step[key] for key in keys} for step in graph["steps"]]


def _reset(record: Mapping[str, Any], note: str) -> dict[str, Any]:
    if record["status"] in _DONE:
        return dict(record)
    log = list(record.get("log", ()))
    if record["status"] != StepStatus.PENDING:
        log.append(f"{note} (was {record['status']})")
    return StepRecord(record["name"], StepStatus.PENDING, log=tuple(log)).to_dict()


def resume_run(
    workspace: Workspace,
    pipeline: Pipeline,
    run_id: str,
    *,
    on_step: Callable[[StepRecord], None] | None = None,
    force: bool = False,
    stale_after_s: float = DEFAULT_STALE_S,
) -> PipelineRun:
    """Continue a stored run from its first unfinished step, reusing finished steps' outputs.

    A waiting or failed run is resumed at once (its waiting or failed steps run again); a
    "running" one only when it is stale (see :func:`stale_reason`) or with ``force=True``,
    otherwise PipelineBusyError. The pipeline must have the graph the run was started with.
    """
    graph = pipeline.describe()
    run = get_run(workspace, run_id)
    if run.pipeline != pipeline.name:
        raise PipelineError(
            f"Run {run_id} belongs to pipeline {run.pipeline!r}, not {pipeline.name!r}."
        )
    if _signature(run.graph) != _signature(graph):
        raise PipelineError(
            f"Pipeline {pipeline.name!r} changed since run {run_id} started (steps, inputs, "
            "parameters or versions differ); start a new run instead."
        )
    state = _take_over(workspace, pipeline.name, run_id, force, stale_after_s)
    return _Runner(workspace, pipeline, run_id, state, on_step).execute()


def _take_over(
    workspace: Workspace, pipeline: str, run_id: str, force: bool, stale_after_s: float
) -> dict[str, Any]:
    """Make this process the run's owner (one transaction): its unfinished steps pending
    again, the pipeline held; the new state, or the reason it cannot be resumed."""
    from sqlalchemy import select, update
    from sqlalchemy.exc import IntegrityError

    from shipyard.governance.audit import transaction
    from shipyard.tables import pipeline_runs as table

    state = _new_state()
    try:
        with transaction(workspace) as conn:
            query = select(table).where(table.c.run_id == run_id).with_for_update()
            run = _run(conn.execute(query).mappings().one())
            if run.status == RunStatus.SUCCEEDED:
                raise PipelineError(f"Run {run_id} already succeeded; start a new run instead.")
            reason = stale_reason(run, stale_after_s)
            if run.status == RunStatus.RUNNING and not (force or reason):
                raise _busy(run)
            note = f"resumed by process {state['pid']} on {state['host']}"
            if run.status == RunStatus.RUNNING:
                note += f" ({'forced' if force and not reason else reason})"
            steps = [_reset(r.to_dict(), note) for r in run.steps.values()]
            state |= {"steps": steps, "wait": None}
            conn.execute(
                update(table)
                .where(table.c.run_id == run_id)
                .values(
                    status=str(RunStatus.RUNNING),
                    state=state,
                    error=None,
                    active_key=pipeline,
                    updated_at=_now(),
                    finished_at=None,
                )
            )
    except IntegrityError:
        other = active_run(workspace, pipeline)
        if other is None:
            raise
        raise _busy(other) from None
    return state


def _error(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _check_outputs(step: Step, result: object) -> dict[str, Any]:
    if not isinstance(result, Mapping) or not all(isinstance(k, str) for k in result):
        raise PipelineError(
            f"Step {step.name!r} ({step.where}) must return a mapping of JSON-ready outputs "
            f"with string keys, or Wait. Got {type(result).__name__} instead."
        )
    outputs = dict(result)
    try:
        canonical_json(outputs)
    except (TypeError, ValueError) as exc:
        raise PipelineError(
            f"The outputs of step {step.name!r} ({step.where}) must be JSON-ready "
            f"(paths, numbers, names; not data): {exc}."
        ) from None
    return outputs


class _Runner:
    """Runs one run's remaining steps, writing the state after every transition; every write
    first checks that this runner still owns the run (another process may have taken it
    over as stale) and raises ConcurrentChangeError otherwise."""

    def __init__(
        self,
        workspace: Workspace,
        pipeline: Pipeline,
        run_id: str,
        state: dict[str, Any],
        on_step: Callable[[StepRecord], None] | None,
    ) -> None:
        self.workspace = workspace
        self.pipeline = pipeline
        self.run_id = run_id
        self.owner = state["owner"]
        self.state = state
        self.records = {r["name"]: StepRecord.from_dict(r) for r in state["steps"]}
        self.on_step = on_step

    def execute(self) -> PipelineRun:
        for step in self.pipeline.order():
            if self.records[step.name].status in _DONE:
                continue
            upstream = [self.records[name].status for name in step.inputs]
            if any(s in (StepStatus.FAILED, StepStatus.SKIPPED) for s in upstream):
                self._record(replace(self.records[step.name], status=StepStatus.SKIPPED))
            elif all(s in _DONE for s in upstream):
                self._run_step(step)
        statuses = {record.status for record in self.records.values()}
        if StepStatus.WAITING not in statuses:
            self.state["wait"] = None
        if StepStatus.FAILED in statuses:
            failed = [r for r in self.records.values() if r.status == StepStatus.FAILED]
            error = "; ".join(f"step {r.name!r} failed: {r.error}" for r in failed)
            self._save(RunStatus.FAILED, error=error)
        elif StepStatus.WAITING in statuses:
            self._save(RunStatus.WAITING)
        else:
            self._save(RunStatus.SUCCEEDED)
        return get_run(self.workspace, self.run_id)

    def _run_step(self, step: Step) -> None:
        # copies: a step that changes what it was given cannot change its inputs' records
        upstream = {name: deepcopy(self.records[name].outputs or {}) for name in step.inputs}
        key = input_hash(step, upstream)
        base = replace(
            self.records[step.name], status=StepStatus.RUNNING, input_hash=key,
            started_at=_now(), ended_at=None, outputs=None, error=None,
        )  # fmt: skip
        cached = self._cached(step, key) if step.cache else None
        if cached is not None:
            outputs, origin = cached
            note = f"cached: outputs of run {origin} reused (input hash {key[:12]})"
            self._record(
                replace(base, status=StepStatus.CACHED, outputs=outputs, ended_at=_now(),
                        log=(*base.log, note))
            )  # fmt: skip
            return
        self._record(base)
        context = StepContext(
            self.workspace, self.run_id, step.name, dict(step.params), upstream,
            on_log=lambda line: self._record(
                replace(self.records[step.name], log=(*self.records[step.name].log, line))
            ),
        )  # fmt: skip
        try:
            result = step.fn(context)
            if isinstance(result, Wait):
                self._wait(step, result)
                return
            outputs = _check_outputs(step, result)
        except _TakenOverError:
            raise
        except Exception as exc:
            failed = replace(
                self.records[step.name], status=StepStatus.FAILED, error=_error(exc),
                ended_at=_now(),
            )  # fmt: skip
            self._record(failed)
            return
        done = replace(
            self.records[step.name], status=StepStatus.SUCCEEDED, outputs=outputs,
            ended_at=_now(),
        )  # fmt: skip
        self._record(done, cache=(step, key) if step.cache else None)

    def _wait(self, step: Step, wait: Wait) -> None:
        now = _now()
        retry_at = now + timedelta(seconds=wait.retry_after_s)
        if self.state.get("wait") is None:  # the first waiting step names the run's wait
            self.state["wait"] = {
                "step": step.name,
                "reason": wait.reason,
                "retry_at": retry_at.isoformat(),
            }
        record = self.records[step.name]
        line = f"waiting: {wait.reason} (retry after {retry_at:%Y-%m-%d %H:%M:%S} UTC)"
        self._record(
            replace(record, status=StepStatus.WAITING, ended_at=now, log=(*record.log, line))
        )

    def _cached(self, step: Step, key: str) -> tuple[dict[str, Any], str] | None:
        from sqlalchemy import select

        from shipyard.tables import step_cache as table

        query = select(table.c.outputs, table.c.run_id).where(
            table.c.pipeline == self.pipeline.name,
            table.c.step == step.name,
            table.c.input_hash == key,
        )
        with self.workspace.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (dict(row[0]), str(row[1]))

    def _record(self, record: StepRecord, cache: tuple[Step, str] | None = None) -> None:
        self.records[record.name] = record
        self._save(RunStatus.RUNNING, cache=cache)
        if self.on_step is not None:
            self.on_step(record)

    def _save(
        self,
        status: RunStatus,
        *,
        error: str | None = None,
        cache: tuple[Step, str] | None = None,
    ) -> None:
        from sqlalchemy import select, update

        from shipyard.governance.audit import transaction
        from shipyard.tables import pipeline_runs as table

        now = _now()
        self.state["steps"] = [r.to_dict() for r in self.records.values()]
        finished = status in (RunStatus.SUCCEEDED, RunStatus.FAILED)
        with transaction(self.workspace) as conn:
            query = select(table.c.state).where(table.c.run_id == self.run_id).with_for_update()
            stored = conn.execute(query).scalar_one()
            if stored.get("owner") != self.owner:
                raise _TakenOverError(
                    f"Run {self.run_id} was taken over by process {stored.get('pid')} on "
                    f"{stored.get('host')}; this process stops working on it."
                )
            values: dict[str, Any] = {
                "status": str(status),
                "state": self.state,
                "error": error,
                "updated_at": now,
            }
            if finished:
                values |= {"active_key": None, "finished_at": now}
            conn.execute(update(table).where(table.c.run_id == self.run_id).values(**values))
            if cache is not None:
                self._store_cache(conn, *cache)

    def _store_cache(self, conn: Connection, step: Step, key: str) -> None:
        from sqlalchemy import insert, select

        from shipyard.tables import step_cache as table

        exists = conn.execute(
            select(table.c.id).where(
                table.c.pipeline == self.pipeline.name,
                table.c.step == step.name,
                table.c.input_hash == key,
            )
        ).first()
        if exists is None:
            conn.execute(
                insert(table).values(
                    pipeline=self.pipeline.name,
                    step=step.name,
                    input_hash=key,
                    outputs=self.records[step.name].outputs,
                    run_id=self.run_id,
                    created_at=_now(),
                )
            )
