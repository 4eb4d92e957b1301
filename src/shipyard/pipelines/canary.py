"""A gated canary rollout: 5 % → 25 % → 100 % of traffic, guardrails judged at every step.

Each step stores a traffic policy (the baseline ``100 - p`` %, the candidate ``p`` %), then
judges the candidate's guardrails on the prediction log since the step began
(:func:`shipyard.monitoring.guardrails.evaluate_guardrails`, against the baseline's traffic
before the step). A step **advances** once the candidate answered ``min_requests`` requests
in it and every guardrail is judged (none "insufficient") without a trip; a tripped guardrail
that rolls back restores the baseline policy (``expected_revision``: never over someone
else's change) and stops; a step that times out without enough data restores the baseline
and stops with "insufficient data" — a canary never promotes blindly. If the policy moved
under the canary (the in-server watcher rolled back, or a person changed it), the canary
stops "rolled back" with that revision's reason, and takes the candidate out if it is still
served. After the 100 % step passes, the candidate is promoted to ``promote_alias`` and the
policy stays on it alone.

By default the canary judges the endpoint's guardrails the log can see within a step:
``error_rate`` is judged by the in-server watcher (failures are not logged) and
``realized_fpr`` waits for labels that come later than a step; pass ``guardrails`` to judge
others.

Example::

    result = run_canary(ws, "fraud", 7, steps=(5, 25, 100), reason="weekly retrain")
    print(result.outcome, result.reason)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from shipyard.errors import ConcurrentChangeError, invalid_parameter

if TYPE_CHECKING:
    from shipyard.monitoring.guardrails import Guardrail, GuardrailResult
    from shipyard.serving.policy import TrafficPolicy
    from shipyard.workspace import Workspace

CANARY_METRICS = frozenset({"alert_rate", "alert_rate_lift", "score_shift", "latency_p99_ms"})
"""What a canary step judges by default (see the module doc)."""


@dataclass(frozen=True)
class CanaryStep:
    """One step: the candidate's share, the policy revision, the guardrails and the decision."""

    percent: float
    revision: int
    results: tuple[GuardrailResult, ...]
    decision: str
    """``"advanced"``, ``"rolled back"``, ``"insufficient data"`` or ``"promoted"``."""
    started_at: datetime
    ended_at: datetime
    requests: int = 0
    """Requests the candidate answered during the step."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "percent": self.percent,
            "revision": self.revision,
            "decision": self.decision,
            "requests": self.requests,
            "results": [r.to_dict() for r in self.results],
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat(),
        }


@dataclass(frozen=True)
class CanaryResult:
    """How a canary ended: ``"promoted"``, ``"rolled back"`` or ``"insufficient data"``."""

    endpoint: str
    model: str
    candidate: int
    baseline: int
    steps: tuple[CanaryStep, ...]
    outcome: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "endpoint": self.endpoint,
            "model": self.model,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "outcome": self.outcome,
            "reason": self.reason,
            "steps": [s.to_dict() for s in self.steps],
        }


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _check_steps(steps: Sequence[float]) -> tuple[float, ...]:
    owner = "run_canary"
    expected = "increasing percentages in (0, 100] ending at 100, such as (5, 25, 100)"
    try:
        values = tuple(float(p) for p in steps)
    except (TypeError, ValueError):
        raise invalid_parameter("steps", owner, expected, steps) from None
    ok = bool(values) and values[-1] == 100 and all(0 < p <= 100 for p in values)
    if not ok or any(b <= a for a, b in pairwise(values)):
        raise invalid_parameter("steps", owner, expected, steps)
    return values


def _check_numbers(min_requests: object, step_timeout_s: object, poll_s: object) -> None:
    owner = "run_canary"
    if isinstance(min_requests, bool) or not isinstance(min_requests, int) or min_requests < 1:
        raise invalid_parameter("min_requests", owner, "an int >= 1", min_requests)
    for name, value in (("step_timeout_s", step_timeout_s), ("poll_s", poll_s)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise invalid_parameter(name, owner, "a finite number of seconds > 0", value)


def canary_guardrails(workspace: Workspace, endpoint: str) -> list[Guardrail]:
    """The endpoint's guardrails a canary step judges by default (:data:`CANARY_METRICS`)."""
    from shipyard.monitoring.guardrails import list_guardrails

    return [g for g in list_guardrails(workspace, endpoint) if g.metric in CANARY_METRICS]


