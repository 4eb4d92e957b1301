"""The audit trail: an append-only, hash-chained log of every governance-relevant action.

Every registration, alias change, promotion, refusal, rollback, traffic-policy change, gate
result, threshold change and prediction-log compaction is one entry of the workspace's
``shipyard_registry_events`` table (one trail for the registry and everything else): who
(``actor``), when (``at``, UTC), why (``reason``), what it was about (``kind`` and ``name``:
``model``/``fraud``, ``endpoint``/``fraud``), and the state ``before`` and ``after``.

Entries are numbered 1, 2, 3 ... (``sequence``) and chained: each entry's ``hash`` is the
SHA-256 of its canonical JSON content (every column but ``id`` and ``hash``, keys sorted),
and that content includes ``previous_hash``, the hash of the entry before it (64 zeros for
the first). :func:`verify` recomputes the chain and names the first entry that was
**edited** (its content no longer matches its hash), **removed** (a gap: the next entry names
a hash no entry has), **inserted** (an entry the chain skips over) or **reordered** (an entry
chained after one that now comes later).

Appends are serialized so that two processes never fork the chain: on SQLite the append
runs in a ``BEGIN IMMEDIATE`` transaction (the database's write lock is taken before the
head is read); on PostgreSQL a transaction-scoped advisory lock is taken first; on other
databases the head row is read ``FOR UPDATE``; a unique constraint on ``sequence`` is the
last guard, and an append that loses on it retries.

Beyond the chain: :func:`verify_prediction_logs` checks each compacted prediction-log part
against the SHA-256 its compaction recorded (:func:`record_compaction`), and
:func:`verify_state` checks that the live aliases and traffic policies are the ones the trail
explains (an alias set straight in MLflow shows there).

What the chain proves, and what it does not: see ``docs/governance-audit.md``. In short,
anyone who can write the database can rewrite the whole chain from some entry on with
freshly computed hashes; keep the head hash that :func:`verify` reports somewhere else
(a ticket, a signed release note) and pass it back as ``expected_head`` to detect that.

Example::

    from shipyard.governance.audit import append, verify

    append(ws, kind="model", name="credit", version=3, action="gate",
           reason="fairness gate before promotion", details={"passed": False, ...})
    report = verify(ws)
    if not report.ok:
        print(report.describe())    # "entry 7 was edited: ..."
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from shipyard.workspace import Workspace

GENESIS = "0" * 64
"""The ``previous_hash`` of the first entry."""

HASHED_FIELDS = (
    "sequence",
    "kind",
    "name",
    "version",
    "action",
    "alias",
    "previous_version",
    "actor",
    "reason",
    "details",
    "before",
    "after",
    "at",
    "previous_hash",
)
"""The columns an entry's hash covers (all but the row id and the hash itself)."""

_RETRIES = 20
_PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"shipyard audit trail").digest()[:8], signed=True)
"""PostgreSQL advisory lock held by each append until its transaction ends."""


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the audit trail, as stored."""

    sequence: int
    kind: str
    name: str
    version: int | None
    action: str
    alias: str | None
    previous_version: int | None
    actor: str
    reason: str
    details: dict[str, Any]
    before: Any
    after: Any
    at: datetime
    previous_hash: str
    hash: str
    id: int = field(default=0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready values (``at`` in ISO 8601), as ``audit log --json`` prints."""
        out = {name: getattr(self, name) for name in HASHED_FIELDS}
        out["at"] = self.at.isoformat()
        out["hash"] = self.hash
        return out


class Tampering(Enum):
    """How an entry of the trail was found altered."""

    EDITED = "edited"
    REMOVED = "removed"
    INSERTED = "inserted"
    REORDERED = "reordered"


@dataclass(frozen=True)
class AuditProblem:
    """The first bad entry :func:`verify` found: its sequence number, how it is bad, and why."""

    sequence: int | None
    """The entry named (None: the trail is missing entries at its end)."""
    tampering: Tampering
    message: str


@dataclass(frozen=True)
class AuditVerification:
    """What :func:`verify` found: the number of entries, the head hash, and the first problem."""

    entries: int
    head: str
    """Hash of the last entry (``GENESIS`` for an empty trail): keep it to detect rewrites."""
    problem: AuditProblem | None = None

    @property
    def ok(self) -> bool:
        """True when every entry matches its hash and the chain is unbroken."""
        return self.problem is None

    def describe(self) -> str:
        """One line for a person: intact with the head hash, or the first bad entry."""
        if self.problem is None:
            return f"audit trail intact: {self.entries} entries, head {self.head}"
        return f"audit trail broken: {self.problem.message}"


