"""Raw-event serving: a model's inputs computed from raw events with the online store.

When the model behind an endpoint names feature views in its lineage, a request may carry a
raw event (for the fraud model: TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID,
TX_AMOUNT) instead of the model's features. :class:`OnlineFeatures` turns such events into
the model's input rows, in the schema's order, with the same view definitions training used:

* a view **without delay** is applied with :meth:`StreamingView.process`: the event updates
  the entity's state and is read at its own time, as offline (``(t - n, t]``);
* a view **with a delay** (label-based, e.g. terminal risk) is only read, with
  :meth:`StreamingView.read_at`; its state is fed with labelled history elsewhere. A read at
  ``t`` is exact when ``t - delay`` is at or before the newest event fed
  (:func:`~shipyard.features.materialize_online.fed_until`, polled every poll interval);
  otherwise the request is **stale**: flagged, or refused with
  ``serving_reject_stale_features``.

Events of concurrent requests of one worker are collected and applied together: one
``process`` per view per batch, in a thread (the event loop keeps accepting). A batch that
holds a bad or late event is retried one request at a time, so only that request fails
(nothing of a refused call is stored). Delayed views are read before anything is applied,
so an unreachable store fails a request before its event changes any state.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shipyard.errors import (
    DataValidationError,
    FeatureDefinitionError,
    OnlineContentionError,
    OnlineStoreUnavailableError,
    RequestError,
    ShipyardError,
)
from shipyard.features.streaming import LateEventError, process_together
from shipyard.serving.event_codec import EventColumns, Kind, RawEvents

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from numpy.typing import NDArray

    from shipyard.features.definitions import FeatureView
    from shipyard.features.online import OnlineStore
    from shipyard.features.streaming import StreamingView
    from shipyard.registry.models import ModelVersion
    from shipyard.workspace import Workspace

logger = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class Assembled:
    """The model's input rows computed for one request, and the delayed views read stale."""

    matrix: NDArray[np.float64]
    stale: tuple[str, ...]


@dataclass
class _Pending:
    events: RawEvents
    future: asyncio.Future[NDArray[np.float64]]
    deadline: float
    """The event loop's time after which the request is answered 503."""


def event_columns(views: Sequence[FeatureView], names: Sequence[str]) -> EventColumns:
    """The raw event columns ``views`` need, with their kinds; ``names`` are the model inputs.

    Every view's entity (a key) and timestamp; the columns read by views without delay
    (a number when an aggregation or a derived feature reads it). A delayed view needs only
    its key and time: its other columns (labels) are not known when an event arrives.
    """
    from shipyard.features.definitions import RowFeature

    kinds: dict[str, Kind] = {}
    for view in views:
        kinds.setdefault(view.entity, "key")
        kinds.setdefault(view.timestamp, "time")
    for view in views:
        if view.delayed:
            continue
        for feature in view.features:
            # an aggregation or a derived feature reads its source columns as numbers
            for column in view.source_columns(feature):
                numeric = not isinstance(feature, RowFeature) or kinds.get(column) == "number"
                if kinds.get(column) in (None, "value"):
                    kinds[column] = "number" if numeric else "value"
    return EventColumns(kinds, frozenset(n for n in kinds if n not in names))


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def stale_views(
    times_us: Sequence[int], delays_us: dict[str, int], fed_us: dict[str, int | None]
) -> tuple[str, ...]:
    """The delayed views whose read at some of ``times_us`` is not exact.

    A read at ``t`` is exact when ``t - delay <= fed`` (the newest event fed); a view never
    fed (``None``) is stale.
    """
    newest = max(times_us)
    return tuple(
        name
        for name, delay in delays_us.items()
        if fed_us.get(name) is None or newest - delay > (fed_us[name] or 0)
    )


def views_of(version: ModelVersion) -> list[FeatureView]:
    """The feature views a version's lineage names (none when it names none)."""
    from shipyard.features.definitions import load_views

    return load_views(version.lineage.views) if version.lineage.views else []


