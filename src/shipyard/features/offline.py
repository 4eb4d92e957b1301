"""The offline feature store: DuckDB over Parquet, point-in-time correct.

``materialize`` computes every feature of a view for every row of its source data set with
DuckDB window functions (RANGE frames over integer microseconds, so the bounds are exact)
and stores the result as one Parquet file per (view definition, data set content), its rows
in time order (then entity, then feature values). The data set's partitions and the stored
file are checked against their SHA-256 before use.

Through an :class:`~shipyard.engines.Engine` (``engine=``, or the ``engine = "ray"``
setting), a view is computed in tasks over consecutive runs of the data set's daily
partitions: each task reads its own partitions plus the look-back its longest window and
delay need, keeps only its own rows, and the driver concatenates the chunks in time order
into the same single file, row for row and value for value what the single query writes.
A view whose values could depend on how the rows are split (a sum or mean of floating-point
values without ``decimals``, a row expression with its own ``OVER``) runs as one query.

``get_historical_features`` attaches to each event (entity keys + a timestamp) the latest
feature row of each view at or before the event's time with a DuckDB ASOF join. The join
runs inside DuckDB, spills to disk past its memory limit, and the result streams out as
Arrow record batches: the history is never loaded into pandas.

Example::

    store = OfflineStore(ws)
    store.materialize(BASELINE_VIEWS)
    features = store.get_historical_features(events_df, BASELINE_VIEWS)
    features.to_parquet("training_frame.parquet")
"""

from __future__ import annotations

import math
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import (
    CorruptDataError,
    DataValidationError,
    FeatureDefinitionError,
    FeatureNotFoundError,
    invalid_parameter,
)
from shipyard.features.definitions import Aggregation, Derived, FeatureView, RowFeature, micros
from shipyard.integrity import file_sha256

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

    from shipyard.data.catalog import Dataset
    from shipyard.engines import Engine
    from shipyard.workspace import Workspace

ProgressCallback = Callable[[str, int, int], None]
_TS = "__shipyard_ts"
_ROW = "__shipyard_row"


@dataclass(frozen=True)
class Materialization:
    """A stored computation of one feature view over one data set version."""

    view: str
    definition_hash: str
    dataset: str
    dataset_version: int
    dataset_hash: str
    path: Path
    sha256: str
    n_rows: int
    seconds: float
    reused: bool = False


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _units_sql(column: str, decimals: int) -> str:
    """The column as exact integer units of 10**-decimals (the DECIMAL cast, then HUGEINT)."""
    return f"CAST(CAST({column} AS DECIMAL(18, {decimals})) * {10**decimals} AS HUGEINT)"


def _aggregate_sql(feature: Aggregation, window: str) -> str:
    column = "*" if feature.column is None else _q(feature.column)
    if feature.function == "std":
        # population std from exact integer sums: sqrt(n * S2 - S1^2) / n / 10**d, each step
        # one IEEE operation that Python repeats (StreamingView, _std_units)
        assert feature.decimals is not None and feature.column is not None  # checked by it
        units = _units_sql(column, feature.decimals)
        n = f"count({column}) OVER {window}"
        spread = (
            f"{n} * sum({units} * {units}) OVER {window} "
            f"- sum({units}) OVER {window} * sum({units}) OVER {window}"
        )
        expression = (
            f"sqrt(CAST({spread} AS DOUBLE)) / CAST({n} AS DOUBLE) "
            f"/ CAST({10**feature.decimals} AS DOUBLE)"
        )
    else:
        if feature.decimals is not None and feature.column is not None:
            column = f"CAST({column} AS DECIMAL(18, {feature.decimals}))"
        function = {"mean": "avg"}.get(feature.function, feature.function)
        expression = f"{function}({column}) OVER {window}"
        if feature.function in ("mean", "sum") and feature.decimals is not None:
            expression = f"CAST({expression} AS DOUBLE)"
    if feature.fill_value is not None:
        expression = f"COALESCE({expression}, {_double(feature.fill_value)})"
    return expression


def _double(value: float) -> str:
    return f"CAST({float(value)!r} AS DOUBLE)"


