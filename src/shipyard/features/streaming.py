"""Streaming window aggregates: a view's features computed event by event, as offline.

A :class:`StreamingView` derives everything from one :class:`FeatureView` (there is no
second definition): per entity it keeps the events of the longest window (timestamps in
integer microseconds and the aggregated columns) in the online store, updates that state
with each event and reads the features at the event's time with the offline store's exact
semantics:

* an :class:`Aggregation` covers ``(t - window, t]``: the event itself and every event of
  the entity at the same instant are included, so all events of one instant are applied
  before any of them is read (a call to :meth:`StreamingView.process` must carry every
  event of an instant; :func:`replay` splits a history only between instants);
* ``decimals`` sums are exact: the column is cast to ``DECIMAL(18, decimals)`` by DuckDB (the
  offline cast) and kept as an integer number of units; a mean and a ``std`` repeat the
  offline arithmetic on those units bit for bit (:func:`decimal_mean`, :func:`decimal_std`);
* a ``past_only`` aggregation covers ``(t - window, t)``: the events before the event's
  instant;
* a :class:`Derived` feature is computed per event after the aggregations, in doubles, from
  earlier features and the event's source columns (read as ``DOUBLE``, as offline); its
  declared constraint is checked before the batch's state is written;
* ``fill_value`` answers an empty window; a count is 0;
* a :class:`RowFeature` is its SQL expression, evaluated by DuckDB over the raw events of the
  batch, as offline.

**Delayed aggregations** (label-based, such as terminal risk over ``(t - 7 - n, t - 7]``
days) are read over ``(t - delay - window, t - delay]``, so the state of such a view keeps
``delay + window`` of events. Its events must carry their labels, which a live event does
not have yet: the state of a delayed view is fed with *labelled* history, by
:func:`~shipyard.features.materialize_online.materialize_online` from the data set (on a
schedule or a command) or by a parity replay, and read at serving time with
:meth:`StreamingView.read_at`. A read at ``t`` is exact when the events up to ``t - delay``
have been fed, that is up to ``delay`` after the last materialization.

**Late events.** ``lateness`` bounds how far an event may lag behind the newest event already
stored for its entity: an event older than ``newest - lateness`` raises
:class:`LateEventError` before anything is stored (or, with ``on_late="count"``, is skipped,
reported in :attr:`StreamingResult.rejected` and gets no features). An accepted late event
is read exactly (its window sees only events at or before it); features already returned for
later events are not revised. State keeps the events newer than
``newest - lateness - longest window``; older ones expire.

**Bad events.** Before anything is read or stored, :meth:`StreamingView.process` checks the
raw events and raises :class:`DataValidationError` naming the column, the row (its position
in the batch) and what was expected against what came; a batch with one bad row stores
nothing. Rejected: a null entity key or timestamp, a timestamp that is not one, a timestamp
later than ``now() + max_future`` (default one day; history in the past is fine), a value of
a column an aggregation reads that is not a finite number (for a ``decimals`` aggregation:
outside ``DECIMAL(18, decimals)``), and a row feature value breaking the feature's declared
constraint (checked on the values DuckDB computed, so ``TX_AMOUNT`` < 0 is refused by the
``transaction`` view). Nulls are missing values, not bad ones: an aggregation skips them as
offline (SQL semantics) and a row feature passes them on as null. In a pandas frame NaN is
pandas' null; in an Arrow table a NaN *value* (not a null) or an infinity is rejected.

**Concurrent writers.** Several processes (serving workers) and threads may process events
of the same entities at once: each call reads, updates and writes its entities' states in
one :meth:`~shipyard.features.online.OnlineStore.update_many`, so no event is lost (on Redis
a call that lost a race is computed again from the newer state). Events of one entity that
arrive through different workers are applied in whatever order the calls commit; one that
commits after a newer event of its entity is a late event, read at its own time. A
:class:`StreamingView` keeps one in-memory DuckDB database per process for the SQL of its
events, and a cursor per call.

Example::

    stream = StreamingView(CUSTOMER_SPENDING, open_online_store(ws))
    result = stream.process(events_df)       # features per event, in input order
"""

from __future__ import annotations

