"""Traffic policies: which registered versions an endpoint serves, in what proportions.

A policy is a weighted split over versions (one arm: plain serving; two: A/B or canary),
any number of shadow versions (scored and logged, never returned) and an optional sticky
key. Without a sticky key every request is assigned at random in proportion to the
weights. With one (say ``customer``), a request's routing key is read from the
``X-Routing-Key`` header, else from the header named by the sticky key (``customer``),
else from the V2 request parameter ``routing_key`` or the one named by the sticky key; the
key is hashed (with the policy's ``salt`` when it has one: each experiment salts its own
assignment, so that two experiments in a row do not put the same customers in the same arm)
so that a customer stays in one arm on every worker, across restarts. A
request with no key is assigned at random. Every arm and shadow must take the same input
columns (a request is decoded once, then routed). Every change is a new revision in the
metadata database; workers poll the latest revision and switch without a restart. Rolling
back re-applies the previous revision.

Example::

    set_policy(ws, TrafficPolicy("fraud", "fraud", arms=(Arm(1, 90), Arm(2, 10))), reason="canary")
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shipyard.errors import (
    ConcurrentChangeError,
    ModelNotFoundError,
    ParameterError,
    SchemaError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shipyard.registry.models import ModelRegistry
    from shipyard.types import Schema
    from shipyard.workspace import Workspace

BUCKETS = 10_000
ROLLBACK_PREFIX = "rollback to revision"
"""How the reason of a rollback revision starts: ``rollback to revision 6: <why>``."""


@dataclass(frozen=True)
class Arm:
    """One version and its share of traffic (weights are relative)."""

    version: int
    weight: float


@dataclass(frozen=True)
class TrafficPolicy:
    """What an endpoint serves: weighted arms, shadows, and the sticky key that keeps a
    request's routing key (e.g. a customer id) in one arm (``None``: random per request)."""

    endpoint: str
    model: str
    arms: tuple[Arm, ...]
    shadows: tuple[int, ...] = ()
    sticky_key: str | None = None
    salt: str | None = None
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
        if self.salt:
            parts.append(f"salt {self.salt}")
        return " · ".join(parts)


class Router:
    """Chooses an arm for a request: by a stable hash of its routing key when the policy has a
    sticky key, else at random."""

    def __init__(self, policy: TrafficPolicy) -> None:
        import random

        self.policy = policy
        self.sticky = bool(policy.sticky_key)
        # ASGI headers arrive lower-case, as bytes
        self.headers: tuple[bytes, ...] = ()
        self.parameters: tuple[str, ...] = ()
        if policy.sticky_key:
            named = policy.sticky_key.lower().encode("latin-1", "replace")
            self.headers = (b"x-routing-key", named) if named != b"x-routing-key" else (named,)
            self.parameters = ("routing_key", policy.sticky_key)
        total = sum(a.weight for a in policy.arms)
        bounds, running = [], 0.0
        for arm in policy.arms:
            running += arm.weight / total
            bounds.append(running * BUCKETS)
        self._bounds = bounds
        self._random = random.Random()
        self._salt = f"{policy.salt}:".encode() if policy.salt else b""

    def routing_key(
        self, headers: dict[bytes, bytes], parameters: dict[str, Any] | None = None
    ) -> str | None:
        """The request's routing key (see the module doc); ``None`` without a sticky key."""
        if not self.sticky:
            return None
        for name in self.headers:
            value = headers.get(name)
            if value:
                return value.decode("latin-1")
        if parameters:
            for key in self.parameters:
                if parameters.get(key) is not None:
                    return str(parameters[key])
        return None

    def choose(self, key: str | None) -> int:
        """The version that serves a request with routing key ``key`` (None: random)."""
        if len(self.policy.arms) == 1:
            return self.policy.arms[0].version
        bucket = self._random.random() * BUCKETS if key is None else bucket_of(key, self._salt)
        for arm, bound in zip(self.policy.arms, self._bounds, strict=True):
            if bucket < bound:
                return arm.version
        return self.policy.arms[-1].version