# -- hashing -------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """The one JSON text of ``value`` that hashes are computed on (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(content: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of an entry's canonical content: the :data:`HASHED_FIELDS` of ``content``.

    ``at`` may be a datetime (hashed as its ISO 8601 text) or that text.
    """
    fields = {name: content[name] for name in HASHED_FIELDS}
    if isinstance(fields["at"], datetime):
        fields["at"] = fields["at"].isoformat()
    return hashlib.sha256(canonical_json(fields).encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from a JSON column (so that what is hashed is what is kept)."""
    return None if value is None else json.loads(json.dumps(value, default=str))


# -- appending -----------------------------------------------------------------------------


@contextlib.contextmanager
def transaction(workspace: Workspace) -> Iterator[Connection]:
    """A write transaction that holds the trail's head until it commits.

    Use it to change something and record the change atomically: pass the connection to
    :func:`append` as ``connection``. On SQLite it is ``BEGIN IMMEDIATE`` (the database's
    write lock, taken before anything is read); commits on success, rolls back on error.
    """
    with workspace.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def append(
    workspace: Workspace,
    *,
    kind: str,
    name: str,
    action: str,
    reason: str,
    actor: str | None = None,
    version: int | None = None,
    alias: str | None = None,
    previous_version: int | None = None,
    before: Any = None,
    after: Any = None,
    details: Mapping[str, Any] | None = None,
    connection: Connection | None = None,
) -> AuditEntry:
    """Append one entry (who, when, why, before and after) to the workspace's audit trail.

    ``kind`` and ``name`` say what the action is about (``"model"``, ``"credit"``);
    ``action`` what happened (``"gate"``, ``"threshold"``, ``"promote"`` ...); ``actor``
    defaults to the operating-system user. ``before``, ``after`` and ``details`` must be
    JSON-serializable (other values are stored as their ``str``). Pass ``connection`` (from
    :func:`transaction`) to record the entry in the same transaction as the change it
    describes; without it the entry is committed on its own.
    """
    for param, value in (("kind", kind), ("name", name), ("action", action)):
        if not isinstance(value, str) or not value.strip():
            raise invalid_parameter(param, "audit.append", "a non-empty string", value)
    if not isinstance(reason, str):
        raise invalid_parameter("reason", "audit.append", "a string", reason)
    from shipyard.registry.models import current_user

    values: dict[str, Any] = {
        "kind": kind,
        "name": name,
        "version": version,
        "action": action,
        "alias": alias,
        "previous_version": previous_version,
        "actor": actor or current_user(),
        "reason": reason,
        "details": _jsonable(dict(details or {})),
        "before": _jsonable(before),
        "after": _jsonable(after),
    }
    if connection is not None:
        return _append_in(connection, values)
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(_RETRIES):
        try:
            with transaction(workspace) as conn:
                return _append_in(conn, values)
        except (IntegrityError, OperationalError) as exc:
            # IntegrityError: another writer took the sequence number (databases without
            # BEGIN IMMEDIATE); OperationalError: SQLite's lock wait ran out under heavy load
            if attempt == _RETRIES - 1 or (
                isinstance(exc, OperationalError) and "locked" not in str(exc)
            ):
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _append_in(conn: Connection, values: dict[str, Any]) -> AuditEntry:
    """Read the head (locked) and insert the next entry, inside the caller's transaction."""
    from sqlalchemy import insert, select, text

    from shipyard.tables import registry_events as table

    query = select(table.c.sequence, table.c.hash).order_by(table.c.sequence.desc()).limit(1)
    if conn.dialect.name == "postgresql":
        # a transaction-scoped lock taken before the head is read: a row lock alone would let
        # a waiter read the head it waited on, now stale, and lose on the unique sequence
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    elif conn.dialect.name != "sqlite":
        query = query.with_for_update()
    head = conn.execute(query).first()
    row = {
        **values,
        "sequence": 1 if head is None else int(head.sequence) + 1,
        "previous_hash": GENESIS if head is None else str(head.hash),
        "at": datetime.now(UTC).replace(tzinfo=None),
    }
    row["hash"] = entry_hash(row)
    new_id = conn.execute(insert(table).values(**row)).inserted_primary_key
    return AuditEntry(**row, id=int(new_id[0]) if new_id else 0)