def _frame_sql(feature: Aggregation) -> str:
    # Integer microseconds make the open lower bound exact: (t - d - w, t - d] is
    # [t - d - w + 1us, t - d] on a microsecond grid; a past-only (t - w, t) is
    # [t - w + 1us, t - 1us].
    delay = micros(feature.delay)
    lower = delay + micros(feature.window) - 1
    if feature.past_only:
        upper = "1 PRECEDING"
    else:
        upper = "CURRENT ROW" if delay == 0 else f"{delay} PRECEDING"
    return f"RANGE BETWEEN {lower} PRECEDING AND {upper}"


def _source_alias(column: str) -> str:
    return _q(f"__shipyard_source_{column}")


def _derived_sql(view: FeatureView) -> dict[str, str]:
    """The DOUBLE expression of each derived feature of ``view`` over the inner query's
    columns (a derived input is inlined, so one SELECT computes them all)."""
    kinds = {f.name: f for f in view.features}
    expressions: dict[str, str] = {}
    for feature in view.features:
        if not isinstance(feature, Derived):
            continue
        args = []
        for name in feature.inputs:
            if name in expressions:
                args.append(f"({expressions[name]})")
            elif name in kinds:
                args.append(f"CAST({_q(name)} AS DOUBLE)")
            else:
                args.append(f"CAST({_source_alias(name)} AS DOUBLE)")
        if feature.function == "ratio":
            expression = f"{args[0]} / NULLIF({args[1]}, 0)"
        elif feature.function == "zscore":
            expression = f"({args[0]} - {args[1]}) / NULLIF({args[2]}, 0)"
        else:
            expression = f"{args[0]} - {args[1]}"
        if feature.fill_value is not None:
            expression = f"COALESCE({expression}, {_double(feature.fill_value)})"
        expressions[feature.name] = expression
    return expressions


def view_sql(view: FeatureView, source: str) -> str:
    """The DuckDB query computing ``view`` for every row of ``source`` (a FROM clause)."""
    windows: dict[str, str] = {}
    keys = [_q(view.entity), _q(view.timestamp)]
    selects = [_q(view.entity), f"CAST({_q(view.timestamp)} AS TIMESTAMP) AS {_q(view.timestamp)}"]
    derived = _derived_sql(view)
    for feature in view.features:
        if isinstance(feature, RowFeature):
            selects.append(f"({feature.expression}) AS {_q(feature.name)}")
        elif isinstance(feature, Aggregation):
            frame = _frame_sql(feature)
            window = windows.setdefault(frame, f"w{len(windows)}")
            selects.append(f"{_aggregate_sql(feature, window)} AS {_q(feature.name)}")
    sources = dict.fromkeys(
        c for f in view.features if isinstance(f, Derived) for c in view.source_columns(f)
    )
    selects += [f"{_q(c)} AS {_source_alias(c)}" for c in sources]
    rows = f"SELECT *, epoch_us({_q(view.timestamp)}) AS {_TS} FROM {source}"
    sql = f"SELECT {', '.join(selects)} FROM ({rows})"
    if windows:
        definitions = ", ".join(
            f"{name} AS (PARTITION BY {_q(view.entity)} ORDER BY {_TS} {frame})"
            for frame, name in windows.items()
        )
        sql += f" WINDOW {definitions}"
    if not derived:
        return sql
    # derived features row by row over the computed ones; source columns carried, then dropped
    outer = keys + [
        f"{derived[f.name]} AS {_q(f.name)}" if f.name in derived else _q(f.name)
        for f in view.features
    ]
    return f"SELECT {', '.join(outer)} FROM ({sql})"


