"""The in-server guardrail watcher: each worker judges the versions on probation, and rolls back.

Every answered request appends its scores and latency to bounded windows of its version
(:meth:`Guard.observe`, a few deque appends: no array, no lock), and every failed one a
failure flag (:meth:`Guard.failed`). A task evaluates, every ``guard_interval_s``, the
guardrails of each version **on probation** — brought into the arms by the current policy
revision's run of revisions (not by a rollback) less than ``probation_s`` ago — with the same
rule logic as the prediction log
(:func:`shipyard.monitoring.guardrails.evaluate_observations`). The baseline is the previous
champion's answers in this worker (kept from before the switch), else the version's reference
scores. A trip calls :func:`~shipyard.monitoring.trips.act_on_trip` in a thread with
``expected_revision``, so the rollback happens once however many workers trip together; the
workers then pick the restored revision up like any policy change (no request fails).

Guardrails and decision thresholds are read when the policy revision changes; none stored
means :func:`~shipyard.monitoring.guardrails.default_guardrails`. An error of the watcher is
logged and never reaches a request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from shipyard.monitoring.guardrails import Guardrail, GuardrailResult, Observations
    from shipyard.monitoring.trips import Trip
    from shipyard.serving.policy import TrafficPolicy
    from shipyard.workspace import Workspace

logger = logging.getLogger(__name__)

MAX_VERSIONS = 8
"""Versions whose windows a worker keeps (the current arms and recent baselines)."""


class VersionWindow:
    """The last ``size`` scores (rows), latencies and failure flags (requests) of a version."""

    __slots__ = ("errors", "latency", "scores", "seen")

    def __init__(self, size: int) -> None:
        self.scores: deque[float] = deque(maxlen=size)
        self.latency: deque[float] = deque(maxlen=size)
        self.errors: deque[bool] = deque(maxlen=size)
        self.seen = 0
        """Requests seen since the window was (re)started."""

    def observations(self) -> Observations:
        """A copy of the windows as arrays (taken on the event loop, judged elsewhere)."""
        from shipyard.monitoring.guardrails import Observations

        return Observations(
            np.fromiter(self.scores, dtype=np.float64, count=len(self.scores)),
            np.fromiter(self.latency, dtype=np.float64, count=len(self.latency)),
            np.fromiter(self.errors, dtype=np.bool_, count=len(self.errors)),
        )


@dataclass
class Probation:
    """What the watcher judges under one policy revision (read when the revision changes)."""

    revision: int
    guardrails: list[Guardrail]
    versions: dict[int, int | None]
    """Each version on probation and its baseline version (None: its reference scores)."""
    until: dict[int, float]
    """When each version's probation ends (epoch seconds)."""
    thresholds: dict[int, float]
    references: dict[int, NDArray[np.float64] | None] = field(default_factory=dict)
    acted: bool = False
    """A rollback was asked for this revision: nothing more to do under it."""
    alerted: set[str] = field(default_factory=set)
    """Alert-only guardrails already raised under this revision."""