def _split(policy: TrafficPolicy, baseline: int, candidate: int, percent: float) -> TrafficPolicy:
    """``policy`` with the baseline at ``100 - percent`` % and the candidate at ``percent`` %."""
    from shipyard.serving.policy import Arm

    if percent >= 100:
        arms: tuple[Arm, ...] = (Arm(candidate, 1.0),)
    else:
        arms = (Arm(baseline, 100.0 - percent), Arm(candidate, percent))
    shadows = tuple(v for v in policy.shadows if v != candidate)
    return replace(policy, arms=arms, shadows=shadows, revision=0, reason="", actor="")


def _requests(workspace: Workspace, endpoint: str, version: int, since: float) -> int:
    """Requests ``version`` answered (shadows aside) since ``since`` (epoch seconds)."""
    from shipyard.monitoring.logstore import query

    sql = (
        f"SELECT count(*) AS n FROM predictions WHERE version = {int(version)} AND "
        f"arm IS DISTINCT FROM 'shadow' AND time >= {since!r}"
    )
    return int(query(workspace, endpoint, sql)["n"].iloc[0])


@dataclass
class _Canary:
    """One canary's fixed context (what every step needs)."""

    workspace: Workspace
    endpoint: str
    candidate: int
    baseline: int
    original: TrafficPolicy
    rules: list[Guardrail]
    min_requests: int
    step_timeout_s: float
    poll_s: float
    reason: str
    actor: str | None

    def restore(self, revision: int, why: str) -> bool:
        """Put the baseline policy back unless the policy moved past ``revision``."""
        from shipyard.serving.policy import set_policy

        try:
            set_policy(
                self.workspace,
                replace(self.original, revision=0, reason="", actor=""),
                reason=f"canary of v{self.candidate} stopped: {why}",
                actor=self.actor,
                action="policy.rollback",
                expected_revision=revision,
            )
        except ConcurrentChangeError:
            return False
        return True

    def moved(self, revision: int, started: datetime, percent: float) -> tuple[CanaryStep, str]:
        """The policy moved under the canary: take the candidate out if it is still served."""
        from shipyard.serving.policy import get_policy

        latest = get_policy(self.workspace, self.endpoint)
        why = f"the policy moved to revision {latest.revision} ({latest.reason})"
        if self.candidate in {a.version for a in latest.arms}:
            self.restore(latest.revision, why)
        step = CanaryStep(percent, revision, (), "rolled back", started, _now())
        return step, why

    def step(self, percent: float) -> tuple[CanaryStep, str | None]:
        """Run one step; the step and, when the canary stops, why."""
        from shipyard.serving.policy import apply_policy, current_revision

        started = _now()
        stored = apply_policy(
            self.workspace,
            _split(self.original, self.baseline, self.candidate, percent),
            reason=f"canary v{self.candidate} {percent:g}%"
            + (f": {self.reason}" if self.reason else ""),
            actor=self.actor,
        )
        since = time.time()
        deadline = time.monotonic() + self.step_timeout_s
        while True:
            time.sleep(self.poll_s)
            if current_revision(self.workspace, self.endpoint) != stored.revision:
                return self.moved(stored.revision, started, percent)
            running = _Running(percent, stored.revision, started, since)
            decided = self.decide(running, timed_out=time.monotonic() >= deadline)
            if decided is not None:
                return decided

    def decide(self, running: _Running, *, timed_out: bool) -> tuple[CanaryStep, str | None] | None:
        """Judge the step so far: rolled back, advanced, out of time, or None (wait)."""
        from shipyard.monitoring.guardrails import evaluate_guardrails
        from shipyard.monitoring.trips import act_on_trip

        results = evaluate_guardrails(
            self.workspace,
            self.endpoint,
            self.candidate,
            since=running.since,
            baseline=self.baseline,
            guardrails=self.rules,
        )
        requests = _requests(self.workspace, self.endpoint, self.candidate, running.since)
        percent, revision = running.percent, running.revision
        tripped = [r for r in results if r.status == "tripped" and r.guardrail.rollback]
        if tripped:
            trip = act_on_trip(
                self.workspace,
                self.endpoint,
                revision=revision,
                version=self.candidate,
                results=results,
                actor=self.actor or "canary",
                requests=requests,
                restore=self.original,
            )
            if trip.rollback_revision is None:  # someone moved the policy first
                return self.moved(revision, running.started, percent)
            why: str | None = f"guardrail tripped at {percent:g}%: {tripped[0].detail}"
            decision = "rolled back"
        elif all(r.status != "insufficient" for r in results) and requests >= self.min_requests:
            why, decision = None, "promoted" if percent >= 100 else "advanced"
        elif timed_out:
            waiting = [r.detail for r in results if r.status == "insufficient"]
            why = (
                f"step {percent:g}% had {requests} of {self.min_requests} requests after "
                f"{self.step_timeout_s:g} s" + (f"; {waiting[0]}" if waiting else "")
            )
            decision = "insufficient data"
            self.restore(revision, why)
        else:
            return None
        step = CanaryStep(
            percent, revision, tuple(results), decision, running.started, _now(), requests
        )
        return step, why