class OfflineStore:
    """Materialize feature views into Parquet and retrieve them point-in-time correct."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with the workspace's memory limit, threads and spill folder."""
        import duckdb

        settings = self.workspace.settings
        spill = self.workspace.artifact_root / "tmp" / "duckdb"
        spill.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "memory_limit": settings.duckdb_memory_limit,
            "temp_directory": str(spill),
        }
        if settings.duckdb_threads:
            config["threads"] = settings.duckdb_threads
        con = duckdb.connect(config=config)
        con.execute("SET enable_progress_bar = false")
        return con

    # -- materialization -------------------------------------------------------------------

    def materialize(
        self,
        views: Sequence[FeatureView],
        dataset_version: int | None = None,
        *,
        force: bool = False,
        progress: ProgressCallback | None = None,
        engine: Engine | None = None,
        partitions_per_task: int | None = None,
    ) -> list[Materialization]:
        """Compute and store each view over its source data set (latest version by default).

        A view whose definition and source content are unchanged is reused, not recomputed,
        unless ``force``. With ``engine`` (default: the workspace's engine when its setting
        is ``ray``, else one DuckDB query here) each view runs in tasks of
        ``partitions_per_task`` daily partitions (default: about two tasks per worker).

        Example::

            OfflineStore(ws).materialize(BASELINE_VIEWS, engine=get_engine(ws))
        """
        from shipyard.data.catalog import get_dataset

        if partitions_per_task is not None and (
            not isinstance(partitions_per_task, int) or partitions_per_task < 1
        ):
            raise invalid_parameter(
                "partitions_per_task",
                "OfflineStore.materialize",
                "an int >= 1",
                partitions_per_task,
            )
        if engine is None and self.workspace.settings.engine == "ray":
            from shipyard.engines import get_engine

            engine = get_engine(self.workspace)
        results = []
        for i, view in enumerate(views):
            dataset = get_dataset(self.workspace, view.source, dataset_version)
            view.check_columns(dataset.columns, where=f"data set {dataset.name} v{dataset.version}")
            existing = None if force else self._find(view, dataset.content_hash)
            if existing is not None and existing.path.is_file():
                results.append(existing)
            else:
                results.append(self._compute(view, dataset, engine, partitions_per_task, progress))
            if progress is not None:
                progress("views", i + 1, len(views))
        return results

    def _compute(
        self,
        view: FeatureView,
        dataset: Dataset,
        engine: Engine | None = None,
        partitions_per_task: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> Materialization:
        import duckdb
        from sqlalchemy import delete, insert

        from shipyard.tables import feature_materializations as table

        dataset.verify()
        folder = self.workspace.artifact_root / "features" / view.name / view.definition_hash[:16]
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{dataset.content_hash[:16]}.parquet"
        tmp = folder / f".tmp-{uuid.uuid4().hex}.parquet"
        started = time.perf_counter()
        chunks = None
        if engine is not None:
            tasks = 2 * engine.parallelism
            chunks = partition_chunks(view, dataset, partitions_per_task, tasks=tasks)
        try:
            if engine is not None and chunks is not None:
                tables = engine.map(
                    _ChunkQuery(view, self.workspace.settings.duckdb_memory_limit),
                    chunks,
                    label="partition chunk",
                    describe=_describe_chunk,
                    progress=_chunk_progress(progress, view),
                )
                self._write_chunks(tables, tmp)
            else:
                self._write_query(view, dataset, tmp)
        except duckdb.Error as exc:
            tmp.unlink(missing_ok=True)
            raise _explain(exc, view, dataset) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        seconds = time.perf_counter() - started
        os.replace(tmp, final)
        import pyarrow.parquet as pq

        record = {
            "view": view.name,
            "definition_hash": view.definition_hash,
            "dataset": dataset.name,
            "dataset_version": dataset.version,
            "dataset_hash": dataset.content_hash,
            "path": str(final.relative_to(self.workspace.artifact_root)),
            "sha256": file_sha256(final),
            "n_rows": pq.read_metadata(final).num_rows,
            "definition": view.to_dict(),
            "seconds": round(seconds, 3),
            "created_at": datetime.now(UTC).replace(tzinfo=None),
        }
        with self.workspace.engine.begin() as conn:
            conn.execute(
                delete(table).where(
                    (table.c.view == view.name)
                    & (table.c.definition_hash == view.definition_hash)
                    & (table.c.dataset_hash == dataset.content_hash)
                )
            )
            conn.execute(insert(table).values(**record))
        return self._to_materialization(record, reused=False)

    def _write_query(self, view: FeatureView, dataset: Dataset, tmp: Path) -> None:
        """The whole view as one DuckDB query here, written to ``tmp``."""
        files = ", ".join(_literal(p) for p in dataset.partition_files())
        query = _ordered(view, view_sql(view, f"read_parquet([{files}])"))
        con = self.connect()
        try:
            con.execute(f"COPY ({query}) TO {_literal(tmp)} (FORMAT parquet, COMPRESSION zstd)")
        finally:
            con.close()

    def _write_chunks(self, tables: list[pa.Table], tmp: Path) -> None:
        """The chunks, in order, as one Parquet file written like the single query's."""
        import pyarrow as pa

        con = self.connect()
        try:
            con.register("__chunks", pa.concat_tables(tables))
            con.execute("SET preserve_insertion_order = true")
            con.execute(
                f"COPY (SELECT * FROM __chunks) TO {_literal(tmp)} "
                "(FORMAT parquet, COMPRESSION zstd)"
            )
        finally:
            con.close()

    def _find(self, view: FeatureView, dataset_hash: str) -> Materialization | None:
        from sqlalchemy import select

        from shipyard.tables import feature_materializations as table

        query = (
            select(table)
            .where(
                (table.c.view == view.name)
                & (table.c.definition_hash == view.definition_hash)
                & (table.c.dataset_hash == dataset_hash)
            )
            .order_by(table.c.id.desc())
            .limit(1)
        )
        with self.workspace.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else self._to_materialization(dict(row), reused=True)

    def _to_materialization(self, row: dict[str, Any], reused: bool) -> Materialization:
        return Materialization(
            view=row["view"],
            definition_hash=row["definition_hash"],
            dataset=row["dataset"],
            dataset_version=row["dataset_version"],
            dataset_hash=row["dataset_hash"],
            path=self.workspace.artifact_root / row["path"],
            sha256=row["sha256"],
            n_rows=row["n_rows"],
            seconds=float(row["seconds"]),
            reused=reused,
        )

    def materialization(
        self, view: FeatureView, dataset_version: int | None = None
    ) -> Materialization:
        """The stored materialization of ``view`` over one version of its source data set.

        ``dataset_version`` None means the latest version of the source. The stored file is
        the one computed from exactly that version's content (matched by content hash), never
        another version's, and is checked against its SHA-256.
        """
        from shipyard.data.catalog import get_dataset

        dataset = get_dataset(self.workspace, view.source, dataset_version)
        found = self._find(view, dataset.content_hash)
        if found is None:
            raise FeatureNotFoundError(_not_materialized(view, dataset, dataset_version))
        if not found.path.is_file() or file_sha256(found.path) != found.sha256:
            raise CorruptDataError(
                f"The materialized features of view {view.name!r} at {found.path} are missing "
                "or do not match their recorded SHA-256; materialize again with force=True."
            )
        return found

    # -- retrieval -------------------------------------------------------------------------

    def get_historical_features(
        self,
        events: Any,
        views: Sequence[FeatureView],
        *,
        dataset_version: int | None = None,
        timestamp: str | None = None,
    ) -> HistoricalFeatures:
        """Attach to each event the features of each view as of the event's time.

        ``events`` is a pandas DataFrame, a PyArrow Table, or a Parquet path (or list of
        paths); it needs each view's entity column and the ``timestamp`` column (by default
        the views' timestamp name). Events keep their order and every column they had.
        Features come from the materialization of ``dataset_version`` of each view's source
        data set (the latest version when None); a version never materialized raises
        FeatureNotFoundError saying which command computes it.
        """
        if not views:
            raise FeatureDefinitionError("get_historical_features needs at least one FeatureView.")
        timestamp = timestamp or views[0].timestamp
        materialized = [self.materialization(v, dataset_version) for v in views]
        con = self.connect()
        try:
            source, order = _register_events(con, events)
            columns = [d[0] for d in con.sql(f"SELECT * FROM {source} LIMIT 0").description]
            _check_events(con, source, columns, views, timestamp)
            sql = _retrieval_sql(source, order, columns, views, materialized, timestamp)
            relation = con.sql(sql)
        except BaseException:
            con.close()
            raise
        return HistoricalFeatures(con, relation, [n for v in views for n in v.feature_names])


def _order_sql(view: FeatureView) -> str:
    """The stored row order: time, entity, then every feature (ties are identical rows)."""
    return ", ".join(_q(c) for c in [view.timestamp, view.entity, *view.feature_names])


def _ordered(view: FeatureView, query: str, where: str = "") -> str:
    return f"SELECT * FROM ({query}){where} ORDER BY {_order_sql(view)}"


@dataclass(frozen=True)
class PartitionChunk:
    """One task of a partitioned materialization: the files it reads and the rows it keeps.

    It keeps the rows with ``start <= timestamp < end`` (None: unbounded), and reads its own
    partitions plus those of the look-back before ``start`` (and a day's margin each side).
    """

    index: int
    files: tuple[str, ...]
    first_day: date
    last_day: date
    start: datetime | None
    end: datetime | None


def look_back(view: FeatureView) -> timedelta:
    """How far before a row the view's longest window reaches (delay + window)."""
    reach = [
        micros(f.delay) + micros(f.window) for f in view.features if isinstance(f, Aggregation)
    ]
    return timedelta(microseconds=max(reach, default=0))


def _splits_exactly(view: FeatureView, types: dict[str, str]) -> bool:
    """Whether the view's values cannot depend on which earlier rows a query saw beyond its
    windows: exact aggregates only (counts, min/max, sums of integers or with ``decimals``)
    and row expressions without a window of their own."""
    for feature in view.features:
        if isinstance(feature, Aggregation):
            integer = re.fullmatch(r"u?int\d+|bool", types.get(feature.column or "", ""))
            if feature.function in ("sum", "mean") and feature.decimals is None and not integer:
                return False  # floating-point sums depend on the order DuckDB adds them
        elif isinstance(feature, RowFeature) and re.search(r"\bover\b", feature.expression, re.I):
            return False
    return True


def partition_chunks(
    view: FeatureView, dataset: Dataset, partitions_per_task: int | None = None, tasks: int = 8
) -> list[PartitionChunk] | None:
    """Runs of consecutive daily partitions, each one task (None: the view needs one query).

    ``partitions_per_task`` defaults to an even split into ``tasks`` runs.
    """
    days: list[tuple[date, str]] = []
    for path in dataset.partition_files():
        try:
            days.append((date.fromisoformat(path.stem), str(path)))
        except ValueError:
            return None  # not daily partitions
    types = {column["name"]: column["type"] for column in dataset.schema}
    if not days or dataset.time_column != view.timestamp or not _splits_exactly(view, types):
        return None
    days.sort()
    size = partitions_per_task or max(1, math.ceil(len(days) / max(1, tasks)))
    runs = [days[i : i + size] for i in range(0, len(days), size)]
    reach = look_back(view) + timedelta(days=1)  # a day's margin for rows near midnight
    chunks = []
    for i, run in enumerate(runs):
        first, last = run[0][0], run[-1][0]
        until = runs[i + 1][0][0] if i + 1 < len(runs) else last + timedelta(days=1)
        files = tuple(f for d, f in days if first - reach <= d <= until)
        start = None if i == 0 else datetime.combine(first, datetime.min.time())
        end = None if i + 1 == len(runs) else datetime.combine(until, datetime.min.time())
        chunks.append(PartitionChunk(i, files, first, last, start, end))
    return chunks


@dataclass(frozen=True)
class _ChunkQuery:
    """Computes one chunk of a view in a task (its own DuckDB, one thread, spilling locally)."""

    view: FeatureView
    memory_limit: str

    def __call__(self, chunk: PartitionChunk) -> pa.Table:
        import tempfile

        import duckdb

        with tempfile.TemporaryDirectory(prefix="shipyard-duckdb-") as spill:
            config: dict[str, Any] = {
                "memory_limit": self.memory_limit,
                "temp_directory": spill,
                "threads": 1,
            }
            con = duckdb.connect(config=config)
            try:
                files = ", ".join(_literal(f) for f in chunk.files)
                ts = _q(self.view.timestamp)
                bounds = [
                    f"{ts} {op} TIMESTAMP '{moment.isoformat(sep=' ')}'"
                    for op, moment in ((">=", chunk.start), ("<", chunk.end))
                    if moment is not None
                ]
                where = f" WHERE {' AND '.join(bounds)}" if bounds else ""
                query = _ordered(self.view, view_sql(self.view, f"read_parquet([{files}])"), where)
                return con.sql(query).to_arrow_table()
            finally:
                con.close()


def _describe_chunk(index: int, chunk: object) -> str:
    if isinstance(chunk, PartitionChunk):
        return f"partitions {chunk.first_day}..{chunk.last_day}"
    return f"partition chunk {index}"


def _chunk_progress(
    progress: ProgressCallback | None, view: FeatureView
) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(f"{view.name} partitions", done, total)


def _register_events(con: duckdb.DuckDBPyConnection, events: Any) -> tuple[str, str]:
    """Make ``events`` visible to DuckDB; return (relation SQL, ORDER BY that keeps their order)."""
    import pyarrow as pa

    if isinstance(events, str | os.PathLike) or (
        isinstance(events, list | tuple) and events and isinstance(events[0], str | os.PathLike)
    ):
        paths = [events] if isinstance(events, str | os.PathLike) else list(events)
        for path in paths:
            if not Path(path).exists():
                raise DataValidationError(f"events: no file at {path}")
        files = ", ".join(_literal(Path(p)) for p in paths)
        relation = f"read_parquet([{files}], filename = true, file_row_number = true)"
        order = "filename, file_row_number"
        con.execute(f"CREATE VIEW __events AS SELECT * FROM {relation}")
        return "__events", order
    if isinstance(events, pa.Table):
        table = events
    else:
        try:
            table = pa.Table.from_pandas(events, preserve_index=False)
        except (TypeError, ValueError, AttributeError) as exc:
            raise DataValidationError(
                "events must be a pandas DataFrame, a PyArrow Table or Parquet path(s); "
                f"got {type(events).__name__} ({exc})"
            ) from None
    import pyarrow as pa

    table = table.append_column(_ROW, pa.array(range(table.num_rows), type=pa.int64()))
    con.register("__events", table)
    return "__events", _q(_ROW)


def _first_row(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    rows = con.execute(sql).fetchall()
    return tuple(rows[0]) if rows else ()


def _check_events(
    con: duckdb.DuckDBPyConnection,
    source: str,
    columns: list[str],
    views: Sequence[FeatureView],
    timestamp: str,
) -> None:
    needed = [timestamp, *dict.fromkeys(v.entity for v in views)]
    for column in needed:
        if column not in columns:
            raise DataValidationError(
                f"events need a column {column!r} (timestamp or entity key of the requested "
                f"views); they have: {', '.join(c for c in columns if not c.startswith('__'))}."
            )
    counts = ", ".join(f"count(*) FILTER (WHERE {_q(c)} IS NULL)" for c in needed)
    nulls = _first_row(con, f"SELECT {counts} FROM {source}")
    for column, n in zip(needed, nulls, strict=True):
        if n:
            first = _first_row(
                con,
                f"SELECT min(rn) FROM (SELECT row_number() OVER () - 1 AS rn, {_q(column)} AS c "
                f"FROM {source}) WHERE c IS NULL",
            )
            where = f", the first at row {first[0]}" if first else ""
            raise DataValidationError(
                f"events column {column!r} has {n} null value(s){where}; every event needs "
                "an entity key and a timestamp for a point-in-time lookup."
            )
    kind = _first_row(con, f"SELECT typeof({_q(timestamp)}) FROM {source} LIMIT 1")
    if kind and not str(kind[0]).startswith(("TIMESTAMP", "DATE")):
        raise DataValidationError(
            f"events column {timestamp!r} must hold timestamps; it holds {kind[0]}."
        )


def _retrieval_sql(
    source: str,
    order: str,
    columns: list[str],
    views: Sequence[FeatureView],
    materialized: Sequence[Materialization],
    timestamp: str,
) -> str:
    keep = [c for c in columns if c not in (_ROW, "filename", "file_row_number")]
    selects = [f"e.{_q(c)}" for c in keep]
    joins = []
    taken = set(keep)
    for i, (view, stored) in enumerate(zip(views, materialized, strict=True)):
        alias = f"f{i}"
        for name in view.feature_names:
            if name in taken:
                raise FeatureDefinitionError(
                    f"Feature {name!r} of view {view.name!r} has the name of an event column or "
                    "of a feature of another requested view; rename or drop that column."
                )
            taken.add(name)
            selects.append(f"{alias}.{_q(name)}")
        joins.append(
            f"ASOF LEFT JOIN ({_one_row_per_instant(view, stored.path)}) {alias} "
            f"ON e.{_q(view.entity)} = {alias}.{_q(view.entity)} "
            f"AND CAST(e.{_q(timestamp)} AS TIMESTAMP) >= {alias}.{_q(view.timestamp)}"
        )
    order_by = ", ".join(f"e.{part.strip()}" for part in order.split(","))
    return f"SELECT {', '.join(selects)} FROM {source} e {' '.join(joins)} ORDER BY {order_by}"


def _one_row_per_instant(view: FeatureView, path: Path | str) -> str:
    """The stored rows, with one row per (entity, instant) when tied rows can differ.

    Two source rows of one entity at the same instant (two transactions of a customer in the
    same second) have equal window features, but a row-level feature (a ``RowFeature``, or a
    ``Derived`` reading a source column such as the amount) may differ; an ASOF join would
    pick either, differently from run to run. For such views the greatest row (features
    compared in order, as the stored order sorts them) is kept, so every retrieval picks the
    same one. Views of window features alone are read as stored (ties are identical).
    """
    from shipyard.features.definitions import Derived, RowFeature

    rows = f"SELECT * FROM read_parquet({_literal(path)})"
    names = set(view.feature_names)
    row_level = any(
        isinstance(f, RowFeature) or (isinstance(f, Derived) and set(f.inputs) - names)
        for f in view.features
    )
    if not row_level:
        return rows
    keys = f"{_q(view.entity)}, {_q(view.timestamp)}"
    features = ", ".join(f"{_q(name)} DESC" for name in view.feature_names)
    return f"{rows} QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {features}) = 1"


class HistoricalFeatures:
    """The result of a point-in-time retrieval, computed lazily and streamed on demand."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, relation: duckdb.DuckDBPyRelation, features: list[str]
    ) -> None:
        self._con = con
        self._relation = relation
        self.feature_names = features

    def batches(self, batch_size: int = 100_000) -> Iterator[pa.RecordBatch]:
        """Stream the result as Arrow record batches of at most ``batch_size`` rows."""
        try:
            reader = self._relation.to_arrow_reader(batch_size)
            yield from reader
        finally:
            self.close()

    def to_parquet(self, path: str | os.PathLike[str]) -> Path:
        """Write the result to one Parquet file without holding it in memory; return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con.execute(
                f"COPY ({self._relation.sql_query()}) TO {_literal(target)} (FORMAT parquet)"
            )
        finally:
            self.close()
        return target

    def to_arrow(self) -> pa.Table:
        """The whole result as one Arrow table (in memory)."""
        try:
            return self._relation.to_arrow_table()
        finally:
            self.close()

    def to_pandas(self) -> pd.DataFrame:
        """The whole result as a pandas DataFrame (in memory)."""
        return self.to_arrow().to_pandas()

    def close(self) -> None:
        """Release the DuckDB connection (idempotent)."""
        self._con.close()


def _not_materialized(view: FeatureView, dataset: Dataset, asked: int | None) -> str:
    which = "the latest version, " if asked is None else ""
    return (
        f"Feature view {view.name!r} (definition {view.definition_hash[:12]}) is not "
        f"materialized for data set {dataset.name} v{dataset.version} ({which}content "
        f"{dataset.content_hash[:12]}) in this workspace. Run `shipyard features materialize "
        f"--version {dataset.version}` (with --views for views other than the default) or "
        f"OfflineStore.materialize(views, dataset_version={dataset.version}) first."
    )


def _explain(exc: Exception, view: FeatureView, dataset: Dataset) -> Exception:
    message = str(exc)
    if "parquet" in message.lower() and (
        "invalid" in message.lower() or "corrupt" in message.lower()
    ):
        return CorruptDataError(
            f"Reading data set {dataset.name} v{dataset.version} failed: {message}"
        )
    return FeatureDefinitionError(
        f"Computing feature view {view.name!r} over data set {dataset.name} v{dataset.version} "
        f"failed in DuckDB: {message}"
    )