def bucket_of(key: str, salt: bytes = b"") -> int:
    """The bucket (0 .. BUCKETS - 1) of a routing key: stable across processes and restarts."""
    return zlib.crc32(salt + key.encode()) % BUCKETS


def set_policy(
    workspace: Workspace,
    policy: TrafficPolicy,
    *,
    reason: str,
    actor: str | None = None,
    action: str = "policy.set",
    expected_revision: int | None = None,
) -> TrafficPolicy:
    """Store ``policy`` as the endpoint's next revision; workers pick it up within a second.

    The change is recorded in the audit trail (the policy before and after) in the same
    transaction, under the endpoint's lock (:meth:`Workspace.lock`). With
    ``expected_revision``, the change is made only if that is still the endpoint's latest
    revision (else ConcurrentChangeError, nothing written): how two workers' guardrails, or
    a guardrail and an operator, never both act on one revision.
    """
    from sqlalchemy import insert, select

    from shipyard.governance.audit import append
    from shipyard.registry.models import ModelRegistry, current_user
    from shipyard.tables import traffic_policies as table

    policy.validate()
    registry = ModelRegistry(workspace)
    check_same_inputs(policy, _input_schemas(registry, policy))
    _check_same_views(registry, policy)
    who = actor or current_user()
    # the endpoint's lock before its latest revision is read: two writers at once get
    # revisions N+1 and N+2 (or a stale expected_revision refused), never both N+1
    with workspace.lock(f"policy:{policy.endpoint}") as conn:
        latest = (
            conn.execute(
                select(table)
                .where(table.c.endpoint == policy.endpoint)
                .order_by(table.c.revision.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        if expected_revision is not None:
            found = latest["revision"] if latest is not None else 0
            if found != expected_revision:
                raise ConcurrentChangeError(
                    f"Traffic policy of {policy.endpoint!r} is at revision {found}, not "
                    f"{expected_revision}: it changed meanwhile; nothing was changed."
                )
        row = {
            "endpoint": policy.endpoint,
            "revision": (latest["revision"] if latest is not None else 0) + 1,
            "model": policy.model,
            "arms": [{"version": a.version, "weight": a.weight} for a in policy.arms],
            "shadows": list(policy.shadows),
            "sticky_key": policy.sticky_key,
            "salt": policy.salt,
            "actor": who,
            "reason": reason,
            "created_at": datetime.now(UTC).replace(tzinfo=None),
        }
        conn.execute(insert(table).values(**row))
        stored = _from_row(row)
        append(
            workspace,
            kind="endpoint",
            name=policy.endpoint,
            action=action,
            reason=reason,
            actor=who,
            before=None if latest is None else _audited(_from_row(dict(latest))),
            after=_audited(stored),
            details={"revision": stored.revision, "model": policy.model},
            connection=conn,
        )
    return stored


def _audited(policy: TrafficPolicy) -> dict[str, Any]:
    """What the audit trail keeps of a policy: its revision, model, split, shadows, key."""
    return {
        "revision": policy.revision,
        "model": policy.model,
        "arms": [{"version": a.version, "weight": a.weight} for a in policy.arms],
        "shadows": list(policy.shadows),
        "sticky_key": policy.sticky_key,
        "salt": policy.salt,
        "describe": policy.describe(),
    }


def check_same_inputs(policy: TrafficPolicy, schemas: Mapping[int, Schema]) -> None:
    """Raise SchemaError unless every version in ``schemas`` takes the same columns and types.

    ``schemas`` maps each arm's and shadow's version to its input schema. A request is
    decoded once against the endpoint's columns and then routed: versions with different
    inputs cannot share an endpoint (serve them on two endpoints instead).
    """
    (first, reference), *others = sorted(schemas.items())
    for version, schema in others:
        if schema.names == reference.names and all(
            a.dtype == b.dtype for a, b in zip(reference.columns, schema.columns, strict=True)
        ):
            continue
        missing = [n for n in reference.names if n not in schema.names]
        extra = [n for n in schema.names if n not in reference.names]
        if missing or extra:
            parts = [f"v{version} lacks {missing}"] if missing else []
            parts += [f"v{version} adds {extra}"] if extra else []
            detail = "; ".join(parts)
        elif schema.names != reference.names:
            detail = "same columns in a different order"
        else:
            detail = ", ".join(
                f"{a.name!r} is {a.dtype} in v{first} and {b.dtype} in v{version}"
                for a, b in zip(reference.columns, schema.columns, strict=True)
                if a.dtype != b.dtype
            )
        raise SchemaError(
            f"Traffic policy of {policy.endpoint!r} mixes input schemas: {policy.model} "
            f"v{first} and v{version} take different inputs ({detail}). Every arm and shadow "
            "of one endpoint must take the same columns; serve the other version on its own "
            "endpoint (shipyard serve MODEL@VERSION --endpoint NAME)."
        )


def _check_same_views(registry: ModelRegistry, policy: TrafficPolicy) -> None:
    """FeatureDefinitionError unless every version names the same feature views (a raw event
    becomes features once, then is routed)."""
    from shipyard.serving.features import check_same_views

    check_same_views([registry.get(policy.model, v) for v in sorted(policy.versions)])


def _input_schemas(registry: ModelRegistry, policy: TrafficPolicy) -> dict[int, Schema]:
    """Each version's input schema; ModelNotFoundError names a version that does not exist."""
    return {v: registry.get(policy.model, v).input_schema for v in sorted(policy.versions)}


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
    check_same_inputs(policy, _input_schemas(registry, policy))
    _check_same_views(registry, policy)
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
    workspace: Workspace,
    endpoint: str,
    *,
    reason: str,
    actor: str | None = None,
    expected_revision: int | None = None,
) -> TrafficPolicy:
    """Re-apply the revision before the current one (or before ``expected_revision``), as a
    new revision.

    With ``expected_revision`` the rollback happens only if that revision is still the
    latest (ConcurrentChangeError otherwise, nothing written): a guardrail that tripped on
    revision 7 restores revision 6, once, however many workers saw it trip. Rolling back a
    rollback goes further back (before the revision it restored), never forward to the
    version it undid: after a guardrail's rollback, ``shipyard endpoint rollback`` does not
    re-deploy the broken version.
    """
    history = policy_history(workspace, endpoint)
    latest = history[-1].revision if history else 0
    current = expected_revision if expected_revision is not None else latest
    at = [p for p in history if p.revision == current]
    restored = restored_revision(at[0]) if at else None
    if restored is not None:  # a rollback again goes further back, never to what it undid
        current = restored
    earlier = [p for p in history if p.revision < current]
    if not earlier:
        raise ModelNotFoundError(
            f"Endpoint {endpoint!r} has no traffic policy before revision {current} to roll "
            "back to."
        )
    previous = earlier[-1]
    return set_policy(
        workspace,
        previous,
        reason=f"{ROLLBACK_PREFIX} {previous.revision}: {reason}",
        actor=actor,
        action="policy.rollback",
        expected_revision=expected_revision,
    )


def restored_revision(policy: TrafficPolicy) -> int | None:
    """The revision a rollback revision restored, or None when ``policy`` is no rollback."""
    if not policy.reason.startswith(ROLLBACK_PREFIX):
        return None
    number = policy.reason[len(ROLLBACK_PREFIX) :].split(":", 1)[0].strip()
    return int(number) if number.isdigit() else None


def _from_row(row: dict[str, Any]) -> TrafficPolicy:
    return TrafficPolicy(
        endpoint=row["endpoint"],
        model=row["model"],
        arms=tuple(Arm(int(a["version"]), float(a["weight"])) for a in row["arms"]),
        shadows=tuple(int(v) for v in row["shadows"]),
        sticky_key=row["sticky_key"],
        salt=row.get("salt"),
        revision=row["revision"],
        reason=row["reason"],
        actor=row["actor"],
        created_at=row["created_at"],
    )