def check_same_views(versions: Sequence[ModelVersion]) -> None:
    """Raise FeatureDefinitionError unless every version names the same feature views.

    A raw event is turned into features once per request, then routed: the arms and shadows
    of one endpoint must read the same views with the same definitions.
    """
    first, *others = versions
    for other in others:
        if (other.lineage.views, dict(other.lineage.view_hashes)) != (
            first.lineage.views,
            dict(first.lineage.view_hashes),
        ):
            raise FeatureDefinitionError(
                f"{first.name} v{first.version} and v{other.version} were trained on different "
                f"feature views ({first.lineage.views!r} {dict(first.lineage.view_hashes)} and "
                f"{other.lineage.views!r} {dict(other.lineage.view_hashes)}): one endpoint "
                "computes one set of features from a raw event. Serve the other version on "
                "its own endpoint."
            )


@dataclass
class OnlineFeatures:
    """The feature stage of one endpoint in one worker: raw events in, model rows out.

    ``version`` is the version whose lineage names the views (every arm shares them);
    ``names`` the model's input columns. Call :meth:`start` before :meth:`assemble`.
    """

    workspace: Workspace
    version: ModelVersion
    names: list[str]
    max_batch_size: int = 64
    poll_interval_s: float = 1.0
    timeout_ms: float = 1000.0
    reject_stale: bool = False
    on_stale: Callable[[str], None] | None = None
    views: list[FeatureView] = field(init=False)
    columns: EventColumns = field(init=False)
    problem: str | None = field(init=False, default=None)
    """Why raw events cannot be served at all (definitions differ); readiness reports it."""

    def __post_init__(self) -> None:
        self.views = views_of(self.version)
        self.columns = event_columns(self.views, self.names)
        self.problem = self._definition_problem()
        self.unsupported = self._unsupported()
        self._store: OnlineStore | None = None
        self._unavailable: str | None = None
        self._streams: list[StreamingView] = []
        self._delays: dict[str, int] = {}
        self._fed: dict[str, int | None] = {}
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        # requests in arrival order (so in deadline order), for the watchdog
        self._waiting: deque[_Pending] = deque()
        self._watchdog: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        # one thread: the store's connection is used by one thread at a time
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="shipyard-features")

    def _unsupported(self) -> str | None:
        produced = {n for view in self.views for n in view.feature_names}
        lost = [n for n in self.names if n not in produced]
        if lost:
            return (
                f"model inputs {lost} are computed by none of the feature views "
                f"{self.version.lineage.views!r}; send the model's features instead"
            )
        return None

    def _definition_problem(self) -> str | None:
        trained = dict(self.version.lineage.view_hashes)
        for view in self.views:
            if trained.get(view.name, view.definition_hash) != view.definition_hash:
                return (
                    f"feature view {view.name!r} is defined as {view.definition_hash} in the "
                    f"code but {self.version.name} v{self.version.version} was trained with "
                    f"{trained[view.name]}: raw events would be scored with other features "
                    "than training saw"
                )
        return None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the online store and read its state once; then poll it."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._refresh)
        except Exception as exc:  # serve features meanwhile; not ready, saying why; retried
            logger.exception("opening the online store failed")
            self.problem = f"opening the online store failed: {type(exc).__name__}: {exc}"
        self._poller = loop.create_task(self._poll())
        # The worker's objects so far (modules, the model, the app) are never garbage: keep
        # them out of the collector's full passes. Raw events allocate per request what
        # precomputed rows do not (their columns, states, feature values), enough to start a
        # full collection every few thousand requests, which walked ~300,000 objects of the
        # worker each time: 0.1-0.6 s, about 30 us of CPU per raw request (measured with
        # gc.callbacks) and the p99 of raw-event serving.
        gc.freeze()

    async def stop(self) -> None:
        """Stop polling and batching; close the store."""
        for task in (self._poller, self._task, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._store is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._store.close)
        self._executor.shutdown(wait=False)

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await loop.run_in_executor(self._executor, self._refresh)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep polling; say why
                logger.exception("reading the online store's state failed")
                if self._store is None:
                    self.problem = f"opening the online store failed: {type(exc).__name__}: {exc}"

    def _refresh(self) -> None:
        """Open the store if needed; check stored definitions; read how far delayed views
        were fed (in the feature thread)."""
        from shipyard.features.materialize_online import fed_until
        from shipyard.features.online import open_online_store
        from shipyard.features.streaming import StreamingView

        try:
            if self._store is None:
                self._store = open_online_store(self.workspace)
                self._streams = [StreamingView(v, self._store) for v in self.views]
                self._delays = {
                    s.view.name: _view_delay(s.view) for s in self._streams if s.delayed
                }
                # compile and check the views' SQL for the events' columns now, not in the
                # first request (DuckDB checks the Python functions: tens of milliseconds)
                empty = _table(RawEvents({n: [] for n in self.columns.kinds}, 0), self.columns)
                for stream in self._streams:
                    if not stream.delayed:
                        stream.prepare_for(empty)
            store = self._store
            for view in self.views:
                stored = store.stored_hash(view.name)
                if stored is not None and stored != view.definition_hash:
                    self.problem = (
                        f"the online store holds feature view {view.name!r} under definition "
                        f"{stored}, not {view.definition_hash}: drop it and feed it again"
                    )
                    break
            else:
                self.problem = self._definition_problem()
            for stream in self._streams:
                if stream.delayed:
                    fed = fed_until(store, stream.view)
                    self._fed[stream.view.name] = None if fed is None else _micros(fed)
            self._unavailable = None
        except OnlineStoreUnavailableError as exc:
            self._unavailable = str(exc)
        except ShipyardError as exc:  # state of another definition or layout: not ready
            self.problem = str(exc)

    # -- requests --------------------------------------------------------------------------

    async def assemble(self, events: RawEvents) -> Assembled:
        """The model's input rows for ``events`` (applied to the online state).

        Raises RequestError: 422 for a bad or late event (nothing of it stored), 503 when
        the store cannot be reached, holds other definitions, or (with ``reject_stale``) a
        delayed view is stale.
        """
        if self.problem is not None:
            raise RequestError(503, f"raw events cannot be served: {self.problem}")
        if self.unsupported is not None:
            raise RequestError(422, f"this endpoint cannot compute features: {self.unsupported}")
        if self._store is None:
            raise RequestError(503, self._unavailable or "the online store is not open yet")
        times = [_micros(t) for t in events.columns[self.views[0].timestamp]]
        stale = stale_views(times, self._delays, self._fed) if self._delays else ()
        if stale and self.reject_stale:  # refused before it is applied: nothing changes
            self._count_stale(stale)
            raise RequestError(503, self._stale_message(stale))
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run())
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = loop.create_task(self._watch())
        assert self._queue is not None
        pending = _Pending(events, loop.create_future(), loop.time() + self.timeout_ms / 1000)
        self._queue.put_nowait(pending)
        self._waiting.append(pending)
        try:
            matrix = await pending.future
        except RequestError:
            raise
        except FeatureDefinitionError as exc:
            # the store holds other definitions (not ready), or DuckDB refused the events
            await loop.run_in_executor(self._executor, self._refresh)
            if self.problem is not None:
                raise RequestError(503, f"raw events cannot be served: {self.problem}") from None
            raise RequestError(422, str(exc)) from None
        except (DataValidationError, LateEventError) as exc:
            raise RequestError(422, str(exc)) from None
        except (OnlineStoreUnavailableError, OnlineContentionError) as exc:
            raise RequestError(503, str(exc)) from None  # unreachable, or contended: retry
        if stale:  # counted once scored: a request refused as invalid is not counted
            self._count_stale(stale)
        return Assembled(matrix, stale)

    def _count_stale(self, stale: tuple[str, ...]) -> None:
        if self.on_stale is not None:
            for name in stale:
                self.on_stale(name)

    def _stale_message(self, stale: tuple[str, ...]) -> str:
        fed = {n: _time_text(self._fed.get(n)) for n in stale}
        return (
            f"stale features: delayed view(s) {list(stale)} were fed with events only up to "
            f"{fed} (UTC), short of the event's time minus the delay; refused because "
            "serving_reject_stale_features is on (feed the views online first)"
        )

    async def _watch(self) -> None:
        """Answer 503 to each request waiting longer than ``timeout_ms`` for its features,
        checked every quarter of it (at most 250 ms): one task, not a timer per request (a
        timer handle per request showed in the profile of serving)."""
        loop = asyncio.get_running_loop()
        waiting = self._waiting
        while True:
            await asyncio.sleep(min(self.timeout_ms / 4000, 0.25))
            now = loop.time()
            while waiting and (waiting[0].future.done() or waiting[0].deadline <= now):
                future = waiting.popleft().future
                if not future.done():
                    future.set_exception(
                        RequestError(
                            503,
                            f"computing the event's features took more than {self.timeout_ms:g} ms",
                        )
                    )

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            rows = batch[0].events.rows
            while rows < self.max_batch_size and not queue.empty():
                batch.append(queue.get_nowait())
                rows += batch[-1].events.rows
            live = [p for p in batch if not p.future.done()]
            if not live:
                continue
            try:
                results = await loop.run_in_executor(
                    self._executor, self._compute, [p.events for p in live]
                )
            except Exception as exc:  # the store failed: every request of the batch
                results = [exc] * len(live)
            for pending, result in zip(live, results, strict=True):
                if pending.future.done():
                    continue
                if isinstance(result, Exception):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)

    # -- the feature thread ----------------------------------------------------------------

    def _compute(self, requests: list[RawEvents]) -> list[NDArray[np.float64] | Exception]:
        """Each request's model rows; a refused batch is retried one request at a time."""
        refused = (DataValidationError, LateEventError, FeatureDefinitionError)
        try:
            return [*_split(self._rows(_merge(requests)), requests)]
        except refused as exc:
            if len(requests) == 1:
                return [exc]
        results: list[NDArray[np.float64] | Exception] = []
        for request in requests:
            try:
                results.append(self._rows(request))
            except refused as exc:
                results.append(exc)
        return results

    def _rows(self, events: RawEvents) -> NDArray[np.float64]:
        """The model rows of ``events``: delayed views read first, then the streamed views
        processed together (every event checked for every view before any state is written,
        so a refusal stores nothing)."""
        import numpy as np

        table = _table(events, self.columns)
        features: dict[str, list[Any]] = {}
        if self._delays:
            times = [_micros(t) for t in events.columns[self.views[0].timestamp]]
            for stream in self._streams:
                if stream.delayed:
                    entities = events.columns[stream.view.entity]
                    features.update(stream.read_values(entities, times))
        streamed = [s for s in self._streams if not s.delayed]
        for result in process_together(streamed, table):  # one DuckDB query for all views
            features.update(result.values)
        nan = float("nan")
        columns = [[nan if v is None else v for v in features[n]] for n in self.names]
        return np.ascontiguousarray(np.array(columns, dtype=np.float64).T)


