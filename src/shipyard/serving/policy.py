"""Traffic policies: which registered versions an endpoint serves, in what proportions.

A policy is a weighted split over versions (one arm: plain serving; two: A/B or canary),
any number of shadow versions (scored and logged, never returned) and an optional sticky
key (a request field or header, e.g. the customer id) so that a user stays in one arm.
Every change is a new revision in the metadata database; workers poll the latest revision
and switch without a restart. Rolling back re-applies the previous revision.

Example::

    set_policy(ws, TrafficPolicy("fraud", "fraud", arms=(Arm(1, 90), Arm(2, 10))), reason="canary")
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shipyard.errors import ModelNotFoundError, ParameterError

if TYPE_CHECKING:
    from shipyard.workspace import Workspace

BUCKETS = 10_000


@dataclass(frozen=True)
class Arm:
    """One version and its share of traffic (weights are relative)."""

    version: int
    weight: float


@dataclass(frozen=True)
class TrafficPolicy:
    """What an endpoint serves."""

    endpoint: str
    model: str
    arms: tuple[Arm, ...]
    shadows: tuple[int, ...] = ()
    sticky_key: str | None = None
    revision: int = 0
    reason: str = ""
    actor: str = ""
    created_at: datetime | None = field(default=None, compare=False)

    def validate(self) -> None:
        """Raise ParameterError naming what is wrong with the policy."""
        if not self.arms:
            raise ParameterError(f"Traffic policy of {self.endpoint!r} needs at least one arm.")
        if any(a.weight < 0 for a in self.arms) or sum(a.weight for a in self.arms) <= 0:
            raise ParameterError(
                f"Traffic weights of {self.endpoint!r} must be >= 0 and not all 0. "
                f"Got {[a.weight for a in self.arms]} instead."
            )
        versions = [a.version for a in self.arms]
        if len(set(versions)) != len(versions):
            raise ParameterError(
                f"Traffic policy of {self.endpoint!r} names a version twice: {versions}."
            )

    @property
    def versions(self) -> set[int]:
        """Every version the policy needs loaded (arms and shadows)."""
        return {a.version for a in self.arms} | set(self.shadows)

    def describe(self) -> str:
        """One line: ``v1 90% · v2 10% · shadow v3 · sticky on customer_id``."""
        total = sum(a.weight for a in self.arms)
        parts = [f"v{a.version} {100 * a.weight / total:.0f}%" for a in self.arms]
        parts += [f"shadow v{v}" for v in self.shadows]
        if self.sticky_key:
            parts.append(f"sticky on {self.sticky_key}")
        return " · ".join(parts)


class Router:
    """Chooses an arm for a request: by a stable hash of the sticky key, else at random."""

    def __init__(self, policy: TrafficPolicy) -> None:
        import random

        self.policy = policy
        total = sum(a.weight for a in policy.arms)
        bounds, running = [], 0.0
        for arm in policy.arms:
            running += arm.weight / total
            bounds.append(running * BUCKETS)
        self._bounds = bounds
        self._random = random.Random()

    def choose(self, key: str | None) -> int:
        """The version that serves a request with routing key ``key`` (None: random)."""
        if len(self.policy.arms) == 1:
            return self.policy.arms[0].version
        if key is None:
            bucket = self._random.random() * BUCKETS
        else:
            bucket = zlib.crc32(key.encode()) % BUCKETS  # stable across processes and restarts
        for arm, bound in zip(self.policy.arms, self._bounds, strict=True):
            if bucket < bound:
                return arm.version
        return self.policy.arms[-1].version


def set_policy(
    workspace: Workspace, policy: TrafficPolicy, *, reason: str, actor: str | None = None
) -> TrafficPolicy:
    """Store ``policy`` as the endpoint's next revision; workers pick it up within a second."""
    from sqlalchemy import func, insert, select

    from shipyard.registry.models import ModelRegistry, current_user
    from shipyard.tables import traffic_policies as table

    policy.validate()
    registry = ModelRegistry(workspace)
    for version in sorted(policy.versions):
        registry.get(policy.model, version)  # every version must exist
    with workspace.engine.begin() as conn:
        latest = conn.execute(
            select(func.max(table.c.revision)).where(table.c.endpoint == policy.endpoint)
        ).scalar()
        revision = (latest or 0) + 1
        conn.execute(
            insert(table).values(
                endpoint=policy.endpoint,
                revision=revision,
                model=policy.model,
                arms=[{"version": a.version, "weight": a.weight} for a in policy.arms],
                shadows=list(policy.shadows),
                sticky_key=policy.sticky_key,
                actor=actor or current_user(),
                reason=reason,
                created_at=datetime.now(UTC).replace(tzinfo=None),
            )
        )
    return get_policy(workspace, policy.endpoint)


