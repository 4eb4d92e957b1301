"""Start, watch and stop an online experiment (an A/B test of two versions on one endpoint).

:func:`start_experiment` checks everything first (the versions exist and take the same
inputs, the endpoint has a policy, no other experiment runs on it, the metric and split are
valid), then stores the experiment and sets the endpoint's traffic policy: the two versions
with the split, sticky on the routing key, hashed with a fresh per-experiment salt (so a
customer stays in one arm on every worker, and the next experiment reshuffles customers).
If the policy cannot be set, the experiment is removed again: nothing is half-applied. At
most one experiment runs per endpoint (the ``active_key`` unique column makes two
concurrent starts safe: one wins, the other is refused naming it).

:func:`experiment_status` reads the metric per arm from the prediction log joined with the
labels (:mod:`shipyard.experiments.metrics`), runs the test (the always-valid mSPRT by
default, valid however often you look; the fixed-horizon test with ``method="fixed"``,
which decides nothing before its planned sample size), tests each guardrail metric with
the mSPRT and, when a guardrail shows the treatment significantly worse, **stops the
experiment early**: traffic returns to the control version alone. :func:`stop_experiment`
records the final result and sends all traffic to the winner (the control by default).
Starting and stopping are audited (``kind="experiment"``, actions ``experiment.start`` and
``experiment.stop``) beside the policy changes themselves.

Example::

    start_experiment(ws, "new-model", "fraud", control=3, treatment=4, metric="precision",
                     guardrails=["alert_rate"], sticky_key="customer", reason="v4 retrained")
    print(experiment_status(ws, "new-model").describe())
    stop_experiment(ws, "new-model", reason="v4 wins", winner=4)
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shipyard.errors import (
    ConcurrentChangeError,
    ExperimentConflictError,
    ExperimentNotFoundError,
    invalid_parameter,
)
from shipyard.experiments.metrics import (
    ARMS,
    MetricResult,
    MetricSpec,
    metric_result,
    metric_spec,
    units_needed,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from shipyard.experiments.metrics import ExperimentData
    from shipyard.serving.policy import TrafficPolicy
    from shipyard.workspace import Workspace

RUNNING = "running"
STOPPED = "stopped"
METHODS = ("msprt", "fixed")


@dataclass(frozen=True)
class Experiment:
    """An experiment as stored: its arms, metric, guardrails, test and state."""

    name: str
    endpoint: str
    model: str
    control: int
    treatment: int
    split: tuple[float, float]
    metric: MetricSpec
    guardrails: tuple[MetricSpec, ...]
    alpha: float
    method: str
    sticky_key: str
    salt: str
    base_revision: int
    """The policy revision the experiment started from."""
    revision: int
    """The policy revision that split the traffic."""
    status: str
    started_at: datetime
    started_by: str
    reason: str
    mde: float | None = None
    """Minimum detectable effect, relative to the control's mean (0.1: a 10% change)."""
    power: float = 0.8
    planned_units: int | None = None
    """Units per arm the fixed-horizon test waits for; for the mSPRT (optional), the units per
    arm its always-valid interval is tuned to be narrowest at (10,000 when not given: an
    experiment of a few hundred users should say so, its interval is about half as wide)."""
    result: dict[str, Any] | None = None
    stopped_at: datetime | None = None
    stopped_by: str | None = None
    stop_reason: str | None = None

    def policy(self) -> TrafficPolicy:
        """The traffic policy that splits the endpoint between the two versions."""
        from shipyard.serving.policy import Arm, TrafficPolicy

        return TrafficPolicy(
            self.endpoint,
            self.model,
            arms=(Arm(self.control, self.split[0]), Arm(self.treatment, self.split[1])),
            sticky_key=self.sticky_key,
            salt=self.salt,
        )

    def version(self, arm: str) -> int:
        """The version of ``arm`` (``"control"`` or ``"treatment"``)."""
        return self.control if arm == "control" else self.treatment

    def to_dict(self) -> dict[str, Any]:
        """The experiment as JSON-ready data."""
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "model": self.model,
            "status": self.status,
            **self._spec(),
            "started_at": self.started_at.isoformat(),
            "started_by": self.started_by,
            "reason": self.reason,
            "result": self.result,
            "stopped_at": None if self.stopped_at is None else self.stopped_at.isoformat(),
            "stopped_by": self.stopped_by,
            "stop_reason": self.stop_reason,
        }

    def _spec(self) -> dict[str, Any]:
        """What the ``spec`` column keeps."""
        return {
            "model": self.model,
            "control": self.control,
            "treatment": self.treatment,
            "split": list(self.split),
            "metric": self.metric.to_dict(),
            "guardrails": [g.to_dict() for g in self.guardrails],
            "alpha": self.alpha,
            "method": self.method,
            "sticky_key": self.sticky_key,
            "salt": self.salt,
            "base_revision": self.base_revision,
            "revision": self.revision,
            "mde": self.mde,
            "power": self.power,
            "planned_units": self.planned_units,
            "start_reason": self.reason,
        }


