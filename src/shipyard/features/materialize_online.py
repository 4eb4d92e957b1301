"""Delayed, label-based features online: the offline store's latest row per entity.

Features with a ``delay`` (terminal risk over ``(t - 7 - n, t - 7]`` days) need labels that
arrive late, so they are not computed event by event (:mod:`shipyard.features.streaming`
refuses them). :func:`materialize_online` copies, for each entity, its **latest** feature row
at or before ``as_of`` (default: the end of the data) from the offline materialization of a
data set version into the online store, under the view's definition hash;
:func:`read_online` reads those rows back. Any view may be written this way; the CLI writes
the views with a delayed aggregation (``shipyard features materialize --online``).

**Incremental.** Each run leaves, per view and definition, a watermark in the online store
itself, written with the rows (the data set content hash and the time of the newest row it
covered), and records the run in ``shipyard_online_freshness``. The next run over the same
data set content only looks at entities with a row after the watermark (and at or before
``as_of``); a run over other content (a new data set version), an earlier ``as_of``, or a
store without the watermark (dropped, new) looks at every entity. Either way an entity is
written only if its stored row differs, so a rerun with no new data writes 0 rows.

**What the online value means, and how stale it is.** The online value of terminal risk read
at serving time t is the value of the entity's latest offline row at or before ``as_of`` of
the last materialization: it is fresh up to that materialization, not up to t. The window
``(t - 7 - n, t - 7]`` moves with t, so the value is exact only when materialized at t (and
for a terminal whose latest row is at t); between runs it lags by up to the schedule interval
(plus the time since the terminal's last transaction). ``shipyard features status`` shows,
per view, the newest row time, its age and the last run. The delay itself is no staleness:
the labels of the last 7 days are unknown both offline and online.

**Unseen entities.** :func:`read_online` answers an entity with no stored row with
zero-history features: 0 for a count, the ``fill_value`` of an aggregation that has one,
None otherwise (a row feature, a mean without fill value), and a None timestamp.

One view is either streamed or materialized online, not both: the two keep different state
under the same key, and state of the other kind is refused.

Example::

    store = open_online_store(ws)
    materialize_online(ws, [TERMINAL_RISK], store=store)
    read_online(store, TERMINAL_RISK, [17, 42])   # [{"TERMINAL_ID": "17", ...}, ...]
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from shipyard.errors import FeatureDefinitionError
from shipyard.features.definitions import Aggregation, FeatureView

if TYPE_CHECKING:
    from shipyard.features.online import OnlineStore
    from shipyard.workspace import Workspace

_FORMAT = 1
_EPOCH = datetime(1970, 1, 1)
_TS = "__shipyard_ts"
_ROW = "__shipyard_file_row"
_MARK = "\x00shipyard:watermark"  # the view's watermark, kept in the store beside its rows


@dataclass(frozen=True)
class OnlineMaterialization:
    """One run writing a view's latest feature rows into the online store."""

    view: str
    definition_hash: str
    dataset: str
    dataset_version: int
    dataset_hash: str
    as_of: datetime | None
    newest_row_at: datetime | None
    rows_written: int
    entities: int
    incremental: bool
    seconds: float
    run_at: datetime


def has_delay(view: FeatureView) -> bool:
    """Whether ``view`` has an aggregation with a delay (served from the offline store)."""
    return any(isinstance(f, Aggregation) and f.delay > timedelta(0) for f in view.features)