def apply_policy(
    workspace: Workspace, policy: TrafficPolicy, *, reason: str, actor: str | None = None
) -> TrafficPolicy:
    """Prepare every version's serving backends, then store ``policy`` (CLI and admin API).

    Preparing first means workers load verified, parity-checked backends as soon as they see
    the new revision, instead of each building them.
    """
    from shipyard.registry.models import ModelRegistry
    from shipyard.serving.backends import prepare_backends

    policy.validate()
    registry = ModelRegistry(workspace)
    for version in sorted(policy.versions):
        prepare_backends(registry, policy.model, version)
    return set_policy(workspace, policy, reason=reason, actor=actor)


def get_policy(workspace: Workspace, endpoint: str, revision: int | None = None) -> TrafficPolicy:
    """The endpoint's current policy (or a given revision)."""
    from shipyard.tables import latest_row, traffic_policies

    row = latest_row(
        workspace.engine, traffic_policies, ("endpoint", endpoint), ("revision", revision)
    )
    if row is None:
        raise ModelNotFoundError(
            f"Endpoint {endpoint!r} has no traffic policy"
            + (f" revision {revision}" if revision is not None else "")
            + "; `shipyard serve MODEL@ALIAS` creates one."
        )
    return _from_row(dict(row))


def current_revision(workspace: Workspace, endpoint: str) -> int:
    """The latest revision number (0 if none): what workers poll."""
    from sqlalchemy import func, select

    from shipyard.tables import traffic_policies as table

    with workspace.engine.connect() as conn:
        value = conn.execute(
            select(func.max(table.c.revision)).where(table.c.endpoint == endpoint)
        ).scalar()
    return int(value or 0)


def policy_history(workspace: Workspace, endpoint: str) -> list[TrafficPolicy]:
    """Every revision, oldest first."""
    from sqlalchemy import select

    from shipyard.tables import traffic_policies as table

    query = select(table).where(table.c.endpoint == endpoint).order_by(table.c.revision)
    with workspace.engine.connect() as conn:
        return [_from_row(dict(r)) for r in conn.execute(query).mappings()]


def rollback_policy(
    workspace: Workspace, endpoint: str, *, reason: str, actor: str | None = None
) -> TrafficPolicy:
    """Re-apply the revision before the current one, as a new revision."""
    history = policy_history(workspace, endpoint)
    if len(history) < 2:
        raise ModelNotFoundError(
            f"Endpoint {endpoint!r} has no earlier traffic policy to roll back to."
        )
    previous = history[-2]
    return set_policy(
        workspace,
        previous,
        reason=f"rollback to revision {previous.revision}: {reason}",
        actor=actor,
    )


def _from_row(row: dict[str, Any]) -> TrafficPolicy:
    return TrafficPolicy(
        endpoint=row["endpoint"],
        model=row["model"],
        arms=tuple(Arm(int(a["version"]), float(a["weight"])) for a in row["arms"]),
        shadows=tuple(int(v) for v in row["shadows"]),
        sticky_key=row["sticky_key"],
        revision=row["revision"],
        reason=row["reason"],
        actor=row["actor"],
        created_at=row["created_at"],
    )