# ----------------------------------------------------------------------------------- start


def start_experiment(
    workspace: Workspace,
    name: str,
    endpoint: str,
    *,
    control: int,
    treatment: int,
    split: Sequence[float] = (50, 50),
    metric: str | MetricSpec,
    guardrails: Sequence[str | MetricSpec] = (),
    alpha: float = 0.05,
    method: str = "msprt",
    sticky_key: str,
    reason: str,
    actor: str | None = None,
    mde: float | None = None,
    power: float = 0.8,
    planned_units: int | None = None,
) -> Experiment:
    """Split ``endpoint`` between ``control`` and ``treatment`` by ``sticky_key`` and test them.

    Everything is checked before anything changes; a failure to set the policy removes the
    experiment again. Example: ``start_experiment(ws, "v4", "fraud", control=3,
    treatment=4, metric="precision", sticky_key="customer", reason="retrained")``.
    """
    from shipyard.registry.models import current_user
    from shipyard.serving.policy import get_policy

    experiment = _checked(
        name, endpoint, control, treatment, split, metric, guardrails, alpha, method,
        sticky_key, reason, mde, power, planned_units,
    )  # fmt: skip
    base = get_policy(workspace, endpoint)  # ModelNotFoundError: the endpoint has no policy
    experiment = replace(
        experiment,
        model=base.model,
        base_revision=base.revision,
        revision=base.revision + 1,
        started_by=actor or current_user(),
    )
    policy = replace(
        experiment.policy(),
        shadows=tuple(v for v in base.shadows if v not in (control, treatment)),
    )
    _check_versions(workspace, policy)
    _refuse_running(workspace, endpoint, name)
    _insert(workspace, experiment)
    try:
        _set_experiment_policy(workspace, experiment, policy, actor)
    except BaseException:
        _delete(workspace, name)
        raise
    return experiment


def _checked(
    name: str,
    endpoint: str,
    control: int,
    treatment: int,
    split: Sequence[float],
    metric: str | MetricSpec,
    guardrails: Sequence[str | MetricSpec],
    alpha: float,
    method: str,
    sticky_key: str,
    reason: str,
    mde: float | None,
    power: float,
    planned_units: int | None,
) -> Experiment:
    """The experiment the arguments describe, or a ParameterError naming the first bad one."""
    from shipyard.experiments.sequential import check_alpha

    owner = "start_experiment"
    for param, value in (("name", name), ("endpoint", endpoint), ("sticky_key", sticky_key)):
        if not isinstance(value, str) or not value.strip():
            raise invalid_parameter(param, owner, "a non-empty string", value)
    if not isinstance(reason, str) or not reason.strip():
        raise invalid_parameter("reason", owner, "why the experiment runs", reason)
    for side, number in (("control", control), ("treatment", treatment)):
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise invalid_parameter(side, owner, "a registered version number (int >= 1)", number)
    if control == treatment:
        raise invalid_parameter(
            "treatment", owner, f"a version other than control {control}", treatment
        )
    weights = _checked_split(split, owner)
    _check_design(method, mde, power, planned_units, owner)
    primary = metric_spec(metric)
    checks = tuple(metric_spec(g) for g in guardrails)
    return Experiment(
        name=name, endpoint=endpoint, model="", control=control, treatment=treatment,
        split=weights, metric=primary, guardrails=checks,
        alpha=check_alpha(alpha, owner), method=method, sticky_key=sticky_key,
        salt=f"{name}-{uuid.uuid4().hex[:8]}", base_revision=0, revision=0, status=RUNNING,
        started_at=datetime.now(UTC), started_by="", reason=reason,
        mde=None if mde is None else float(mde), power=float(power),
        planned_units=planned_units,
    )  # fmt: skip


