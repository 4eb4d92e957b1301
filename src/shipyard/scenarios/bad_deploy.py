"""The bad-deploy scenario: a broken version goes live, the endpoint rolls itself back.

:func:`run_bad_deploy_scenario` (``shipyard scenario bad-deploy``) runs, in one workspace:

1. **The champion**: the workspace's ``fraud@champion``, else a small one trained here
   (as the drift scenario does: :func:`~shipyard.scenarios.drift.fraud_champion`).
2. **Guardrails** for the endpoint: the ones given, else the defaults
   (:func:`~shipyard.monitoring.guardrails.default_guardrails`).
3. **Live traffic**: ``shipyard serve`` on 127.0.0.1 serving the champion, and one
   transaction per request sent from a thread (:class:`~shipyard.scenarios.replay.
   ContinuousReplay`, the days after the champion's evaluation window) until the end: a
   few thousand requests before the deploy, so the champion's alert rate is known.
4. **The deploy**: the champion packaged with amounts in cents instead of units
   (:mod:`shipyard.scenarios.faults`), registered as a new version and put at 100 % of the
   traffic by a new policy revision (reason ``deploy v<n>``), as a team would.
5. **Detection**: the server's guardrail watcher trips on the new version and rolls the
   policy back by itself (a ``policy.rollback`` revision, a ``guardrail.trip`` audit entry,
   an alert). Measured: the requests the broken version answered before the rollback
   revision (from the prediction log) and the requests that failed (must be none).
6. **The root cause**: :func:`~shipyard.monitoring.rca.root_cause`, written as HTML and text
   under ``out``; it must name the broken column first.
7. **The fix, by canary**: the same package with the conversion removed, registered and
   rolled out 5 % -> 25 % -> 100 % by :func:`~shipyard.pipelines.canary.run_canary` while the
   traffic continues; it must be promoted and the policy end on it.

Example::

    result = run_bad_deploy_scenario(ws, out=Path("bad-deploy"))
    print(result.requests_to_detection, result.failed_requests, result.rca_top_feature)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import ShipyardError, invalid_parameter
from shipyard.serialize import jsonable

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from shipyard.monitoring.guardrails import Guardrail
    from shipyard.pipelines.canary import CanaryResult
    from shipyard.registry.models import ModelVersion
    from shipyard.scenarios.replay import Answer, ContinuousReplay
    from shipyard.serving.policy import TrafficPolicy
    from shipyard.workspace import Workspace

ProgressCallback = Callable[[str, int, int], None]

ENDPOINT = "fraud-bad-deploy"
"""The scenario's endpoint: its prediction log is replaced by each run."""
ACTOR = "shipyard scenario bad-deploy"
BASELINE_REQUESTS = 3000
"""Requests the champion answers before the deploy."""
AFTER_REQUESTS = 1000
"""Requests the restored champion answers after the rollback, before the fix."""
CANARY_STEPS = (5, 25, 100)
RATE = 500.0
"""Requests per second of the traffic (a busy scoring endpoint)."""
DETECTION_BUDGET = 1000
"""The requests a broken version may answer before its rollback: the default guardrails
judge it at 200 rows, then one watcher interval (0.5 s) and the rollback's write pass, about
a second of traffic at :data:`RATE`."""
REPLAY_DAYS = 7
"""Days of traffic after the champion's evaluation window, sent round and round."""


class ScenarioError(ShipyardError, RuntimeError):
    """The scenario could not go on (no rollback came, the traffic stopped)."""


@dataclass(frozen=True)
class Revision:
    """One revision of the endpoint's traffic policy during the scenario."""

    revision: int
    at: datetime
    actor: str
    reason: str
    policy: str
    """``v7 100%``, ``v3 95% · v8 5%`` ..."""


