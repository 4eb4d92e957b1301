"""Feed a view's online event state from its labelled data set, incrementally.

Online features are the per-entity event state of
:class:`~shipyard.features.streaming.StreamingView`; there is one implementation of the
windows. :func:`materialize_online` feeds that state with the **source data set's** events
(the entity, the timestamp and every column the view's features read, labels included)
through :func:`~shipyard.features.streaming.replay`, and :func:`read_online` reads it at any
time with :meth:`StreamingView.read_at <shipyard.features.streaming.StreamingView.read_at>`.

**Delayed views** (terminal risk over ``(t - 7 - n, t - 7]`` days) need labels, which a live
event does not have: their state is fed only here, and serving only reads it. A read at
``t`` is exact while ``t - delay`` is at or before :func:`fed_until` (the newest event fed),
that is for ``delay`` after each run; serving flags a later read as stale.

* The first run feeds the events of ``(as_of - retention, as_of]`` (``retention`` =
  delay + window + lateness, :attr:`StreamingView.retention_us`; ``as_of`` defaults to the
  end of the data).
* Later runs over the same data set content are **incremental**: only the events of
  ``(watermark, as_of]``, where the watermark is the newest event fed. An ``as_of`` before
  the watermark is refused (fed events cannot be taken back out).
* A run over other content (a new data set version), or on a store without the watermark,
  or after a run that did not finish, **rebuilds**: the view's state is dropped first.

The watermark lives in the store beside the states (key :data:`_MARK`): the data set content
hash, the newest event fed and the number of entities. Before feeding, a run marks it as
*feeding*; only the final write clears that. A run that dies half-way therefore leaves a
mark that makes the next run rebuild instead of feeding the same events twice. Runs of one
view must not overlap (schedule them one after the other).

**Streamed views** (no delay) are fed live by serving, event by event. Here they are only
*backfilled* from history while the store holds no state for them (before going live);
afterwards they are skipped ("fed live by serving; not refed"): feeding them again would
count the events served live twice. A view without aggregations keeps no state and is
skipped too.

Every run that feeds is recorded in ``shipyard_online_freshness``; :func:`online_status`
reads the last run per view, ``shipyard features status`` shows it.

Example::

    store = open_online_store(ws)
    materialize_online(ws, [TERMINAL_RISK], store=store)
    read_online(store, TERMINAL_RISK, [17, 42], at="2018-09-30 12:00")
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shipyard.errors import ParameterError
from shipyard.features.definitions import FeatureView

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.data.catalog import Dataset
    from shipyard.features.online import OnlineStore
    from shipyard.features.streaming import StreamingView
    from shipyard.workspace import Workspace

_FORMAT = 2  # 1 was the latest offline row per entity (JSON); its state is rebuilt
_EPOCH = datetime(1970, 1, 1)
_MARK = "\x00shipyard:watermark"  # the view's watermark, kept in the store beside its states
LIVE = "fed live by serving; not refed"
NO_STATE = "no aggregation: nothing is kept online"


@dataclass(frozen=True)
class OnlineMaterialization:
    """One run feeding a view's online event state (or skipping it, with the reason)."""

    view: str
    definition_hash: str
    dataset: str
    dataset_version: int
    dataset_hash: str
    as_of: datetime | None
    """The cutoff of the run: the end of the data unless asked otherwise."""
    fed_until: datetime | None
    """The newest event fed so far (the watermark after the run); None: none."""
    entities_written: int
    """Entities whose state this run wrote."""
    entities: int
    """Entities with state online after the run."""
    incremental: bool
    """Only the events after the watermark were fed (False: rebuilt from scratch)."""
    seconds: float
    run_at: datetime
    events_fed: int = 0
    """Events fed by this run (not kept in ``shipyard_online_freshness``)."""
    skipped: str | None = None
    """Why the view was not fed (then nothing was written or recorded)."""


def event_columns(view: FeatureView) -> list[str]:
    """The source columns the events of ``view`` carry: entity, timestamp, feature inputs."""
    columns = (c for f in view.features for c in view.source_columns(f))
    return list(dict.fromkeys([view.entity, view.timestamp, *columns]))