def _checked_split(split: Sequence[float], owner: str) -> tuple[float, float]:
    weights = tuple(split) if isinstance(split, Sequence) and not isinstance(split, str) else ()
    if len(weights) != 2 or not all(
        isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w > 0
        for w in weights
    ):
        raise invalid_parameter("split", owner, "two positive numbers such as (50, 50)", split)
    return float(weights[0]), float(weights[1])


def _check_design(
    method: str, mde: float | None, power: float, planned_units: int | None, owner: str
) -> None:
    if method not in METHODS:
        raise invalid_parameter("method", owner, f"one of {list(METHODS)}", method)
    if mde is not None and (
        isinstance(mde, bool) or not isinstance(mde, int | float) or not mde > 0
    ):
        raise invalid_parameter("mde", owner, "a relative effect > 0, e.g. 0.1 for 10%", mde)
    if isinstance(power, bool) or not isinstance(power, int | float) or not 0 < power < 1:
        raise invalid_parameter("power", owner, "a number in (0, 1)", power)
    if (method == "fixed" or planned_units is not None) and (
        isinstance(planned_units, bool) or not isinstance(planned_units, int) or planned_units < 2
    ):
        raise invalid_parameter(
            "planned_units", owner, "the units per arm the fixed test waits for (int >= 2)",
            planned_units,
        )  # fmt: skip


def _check_versions(workspace: Workspace, policy: TrafficPolicy) -> None:
    """ModelNotFoundError for a version that is not registered, SchemaError for versions
    with different inputs (what set_policy would refuse, checked before anything is stored)."""
    from shipyard.registry.models import ModelRegistry
    from shipyard.serving.policy import check_same_inputs

    registry = ModelRegistry(workspace)
    schemas = {v: registry.get(policy.model, v).input_schema for v in sorted(policy.versions)}
    check_same_inputs(policy, schemas)


def _refuse_running(workspace: Workspace, endpoint: str, name: str) -> None:
    from sqlalchemy import select

    from shipyard.tables import experiments as table

    with workspace.engine.connect() as conn:
        running = conn.execute(select(table.c.name).where(table.c.active_key == endpoint)).scalar()
        taken = conn.execute(select(table.c.status).where(table.c.name == name)).scalar()
    if running is not None:
        raise ExperimentConflictError(
            f"Endpoint {endpoint!r} already runs experiment {running!r}; overlapping "
            f"experiments are refused. Stop it first (shipyard experiment stop {running})."
        )
    if taken is not None:
        raise ExperimentConflictError(
            f"An experiment named {name!r} already exists ({taken}); choose another name."
        )


def _insert(workspace: Workspace, experiment: Experiment) -> None:
    """Store the experiment as running; the unique active_key refuses a concurrent start."""
    import sqlalchemy.exc
    from sqlalchemy import insert

    from shipyard.tables import experiments as table

    row = {
        "name": experiment.name,
        "endpoint": experiment.endpoint,
        "status": RUNNING,
        "spec": experiment._spec(),
        "result": None,
        "active_key": experiment.endpoint,
        "started_at": _naive(experiment.started_at),
        "started_by": experiment.started_by,
        "reason": experiment.reason,
    }
    try:
        with workspace.engine.begin() as conn:
            conn.execute(insert(table).values(**row))
    except sqlalchemy.exc.IntegrityError:
        # lost a race with another start: say which
        _refuse_running(workspace, experiment.endpoint, experiment.name)
        raise


def _set_experiment_policy(
    workspace: Workspace, experiment: Experiment, policy: TrafficPolicy, actor: str | None
) -> None:
    from shipyard.governance.audit import append
    from shipyard.serving.policy import rollback_policy, set_policy

    reason = f"experiment {experiment.name}: {experiment.reason}"
    stored = set_policy(
        workspace, policy, reason=reason, actor=actor, expected_revision=experiment.base_revision
    )
    try:
        append(
            workspace,
            kind="experiment",
            name=experiment.name,
            action="experiment.start",
            reason=experiment.reason,
            actor=experiment.started_by,
            after=experiment._spec(),
            details={"endpoint": experiment.endpoint, "revision": stored.revision},
        )
    except BaseException:
        rollback_policy(
            workspace, experiment.endpoint, reason=f"experiment {experiment.name} not started",
            actor=actor, expected_revision=stored.revision,
        )  # fmt: skip
        raise


def _delete(workspace: Workspace, name: str) -> None:
    from sqlalchemy import delete

    from shipyard.tables import experiments as table

    with workspace.engine.begin() as conn:
        conn.execute(delete(table).where(table.c.name == name))


# ------------------------------------------------------------------------------ the store