@dataclass(frozen=True)
class _Running:
    """A step in progress: its share, policy revision and when it began."""

    percent: float
    revision: int
    started: datetime
    since: float


def run_canary(
    workspace: Workspace,
    endpoint: str,
    version: int,
    *,
    steps: Sequence[float] = (5, 25, 100),
    min_requests: int = 200,
    step_timeout_s: float = 600.0,
    poll_s: float = 1.0,
    guardrails: Sequence[Guardrail] | None = None,
    promote_alias: str = "champion",
    reason: str = "",
    actor: str | None = None,
    on_step: Callable[[CanaryStep], None] | None = None,
) -> CanaryResult:
    """Roll ``version`` out on ``endpoint`` step by step, judged by guardrails; promote it at
    the end, or restore the baseline (see the module doc).

    The baseline is the current policy's heaviest arm. ``on_step`` is called after each step.
    Example: ``run_canary(ws, "fraud", 7, steps=(5, 25, 100), min_requests=500)``.
    """
    from shipyard.governance.audit import append
    from shipyard.registry.models import ModelRegistry
    from shipyard.serving.policy import get_policy

    percents = _check_steps(steps)
    _check_numbers(min_requests, step_timeout_s, poll_s)
    original = get_policy(workspace, endpoint)
    registry = ModelRegistry(workspace)
    registry.get(original.model, version)  # ModelNotFoundError names a missing version
    baseline = max(original.arms, key=lambda a: a.weight).version
    if baseline == version:
        raise invalid_parameter(
            "version", "run_canary", f"a version other than the one {endpoint!r} serves", version
        )
    rules = list(guardrails) if guardrails is not None else canary_guardrails(workspace, endpoint)
    canary = _Canary(
        workspace,
        endpoint,
        version,
        baseline,
        original,
        rules,
        min_requests,
        float(step_timeout_s),
        float(poll_s),
        reason,
        actor,
    )
    done: list[CanaryStep] = []
    why: str | None = None
    for percent in percents:
        step, why = canary.step(percent)
        done.append(step)
        if on_step is not None:
            on_step(step)
        if why is not None:
            break
    outcome = done[-1].decision
    if why is None:
        why = f"every step passed its guardrails ({', '.join(f'{p:g}%' for p in percents)})"
        registry.promote(
            original.model,
            version,
            reason=f"canary on {endpoint}: {why}" + (f"; {reason}" if reason else ""),
            actor=actor,
            alias=promote_alias,
        )
    result = CanaryResult(endpoint, original.model, version, baseline, tuple(done), outcome, why)
    append(
        workspace,
        kind="endpoint",
        name=endpoint,
        action="canary",
        reason=f"v{version}: {outcome}: {why}",
        actor=actor,
        version=version,
        details=result.to_dict(),
    )
    return result