@dataclass(frozen=True)
class BadDeployResult:
    """What the scenario did and measured: the numbers a user reads and a test checks."""

    endpoint: str
    model: str
    champion: int
    broken: int
    fixed: int
    scale: dict[str, float]
    """The broken conversion: ``{column: factor}``."""
    guardrails: tuple[str, ...]
    revisions: tuple[Revision, ...]
    deploy_revision: int
    rollback_revision: int | None
    automatic_rollbacks: int
    """``policy.rollback`` revisions made by the guardrail watcher (one expected)."""
    requests: int
    """Requests sent in all."""
    statuses: dict[str, int]
    """Answers by HTTP status (``0``: no answer, the connection failed)."""
    failed_requests: int
    requests_to_detection: int
    """Requests the broken version answered before the rollback revision (prediction log)."""
    broken_requests: int
    """Every request the broken version answered (workers switch within a poll, ~1 s)."""
    seconds_to_detection: float | None
    """From the deploy revision to the rollback revision."""
    answers_by_version: dict[int, int]
    threshold: float
    alert_rates: dict[str, float | None]
    """Share of answers at or over the threshold: ``before`` the deploy, ``during`` (the
    broken version's), ``after`` the rollback (the champion's), ``canary`` (the fix's)."""
    rca_top_feature: str | None
    rca_features: tuple[str, ...]
    """The features the RCA ranks as seen differently, first the most."""
    rca_html: Path
    rca_text: Path
    canary_outcome: str
    canary_steps: tuple[dict[str, Any], ...]
    canary_reason: str
    final_policy: str
    final_version: int
    audit: tuple[str, ...]
    """Audit-trail entries of the run: ``#seq kind action by actor: reason``."""
    alerts: tuple[str, ...]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def detected(self) -> bool:
        """Whether the guardrails rolled the broken version back by themselves."""
        return self.rollback_revision is not None and self.automatic_rollbacks >= 1

    @property
    def ok(self) -> bool:
        """Rolled back automatically within :data:`DETECTION_BUDGET` requests, nothing failed,
        the RCA named the broken column first, and the canary promoted the fixed version."""
        return (
            self.detected
            and self.requests_to_detection <= DETECTION_BUDGET
            and self.failed_requests == 0
            and self.rca_top_feature == next(iter(self.scale))
            and self.canary_outcome == "promoted"
            and self.final_version == self.fixed
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (datetimes as ISO text, paths as text)."""
        data = asdict(self)
        data.update(
            rca_html=str(self.rca_html),
            rca_text=str(self.rca_text),
            answers_by_version={str(k): v for k, v in self.answers_by_version.items()},
            detected=self.detected,
            ok=self.ok,
        )
        out: dict[str, Any] = jsonable(data)
        return out


def run_bad_deploy_scenario(
    workspace: Workspace,
    *,
    out: Path,
    progress: ProgressCallback | None = None,
    endpoint: str = ENDPOINT,
    scale: Mapping[str, float] | None = None,
    guardrails: Sequence[Guardrail] | None = None,
    canary_steps: Sequence[float] = CANARY_STEPS,
    min_requests: int = 200,
    rate: float | None = RATE,
    workers: int = 2,
    detection_timeout_s: float = 120.0,
    step_timeout_s: float = 120.0,
    simulator: dict[str, Any] | None = None,
) -> BadDeployResult:
    """Run the bad-deploy scenario end to end (see the module docstring); files under ``out``.

    ``scale``: the broken conversion (default ``{"TX_AMOUNT": 100.0}``, cents);
    ``guardrails``: stored for the endpoint in place of its earlier ones (default: none
    stored, the defaults apply); ``canary_steps`` and ``min_requests``: the fix's rollout;
    ``rate``: requests per second of the traffic (None: as fast as answered).
    :attr:`BadDeployResult.ok` says whether it went as it should.
    The endpoint's earlier prediction log, labels and stored guardrails are removed first.
    """
    from shipyard.scenarios.drift import forget_endpoint, fraud_champion
    from shipyard.scenarios.faults import CENTS, check_scale

    _check_options(min_requests, workers, rate, detection_timeout_s, step_timeout_s)
    clock = _Clock(progress)
    champion, dataset = fraud_champion(workspace, simulator, progress)
    checked = check_scale(dict(scale or CENTS), champion.input_schema.names, "bad-deploy")
    clock.lap("champion")
    first_sequence = _last_sequence(workspace)
    forget_endpoint(workspace, endpoint)
    _set_guardrails(workspace, endpoint, guardrails)
    broken = _register(workspace, champion, checked, broken=True)
    clock.lap("broken version")
    rows = _traffic_rows(workspace, champion, dataset)
    out.mkdir(parents=True, exist_ok=True)
    live = _Live(workspace, champion, endpoint, rows, out / "serve.log", rate, workers)
    with live:
        clock.lap("serving")
        deploy = _deploy(workspace, endpoint, champion, broken, live, clock)
        rollback = _wait_for_rollback(workspace, endpoint, deploy, detection_timeout_s)
        clock.lap("detection")
        live.traffic.wait_for(live.traffic.count + AFTER_REQUESTS)
        rca = _root_cause(workspace, endpoint, broken, champion, deploy, out)
        clock.lap("root cause")
        fixed = _register(workspace, champion, dict.fromkeys(checked, 1.0), broken=False)
        clock.lap("fixed version")
        canary_start = datetime.now(UTC).replace(tzinfo=None)
        canary = _canary(workspace, endpoint, fixed, canary_steps, min_requests, step_timeout_s)
        clock.lap("canary")
    answers = live.traffic.answers()
    measured = _Measures.of(workspace, endpoint, answers, broken, rollback)
    return _result(
        workspace,
        endpoint,
        (champion, broken, fixed),
        checked,
        (deploy, rollback, canary_start),
        answers,
        measured,
        rca,
        canary,
        first_sequence,
        clock.laps,
    )


# -- steps ---------------------------------------------------------------------------------


def _check_options(
    min_requests: int,
    workers: int,
    rate: float | None,
    detection_timeout_s: float,
    step_timeout_s: float,
) -> None:
    """ParameterError naming the first bad option, before anything is touched."""
    owner = "run_bad_deploy_scenario"
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)):
        raise invalid_parameter("rate", owner, "None or a number of requests per second > 0", rate)
    if rate is not None and not 0 < rate < float("inf"):
        raise invalid_parameter("rate", owner, "None or a number of requests per second > 0", rate)
    if isinstance(min_requests, bool) or not isinstance(min_requests, int) or min_requests < 1:
        raise invalid_parameter("min_requests", owner, "an int >= 1", min_requests)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise invalid_parameter("workers", owner, "an int >= 1", workers)
    for name, value in (
        ("detection_timeout_s", detection_timeout_s),
        ("step_timeout_s", step_timeout_s),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise invalid_parameter(name, owner, "a number of seconds > 0", value)


def _last_sequence(workspace: Workspace) -> int:
    """The audit trail's last sequence number before the run (0 when empty)."""
    from sqlalchemy import func, select

    from shipyard.tables import registry_events as table

    with workspace.engine.connect() as conn:
        return int(conn.execute(select(func.max(table.c.sequence))).scalar() or 0)


def _set_guardrails(
    workspace: Workspace, endpoint: str, guardrails: Sequence[Guardrail] | None
) -> None:
    """Step 2: the endpoint's stored guardrails replaced by ``guardrails`` (None: the defaults)."""
    from shipyard.monitoring.guardrails import add_guardrail, remove_guardrail, stored_guardrails

    for old in stored_guardrails(workspace, endpoint):
        remove_guardrail(workspace, endpoint, old.name, actor=ACTOR)
    for guardrail in guardrails or ():
        add_guardrail(workspace, endpoint, guardrail, actor=ACTOR)


def _register(
    workspace: Workspace, champion: ModelVersion, scale: dict[str, float], *, broken: bool
) -> ModelVersion:
    """The champion packaged with ``scale``, registered as a new version of its model."""
    from shipyard.scenarios.faults import register_unit_fault

    described = ", ".join(f"{c} x{f:g}" for c, f in scale.items())
    reason = (
        f"v{champion.version} repackaged; the package converts {described} (the bug)"
        if broken
        else f"v{champion.version} repackaged with the unit conversion removed (the fix)"
    )
    return register_unit_fault(
        workspace, champion.name, champion.version, scale=scale, reason=reason, actor=ACTOR
    )


def _traffic_rows(workspace: Workspace, champion: ModelVersion, dataset: Any) -> NDArray[Any]:
    """The champion's inputs over the days after its evaluation window (its evaluation
    window itself when the data set ends there), shuffled with seed 0."""
    from datetime import date

    import numpy as np

    from shipyard.scenarios.drift import replay_frame

    window = champion.lineage.eval_window
    assert window is not None  # a registered version records its evaluation window
    first = date.fromisoformat(window[1][:10]) + timedelta(days=1)
    end = dataset.time_max.date() if dataset.time_max is not None else first
    last = min(first + timedelta(days=REPLAY_DAYS - 1), end)
    if last < first:
        first, last = date.fromisoformat(window[0][:10]), date.fromisoformat(window[1][:10])
    frame = replay_frame(workspace, champion, dataset, first, last)
    matrix = frame[champion.input_schema.names].to_numpy(dtype=np.float64)
    # a seeded shuffle: a steady stream, so that the hour of day does not drift between the
    # champion's requests and the broken version's (only the package changes)
    order = np.random.default_rng(0).permutation(len(matrix))
    return np.ascontiguousarray(matrix[order])


class _Live:
    """The server of the endpoint (serving the champion) and the traffic sent to it."""

    def __init__(
        self,
        workspace: Workspace,
        champion: ModelVersion,
        endpoint: str,
        rows: NDArray[Any],
        log: Path,
        rate: float | None,
        workers: int,
    ) -> None:
        from shipyard.scenarios.replay import ContinuousReplay, LocalServer

        target = f"{champion.name}@{champion.version}"
        self.server = LocalServer(workspace, target, endpoint=endpoint, log=log, workers=workers)
        self.rows = rows
        self.rate = rate
        self.traffic: ContinuousReplay = ContinuousReplay(
            self.server, rows, prefix=f"bad-deploy-{uuid.uuid4().hex[:8]}", rate=rate
        )

    def __enter__(self) -> _Live:
        self.server.start()
        try:
            self.traffic.start()
        except BaseException:
            self.server.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.traffic.stop()
        finally:
            self.server.stop()


def _deploy(
    workspace: Workspace,
    endpoint: str,
    champion: ModelVersion,
    broken: ModelVersion,
    live: _Live,
    clock: _Clock,
) -> TrafficPolicy:
    """Step 4: after the baseline traffic, the broken version at 100 % (a new revision)."""
    from shipyard.serving.policy import Arm, TrafficPolicy, apply_policy, get_policy

    live.traffic.wait_for(BASELINE_REQUESTS)
    clock.lap("baseline traffic")
    current = get_policy(workspace, endpoint)
    policy = TrafficPolicy(endpoint, champion.name, arms=(Arm(broken.version, 100.0),))
    if current.versions != {champion.version}:
        raise ScenarioError(f"endpoint {endpoint} serves {current.describe()}, not the champion")
    return apply_policy(workspace, policy, reason=f"deploy v{broken.version}", actor=ACTOR)


def _wait_for_rollback(
    workspace: Workspace, endpoint: str, deploy: TrafficPolicy, timeout_s: float
) -> TrafficPolicy:
    """Step 5: the first revision after the deploy; ScenarioError if none came in time."""
    from shipyard.serving.policy import policy_history

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        later = [p for p in policy_history(workspace, endpoint) if p.revision > deploy.revision]
        if later:
            return later[0]
        time.sleep(0.2)
    raise ScenarioError(
        f"no guardrail rolled back revision {deploy.revision} of {endpoint} within "
        f"{timeout_s:.0f} s; the broken version still serves (roll back by hand: shipyard "
        f"endpoint rollback {endpoint})"
    )


@dataclass(frozen=True)
class _Rca:
    top: str | None
    features: tuple[str, ...]
    html: Path
    text: Path


def _root_cause(
    workspace: Workspace,
    endpoint: str,
    broken: ModelVersion,
    champion: ModelVersion,
    deploy: TrafficPolicy,
    out: Path,
) -> _Rca:
    """Step 6: the RCA of the broken version against the champion, as HTML and text."""
    from shipyard.monitoring.rca import root_cause, write_rca

    report = root_cause(workspace, endpoint, broken.version, baseline=champion.version)
    html, text = write_rca(report, out)
    features = tuple(s.column for s in report.seen if s.share_changed > 0)
    return _Rca(report.top_feature, features, html, text)


def _canary(
    workspace: Workspace,
    endpoint: str,
    fixed: ModelVersion,
    steps: Sequence[float],
    min_requests: int,
    step_timeout_s: float,
) -> CanaryResult:
    """Step 7: the fix rolled out by canary while the traffic continues."""
    from shipyard.pipelines.canary import run_canary

    return run_canary(
        workspace,
        endpoint,
        fixed.version,
        steps=tuple(steps),
        min_requests=min_requests,
        step_timeout_s=step_timeout_s,
        reason=f"the fix of the bad deploy (v{fixed.version})",
        actor=ACTOR,
    )


# -- measures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Measures:
    requests_to_detection: int
    broken_requests: int
    answers_by_version: dict[int, int]
    statuses: dict[str, int]

    @classmethod
    def of(
        cls,
        workspace: Workspace,
        endpoint: str,
        answers: list[Answer],
        broken: ModelVersion,
        rollback: TrafficPolicy,
    ) -> _Measures:
        """Requests the broken version answered before the rollback revision (from the log),
        answers by version and by status (from the traffic's side)."""
        from collections import Counter

        import numpy as np

        from shipyard.monitoring.logstore import predictions

        table = predictions(workspace, endpoint).select(["version", "time"])
        versions = np.asarray(table.column("version").to_numpy(zero_copy_only=False))
        times = np.asarray(table.column("time").to_numpy(zero_copy_only=False), dtype=float)
        mine = versions == broken.version
        cut = _epoch(rollback.created_at)
        by_version = Counter(a.version for a in answers if a.version is not None)
        statuses = Counter(str(a.status) for a in answers)
        return cls(
            int((mine & (times < cut)).sum()), int(mine.sum()), dict(by_version), dict(statuses)
        )


def _alert_rates(
    answers: list[Answer],
    thresholds: dict[int, float],
    versions: tuple[int, int, int],
    moments: tuple[float, float, float],
) -> dict[str, float | None]:
    """Share of answers at or over their version's threshold, phase by phase."""
    champion, broken, fixed = versions
    deployed, rolled_back, canary = moments

    def rate(keep: Callable[[Answer], bool]) -> float | None:
        chosen = [a for a in answers if a.version is not None and a.score is not None and keep(a)]
        if not chosen:
            return None
        hits = sum(
            1 for a in chosen if a.score is not None and a.score >= thresholds[a.version or 0]
        )
        return round(hits / len(chosen), 4)

    return {
        "before": rate(lambda a: a.version == champion and a.at < deployed),
        "during": rate(lambda a: a.version == broken),
        "after": rate(lambda a: a.version == champion and rolled_back <= a.at < canary),
        "canary": rate(lambda a: a.version == fixed),
    }


def _result(
    workspace: Workspace,
    endpoint: str,
    versions: tuple[ModelVersion, ModelVersion, ModelVersion],
    scale: dict[str, float],
    moments: tuple[TrafficPolicy, TrafficPolicy, datetime],
    answers: list[Answer],
    measured: _Measures,
    rca: _Rca,
    canary: CanaryResult,
    first_sequence: int,
    seconds: dict[str, float],
) -> BadDeployResult:
    """Everything the scenario measured, read back from the log, policy, trail and alerts."""
    from shipyard.monitoring.guardrails import list_guardrails
    from shipyard.monitoring.thresholds import decision_threshold
    from shipyard.serving.policy import ROLLBACK_PREFIX, get_policy, policy_history

    champion, broken, fixed = versions
    deploy, rollback, canary_start = moments
    history = [p for p in policy_history(workspace, endpoint) if p.revision >= deploy.revision]
    numbers = (champion.version, broken.version, fixed.version)
    thresholds = {v: decision_threshold(workspace, champion.name, v) for v in numbers}
    instants = (_epoch(deploy.created_at), _epoch(rollback.created_at), _epoch(canary_start))
    final = get_policy(workspace, endpoint)
    rolled_back = rollback.reason.startswith(ROLLBACK_PREFIX)
    automatic = [p for p in history if p.reason.startswith(ROLLBACK_PREFIX) and p.actor != ACTOR]
    return BadDeployResult(
        endpoint=endpoint,
        model=champion.name,
        champion=champion.version,
        broken=broken.version,
        fixed=fixed.version,
        scale=scale,
        guardrails=tuple(g.describe() for g in list_guardrails(workspace, endpoint)),
        revisions=tuple(_revision(p) for p in history),
        deploy_revision=deploy.revision,
        rollback_revision=rollback.revision if rolled_back else None,
        automatic_rollbacks=len(automatic),
        requests=len(answers),
        statuses=measured.statuses,
        failed_requests=sum(n for status, n in measured.statuses.items() if status != "200"),
        requests_to_detection=measured.requests_to_detection,
        broken_requests=measured.broken_requests,
        seconds_to_detection=round(instants[1] - instants[0], 3) if rolled_back else None,
        answers_by_version=measured.answers_by_version,
        threshold=thresholds[broken.version],
        alert_rates=_alert_rates(answers, thresholds, numbers, instants),
        rca_top_feature=rca.top,
        rca_features=rca.features,
        rca_html=rca.html,
        rca_text=rca.text,
        canary_outcome=str(canary.outcome),
        canary_steps=tuple(s.to_dict() for s in canary.steps),
        canary_reason=str(canary.reason),
        final_policy=final.describe(),
        final_version=max(final.arms, key=lambda a: a.weight).version,
        audit=_audit(workspace, first_sequence),
        alerts=_alerts(workspace, endpoint, first_sequence),
        seconds=seconds,
    )


def _revision(policy: TrafficPolicy) -> Revision:
    at = policy.created_at or datetime.now(UTC).replace(tzinfo=None)
    return Revision(policy.revision, at, policy.actor, policy.reason, policy.describe())


def _audit(workspace: Workspace, after: int) -> tuple[str, ...]:
    """The audit entries appended by the run, one line each."""
    from shipyard.governance.audit import entries

    lines = []
    for e in entries(workspace):
        if e.sequence > after:
            subject = f"{e.name} v{e.version}" if e.version is not None else e.name
            lines.append(f"#{e.sequence} {e.kind} {subject} {e.action} by {e.actor}: {e.reason}")
    return tuple(lines)


def _alerts(workspace: Workspace, endpoint: str, after: int) -> tuple[str, ...]:
    """The endpoint's alerts the run raised (or added a breach to), one line each."""
    from shipyard.governance.audit import entries
    from shipyard.monitoring.alerts import list_alerts

    started = min(
        (e.at for e in entries(workspace) if e.sequence > after),
        default=datetime.now(UTC).replace(tzinfo=None),
    )
    return tuple(
        f"{a.rule} ({a.group}, {a.status}): {a.note}"
        for a in list_alerts(workspace, endpoint, status=None)
        if a.updated_at >= started
    )


def _epoch(moment: datetime | None) -> float:
    if moment is None:
        return time.time()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class _Clock:
    """Seconds per stage, and the stages done as progress."""

    STAGES = 8

    def __init__(self, progress: ProgressCallback | None) -> None:
        self.last = time.perf_counter()
        self.laps: dict[str, float] = {}
        self.progress = progress

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = round(now - self.last, 3)
        self.last = now
        if self.progress is not None:
            self.progress("Bad-deploy scenario (stages)", len(self.laps), self.STAGES)