class Guard:
    """One worker's guardrail watcher over its endpoint's answers."""

    def __init__(
        self,
        workspace: Workspace,
        endpoint: str,
        *,
        probation_s: float = 3600.0,
        interval_s: float = 0.5,
        window: int = 2000,
    ) -> None:
        self.workspace = workspace
        self.endpoint = endpoint
        self.probation_s = probation_s
        self.interval_s = interval_s
        self._size = window
        self._windows: dict[int, VersionWindow] = {}
        self.probation: Probation | None = None
        self.trips: list[Trip] = []
        self.results: dict[int, list[GuardrailResult]] = {}
        """The latest judgement of each version on probation."""
        self._task: asyncio.Task[None] | None = None
        self._loading: asyncio.Task[None] | None = None

    # -- the hot path: called for every request --------------------------------------------

    def observe(self, version: int, scores: NDArray[np.float64], latency_s: float) -> None:
        """Record an answer of ``version``: its scores (one per row) and latency."""
        window = self._windows.get(version)
        if window is None:
            window = self._window(version)
        if scores.size == 1:
            window.scores.append(float(scores[0]))
        else:
            window.scores.extend(scores.ravel().tolist())
        window.latency.append(latency_s * 1000.0)
        window.errors.append(False)
        window.seen += 1

    def failed(self, version: int) -> None:
        """Record that a request assigned to ``version`` failed (answered 5xx)."""
        window = self._windows.get(version)
        if window is None:
            window = self._window(version)
        window.errors.append(True)
        window.seen += 1

    def _window(self, version: int) -> VersionWindow:
        if len(self._windows) >= MAX_VERSIONS:  # forget the oldest version not in use
            keep: set[int | None] = set()
            if self.probation is not None:
                keep = {*self.probation.versions, *self.probation.versions.values()}
            for old in list(self._windows):
                if old not in keep:
                    del self._windows[old]
                    break
        window = self._windows[version] = VersionWindow(self._size)
        return window

    def window(self, version: int) -> VersionWindow | None:
        """The version's window in this worker, if it answered any request."""
        return self._windows.get(version)

    # -- policy changes ---------------------------------------------------------------------

    def switched(self, old: TrafficPolicy | None, new: TrafficPolicy) -> None:
        """A new policy is served: versions it brings into the arms start fresh windows (the
        answers they gave under an earlier revision are not theirs to be judged on)."""
        before = {a.version for a in old.arms} if old is not None else set()
        for arm in new.arms:
            if arm.version not in before and arm.version in self._windows:
                self._windows[arm.version] = VersionWindow(self._size)

    def _probation(self, policy: TrafficPolicy) -> Probation:
        """Read the guardrails, history and thresholds for ``policy``'s revision (a thread)."""
        from shipyard.monitoring.guardrails import introduction, list_guardrails, on_probation
        from shipyard.monitoring.thresholds import decision_threshold
        from shipyard.serving.policy import policy_history

        history = policy_history(self.workspace, self.endpoint)
        history = [p for p in history if p.revision <= policy.revision]
        versions = on_probation(history, probation_s=self.probation_s)
        until: dict[int, float] = {}
        for version in versions:
            intro = introduction(history, version)
            assert intro is not None and intro[0].created_at is not None
            created = intro[0].created_at.replace(tzinfo=UTC).timestamp()
            until[version] = created + self.probation_s
        guardrails = list_guardrails(self.workspace, self.endpoint) if versions else []
        thresholds = {v: decision_threshold(self.workspace, policy.model, v) for v in versions}
        return Probation(policy.revision, guardrails, versions, until, thresholds)

    def _references(self, model: str, versions: list[int]) -> dict[int, Any]:
        """Each version's reference scores (built on first use: seconds; a thread)."""
        from shipyard.monitoring.guardrails import reference_scores

        return {v: reference_scores(self.workspace, model, v) for v in versions}

    async def settled(self) -> None:
        """Wait until the reference scores of the versions on probation are loaded."""
        if self._loading is not None:
            await asyncio.shield(self._loading)

    async def _load_references(self, probation: Probation, model: str) -> None:
        try:
            found = await asyncio.to_thread(self._references, model, list(probation.versions))
        except Exception:  # judged without them (score_shift stays insufficient)
            logger.exception("loading the reference scores of %s failed", model)
            return
        probation.references.update(found)

    # -- the watcher task -------------------------------------------------------------------

    def start(self, state: Any) -> None:
        """Start watching ``state`` (a callable returning the runtime's current policy)."""
        self._task = asyncio.get_running_loop().create_task(self._run(state))

    async def stop(self) -> None:
        """Stop watching (a trip being acted on finishes in its thread)."""
        for task in (self._task, self._loading):
            if task is not None:
                task.cancel()

    async def _run(self, current: Any) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                policy = current()
                if policy is not None:
                    await self.check(policy)
            except asyncio.CancelledError:
                raise
            except Exception:  # never stop watching, never touch a request
                logger.exception(
                    "worker %d: the guardrail watcher of %r failed; it tries again",
                    os.getpid(),
                    self.endpoint,
                    extra={"endpoint": self.endpoint},
                )

    async def check(self, policy: TrafficPolicy) -> list[Trip]:
        """Judge the versions on probation under ``policy``; act on a trip. The trips acted on."""
        probation = self.probation
        if probation is None or probation.revision != policy.revision:
            probation = await asyncio.to_thread(self._probation, policy)
            self.probation = probation
            if probation.versions and _needs_reference(probation.guardrails):
                # built on first use (seconds): judged meanwhile on what needs no reference
                self._loading = asyncio.get_running_loop().create_task(
                    self._load_references(probation, policy.model)
                )
        if probation.acted or not probation.versions:
            return []
        trips = []
        now = time.time()
        for version, baseline in probation.versions.items():
            if now >= probation.until[version]:
                continue
            trip = await self._judge(policy, probation, version, baseline)
            if trip is not None:
                trips.append(trip)
            if probation.acted:
                break
        return trips

    async def _judge(
        self, policy: TrafficPolicy, probation: Probation, version: int, baseline: int | None
    ) -> Trip | None:
        from shipyard.monitoring.guardrails import evaluate_observations
        from shipyard.monitoring.trips import act_on_trip

        window = self._windows.get(version)
        if window is None:
            return None
        current = window.observations()  # copied here, on the loop that appends to it
        base_window = self._windows.get(baseline) if baseline is not None else None
        base = None if base_window is None else current_scores(base_window)
        results = await asyncio.to_thread(
            evaluate_observations,
            probation.guardrails,
            version,
            current,
            threshold=probation.thresholds[version],
            baseline=base,
            baseline_text=f"v{baseline}'s traffic in this worker",
            reference=probation.references.get(version),
        )
        self.results[version] = results
        tripped = [r for r in results if r.status == "tripped"]
        rollback = any(r.guardrail.rollback for r in tripped)
        fresh = [r for r in tripped if r.guardrail.name not in probation.alerted]
        if not rollback and not fresh:
            return None
        if rollback:
            probation.acted = True
        probation.alerted.update(r.guardrail.name for r in tripped)
        return await self._act(policy, version, results, window.seen, act_on_trip)

    async def _act(
        self,
        policy: TrafficPolicy,
        version: int,
        results: list[GuardrailResult],
        requests: int,
        act: Any,
    ) -> Trip:
        trip: Trip = await asyncio.to_thread(
            act,
            self.workspace,
            self.endpoint,
            revision=policy.revision,
            version=version,
            results=results,
            requests=requests,
        )
        self.trips.append(trip)
        logger.warning(
            "guardrail tripped on %s v%d (revision %d, %d requests): %s%s",
            self.endpoint,
            version,
            policy.revision,
            requests,
            "; ".join(r.detail for r in results if r.status == "tripped"),
            f"; rolled back to v{trip.rolled_back_to} (revision {trip.rollback_revision})"
            if trip.rollback_revision is not None
            else "",
            extra={"endpoint": self.endpoint, "version": version},
        )
        return trip


def current_scores(window: VersionWindow) -> NDArray[np.float64]:
    """The scores of a window as an array."""
    return np.fromiter(window.scores, dtype=np.float64, count=len(window.scores))


def _needs_reference(guardrails: list[Guardrail]) -> bool:
    return any(g.metric in ("score_shift", "alert_rate_lift") for g in guardrails)