def get_experiment(workspace: Workspace, name: str) -> Experiment:
    """The experiment named ``name`` (ExperimentNotFoundError lists the known ones)."""
    from sqlalchemy import select

    from shipyard.tables import experiments as table

    with workspace.engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.name == name)).mappings().first()
    if row is None:
        known = [e.name for e in list_experiments(workspace)]
        raise ExperimentNotFoundError(
            f"No experiment named {name!r}; known: {known or 'none'} (shipyard experiment list)."
        )
    return _from_row(dict(row))


def list_experiments(
    workspace: Workspace, endpoint: str | None = None, status: str | None = None
) -> list[Experiment]:
    """Every experiment (of ``endpoint``, of ``status`` running/stopped), oldest first."""
    from sqlalchemy import select

    from shipyard.tables import experiments as table

    query = select(table).order_by(table.c.started_at, table.c.id)
    if endpoint is not None:
        query = query.where(table.c.endpoint == endpoint)
    if status is not None:
        if status not in (RUNNING, STOPPED):
            raise invalid_parameter("status", "list_experiments", "'running' or 'stopped'", status)
        query = query.where(table.c.status == status)
    with workspace.engine.connect() as conn:
        return [_from_row(dict(r)) for r in conn.execute(query).mappings()]


def _from_row(row: dict[str, Any]) -> Experiment:
    spec = row["spec"]
    stopped = row["status"] == STOPPED
    return Experiment(
        name=row["name"],
        endpoint=row["endpoint"],
        model=spec["model"],
        control=int(spec["control"]),
        treatment=int(spec["treatment"]),
        split=(float(spec["split"][0]), float(spec["split"][1])),
        metric=MetricSpec.from_dict(spec["metric"]),
        guardrails=tuple(MetricSpec.from_dict(g) for g in spec["guardrails"]),
        alpha=float(spec["alpha"]),
        method=spec["method"],
        sticky_key=spec["sticky_key"],
        salt=spec["salt"],
        base_revision=int(spec["base_revision"]),
        revision=int(spec["revision"]),
        status=row["status"],
        started_at=_aware(row["started_at"]),
        started_by=row["started_by"],
        reason=spec.get("start_reason", row["reason"]),
        mde=spec.get("mde"),
        power=float(spec.get("power", 0.8)),
        planned_units=spec.get("planned_units"),
        result=row["result"],
        stopped_at=None if row["stopped_at"] is None else _aware(row["stopped_at"]),
        stopped_by=row["stopped_by"],
        stop_reason=row["reason"] if stopped else None,
    )


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# ---------------------------------------------------------------------------------- status