def _key(value: Any) -> str:
    """The online key of an entity value (as streaming keys it: never '42.0')."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _to_micros(value: Any) -> int:
    import pandas as pd

    moment = pd.Timestamp(value)
    if moment.tzinfo is not None:
        moment = moment.tz_convert("UTC").tz_localize(None)
    return int(moment.value // 1000)


def _from_micros(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _read_mark(store: OnlineStore, view: FeatureView) -> dict[str, Any] | None:
    """The watermark the last run left in the store (None: none, or of an older format).

    Raises the store's error when the stored state is of another definition.
    """
    state = store.get(view, _MARK)
    try:
        mark = None if state is None else json.loads(state)
    except ValueError:
        return None
    if not isinstance(mark, dict) or mark.get("kind") != "watermark":
        return None
    return mark if mark.get("v") == _FORMAT else None


def _write_mark(
    store: OnlineStore,
    view: FeatureView,
    dataset_hash: str,
    fed: int | None,
    entities: int,
    *,
    feeding: bool,
) -> None:
    body = {
        "kind": "watermark",
        "v": _FORMAT,
        "dataset_hash": dataset_hash,
        "t": fed,
        "entities": entities,
        "feeding": feeding,
    }
    store.put_many(view, {_MARK: json.dumps(body).encode()})


def fed_until(store: OnlineStore, view: FeatureView) -> datetime | None:
    """The time of the newest event materialized online for ``view`` (None: never written).

    Serving reads a delayed view at time ``t`` exactly when ``t - delay`` is at or before
    this time; a later read is stale and is flagged as such. While a run is feeding, this is
    still the watermark of the last finished run (None during a rebuild).
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
    """Feed each view's online event state with its source events up to ``as_of``.

    Events come from ``dataset_version`` of each view's source data set (the latest by
    default). Delayed views are fed incrementally (see the module docstring); streamed
    views are backfilled only while the store has no state for them. ``store`` defaults to
    the workspace's online store (opened and closed here).
    """
    from shipyard.data.catalog import get_dataset
    from shipyard.features.online import open_online_store

    own = store is None
    target = open_online_store(workspace) if store is None else store
    cutoff = None if as_of is None else _to_micros(as_of)
    results = []
    try:
        for view in views:
            dataset = get_dataset(workspace, view.source, dataset_version)
            results.append(_feed(workspace, target, view, dataset, cutoff))
    finally:
        if own:
            target.close()
    return results


def _feed(
    workspace: Workspace,
    store: OnlineStore,
    view: FeatureView,
    dataset: Dataset,
    cutoff: int | None,
) -> OnlineMaterialization:
    """One view: skip it, feed it incrementally or rebuild it (see the module docstring)."""
    from shipyard.features.streaming import StreamingView

    started = time.perf_counter()
    stream = StreamingView(view, store)
    mark = _read_mark(store, view)  # the store refuses state of another definition here
    as_of = cutoff if cutoff is not None else _newest_event(dataset, view)
    fed = None if mark is None or mark["t"] is None else int(mark["t"])
    entities = 0 if mark is None else int(mark["entities"])
    reason = _skip_reason(stream, store, mark)
    if reason is not None:
        return _result(
            view,
            dataset,
            as_of,
            started,
            fed_until=_from_micros(fed),
            entities_written=0,
            entities=entities,
            incremental=False,
            skipped=reason,
        )
    incremental = (
        stream.delayed
        and mark is not None
        and not mark["feeding"]
        and mark["dataset_hash"] == dataset.content_hash
        and fed is not None
    )
    if incremental:
        assert fed is not None
        if as_of is not None and as_of < fed:
            raise ParameterError(
                f"Cannot materialize view {view.name!r} online as of {_from_micros(as_of)}: "
                f"its state is already fed until {_from_micros(fed)} (data set "
                f"{dataset.name} v{dataset.version}), and fed events cannot be taken back "
                f"out. Use an as_of at or after that time, or drop the state "
                f"(store.drop_view({view.name!r})) to rebuild it."
            )
        after: int | None = fed
    else:
        if store.stored_hash(view.name) is not None:
            store.drop_view(view.name)
        fed, entities = None, 0
        after = None if as_of is None else as_of - stream.retention_us
    events = _empty_events(view) if as_of is None else _read_events(dataset, view, after, as_of)
    written, new, newest = _replay(stream, events, dataset.content_hash, fed, entities)
    if events.empty and not incremental:  # a rebuild with nothing to feed: mark it done
        _write_mark(store, view, dataset.content_hash, None, 0, feeding=False)
    result = _result(
        view,
        dataset,
        as_of,
        started,
        fed_until=_from_micros(newest if newest is not None else fed),
        entities_written=written,
        entities=entities + new,
        incremental=incremental,
        events_fed=len(events),
    )
    _record(workspace, result)
    return result


def _result(
    view: FeatureView, dataset: Dataset, as_of: int | None, started: float, **values: Any
) -> OnlineMaterialization:
    return OnlineMaterialization(
        view=view.name,
        definition_hash=view.definition_hash,
        dataset=dataset.name,
        dataset_version=dataset.version,
        dataset_hash=dataset.content_hash,
        as_of=_from_micros(as_of),
        seconds=round(time.perf_counter() - started, 3),
        run_at=datetime.now(UTC).replace(tzinfo=None),
        **values,
    )


def _skip_reason(
    stream: StreamingView, store: OnlineStore, mark: dict[str, Any] | None
) -> str | None:
    """Why ``stream`` must not be fed now (None: feed it)."""
    if not stream.aggregations:
        return NO_STATE
    backfill_died = mark is not None and mark["feeding"]
    live = store.stored_hash(stream.view.name) is not None and not backfill_died
    return LIVE if not stream.delayed and live else None