def _time_text(micros_: int | None) -> str:
    return "never" if micros_ is None else str(_EPOCH + timedelta(microseconds=micros_))


def _view_delay(view: FeatureView) -> int:
    """The shortest delay of a delayed view's aggregations: a read at ``t`` is exact once
    the events up to ``t`` minus it are fed (longer delays end earlier)."""
    from shipyard.features.definitions import Aggregation, micros

    return min(micros(f.delay) for f in view.features if isinstance(f, Aggregation))


def _split(matrix: NDArray[np.float64], requests: list[RawEvents]) -> list[NDArray[np.float64]]:
    out = []
    start = 0
    for request in requests:
        out.append(matrix[start : start + request.rows])
        start += request.rows
    return out


def _merge(requests: list[RawEvents]) -> RawEvents:
    if len(requests) == 1:
        return requests[0]
    names = list(requests[0].columns)
    columns = {n: [v for r in requests for v in r.columns[n]] for n in names}
    return RawEvents(columns, sum(r.rows for r in requests))


def _table(events: RawEvents, columns: EventColumns) -> pa.Table:
    """The events as an Arrow table (cheaper for ``process`` than a pandas frame): a key
    column of integers as int64, of mixed integers and strings as strings (the same online
    key either way), timestamps in microseconds."""
    import pyarrow as pa

    arrays = {}
    for name, kind in columns.kinds.items():
        values = events.columns[name]
        if kind == "key":
            if all(isinstance(v, int) for v in values):
                arrays[name] = pa.array(values, pa.int64())
            else:
                arrays[name] = pa.array([str(v) for v in values], pa.string())
        elif kind == "time":
            arrays[name] = pa.array(values, pa.timestamp("us"))
        elif kind == "number":
            arrays[name] = pa.array(values, pa.float64())
        else:
            try:
                arrays[name] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                arrays[name] = pa.array([str(v) for v in values], pa.string())
    # from_arrays: pa.table(dict) infers a schema, 60 us of a 32-event batch
    return pa.Table.from_arrays(list(arrays.values()), names=list(arrays))