@dataclass(frozen=True)
class ExperimentStatus:
    """What :func:`experiment_status` found: the metric, the guardrails, what was done."""

    experiment: Experiment
    primary: MetricResult
    guardrails: tuple[MetricResult, ...]
    units: dict[str, int]
    """Units seen per arm (labelled or not)."""
    unlabelled_units: dict[str, int]
    """Units per arm not counted by label metrics yet (no labelled prediction)."""
    records: int
    unkeyed: int
    misrouted: int
    units_needed: int | None = None
    """More units per arm needed to detect the experiment's MDE (None: no MDE stated)."""
    stopped_early: str | None = None
    """The guardrail that stopped the experiment during this call, if one did."""
    notes: tuple[str, ...] = field(default=())

    @property
    def decision(self) -> str:
        """The primary metric's decision (the recorded one once stopped)."""
        if self.experiment.result is not None:
            return str(self.experiment.result["decision"])
        return self.primary.decision

    def describe(self) -> str:
        """A few lines for a person: arms, effect with its interval, decision, guardrails."""
        e, test = self.experiment, self.primary.test
        lines = [f"experiment {e.name} on {e.endpoint} ({e.status}): {e.metric.describe()}"]
        for arm in ARMS:
            stats = self.primary.arms[arm]
            lines.append(f"  {arm} v{e.version(arm)}: {stats.n} units, {stats.mean:.4g}")
        if test is not None:
            lines.append(
                f"  effect {test.effect:+.4g} [{test.low:+.4g}, {test.high:+.4g}], "
                f"p {test.p_value:.3g} ({test.method})"
            )
        lines.append(f"  decision: {self.decision}")
        lines += [f"  guardrail {g.metric.name}: {g.decision}" for g in self.guardrails]
        if self.stopped_early:
            lines.append(f"  stopped early: guardrail {self.stopped_early}; traffic to control")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what ``shipyard experiment status --json`` prints)."""
        return {
            "experiment": self.experiment.to_dict(),
            "decision": self.decision,
            "primary": self.primary.to_dict(),
            "guardrails": [g.to_dict() for g in self.guardrails],
            "units": self.units,
            "unlabelled_units": self.unlabelled_units,
            "records": self.records,
            "unkeyed": self.unkeyed,
            "misrouted": self.misrouted,
            "units_needed": self.units_needed,
            "stopped_early": self.stopped_early,
            "notes": list(self.notes),
        }


def experiment_status(
    workspace: Workspace, name: str, *, stop_on_guardrail: bool = True, actor: str | None = None
) -> ExperimentStatus:
    """The experiment's metric per arm, its test and guardrails; stops it early when a
    guardrail shows the treatment significantly worse (``stop_on_guardrail``).

    Example: ``experiment_status(ws, "v4").primary.test.decision``.
    """
    from shipyard.experiments.metrics import experiment_data

    experiment = get_experiment(workspace, name)
    data = experiment_data(workspace, experiment)
    status = evaluate(experiment, data)
    moved = _policy_moved(workspace, experiment)
    if moved is not None:
        status = replace(status, notes=(*status.notes, moved))
    tripped = next((g for g in status.guardrails if g.treatment_worse), None)
    if tripped is None or experiment.status != RUNNING or not stop_on_guardrail:
        return status
    reason = (
        f"guardrail {tripped.metric.name}: treatment v{experiment.treatment} significantly "
        f"worse ({_effect_text(tripped)})"
    )
    try:
        stopped = _stop(
            workspace, experiment, status, reason=reason, actor=actor, winner=None,
            early=tripped.metric.name,
        )  # fmt: skip
    except ConcurrentChangeError:  # another status or stop got there first
        return replace(status, experiment=get_experiment(workspace, name))
    return replace(status, experiment=stopped, stopped_early=tripped.metric.name)


def _policy_moved(workspace: Workspace, experiment: Experiment) -> str | None:
    """A note when a running experiment's split is no longer the endpoint's policy (an
    endpoint guardrail rolled it back, or someone set another policy)."""
    from shipyard.serving.policy import get_policy

    if experiment.status != RUNNING:
        return None
    current = get_policy(workspace, experiment.endpoint)
    if current.salt == experiment.salt:
        return None
    return (
        f"the endpoint's policy is no longer the experiment's split (revision "
        f"{current.revision}: {current.describe()}, {current.reason!r}); new traffic is not "
        "assigned by the experiment"
    )


def evaluate(experiment: Experiment, data: ExperimentData) -> ExperimentStatus:
    """The status of ``experiment`` on ``data`` (no side effect; the plots call it per look)."""
    primary = metric_result(experiment, data, experiment.metric, experiment.method)
    checks = tuple(metric_result(experiment, data, g, "msprt") for g in experiment.guardrails)
    notes = []
    unlabelled = data.unlabelled_units()
    if experiment.metric.needs_labels and any(unlabelled.values()):
        notes.append(
            f"{sum(unlabelled.values())} unit(s) without a label yet are not counted by "
            f"{experiment.metric.name}"
        )
    if data.unkeyed or data.misrouted:
        notes.append(
            f"{data.unkeyed} record(s) without a routing key and {data.misrouted} answered "
            "by the other arm's version (workers switching policy) left out"
        )
    if experiment.method == "fixed" and primary.test is not None:
        planned = experiment.planned_units or 0
        if min(primary.arms["control"].n, primary.arms["treatment"].n) < planned:
            notes.append(f"the fixed-horizon test decides at {planned} units per arm")
    needed = None
    if experiment.mde is not None:
        needed = units_needed(experiment, primary.arms)
    return ExperimentStatus(
        experiment=experiment,
        primary=primary,
        guardrails=checks,
        units=data.units,
        unlabelled_units=unlabelled,
        records=data.records,
        unkeyed=data.unkeyed,
        misrouted=data.misrouted,
        units_needed=needed,
        notes=tuple(notes),
    )


def _effect_text(result: MetricResult) -> str:
    test = result.test
    if test is None:
        return "no test"
    return f"{test.effect:+.4g} [{test.low:+.4g}, {test.high:+.4g}], p {test.p_value:.3g}"


# ------------------------------------------------------------------------------------ stop


def stop_experiment(
    workspace: Workspace,
    name: str,
    *,
    reason: str,
    actor: str | None = None,
    winner: int | None = None,
) -> Experiment:
    """Record the final result and send all traffic to ``winner`` (default: the control).

    Example: ``stop_experiment(ws, "v4", reason="v4 is better", winner=4)``.
    """
    from shipyard.experiments.metrics import experiment_data

    if not isinstance(reason, str) or not reason.strip():
        raise invalid_parameter("reason", "stop_experiment", "why the experiment stops", reason)
    experiment = get_experiment(workspace, name)
    if experiment.status != RUNNING:
        raise ExperimentConflictError(
            f"Experiment {name!r} is already stopped ({experiment.stop_reason})."
        )
    if winner is not None and winner not in (experiment.control, experiment.treatment):
        raise invalid_parameter(
            "winner",
            "stop_experiment",
            f"the control {experiment.control} or the treatment {experiment.treatment}",
            winner,
        )
    status = evaluate(experiment, experiment_data(workspace, experiment))
    return _stop(workspace, experiment, status, reason=reason, actor=actor, winner=winner)


def _stop(
    workspace: Workspace,
    experiment: Experiment,
    status: ExperimentStatus,
    *,
    reason: str,
    actor: str | None,
    winner: int | None,
    early: str | None = None,
) -> Experiment:
    """Claim the stop (the row, only if still running: two stoppers never both act), send
    the traffic to the winner as a new policy revision (running again if that fails), then
    record the result and audit it."""
    from shipyard.governance.audit import append, transaction
    from shipyard.registry.models import current_user
    from shipyard.serving.policy import Arm, get_policy, set_policy

    chosen = experiment.control if winner is None else winner
    who = actor or current_user()
    result: dict[str, Any] = {
        "decision": status.primary.decision,
        "primary": status.primary.to_dict(),
        "guardrails": [g.to_dict() for g in status.guardrails],
        **{"units": status.units, "winner": chosen, "revision": None, "stopped_early": early},
    }
    _claim_stop(workspace, experiment, result, reason, who)
    try:
        current = get_policy(workspace, experiment.endpoint)
        shadows = tuple(v for v in current.shadows if v != chosen)
        arms = (Arm(chosen, 1.0),)
        policy = replace(current, arms=arms, shadows=shadows, sticky_key=None, salt=None)
        stored = set_policy(
            workspace, policy, reason=f"experiment {experiment.name} stopped: {reason}", actor=who
        )
    except BaseException:
        _unclaim_stop(workspace, experiment)
        raise
    result["revision"] = stored.revision
    with transaction(workspace) as conn:
        _set_result(conn, experiment.name, result)
        append(
            workspace,
            kind="experiment",
            name=experiment.name,
            action="experiment.stop",
            reason=reason,
            actor=who,
            version=chosen,
            before={"status": RUNNING, "revision": experiment.revision},
            after={"status": STOPPED, **result},
            details={"endpoint": experiment.endpoint, "revision": stored.revision},
            connection=conn,
        )
    return get_experiment(workspace, experiment.name)


def _claim_stop(
    workspace: Workspace, experiment: Experiment, result: dict[str, Any], reason: str, who: str
) -> None:
    """Mark the experiment stopped if it still runs; ConcurrentChangeError if it does not."""
    from sqlalchemy import update

    from shipyard.tables import experiments as table

    with workspace.engine.begin() as conn:
        done = conn.execute(
            update(table)
            .where((table.c.name == experiment.name) & (table.c.status == RUNNING))
            .values(
                status=STOPPED,
                active_key=None,
                result=result,
                stopped_at=_naive(datetime.now(UTC)),
                stopped_by=who,
                reason=reason,
            )
        )
    if done.rowcount != 1:
        raise ConcurrentChangeError(
            f"Experiment {experiment.name!r} was stopped meanwhile; nothing more was changed."
        )


def _unclaim_stop(workspace: Workspace, experiment: Experiment) -> None:
    """Undo :func:`_claim_stop` (the policy could not be set)."""
    from sqlalchemy import update

    from shipyard.tables import experiments as table

    with workspace.engine.begin() as conn:
        conn.execute(
            update(table)
            .where(table.c.name == experiment.name)
            .values(
                status=RUNNING,
                active_key=experiment.endpoint,
                result=None,
                stopped_at=None,
                stopped_by=None,
                reason=experiment.reason,
            )
        )


def _set_result(conn: Connection, name: str, result: dict[str, Any]) -> None:
    from sqlalchemy import update

    from shipyard.tables import experiments as table

    conn.execute(update(table).where(table.c.name == name).values(result=result))