def _replay(
    stream: StreamingView,
    events: pd.DataFrame,
    dataset_hash: str,
    watermark: int | None,
    entities: int,
) -> tuple[int, int, int | None]:
    """Feed ``events``; (entities written, entities new to the store, newest event fed)."""
    from shipyard.features.streaming import replay

    if events.empty:
        return 0, 0, None
    view, store = stream.view, stream.store
    keys = list(dict.fromkeys(_key(k) for k in events[view.entity].tolist()))
    new = sum(1 for state in store.get_many(view, keys) if state is None)
    # marked first: a run that dies before the final mark makes the next run rebuild
    _write_mark(store, view, dataset_hash, watermark, entities, feeding=True)
    for _ in replay(stream, events):
        pass
    newest = _to_micros(events[view.timestamp].max())
    _write_mark(store, view, dataset_hash, newest, entities + new, feeding=False)
    return len(keys), new, newest


def _partitions(dataset: Dataset) -> list[Any]:
    dataset.verify()
    return dataset.partition_files()


def _newest_event(dataset: Dataset, view: FeatureView) -> int | None:
    """The time of the data set's newest event (None: no event)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = _partitions(dataset)
    if not files:
        return None
    column = pa.chunked_array(
        [c for p in files for c in pq.read_table(p, columns=[view.timestamp]).column(0).chunks]
    )
    newest = pc.max(column).as_py()
    return None if newest is None else _to_micros(newest)


def _read_events(
    dataset: Dataset, view: FeatureView, after: int | None, until: int
) -> pd.DataFrame:
    """The events of ``(after, until]`` (microseconds; None: from the start), in file order."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    high = pd.Timestamp(until, unit="us").to_pydatetime()
    filters: list[tuple[str, str, Any]] = [(view.timestamp, "<=", high)]
    if after is not None:
        filters.append((view.timestamp, ">", pd.Timestamp(after, unit="us").to_pydatetime()))
    columns = event_columns(view)
    tables = [pq.read_table(p, columns=columns, filters=filters) for p in _partitions(dataset)]
    if not tables:
        return _empty_events(view)
    return pa.concat_tables(tables).to_pandas()


def _empty_events(view: FeatureView) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(columns=event_columns(view))


def _record(workspace: Workspace, run: OnlineMaterialization) -> None:
    from sqlalchemy import insert

    from shipyard.tables import online_freshness as table

    with workspace.engine.begin() as conn:
        conn.execute(
            insert(table).values(
                view=run.view,
                definition_hash=run.definition_hash,
                dataset=run.dataset,
                dataset_version=run.dataset_version,
                dataset_hash=run.dataset_hash,
                as_of=run.as_of,
                newest_row_at=run.fed_until,
                rows_written=run.entities_written,
                entities=run.entities,
                incremental=run.incremental,
                seconds=run.seconds,
                run_at=run.run_at,
            )
        )


def read_online(
    store: OnlineStore, view: FeatureView, entities: Sequence[Any], at: Any
) -> list[dict[str, Any]]:
    """The aggregations of ``entities`` read at ``at`` from their online state, in order.

    ``at`` is one time for all or a sequence of one time per entity. Each row maps the
    entity column to the entity key (a string), the view's timestamp column to the read
    time, and each aggregation to its value over its window ending at that time (minus the
    delay), then each derived feature of the aggregations. An entity never fed has zero
    history: 0 for a count, an aggregation's ``fill_value`` where it has one, None otherwise.
    Row features are not kept online (they come from the event itself) and are not in the
    rows.
    """
    import pandas as pd

    from shipyard.features.streaming import StreamingView

    keys = [_key(e) for e in entities]
    times = list(at) if isinstance(at, (list, tuple)) else [at] * len(keys)
    frame = StreamingView(view, store).read_at(list(entities), times)
    out = []
    for i, key in enumerate(keys):
        row: dict[str, Any] = {view.entity: key, view.timestamp: pd.Timestamp(times[i])}
        for name in frame.columns:
            row[name] = _plain(frame.iat[i, frame.columns.get_loc(name)])
        out.append(row)
    return out


def _plain(value: Any) -> Any:
    import pandas as pd

    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def online_status(workspace: Workspace) -> list[OnlineMaterialization]:
    """The last run of each (view, definition hash) fed online, by view name."""
    from sqlalchemy import func, select

    from shipyard.tables import online_freshness as table

    last = select(func.max(table.c.id)).group_by(table.c.view, table.c.definition_hash)
    query = select(table).where(table.c.id.in_(last)).order_by(table.c.view, table.c.id)
    with workspace.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        OnlineMaterialization(
            view=r["view"],
            definition_hash=r["definition_hash"],
            dataset=r["dataset"],
            dataset_version=r["dataset_version"],
            dataset_hash=r["dataset_hash"],
            as_of=r["as_of"],
            fed_until=r["newest_row_at"],
            entities_written=r["rows_written"],
            entities=r["entities"],
            incremental=r["incremental"],
            seconds=r["seconds"],
            run_at=r["run_at"],
        )
        for r in rows
    ]