def _key(value: Any) -> str:
    """The online key of an entity value (as streaming keys it: never '42.0')."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _to_micros(value: datetime | str) -> int:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _from_micros(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    raise FeatureDefinitionError(
        f"A feature value of type {type(value).__name__} cannot be stored online."
    )


def _restore(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        ((kind, text),) = obj.items()
        if kind == "$decimal":
            return Decimal(text)
        if kind == "$datetime":
            return datetime.fromisoformat(text)
        if kind == "$date":
            return date.fromisoformat(text)
    return obj


def encode_row(ts_us: int, values: Sequence[Any]) -> bytes:
    """The stored form of one latest row: JSON, deterministic (equal rows, equal bytes)."""
    body = {"kind": "latest", "v": _FORMAT, "t": ts_us, "f": list(values)}
    return json.dumps(body, default=_plain, separators=(",", ":")).encode()


def decode_row(view: FeatureView, state: bytes) -> tuple[int, list[Any]]:
    """(row time in microseconds, feature values) of a stored latest row."""
    try:
        body = json.loads(state, object_hook=_restore) if state[:1] == b"{" else None
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("kind") != "latest":
        raise FeatureDefinitionError(
            f"The online state of view {view.name!r} is not a materialized latest row (it was "
            "written by the streaming path?). A view is either streamed or materialized "
            f"online, not both: drop its state (store.drop_view({view.name!r})) first."
        )
    values = list(body["f"])
    if len(values) != len(view.feature_names):
        raise FeatureDefinitionError(
            f"The online row of view {view.name!r} has {len(values)} features; the view has "
            f"{len(view.feature_names)}."
        )
    return int(body["t"]), values


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _read_mark(store: OnlineStore, view: FeatureView) -> dict[str, Any] | None:
    """The watermark the last run left in the store with the rows (None: none there)."""
    state = store.get(view, _MARK)
    try:
        mark = None if state is None else json.loads(state)
    except ValueError:
        return None
    return mark if isinstance(mark, dict) and mark.get("kind") == "watermark" else None


def fed_until(store: OnlineStore, view: FeatureView) -> datetime | None:
    """The time of the newest event materialized online for ``view`` (None: never written).

    Serving reads a delayed view at time ``t`` exactly when ``t - delay`` is at or before
    this time; a later read is stale and is flagged as such.
    """
    if store.stored_hash(view.name) != view.definition_hash:
        return None
    mark = _read_mark(store, view)
    if mark is None or mark.get("t") is None:
        return None
    return _from_micros(int(mark["t"]))


def materialize_online(
    workspace: Workspace,
    views: Sequence[FeatureView],
    *,
    dataset_version: int | None = None,
    store: OnlineStore | None = None,
    as_of: datetime | str | None = None,
) -> list[OnlineMaterialization]:
    """Write each view's latest feature row per entity (at or before ``as_of``) online.

    Rows come from the offline materialization of ``dataset_version`` of each view's source
    (the latest version by default; it must be materialized). Only entities whose latest row
    changed since the last run are written; each run is recorded in
    ``shipyard_online_freshness``. ``store`` defaults to the workspace's online store (opened
    and closed here).
    """
    from shipyard.features.offline import OfflineStore
    from shipyard.features.online import open_online_store

    own = store is None
    target = open_online_store(workspace) if store is None else store
    offline = OfflineStore(workspace)
    cutoff = None if as_of is None else _to_micros(as_of)
    results = []
    try:
        for view in views:
            stored = offline.materialization(view, dataset_version)
            results.append(_one(workspace, offline, target, view, stored, cutoff))
    finally:
        if own:
            target.close()
    return results


def _one(
    workspace: Workspace,
    offline: Any,
    store: OnlineStore,
    view: FeatureView,
    stored: Any,
    cutoff: int | None,
) -> OnlineMaterialization:
    from sqlalchemy import insert

    from shipyard.tables import online_freshness as table

    started = time.perf_counter()
    registered = store.stored_hash(view.name) == view.definition_hash
    previous = _read_mark(store, view) if registered else None
    watermark: int | None = None
    if previous is not None and previous["dataset_hash"] == stored.dataset_hash:
        seen = previous["t"]
        if seen is not None and (cutoff is None or cutoff >= seen):
            watermark = int(seen)
    entity, features = _q(view.entity), ", ".join(_q(n) for n in view.feature_names)
    where = "" if cutoff is None else f"WHERE {_TS} <= {cutoff}"
    base = (
        f"SELECT *, epoch_us({_q(view.timestamp)}) AS {_TS}, file_row_number AS {_ROW} "
        f"FROM read_parquet({_lit(str(stored.path))}, file_row_number = true)"
    )
    latest = (
        f"SELECT * FROM ({base}) {where} QUALIFY row_number() OVER "
        f"(PARTITION BY {entity} ORDER BY {_TS} DESC, {_ROW} DESC) = 1"
    )
    changed = "" if watermark is None else f"WHERE {_TS} > {watermark}"
    con = offline.connect()
    try:
        con.execute(f"CREATE TEMP TABLE latest AS {latest}")
        newest, entities = con.execute(f"SELECT max({_TS}), count(*) FROM latest").fetchone()
        rows = con.execute(f"SELECT {entity}, {_TS}, {features} FROM latest {changed}").fetchall()
    finally:
        con.close()
    keys = [_key(row[0]) for row in rows]
    states = {key: encode_row(row[1], row[2:]) for key, row in zip(keys, rows, strict=True)}
    current = store.get_many(view, keys) if registered else [None] * len(keys)
    for state in current:
        if state is not None:
            decode_row(view, state)  # refuses state of another kind
    write = {k: v for (k, v), old in zip(states.items(), current, strict=True) if v != old}
    mark = {"kind": "watermark", "dataset_hash": stored.dataset_hash, "t": newest}
    store.put_many(view, {**write, _MARK: json.dumps(mark).encode()})
    record = {
        "view": view.name,
        "definition_hash": view.definition_hash,
        "dataset": stored.dataset,
        "dataset_version": stored.dataset_version,
        "dataset_hash": stored.dataset_hash,
        "as_of": _from_micros(cutoff),
        "newest_row_at": _from_micros(newest),
        "rows_written": len(write),
        "entities": int(entities),
        "incremental": watermark is not None,
        "seconds": round(time.perf_counter() - started, 3),
        "run_at": datetime.now(UTC).replace(tzinfo=None),
    }
    with workspace.engine.begin() as conn:
        conn.execute(insert(table).values(**record))
    return OnlineMaterialization(**record)


def read_online(
    store: OnlineStore, view: FeatureView, entities: Sequence[Any]
) -> list[dict[str, Any]]:
    """The stored latest features of ``entities``, in their order.

    Each row maps the entity column to the entity key (a string), the view's timestamp
    column to the time of the stored row, and each feature to its value. An entity never
    materialized gets zero-history features: 0 for a count, an aggregation's ``fill_value``
    where it has one, None otherwise; its timestamp is None.
    """
    keys = [_key(e) for e in entities]
    empty = [_empty(f) for f in view.features]
    out = []
    for key, state in zip(keys, store.get_many(view, keys), strict=True):
        if state is None:
            ts, values = None, empty
        else:
            micros, values = decode_row(view, state)
            ts = _from_micros(micros)
        row: dict[str, Any] = {view.entity: key, view.timestamp: ts}
        row.update(zip(view.feature_names, values, strict=True))
        out.append(row)
    return out


def _empty(feature: Any) -> Any:
    if isinstance(feature, Aggregation):
        if feature.fill_value is not None:
            return feature.fill_value
        if feature.function == "count":
            return 0
    return None


def online_status(workspace: Workspace) -> list[OnlineMaterialization]:
    """The last run of each (view, definition hash) written online, by view name."""
    from sqlalchemy import func, select

    from shipyard.tables import online_freshness as table

    last = select(func.max(table.c.id)).group_by(table.c.view, table.c.definition_hash)
    query = select(table).where(table.c.id.in_(last)).order_by(table.c.view, table.c.id)
    with workspace.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    fields = OnlineMaterialization.__dataclass_fields__
    return [OnlineMaterialization(**{k: v for k, v in r.items() if k in fields}) for r in rows]