def record_threshold_change(
    workspace: Workspace,
    model: str,
    *,
    before: float | None,
    after: float,
    reason: str,
    version: int | None = None,
    actor: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Record that the decision threshold of ``model`` (a version, or all) moved ``before`` ->
    ``after`` (scores at or above it are the adverse decision); ``details`` says how it was
    chosen. :mod:`shipyard.monitoring.thresholds` reads the current one back."""
    for param, value in (("before", before), ("after", after)):
        if value is not None and not isinstance(value, int | float):
            raise invalid_parameter(param, "record_threshold_change", "a number", value)
    return append(
        workspace,
        kind="model",
        name=model,
        version=version,
        action="threshold",
        reason=reason,
        actor=actor,
        before={"threshold": before},
        after={"threshold": after},
        details=dict(details or {}),
    )


def record_compaction(
    workspace: Workspace, endpoint: str, batch: Mapping[str, Any], actor: str | None = None
) -> AuditEntry:
    """Record one compaction batch of ``endpoint``'s prediction log: the SHA-256 of each
    segment it moved and of each Parquet part it wrote.

    :func:`shipyard.monitoring.logstore.compact` calls it with the batch's journal entry
    before it deletes the segments; a batch already on record (a crashed run finished later)
    is not recorded twice.
    """
    from sqlalchemy import select

    from shipyard.tables import registry_events as table

    # compactions of an endpoint run one batch at a time under a lock, so a batch already
    # recorded by a crashed run is that endpoint's latest compaction entry
    query = (
        select(table)
        .where(table.c.kind == "predictions", table.c.name == endpoint)
        .where(table.c.action == "logs.compact")
        .order_by(table.c.sequence.desc())
        .limit(1)
    )
    with workspace.engine.connect() as conn:
        latest = conn.execute(query).mappings().first()
    if latest is not None and (latest["details"] or {}).get("batch") == batch["batch"]:
        return _entry(latest)
    hashes = batch["sha256"]
    return append(
        workspace,
        kind="predictions",
        name=endpoint,
        action="logs.compact",
        reason=(
            f"compacted {len(hashes['segments'])} closed prediction-log segment(s) into "
            f"{len(hashes['parts'])} Parquet part(s)"
        ),
        actor=actor,
        details={
            "batch": batch["batch"],
            "records": batch.get("records"),
            "skipped_lines": batch.get("skipped_lines"),
            "segments": dict(hashes["segments"]),
            "parts": dict(hashes["parts"]),
        },
    )


# -- reading and verifying -----------------------------------------------------------------


def entries(
    workspace: Workspace,
    *,
    kind: str | None = None,
    name: str | None = None,
    action: str | None = None,
) -> list[AuditEntry]:
    """The trail's entries in sequence order, optionally only one kind, subject or action."""
    from sqlalchemy import select

    from shipyard.tables import registry_events as table

    query = select(table).order_by(table.c.sequence, table.c.id)
    for column, value in (("kind", kind), ("name", name), ("action", action)):
        if value is not None:
            query = query.where(table.c[column] == value)
    with workspace.engine.connect() as conn:
        return [_entry(row) for row in conn.execute(query).mappings()]


def _entry(row: Mapping[Any, Any]) -> AuditEntry:
    return AuditEntry(
        sequence=int(row["sequence"]),
        kind=row["kind"],
        name=row["name"],
        version=row["version"],
        action=row["action"],
        alias=row["alias"],
        previous_version=row["previous_version"],
        actor=row["actor"],
        reason=row["reason"],
        details=dict(row["details"] or {}),
        before=row["before"],
        after=row["after"],
        at=row["at"],
        previous_hash=row["previous_hash"],
        hash=row["hash"],
        id=int(row["id"]),
    )


def verify(workspace: Workspace, expected_head: str | None = None) -> AuditVerification:
    """Recompute the hash chain; name the first entry edited, removed, inserted or reordered.

    ``expected_head``: a head hash reported by an earlier :func:`verify`; the trail must still
    contain it (entries appended since are fine). Without it, a chain rewritten from some entry
    on with recomputed hashes, or cut short at its end, cannot be told from an honest one.
    """
    rows = entries(workspace)
    head = rows[-1].hash if rows else GENESIS
    problem = _first_problem(rows)
    known = {r.hash for r in rows} | {GENESIS}
    if problem is None and expected_head is not None and expected_head not in known:
        problem = AuditProblem(
            None,
            Tampering.REMOVED,
            f"the expected head {expected_head} is not in the trail (its {len(rows)} "
            "entries end elsewhere): entries were removed from its end or the chain was "
            "rewritten",
        )
    return AuditVerification(len(rows), head, problem)


def _first_problem(rows: list[AuditEntry]) -> AuditProblem | None:
    positions = {r.hash: i for i, r in enumerate(rows)}
    for i, row in enumerate(rows):
        before = rows[i - 1] if i else None
        if row.previous_hash != (before.hash if before else GENESIS):
            return _broken_link(rows, i, positions)
        if entry_hash(row.__dict__) != row.hash:
            return AuditProblem(
                row.sequence,
                Tampering.EDITED,
                f"entry {row.sequence} ({row.action} {row.kind} {row.name}) was edited: its "
                "content no longer matches its hash",
            )
        expected = before.sequence + 1 if before else 1
        if row.sequence < expected:
            return AuditProblem(
                row.sequence,
                Tampering.INSERTED,
                f"entry {row.sequence} ({row.action} {row.kind} {row.name}) was inserted: "
                f"its sequence number should be {expected}",
            )
        if row.sequence > expected:
            return AuditProblem(
                row.sequence,
                Tampering.REMOVED,
                f"entries {expected}..{row.sequence - 1} were removed (before entry "
                f"{row.sequence})",
            )
    return None


def _broken_link(rows: list[AuditEntry], i: int, positions: dict[str, int]) -> AuditProblem:
    """Say why entry ``i`` does not name the hash of the entry before it."""
    row = rows[i]
    before = rows[i - 1] if i else None
    after = rows[i + 1] if i + 1 < len(rows) else None
    two_before = rows[i - 2].hash if i >= 2 else GENESIS if i == 1 else None
    what = f"({row.action} {row.kind} {row.name})"
    chained_to = positions.get(row.previous_hash)
    if chained_to is not None and chained_to > i:
        return AuditProblem(
            row.sequence,
            Tampering.REORDERED,
            f"entry {row.sequence} {what} was reordered: it was appended after the entry now "
            f"at {rows[chained_to].sequence}",
        )
    if before is not None and row.previous_hash == two_before:
        return AuditProblem(
            before.sequence,
            Tampering.INSERTED,
            f"entry {before.sequence} ({before.action} {before.kind} {before.name}) was "
            f"inserted: entry {row.sequence} was appended directly after the one before it",
        )
    if after is not None and after.previous_hash == (before.hash if before else GENESIS):
        return AuditProblem(
            row.sequence,
            Tampering.INSERTED,
            f"entry {row.sequence} {what} was inserted: entry {after.sequence} was appended "
            "directly after the one before it",
        )
    if chained_to is not None:
        return AuditProblem(
            row.sequence,
            Tampering.REORDERED,
            f"entry {row.sequence} {what} was reordered: it was appended after entry "
            f"{rows[chained_to].sequence}, not after the entry before it",
        )
    if before is not None and row.sequence == before.sequence + 1:
        return AuditProblem(
            before.sequence,
            Tampering.EDITED,
            f"entry {before.sequence} ({before.action} {before.kind} {before.name}) was "
            f"edited and its hash recomputed: entry {row.sequence} names its original hash",
        )
    first = before.sequence + 1 if before else 1
    missing = (
        f"entries {first}..{row.sequence - 1} were"
        if row.sequence - 1 > first
        else f"entry {first} was"
        if row.sequence - 1 == first
        else "an entry was"
    )
    return AuditProblem(
        row.sequence,
        Tampering.REMOVED,
        f"{missing} removed: entry {row.sequence} {what} was appended after an entry that is "
        "no longer in the trail",
    )


@dataclass(frozen=True)
class LogVerification:
    """What :func:`verify_prediction_logs` found: Parquet parts checked and every mismatch."""

    parts_checked: int
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every compacted part on disk matches the hash the trail recorded."""
        return not self.problems


def verify_prediction_logs(workspace: Workspace, endpoint: str | None = None) -> LogVerification:
    """Check each compacted Parquet part of the prediction log against its recorded SHA-256.

    A part on disk with another hash (altered), a recorded part that is gone (removed) and a
    part the trail never recorded (added) are each a problem. Run :func:`verify` too: these
    hashes are only as trustworthy as the chain that holds them.
    """
    from shipyard.integrity import file_sha256
    from shipyard.monitoring.logstore import parquet_folder

    recorded: dict[str, dict[str, str]] = {}
    for entry in entries(workspace, kind="predictions", name=endpoint, action="logs.compact"):
        recorded.setdefault(entry.name, {}).update(entry.details.get("parts", {}))
    root = parquet_folder(workspace, "any").parent
    if endpoint is not None:
        endpoints = {endpoint}
    else:
        on_disk = {p.name.removeprefix("endpoint=") for p in root.glob("endpoint=*")}
        endpoints = on_disk | set(recorded)
    problems: list[str] = []
    checked = 0
    for name in sorted(endpoints):
        folder = parquet_folder(workspace, name)
        expected = recorded.get(name, {})
        present = {
            str(p.relative_to(folder)): p for p in sorted(folder.glob("day=*/part-*.parquet"))
        }
        for relative, path in present.items():
            checked += 1
            if relative not in expected:
                problems.append(f"{name}: part {relative} is not on record (added afterwards)")
            elif file_sha256(path) != expected[relative]:
                problems.append(
                    f"{name}: part {relative} was altered (its SHA-256 is not the recorded one)"
                )
        problems += [
            f"{name}: part {relative} is on record but missing (removed)"
            for relative in sorted(set(expected) - set(present))
        ]
    return LogVerification(checked, tuple(problems))


@dataclass(frozen=True)
class StateVerification:
    """What :func:`verify_state` found: each live alias or policy the trail does not explain."""

    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every alias and every traffic-policy revision is explained by the trail."""
        return not self.problems


def verify_state(workspace: Workspace) -> StateVerification:
    """Compare the live state with the trail: changes made around Shipyard show up here.

    Replays the trail's registrations, promotions and rollbacks and compares the aliases they
    leave with the registry's (an alias set directly in MLflow); checks that every
    traffic-policy revision has its ``policy.*`` entry and that the latest matches the last
    entry's ``after`` (a policy row written by hand).
    """
    from shipyard.registry.models import CHALLENGER, CHAMPION, ModelRegistry
    from shipyard.serving.policy import policy_history

    problems: list[str] = []
    expected: dict[str, dict[str, int | None]] = {}
    for entry in entries(workspace, kind="model"):
        aliases = expected.setdefault(entry.name, {})
        if entry.alias is None or entry.action not in ("register", "promote", "rollback"):
            continue
        ends_challenge = entry.action == "promote" and entry.alias == CHAMPION
        if ends_challenge and aliases.get(CHALLENGER) == entry.version:
            aliases.pop(CHALLENGER)
        aliases[entry.alias] = entry.version
    registry = ModelRegistry(workspace)
    for name in sorted(expected | {v.name: {} for v in registry.versions()}):
        live: dict[str, int | None] = dict(registry.aliases(name))
        want = expected.get(name, {})
        problems += [
            f"model {name}: {alias} is {_held(live.get(alias))} but the trail last gave it "
            f"to {_held(want.get(alias))} (changed outside Shipyard)"
            for alias in sorted(set(live) | set(want))
            if live.get(alias) != want.get(alias)
        ]
    recorded: dict[str, dict[int, Any]] = {}
    for entry in entries(workspace, kind="endpoint"):
        if entry.action.startswith("policy.") and isinstance(entry.after, dict):
            recorded.setdefault(entry.name, {})[int(entry.after["revision"])] = entry.after
    for endpoint in sorted(set(recorded) | _policy_endpoints(workspace)):
        revisions = {p.revision: p for p in policy_history(workspace, endpoint)}
        on_record = recorded.get(endpoint, {})
        problems += [
            f"endpoint {endpoint}: policy revision {r} has no audit entry (written outside "
            "set_policy)"
            for r in sorted(set(revisions) - set(on_record))
        ]
        problems += [
            f"endpoint {endpoint}: policy revision {r} is on record but missing"
            for r in sorted(set(on_record) - set(revisions))
        ]
        for r in sorted(set(revisions) & set(on_record)):
            policy = revisions[r]
            stored = {
                "arms": [{"version": a.version, "weight": a.weight} for a in policy.arms],
                "shadows": list(policy.shadows),
                "sticky_key": policy.sticky_key,
            }
            if any(on_record[r].get(k) != v for k, v in stored.items()):
                problems.append(
                    f"endpoint {endpoint}: policy revision {r} ({policy.describe()}) differs "
                    "from its audit entry (edited outside set_policy)"
                )
    return StateVerification(tuple(problems))


def _held(version: int | None) -> str:
    return "unset" if version is None else f"v{version}"


def _policy_endpoints(workspace: Workspace) -> set[str]:
    from sqlalchemy import select

    from shipyard.tables import traffic_policies as table

    with workspace.engine.connect() as conn:
        return {str(e) for (e,) in conn.execute(select(table.c.endpoint).distinct())}