import bisect
import math
import operator
import os
import struct
import threading
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from shipyard.errors import DataValidationError, FeatureDefinitionError, ShipyardError
from shipyard.features.definitions import Aggregation, Derived, FeatureView, RowFeature, micros
from shipyard.features.expressions import (
    MAX_ROWS,
    FallbackError,
    PythonSelect,
    RawSpec,
    calibrate,
    compile_select,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from shipyard.features.online import OnlineStore
    from shipyard.types import Constraint

_FORMAT = 1
_HEADER = struct.Struct("<BI")
_NULL_UNITS = -(2**63)  # a null in a fixed-point column (never a real cast result)
_TS = "__shipyard_ts"
# DuckDB result types whose Python values become exactly the Arrow column DuckDB would give
_ARROW_TYPES = {
    "BOOLEAN": "bool_",
    "TINYINT": "int8",
    "SMALLINT": "int16",
    "INTEGER": "int32",
    "BIGINT": "int64",
    "UTINYINT": "uint8",
    "USMALLINT": "uint16",
    "UINTEGER": "uint32",
    "UBIGINT": "uint64",
    "FLOAT": "float32",
    "DOUBLE": "float64",
}
_KEY = "__shipyard_key"


class LateEventError(ShipyardError, ValueError):
    """An event arrived later than the lateness bound allows; nothing was stored."""


@dataclass(frozen=True)
class _Series:
    """One stored column: ``column`` as double, or as integer units of 10**-decimals."""

    column: str
    decimals: int | None

    @property
    def name(self) -> str:
        suffix = "" if self.decimals is None else f"__d{self.decimals}"
        return f"__series_{self.column}{suffix}"

    @property
    def input_name(self) -> str:
        """The alias of the column read as a derived feature's input (not stored)."""
        return f"__input_{self.column}"

    def sql(self) -> str:
        """The offline cast; ``TRY_CAST`` so that a bad value becomes a null to report."""
        column = '"' + self.column.replace('"', '""') + '"'
        if self.decimals is None:
            return f"TRY_CAST({column} AS DOUBLE)"
        # the offline cast, then exact integer units
        return (
            f"TRY_CAST(TRY_CAST({column} AS DECIMAL(18, {self.decimals})) "
            f"* {10**self.decimals} AS BIGINT)"
        )

    def expected(self) -> str:
        if self.decimals is None:
            return "a finite number or null"
        return f"a number or null that fits DECIMAL(18, {self.decimals})"


@dataclass
class EntityState:
    """The events of one entity still inside the longest window, oldest first."""

    times: list[int] = field(default_factory=list)
    values: list[list[float | int | None]] = field(default_factory=list)

    def add(self, time_us: int, row: list[float | int | None]) -> None:
        """Insert one event, keeping time order (a late event goes before newer ones)."""
        at = bisect.bisect_right(self.times, time_us)
        self.times.insert(at, time_us)
        for series, value in zip(self.values, row, strict=True):
            series.insert(at, value)

    def expire(self, before_us: int) -> None:
        """Forget events at or before ``before_us``."""
        cut = bisect.bisect_right(self.times, before_us)
        if cut:
            del self.times[:cut]
            for series in self.values:
                del series[:cut]

    def to_bytes(self, series: tuple[_Series, ...]) -> bytes:
        """A compact blob: format, count, int64 times, then one array per series."""
        parts = [_HEADER.pack(_FORMAT, len(self.times)), array("q", self.times).tobytes()]
        for spec, values in zip(series, self.values, strict=True):
            null = math.nan if spec.decimals is None else _NULL_UNITS
            stored: list[Any] = values
            if None in stored:
                stored = [null if v is None else v for v in stored]
            parts.append(array("d" if spec.decimals is None else "q", stored).tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, blob: bytes, series: tuple[_Series, ...]) -> EntityState:
        """Read a blob written by :meth:`to_bytes` with the same series."""
        version, n = _HEADER.unpack_from(blob)
        if version != _FORMAT:
            raise DataValidationError(f"online state blob of format {version}; expected {_FORMAT}")
        offset = _HEADER.size
        times = array("q")
        times.frombytes(blob[offset : offset + 8 * n])
        offset += 8 * n
        values: list[list[float | int | None]] = []
        for spec in series:
            column = array("d" if spec.decimals is None else "q")
            column.frombytes(blob[offset : offset + 8 * n])
            offset += 8 * n
            items: list[Any] = column.tolist()
            # nulls are rare: look for them in C (a NaN makes the sum NaN; the null units are
            # the smallest int64) before converting value by value
            if spec.decimals is None:
                if not math.isfinite(sum(items)):
                    items = [None if math.isnan(v) else v for v in items]
            elif items and min(items) == _NULL_UNITS:
                items = [None if v == _NULL_UNITS else v for v in items]
            values.append(items)
        return cls(times.tolist(), values)


@dataclass(frozen=True)
class StreamingResult:
    """Features of a batch of events, in input order; rejected (late) rows have none.

    ``values`` holds them as plain Python columns (cheap: what serving reads);
    :attr:`features` is the same as a pandas frame with the offline store's types, built on
    first access.
    """

    values: dict[str, list[Any]]
    """Feature name -> its value per event, in input order (None: null or rejected)."""
    rejected: list[int]
    """Input positions of the late events skipped under ``on_late="count"``."""
    _frame: Callable[[], pd.DataFrame] = field(repr=False, compare=False)

    @cached_property
    def features(self) -> pd.DataFrame:
        """The features as a pandas frame (counts ``Int64``, row features as DuckDB typed them)."""
        return self._frame()


@dataclass
class _Prepared:
    """A batch as DuckDB computed it: one entry per event, in input order."""

    times: list[int]
    """Timestamps in integer microseconds."""
    keys: list[Any]
    """Entity values (before :func:`_key`)."""
    series: list[list[Any]]
    """One column per stored series (``StreamingView.series``)."""
    inputs: list[list[Any]]
    """One column per source column derived features read (``StreamingView.inputs``)."""
    row_features: pa.Table | None
    """The row features' columns, in definition order (None for a view without any, or
    not built yet: see :meth:`StreamingView._row_arrow`)."""
    row_values: list[list[Any]] | None = None
    """The same as Python values (None for a view without row features)."""
    row_types: list[str] | None = None
    """DuckDB's type of each row feature, to build :attr:`row_features` on first use."""
    source: pa.Table | None = None
    """The events, for DuckDB to convert row features of a type not mapped here."""
    labels: list[Any] | None = None
    """The events' pandas index labels, for error messages (None: positions)."""


@dataclass
class _Applied:
    """What one application of a batch to the entities' states gave."""

    rejected: list[int]
    results: list[dict[str, float | int | None] | None]
    touched: set[str]


@dataclass(frozen=True)
class _Reading:
    """What reading one aggregation needs, computed once per view."""

    name: str
    function: str
    window_us: int
    delay_us: int
    series: int | None
    """Index of the stored series it reads (None: a count of events)."""
    scale: int | None
    """10**decimals for an exact decimal series (its values are integer units)."""
    fill_value: float | None
    past_only: bool
    """The window ends before the reading's instant: ``(t - window, t)``."""


@dataclass(frozen=True)
class _Derivation:
    """What computing one derived feature needs, computed once per view."""

    name: str
    function: str
    inputs: tuple[tuple[bool, str], ...]
    """Per input: (read from the raw event, feature name or source column)."""
    fill_value: float | None


class StreamingView:
    """A feature view computed per event from state kept in an online store."""

    def __init__(
        self,
        view: FeatureView,
        store: OnlineStore,
        *,
        lateness: timedelta = timedelta(minutes=5),
        on_late: Literal["raise", "count"] = "raise",
        max_future: timedelta = timedelta(days=1),
        now: Callable[[], datetime] | None = None,
    ) -> None:
        if not isinstance(lateness, timedelta) or lateness < timedelta(0):
            raise FeatureDefinitionError(
                f"The 'lateness' parameter of StreamingView must be a timedelta >= 0. "
                f"Got {lateness!r} instead."
            )
        if on_late not in ("raise", "count"):
            raise FeatureDefinitionError(
                f"The 'on_late' parameter of StreamingView must be 'raise' or 'count'. "
                f"Got {on_late!r} instead."
            )
        if not isinstance(max_future, timedelta) or max_future < timedelta(0):
            raise FeatureDefinitionError(
                f"The 'max_future' parameter of StreamingView must be a timedelta >= 0. "
                f"Got {max_future!r} instead."
            )
        self.view = view
        self.store = store
        self.max_future = max_future
        self.now: Callable[[], datetime] = now or (lambda: datetime.now(UTC))
        self.lateness = lateness
        self.on_late = on_late
        self.aggregations = tuple(f for f in view.features if isinstance(f, Aggregation))
        self.row_features = tuple(f for f in view.features if isinstance(f, RowFeature))
        self.derived = tuple(f for f in view.features if isinstance(f, Derived))
        own = set(view.feature_names)
        self._derivations = tuple(
            _Derivation(
                f.name, f.function, tuple((c not in own, c) for c in f.inputs), f.fill_value
            )
            for f in self.derived
        )
        # the source columns derived features read from the event, as DOUBLE (not stored)
        self.inputs = tuple(
            dict.fromkeys(_Series(c, None) for f in self.derived for c in view.source_columns(f))
        )
        self._constrained_derived = tuple(
            f for f in self.derived if f.declared_constraint is not None
        )
        row_names = {f.name for f in self.row_features}
        # a derived feature that reads the event (a source column or a row feature, through
        # derived features too) cannot be read without one (read_at)
        needs_event: set[str] = set()
        for f in self.derived:
            if any(c not in own or c in row_names or c in needs_event for c in f.inputs):
                needs_event.add(f.name)
        self._needs_event = tuple(f.name for f in self.derived if f.name in needs_event)
        self._read_names = [f.name for f in view.features if not isinstance(f, RowFeature)]
        read = {c for f in self.derived for c in f.inputs}
        # (feature name, its row feature index or None for an aggregation) per feature read
        self._derived_reads = tuple(
            (f.name, self.row_features.index(f) if isinstance(f, RowFeature) else None)
            for f in view.features
            if f.name in read and not isinstance(f, Derived)
        )
        self.series = tuple(
            dict.fromkeys(
                _Series(f.column, f.decimals) for f in self.aggregations if f.column is not None
            )
        )
        series_of = {
            f.name: None if f.column is None else self.series.index(_Series(f.column, f.decimals))
            for f in self.aggregations
        }
        # (feature name, window in us, delay in us): a window is (t - delay - window, t - delay]
        self._windows = tuple(
            (f.name, micros(f.window), micros(f.delay)) for f in self.aggregations
        )
        self._readings = tuple(
            _Reading(
                f.name,
                f.function,
                micros(f.window),
                micros(f.delay),
                series_of[f.name],
                None if f.decimals is None or f.column is None else 10**f.decimals,
                f.fill_value,
                f.past_only,
            )
            for f in self.aggregations
        )
        self.delayed = view.delayed
        longest = max((window + delay for _, window, delay in self._windows), default=0)
        self.retention_us = longest + micros(lateness)
        entity, ts = (_quote(c) for c in (view.entity, view.timestamp))
        # the SQL expressions DuckDB computes, raw values then row features, and their aliases
        self._expressions = [f"epoch_us(TRY_CAST({ts} AS TIMESTAMP))", entity]
        self._expressions += [s.sql() for s in (*self.series, *self.inputs)]
        self._expressions += [f"({f.expression})" for f in self.row_features]
        aliases = [_TS, _KEY, *(s.name for s in self.series)]
        aliases += [s.input_name for s in self.inputs]
        aliases += [_quote(f.name) for f in self.row_features]
        selects = [f"{e} AS {a}" for e, a in zip(self._expressions, aliases, strict=True)]
        raw = 2 + len(self.series) + len(self.inputs)
        self._raw_selects = selects[:raw]
        self._row_selects = selects[raw:]
        # one DuckDB database per view and process (opening one costs milliseconds), a cursor
        # per call so that threads never share a connection
        self._duckdb: Any = None
        self._duckdb_pid = 0
        self._duckdb_lock = threading.Lock()
        # the same values computed in Python for small batches, per Arrow schema (None: DuckDB)
        self._raw_spec = RawSpec(
            view.timestamp,
            view.entity,
            tuple((s.column, s.decimals) for s in (*self.series, *self.inputs)),
        )
        self._python: list[tuple[pa.Schema, PythonSelect | None]] = []
        self._checked_schemas: list[pa.Schema] = []

    # -- reading -----------------------------------------------------------------------------

    def _read(self, state: EntityState, time_us: int) -> dict[str, float | int | None]:
        """The aggregations of ``state`` at ``time_us``: each over its window's events."""
        times = state.times
        stored = state.values
        now = bisect.bisect_right(times, time_us)
        before = -1  # the events before time_us (bisect_left), found on first need
        out: dict[str, float | int | None] = {}
        for reading in self._readings:
            delay = reading.delay_us
            if reading.past_only:
                if before < 0:
                    before = bisect.bisect_left(times, time_us, 0, now)
                hi = before
            else:
                hi = now if not delay else bisect.bisect_right(times, time_us - delay, 0, now)
            lo = bisect.bisect_right(times, time_us - delay - reading.window_us, 0, hi)
            if reading.series is None:  # a count of events
                out[reading.name] = hi - lo
                continue
            values: list[Any] = stored[reading.series][lo:hi]
            if None in values:  # nulls are skipped, as SQL aggregates skip them
                values = [v for v in values if v is not None]
            function = reading.function
            if function == "count":
                out[reading.name] = len(values)
                continue
            if not values:
                out[reading.name] = reading.fill_value
                continue
            scale = reading.scale
            result: float | int
            if function == "min":
                result = min(values)
            elif function == "max":
                result = max(values)
            elif function == "sum":
                result = sum(values)
            elif scale is not None:  # exact units: DuckDB's own arithmetic, bit for bit
                if function == "mean":
                    out[reading.name] = decimal_mean(sum(values), len(values), scale)
                else:
                    out[reading.name] = decimal_std(values, scale)
                continue
            elif function == "mean":
                result = sum(values) / len(values)
            else:  # std is defined with decimals only
                raise AssertionError(function)
            out[reading.name] = result / scale if scale is not None else float(result)
        return out

    def _load(self, keys: list[str]) -> dict[str, EntityState]:
        blobs = self.store.get_many(self.view, keys)
        return {key: self._state(blob) for key, blob in zip(keys, blobs, strict=True)}

    def read(self, entities: list[Any], at: Any) -> pd.DataFrame:
        """The aggregations of ``entities`` at time ``at`` without an event (nothing stored).

        An entity never seen has zero history: counts are 0, the other aggregations their
        ``fill_value`` (null without one).
        """
        return self.read_at(entities, [at] * len(entities))

    def read_at(self, entities: list[Any], times: list[Any]) -> pd.DataFrame:
        """The aggregations of each entity at its own time (nothing stored), in input order.

        This is how a delayed view is read when serving: its state is fed with labelled
        events by :func:`~shipyard.features.materialize_online.materialize_online`, and a
        read at ``t`` sees the window ``(t - delay - window, t - delay]``.
        """
        import pandas as pd

        if len(entities) != len(times):
            raise DataValidationError(
                f"read_at: {len(entities)} entities but {len(times)} times; expected one "
                "time per entity."
            )
        micros_at = [int(pd.Timestamp(t).value // 1000) for t in times]
        return pd.DataFrame(self.read_values(entities, micros_at), columns=self._read_names)

    def read_values(self, entities: list[Any], times_us: list[int]) -> dict[str, list[Any]]:
        """:meth:`read_at` with times in epoch microseconds, as plain columns (feature name
        -> one value per entity): the serving path's read, without pandas."""
        if len(entities) != len(times_us):
            raise DataValidationError(
                f"read_values: {len(entities)} entities but {len(times_us)} times; expected "
                "one time per entity."
            )
        if self._needs_event:
            raise FeatureDefinitionError(
                f"View {self.view.name!r}: derived feature {self._needs_event[0]!r} reads the "
                "event (a source column or a row feature), so it cannot be read from the "
                "state alone; process the events instead."
            )
        keys = [_key(e) for e in entities]
        states = self._load(list(dict.fromkeys(keys)))
        rows = [self._read(states[k], t) for k, t in zip(keys, times_us, strict=True)]
        values = {f.name: [row[f.name] for row in rows] for f in self.aggregations}
        for derivation in self._derivations:
            values[derivation.name] = _derive(derivation, values, {}, None)
        return {name: values[name] for name in self._read_names}

    # -- processing --------------------------------------------------------------------------

    def _prepare(self, events: Any) -> _Prepared:
        """Timestamps (us), entity keys, series and row features of ``events``, via DuckDB.

        Every bad event is refused here (see "Bad events" in the module docstring), before
        the caller reads or stores anything.
        """
        table, labels = self._events(events)
        python = self._python_columns(table)
        if python is not None:
            return self._prepared(table, labels, *python)
        if self.row_features:
            # one query for everything; when it fails (a row feature over a bad raw value),
            # the two steps of _prepare_apart report the bad value, or the row feature's error
            try:
                columns, types = self._select(table, self._raw_selects + self._row_selects)
            except FeatureDefinitionError:
                return self._prepare_apart(table, labels)
            return self._prepared(table, labels, columns, types)
        return self._prepare_apart(table, labels)

    def _events(self, events: Any) -> tuple[pa.Table, list[Any] | None]:
        """``events`` as Arrow, checked to hold the view's columns; pandas index labels."""
        import pyarrow as pa

        table = _to_arrow(events)
        self._check_columns(table)
        labels = list(events.index) if not isinstance(events, pa.Table) else None
        return table, labels

    def _check_columns(self, table: pa.Table) -> None:
        """The view's columns are in ``table`` (checked once per schema: the names of a
        table cost 10 us to list)."""
        schema = table.schema
        if any(schema == checked for checked in self._checked_schemas):
            return
        self.view.check_columns(schema.names, where="the events")
        self._checked_schemas.append(schema)
        del self._checked_schemas[:-8]

    def _prepared(
        self,
        table: pa.Table,
        labels: list[Any] | None,
        columns: list[list[Any]],
        types: list[str],
    ) -> _Prepared:
        """The batch from the columns of ``_raw_selects + _row_selects``, checked."""
        n = len(self._raw_selects)
        stored = 2 + len(self.series)
        prepared = _Prepared(
            columns[0],
            columns[1],
            columns[2:stored],
            columns[stored:n],
            None,
            columns[n:],
            types[n:],
            table,
            labels,
        )
        self._check_raw(table, prepared, labels)
        if self.row_features:
            self._check_constraints(columns[n:], labels)
        return prepared

    def _prepare_apart(self, table: pa.Table, labels: list[Any] | None) -> _Prepared:
        """:meth:`_prepare` in two queries: raw values checked before row features run."""
        raw, _ = self._select(table, self._raw_selects)
        stored = 2 + len(self.series)
        prepared = _Prepared(raw[0], raw[1], raw[2:stored], raw[stored:], None, labels=labels)
        self._check_raw(table, prepared, labels)
        if self.row_features:
            prepared.row_features = self._select_arrow(table, self._row_selects)
            prepared.row_values = [c.to_pylist() for c in prepared.row_features.columns]
            self._check_constraints(prepared.row_values, labels)
        return prepared

    def _row_arrow(self, prepared: _Prepared) -> pa.Table:
        """The row features of ``prepared`` as the Arrow table DuckDB would give."""
        if prepared.row_features is None:
            assert prepared.row_values is not None and prepared.row_types is not None
            rows = self._row_table(prepared.row_values, prepared.row_types)
            if rows is None:  # a type not mapped here: as DuckDB converts it to Arrow
                assert prepared.source is not None
                rows = self._select_arrow(prepared.source, self._row_selects)
            prepared.row_features = rows
        return prepared.row_features

    def _row_table(self, columns: list[list[Any]], types: list[str]) -> pa.Table | None:
        """Row feature values as the Arrow table DuckDB would give (None: a type not mapped)."""
        import pyarrow as pa

        if not all(t in _ARROW_TYPES for t in types):
            return None
        arrays = [
            pa.array(values, type=getattr(pa, _ARROW_TYPES[t])())
            for values, t in zip(columns, types, strict=True)
        ]
        return pa.Table.from_arrays(arrays, names=[f.name for f in self.row_features])

    def prepare_for(self, events: pa.Table) -> bool:
        """Compile the view's SQL for events with the columns of ``events`` (an Arrow table,
        empty or not) and check it against DuckDB, as the first batch of that schema would;
        True when small batches of it are computed in Python (see
        :mod:`shipyard.features.expressions`)."""
        self._check_columns(events)
        return self._python_columns(events.slice(0, 0)) is not None

    def _python_columns(
        self, table: pa.Table, converted: dict[str, list[Any]] | None = None
    ) -> tuple[list[list[Any]], list[str]] | None:
        """What :meth:`_select` of the raw values and row features answers, computed in
        Python (see :mod:`shipyard.features.expressions`); None: DuckDB computes it.
        ``converted``: the table's columns as Python values, shared by views."""
        if table.num_rows > MAX_ROWS:
            return None
        schema = table.schema
        # compared, not hashed: a schema's hash costs 13 us
        found = [compiled for known, compiled in self._python if known == schema]
        compiled = found[0] if found else self._compile_python(schema)
        if compiled is None:
            return None
        try:
            return compiled.columns(table, converted), compiled.types
        except FallbackError:
            return None

    def _compile_python(self, schema: pa.Schema) -> PythonSelect | None:
        """Compile the view's expressions for ``schema`` and check them against DuckDB."""
        selects = self._raw_selects + self._row_selects
        compiled = compile_select(self._raw_spec, [f.expression for f in self.row_features], schema)
        if compiled is not None and not calibrate(
            compiled, schema, lambda table: self._select(table, selects)
        ):
            compiled = None
        self._python.append((schema, compiled))
        del self._python[:-8]
        return compiled

    def _cursor(self) -> Any:
        """A fresh cursor on this view's DuckDB database (opened once per process)."""
        import duckdb

        with self._duckdb_lock:
            if self._duckdb is None or self._duckdb_pid != os.getpid():
                # one thread: batches are small, and a query plans faster (~15%)
                self._duckdb = duckdb.connect(config={"threads": 1})
                self._duckdb_pid = os.getpid()
            return self._duckdb.cursor()

    def _select(self, table: pa.Table, selects: list[str]) -> tuple[list[list[Any]], list[str]]:
        """``selects`` over the events, as Python columns, and the DuckDB type of each."""
        import duckdb

        cursor = self._cursor()
        # DuckDB reads the events from this local variable (a replacement scan: cheaper than
        # registering the table)
        shipyard_events = table  # noqa: F841
        try:
            result = cursor.execute(f"SELECT {', '.join(selects)} FROM shipyard_events")
            rows = result.fetchall()
            types = [str(column[1]) for column in result.description]
        except duckdb.Error as exc:
            raise self._failed(exc) from None
        finally:
            cursor.close()
        columns = [list(column) for column in zip(*rows, strict=True)] or [[] for _ in selects]
        return columns, types

    def _select_arrow(self, table: pa.Table, selects: list[str]) -> pa.Table:
        """``selects`` over the events as an Arrow table (DuckDB's own conversion)."""
        import duckdb

        cursor = self._cursor()
        shipyard_events = table  # noqa: F841  (read by DuckDB, as in _select)
        try:
            return cursor.sql(f"SELECT {', '.join(selects)} FROM shipyard_events").to_arrow_table()
        except duckdb.Error as exc:
            raise self._failed(exc) from None
        finally:
            cursor.close()

    def _failed(self, exc: Exception) -> FeatureDefinitionError:
        return FeatureDefinitionError(
            f"Computing feature view {self.view.name!r} over the events failed in DuckDB: {exc}"
        )

    def _bad(
        self, column: str, rows: list[int], labels: list[Any] | None, problem: str
    ) -> NoReturn:
        i = rows[0]
        where = f"row {i}"
        if labels is not None and labels[i] != i:
            where += f" (index {labels[i]!r})"
        raise DataValidationError(
            f"{len(rows)} bad event(s) for view {self.view.name!r}: the first, {where}, has in "
            f"column {column!r} {problem}. Nothing of the batch was stored."
        )

    def _check_raw(self, table: pa.Table, prepared: _Prepared, labels: list[Any] | None) -> None:
        """Entity keys and timestamps present and valid, aggregated columns numeric."""
        entity, ts = self.view.entity, self.view.timestamp
        for values, name in ((prepared.keys, entity), (prepared.times, ts)):
            raw = table.column(name)
            if raw.null_count:
                nulls = [i for i, v in enumerate(raw.is_null().to_pylist()) if v]
                what = "an entity key" if name == entity else "a timestamp"
                self._bad(name, nulls, labels, f"a null; expected {what}")
            bad = [i for i, v in enumerate(values) if v is None]
            if bad:
                got = raw[bad[0]].as_py()
                self._bad(name, bad, labels, f"{got!r}; expected a timestamp")
        if prepared.times:
            bound_us = _epoch_us(self.now()) + micros(self.max_future)
            future = [i for i, t in enumerate(prepared.times) if t > bound_us]
            if future:
                import pandas as pd

                got = pd.Timestamp(prepared.times[future[0]], unit="us")
                limit = pd.Timestamp(bound_us, unit="us")
                self._bad(
                    ts,
                    future,
                    labels,
                    f"{got}, in the future; expected a time at or before now + "
                    f"{self.max_future} ({limit} UTC)",
                )
        checked = zip(
            (*self.series, *self.inputs), (*prepared.series, *prepared.inputs), strict=True
        )
        for spec, values in checked:
            raw = table.column(spec.column)
            # a value the cast turned into a null (the raw one was not), or not finite
            bad = [
                i
                for i, v in enumerate(values)
                if (v is None and raw[i].is_valid)
                or (spec.decimals is None and v is not None and not math.isfinite(v))
            ]
            if bad:
                got = raw[bad[0]].as_py()
                self._bad(spec.column, bad, labels, f"{got!r}; expected {spec.expected()}")

    def _check_constraints(
        self,
        rows: list[list[Any]],
        labels: list[Any] | None,
        features: Sequence[RowFeature | Derived] | None = None,
    ) -> None:
        """Row feature (or derived ``features``) values against their declared constraints
        (nulls are missing)."""
        kind = "row" if features is None else "derived"
        for feature, values in zip(features or self.row_features, rows, strict=True):
            constraint = feature.declared_constraint
            if constraint is None or _within(constraint, values):
                continue
            bad = [i for i, v in enumerate(values) if v is not None and not _allows(constraint, v)]
            if bad:
                inputs = ", ".join(repr(c) for c in feature.columns)
                self._bad(
                    feature.name,
                    bad,
                    labels,
                    f"{values[bad[0]]!r} ({kind} feature computed from {inputs}); expected "
                    f"{constraint.describe()}, its declared constraint",
                )

    def process(self, events: Any) -> StreamingResult:
        """Apply ``events`` (a pandas DataFrame or Arrow table) and return their features.

        Events are applied in time order (ties in input order), every event of one instant
        before any of them is read. The call must hold every event of each instant it
        touches. Late events (see the module docstring) raise :class:`LateEventError` before
        anything is stored, or are skipped with ``on_late="count"``.

        The states of the batch's entities are read, updated and written back in one
        :meth:`~shipyard.features.online.OnlineStore.update_many`, so that processes and
        threads processing events of the same entities at once lose none of them; the late
        check and the features are those of the state the update was applied to.
        """
        return self._apply_prepared(self._prepare(events))

    def _apply_prepared(self, prepared: _Prepared) -> StreamingResult:
        """:meth:`process` after its events were prepared and checked."""
        times: list[int] = prepared.times
        if not self.aggregations or not times:  # row features only: nothing is stored
            results: list[dict[str, float | int | None] | None] = [{}] * len(times)
            return self._result(prepared, results, [], self._derived_values(prepared, results))
        keys = [_key(k) for k in prepared.keys]
        rows: list[tuple[float | int | None, ...]] = [()] * len(times)
        if self.series:
            rows = list(zip(*prepared.series, strict=True))
        entities = list(dict.fromkeys(keys))
        applied: list[_Applied] = []
        derived: list[dict[str, list[Any]]] = []

        def update(blobs: list[bytes | None]) -> dict[str, bytes]:
            # called again on a retry (Redis): recomputed from the state it is applied to
            states = {key: self._state(blob) for key, blob in zip(entities, blobs, strict=True)}
            applied[:] = [self._apply(times, keys, rows, states)]
            # derived values checked before anything is written (a refusal stores nothing)
            derived[:] = [self._derived_values(prepared, applied[0].results)]
            return {key: states[key].to_bytes(self.series) for key in applied[0].touched}

        self.store.update_many(self.view, entities, update)
        return self._result(prepared, applied[0].results, applied[0].rejected, derived[0])

    def _derived_values(
        self, prepared: _Prepared, results: list[dict[str, float | int | None] | None]
    ) -> dict[str, list[Any]]:
        """Each derived feature's value per event (None for a rejected event), checked
        against its declared constraint."""
        if not self._derivations:
            return {}
        columns: dict[str, list[Any]] = {}
        for name, row in self._derived_reads:  # the features derived ones read
            if row is None:
                columns[name] = [None if r is None else r[name] for r in results]
            else:
                assert prepared.row_values is not None  # a view with row features has them
                columns[name] = prepared.row_values[row]
        inputs = {spec.column: prepared.inputs[i] for i, spec in enumerate(self.inputs)}
        out: dict[str, list[Any]] = {}
        for derivation in self._derivations:
            out[derivation.name] = columns[derivation.name] = _derive(
                derivation, columns, inputs, results
            )
        if self._constrained_derived:
            rows = [out[f.name] for f in self._constrained_derived]
            self._check_constraints(rows, prepared.labels, self._constrained_derived)
        return out

    def _state(self, blob: bytes | None) -> EntityState:
        if blob is None:
            return EntityState([], [[] for _ in self.series])
        return EntityState.from_bytes(blob, self.series)

    def _apply(
        self,
        times: list[int],
        keys: list[str],
        rows: list[tuple[float | int | None, ...]],
        states: dict[str, EntityState],
    ) -> _Applied:
        """Add the accepted events to ``states`` (in place) and read each at its time."""
        rejected = self._late(times, keys, states)
        skip = set(rejected)
        order = sorted((i for i in range(len(times)) if i not in skip), key=times.__getitem__)
        results: list[dict[str, float | int | None] | None] = [None] * len(times)
        touched: set[str] = set()
        start = 0
        while start < len(order):
            instant = times[order[start]]
            stop = start
            while stop < len(order) and times[order[stop]] == instant:
                stop += 1
            group = order[start:stop]
            for i in group:
                states[keys[i]].add(instant, list(rows[i]))
                touched.add(keys[i])
            cache: dict[str, dict[str, float | int | None]] = {}
            for i in group:
                if keys[i] not in cache:
                    cache[keys[i]] = self._read(states[keys[i]], instant)
                results[i] = cache[keys[i]]
            start = stop
        for key in touched:
            state = states[key]
            state.expire(state.times[-1] - self.retention_us)
        return _Applied(rejected, results, touched)

    def _late(self, times: list[int], keys: list[str], states: dict[str, EntityState]) -> list[int]:
        bound = micros(self.lateness)
        late = [
            i
            for i, (t, key) in enumerate(zip(times, keys, strict=True))
            if key in states and states[key].times and t < states[key].times[-1] - bound
        ]
        if late and self.on_late == "raise":
            i = late[0]
            import pandas as pd

            newest = pd.Timestamp(states[keys[i]].times[-1], unit="us")
            raise LateEventError(
                f"{len(late)} event(s) of view {self.view.name!r} arrived later than the "
                f"lateness bound of {self.lateness}: the first, row {i} ({self.view.entity} = "
                f"{keys[i]}, at {pd.Timestamp(times[i], unit='us')}), is older than that "
                f"entity's newest event ({newest}) minus the bound. Nothing was stored."
            )
        return late

    def _result(
        self,
        prepared: _Prepared,
        results: list[dict[str, float | int | None] | None],
        rejected: list[int],
        derived: dict[str, list[Any]],
    ) -> StreamingResult:
        values: dict[str, list[Any]] = {}
        for feature in self.view.features:
            if isinstance(feature, Derived):
                values[feature.name] = derived[feature.name]
            elif isinstance(feature, RowFeature):
                assert prepared.row_values is not None  # a view with row features has them
                column = prepared.row_values[self.row_features.index(feature)]
                values[feature.name] = [
                    None if r is None else v for v, r in zip(column, results, strict=True)
                ]
            else:
                values[feature.name] = [None if r is None else r[feature.name] for r in results]
        return StreamingResult(values, rejected, lambda: self._frame(prepared, results, derived))

    def _frame(
        self,
        prepared: _Prepared,
        results: list[dict[str, float | int | None] | None],
        derived: dict[str, list[Any]],
    ) -> pd.DataFrame:
        import pandas as pd

        valid = [r is not None for r in results]
        columns: dict[str, Any] = {}
        computed = self._row_arrow(prepared) if self.row_features else None
        for feature in self.view.features:
            if isinstance(feature, RowFeature):
                assert computed is not None  # a view with row features computed them
                column = computed.column(self.row_features.index(feature)).to_pandas()
                columns[feature.name] = (
                    column.where(pd.Series(valid), None) if not all(valid) else column
                )
            elif isinstance(feature, Derived):
                columns[feature.name] = pd.array(derived[feature.name], dtype="float64")
            else:
                values = [None if r is None else r[feature.name] for r in results]
                dtype = "Int64" if feature.function == "count" else "float64"
                columns[feature.name] = pd.array(values, dtype=dtype)
        return pd.DataFrame(columns, index=range(len(prepared.times)))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def decimal_mean(total: int, count: int, scale: int) -> float:
    """DuckDB's windowed ``avg`` of a ``DECIMAL`` column (the offline store's mean), bit for
    bit, from its integer units.

    DuckDB divides the exact sum by ``count * scale`` in x87 long double (a 64-bit
    significand) and rounds that to a double: two roundings, each half to even, which
    ``total / (count * scale)`` (one rounding) differs from about once in 6,000 means.
    Exact while ``|total|`` and ``count * scale`` are below 2**64 (DuckDB's own casts).
    (A grouped ``avg`` beside a ``sum`` is planned by DuckDB as ``sum / count``, one
    rounding: not what the offline store's window functions compute.)
    """
    if total == 0:
        return 0.0
    divisor = count * scale
    magnitude = -total if total < 0 else total
    # q = magnitude * 2**shift / divisor in [2**63, 2**64): the long double's significand
    shift = 64 - (magnitude.bit_length() - divisor.bit_length())
    while True:
        if shift >= 0:
            q, r = divmod(magnitude << shift, divisor)
            half = divisor
        else:
            half = divisor << -shift
            q, r = divmod(magnitude, half)
        if q < 2**64:
            break
        shift -= 1
    if 2 * r > half or (2 * r == half and q & 1):
        q += 1
    # float(q) rounds the 64-bit significand to 53 bits, half to even; ldexp is exact
    value = math.ldexp(float(q), -shift)
    return -value if total < 0 else value


def decimal_std(units: list[int], scale: int) -> float:
    """The population standard deviation of ``units`` (integer units of ``1 / scale``) as
    the offline store computes it: ``sqrt(float(n * S2 - S1**2)) / n / scale``, with exact
    integer sums and the same four IEEE operations (``n * S2 - S1**2 >= 0`` exactly)."""
    n = len(units)
    total = sum(units)
    squares = sum(map(operator.mul, units, units))
    return math.sqrt(float(n * squares - total * total)) / n / scale


def _derive(
    derivation: _Derivation,
    features: dict[str, list[Any]],
    inputs: dict[str, list[Any]],
    results: Sequence[object | None] | None,
) -> list[float | None]:
    """One derived feature per event, in IEEE doubles as DuckDB computes it offline: null
    (or the fill value) when an input is null or a divisor is 0; None for a rejected event
    (``results[i]`` None)."""
    columns = [inputs[name] if raw else features[name] for raw, name in derivation.inputs]
    function, fill = derivation.function, derivation.fill_value
    out: list[float | None]
    if function == "difference":
        a, b = columns
        pairs = zip(a, b, strict=True)
        out = [fill if x is None or y is None else float(x) - float(y) for x, y in pairs]
    elif function == "ratio":
        a, b = columns
        pairs = zip(a, b, strict=True)  # "not y": a null or a zero divisor
        out = [fill if x is None or not y else float(x) / float(y) for x, y in pairs]
    else:
        a, m, sd = columns
        out = [
            fill if x is None or y is None or not z else (float(x) - float(y)) / float(z)
            for x, y, z in zip(a, m, sd, strict=True)
        ]
    if results is not None and None in results:  # rejected events have no features
        out = [None if r is None else v for v, r in zip(out, results, strict=True)]
    return out


def _to_arrow(events: Any) -> pa.Table:
    """``events`` as Arrow; a pandas column of mixed types (``[10.0, "abc"]``) as strings."""
    import pyarrow as pa

    if isinstance(events, pa.Table):
        return events
    names = list(events.columns)
    if all(isinstance(n, str) for n in names) and len(set(names)) == len(names):
        # column by column, as Table.from_pandas converts them, without its pandas metadata
        # (a third of the cost of a one-event call)
        try:
            arrays = [pa.array(events[n], from_pandas=True) for n in names]
            return pa.Table.from_arrays(arrays, names=names)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    try:
        return pa.Table.from_pandas(events)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        frame = events.copy()
        for name in frame.columns:
            try:
                pa.array(frame[name], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                frame[name] = [None if _missing(v) else str(v) for v in frame[name]]
        return pa.Table.from_pandas(frame)


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _within(constraint: Constraint, values: list[Any]) -> bool:
    """Whether every value surely satisfies ``constraint``, judged from the smallest and the
    largest (False: look value by value)."""
    present = [v for v in values if v is not None] if None in values else values
    if not present:
        return True
    kinds = {type(v) for v in present}
    if not kinds <= {int, float} or (float in kinds and constraint.integer):
        return False
    if float in kinds and not math.isfinite(sum(present)):  # NaN or an infinity
        return False
    return constraint.allows(min(present)) and constraint.allows(max(present))


def _allows(constraint: Constraint, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return False
    return constraint.allows(float(value))


def _epoch_us(value: datetime) -> int:
    """Epoch microseconds of ``value``; a naive datetime is UTC (as event timestamps are)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return (value - datetime(1970, 1, 1)) // timedelta(microseconds=1)


def _key(value: Any) -> str:
    """The online key of an entity value (integers and strings alike, never '42.0')."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def process_together(streams: Sequence[StreamingView], events: Any) -> list[StreamingResult]:
    """:meth:`StreamingView.process` of the same ``events`` through several views, in order.

    The views' raw values and row features are computed by one DuckDB query (what a raw
    event costs when served: one query instead of one per view). Every view's checks run
    before any state is written, so a bad event for any view stores nothing; each view's
    states are then updated as by its own ``process``.
    """
    if len(streams) == 1:
        return [streams[0].process(events)]
    if not streams:
        return []
    table, labels = streams[0]._events(events)
    for stream in streams[1:]:
        stream._check_columns(table)
    converted: dict[str, list[Any]] = {}  # each column of the events as Python values, once
    python = [stream._python_columns(table, converted) for stream in streams]
    if all(p is not None for p in python):  # small batches: no DuckDB query at all
        prepared = [
            stream._prepared(table, labels, *p)
            for stream, p in zip(streams, python, strict=True)
            if p is not None
        ]
        return [stream._apply_prepared(p) for stream, p in zip(streams, prepared, strict=True)]
    selects = [
        f"{expression} AS __c{i}_{j}"
        for i, stream in enumerate(streams)
        for j, expression in enumerate(stream._expressions)
    ]
    try:
        columns, types = streams[0]._select(table, selects)
    except FeatureDefinitionError:  # each view on its own, for its own message
        prepared = [stream._prepare(events) for stream in streams]
    else:
        prepared = []
        start = 0
        for stream in streams:
            part = slice(start, start + len(stream._expressions))
            prepared.append(stream._prepared(table, labels, columns[part], types[part]))
            start = part.stop
    return [stream._apply_prepared(p) for stream, p in zip(streams, prepared, strict=True)]


def replay(
    stream: StreamingView, events: pd.DataFrame, *, batch_rows: int = 10_000
) -> Iterator[StreamingResult]:
    """Process ``events`` in time order, in batches that never split an instant."""
    ordered = events.sort_values(stream.view.timestamp, kind="stable")
    times = ordered[stream.view.timestamp].to_numpy()
    start = 0
    while start < len(ordered):
        stop = min(start + batch_rows, len(ordered))
        while stop < len(ordered) and times[stop] == times[stop - 1]:
            stop += 1
        yield stream.process(ordered.iloc[start:stop])
        start = stop
