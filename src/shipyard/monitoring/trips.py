"""Acting on a tripped guardrail: roll the endpoint back once, raise an alert, record it.

:func:`act_on_trip` is what the in-server watcher (:mod:`shipyard.serving.guard`) and the
canary (:mod:`shipyard.pipelines.canary`) call when a version's guardrails
(:mod:`shipyard.monitoring.guardrails`) trip: ``rollback_policy(expected_revision=)`` (several
workers trip together; the rollback happens once), an open alert ``guardrail:<name>``, the
audit entry ``guardrail.trip`` with every result, and an experiment running on the version
stopped.

Example::

    results = evaluate_guardrails(ws, "fraud", 4)
    trip = act_on_trip(ws, "fraud", revision=7, version=4, results=results)
    print(trip.rolled_back_to, trip.alert_id)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shipyard.errors import ConcurrentChangeError, invalid_parameter
from shipyard.monitoring.guardrails import GuardrailResult
from shipyard.serving.policy import ROLLBACK_PREFIX

if TYPE_CHECKING:
    from shipyard.serving.policy import TrafficPolicy
    from shipyard.workspace import Workspace


@dataclass(frozen=True)
class Trip:
    """A version's guardrails tripped: what was done about it.

    ``rolled_back_to``: the version the endpoint serves after the rollback (its heaviest arm),
    ``rollback_revision`` the policy revision that did it; both None when nothing was rolled
    back (alert-only guardrails, or another worker or person changed the policy first).
    """

    endpoint: str
    version: int
    revision: int
    results: tuple[GuardrailResult, ...]
    requests: int
    rolled_back_to: int | None
    alert_id: int | None
    at: datetime
    rollback_revision: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        fields = {f: getattr(self, f) for f in self.__dataclass_fields__}
        return {**fields, "results": [r.to_dict() for r in self.results], "at": self.at.isoformat()}


def act_on_trip(
    workspace: Workspace,
    endpoint: str,
    *,
    revision: int,
    version: int,
    results: Sequence[GuardrailResult],
    actor: str = "guardrail",
    requests: int = 0,
    restore: TrafficPolicy | None = None,
) -> Trip:
    """Roll ``endpoint`` back from ``revision`` (once, however many workers call this), raise an
    alert and record ``guardrail.trip`` in the audit trail; an experiment running on the
    version stops (traffic to its control).

    Rolls back when a tripped guardrail has ``rollback``; else alerts only. When the policy
    already moved past ``revision`` (another worker rolled back first) nothing is written and
    the Trip says so (``rolled_back_to`` and ``alert_id`` None). ``restore``: the policy to
    go back to instead of the revision before ``revision`` (a canary restores its baseline).
    """
    from shipyard.governance.audit import append
    from shipyard.serving.policy import rollback_policy, set_policy

    tripped = tuple(r for r in results if r.status == "tripped")
    if not tripped:
        raise invalid_parameter(
            "results",
            "act_on_trip",
            "results with a tripped guardrail",
            [r.status for r in results],
        )
    at = datetime.now(UTC).replace(tzinfo=None)
    names = ", ".join(r.guardrail.name for r in tripped)
    reason = f"guardrail {names} tripped on v{version}: {tripped[0].detail}"
    rolled_back_to = rollback_revision = None
    if any(r.guardrail.rollback for r in tripped):
        try:
            if restore is None:
                stored = rollback_policy(
                    workspace, endpoint, reason=reason, actor=actor, expected_revision=revision
                )
            else:
                stored = set_policy(
                    workspace,
                    restore,
                    reason=f"{ROLLBACK_PREFIX} {restore.revision}: {reason}",
                    actor=actor,
                    action="policy.rollback",
                    expected_revision=revision,
                )
        except ConcurrentChangeError:
            return Trip(endpoint, version, revision, tuple(results), requests, None, None, at)
        rolled_back_to = max(stored.arms, key=lambda a: a.weight).version
        rollback_revision = stored.revision
    alert_id = _raise_alert(workspace, endpoint, version, revision, tripped, at, reason)
    if alert_id is None and rollback_revision is None:
        # an alert-only trip another worker already raised: it is on record once
        return Trip(endpoint, version, revision, tuple(results), requests, None, None, at)
    trip = Trip(
        endpoint,
        version,
        revision,
        tuple(results),
        requests,
        rolled_back_to,
        alert_id,
        at,
        rollback_revision,
    )
    append(
        workspace,
        kind="endpoint",
        name=endpoint,
        action="guardrail.trip",
        reason=reason,
        actor=actor,
        version=version,
        details=trip.to_dict(),
    )
    if rollback_revision is not None:
        _stop_experiments(workspace, endpoint, version, reason, actor)
    return trip


def _stop_experiments(
    workspace: Workspace, endpoint: str, version: int, reason: str, actor: str
) -> None:
    """Stop the endpoint's running experiment whose arm was rolled back (traffic to its
    control), so that it does not read as running on a split that no longer exists."""
    import logging

    from shipyard.errors import ExperimentConflictError
    from shipyard.experiments.lifecycle import list_experiments, stop_experiment

    for experiment in list_experiments(workspace, endpoint=endpoint, status="running"):
        if version not in (experiment.control, experiment.treatment):
            continue
        try:
            stop_experiment(workspace, experiment.name, reason=reason, actor=actor)
        except ExperimentConflictError:
            continue  # another worker or an operator stopped it first
        except Exception:  # the rollback stands; the experiment can be stopped by hand
            logging.getLogger(__name__).exception(
                "guardrail: experiment %s could not be stopped", experiment.name
            )


def _raise_alert(
    workspace: Workspace,
    endpoint: str,
    version: int,
    revision: int,
    tripped: Sequence[GuardrailResult],
    at: datetime,
    reason: str,
) -> int | None:
    """Store an open alert for the first tripped guardrail (its rule ``guardrail:<name>``, its
    group ``v<version>``), once per policy revision: None when it is already stored (another
    worker raised the same alert-only trip)."""
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError

    from shipyard.tables import alerts as table

    first = tripped[0]
    g = first.guardrail
    rule, group = f"guardrail:{g.name}", f"v{version}"
    value = float(first.value) if first.value is not None else math.nan
    row = {
        "endpoint": endpoint,
        "rule": rule,
        "group": group,
        "metric": g.metric,
        "op": ">" if g.op == "<=" else "<",  # an alert's op says what breaches
        "threshold": g.threshold,
        "windows": 1,
        "webhook": None,
        "status": "open",
        "active_key": json.dumps([endpoint, rule, group, g.metric, revision]),
        "breaches": [
            {"window_start": at.isoformat(), "window_end": at.isoformat(), "value": value}
        ],
        "first_window_start": at,
        "last_window_end": at,
        "raised_at": at,
        "updated_at": at,
        "note": reason[:2000],
        "delivery": None,
    }
    try:
        with workspace.engine.begin() as con:
            result = con.execute(insert(table).values(**row))
    except IntegrityError:
        return None
    assert result.inserted_primary_key is not None
    return int(result.inserted_primary_key[0])
