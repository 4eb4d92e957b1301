"""The prediction log at monitoring scale: closed segments compacted into Parquet, read as one.

Serving appends JSON lines to per-worker segments (:mod:`shipyard.serving.predlog`).
:func:`compact` moves the records of *closed* segments into Parquet partitions::

    <artifact_root>/predictions_parquet/endpoint=<e>/day=<YYYY-MM-DD>/part-<batch>.parquet

and :func:`predictions` reads those partitions together with the segments not compacted yet
(the open ones included) as one Arrow table, each record exactly once.

**Which segments are closed.** A worker names its segments ``<stamp>-<worker>-<seq>.jsonl``
and only ever appends to the one it opened last: rotation opens ``seq + 1`` and closes the
old one for good. So every segment but a worker's newest is closed. The newest is treated as
open, whether or not the worker still runs (a stopped worker's last segment stays JSON and
is read as such). "Newest" is judged both by sequence and by (stamp, sequence), because the
stamp is local time and a worker name (``w<host>-<pid>``) can come back after a restart; a segment
newest by either order is left alone. Files not named this way are never compacted.

**Crash safety.** One compaction moves a batch of segments in five steps, each recorded so
that a crash at any point leaves every record visible exactly once (to :func:`predictions`)
and the next :func:`compact` finishes or discards the batch:

1. write each day's records to ``day=<d>/.part-<batch>.parquet.tmp`` and fsync it: readers
   ignore these names, the segments still hold the records;
2. commit: write the journal ``_journal/<batch>.json`` (segments -> parts) with a temporary
   name, fsync, ``os.replace``, fsync the folder. From here readers skip the listed segments
   and read the listed parts (under either name);
3. rename the parts to ``part-<batch>.parquet``;
4. delete the segments;
5. delete the journal.

The journal also holds the SHA-256 of each segment and part; before step 4 they are
recorded in the workspace's audit trail (:func:`shipyard.governance.audit.record_compaction`,
once per batch), so that ``shipyard audit verify --logs`` can show a part was not altered.

A run first finishes every journal left by a crashed run (steps 3-5 are idempotent), then
deletes temporary parts no journal names (a crash before step 2). Compactions of one
endpoint are serialized by a lock file. A reader takes a snapshot of the listing (journals,
parts, segments), reads, and retries if the listing changed while it read.

A line that is not valid JSON (a torn write: the worker crashed or its disk filled mid-line)
is skipped and counted in :attr:`CompactionResult.skipped_lines`.

Test-only: ``TEST_ONLY_COMPACT_PAUSE_AT=<step>`` (see :data:`PAUSE_ENV`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from shipyard.integrity import locked, write_atomically
from shipyard.times import epoch_seconds

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from shipyard.workspace import Workspace

PAUSE_ENV = "TEST_ONLY_COMPACT_PAUSE_AT"
"""Test-only fault injection, never for production: if set to a step name (one of
:data:`STEPS`), compaction prints ``paused at <step>`` to stdout and sleeps forever when it
reaches that step, so that a test can kill it there with SIGKILL."""

STEPS = (
    "part-written",
    "parts-written",
    "committed",
    "part-renamed",
    "segment-removed",
    "segments-removed",
)
"""The points where :data:`PAUSE_ENV` can stop a compaction: after the first temporary part
is written, after all of them (before the commit), after the journal commit, after the first
part is renamed, after the first segment is deleted, and before the journal is deleted."""

SCHEMA = (
    ("request_id", "VARCHAR"),
    ("time", "DOUBLE"),
    ("endpoint", "VARCHAR"),
    ("model", "VARCHAR"),
    ("version", "INTEGER"),
    ("arm", "VARCHAR"),
    ("routing_key", "VARCHAR"),
    ("protocol", "VARCHAR"),
    ("inputs", "DOUBLE[][]"),
    ("outputs", "DOUBLE[]"),
    ("latency_ms", "DOUBLE"),
    ("out_of_range", "VARCHAR[]"),
    ("events", "VARCHAR"),
    ("stale_features", "VARCHAR[]"),
    ("event_time", "DOUBLE"),
    ("explanations", "VARCHAR"),
    ("texts", "VARCHAR[][]"),
    ("truncated", "INTEGER[]"),
    ("outputs_json", "VARCHAR"),
)
"""The columns of a record, in DuckDB types; every one is nullable. ``events`` and
``explanations`` (per row: base value, attributions, reason codes; asked with
``explain=true``) are JSON text; a text model's request holds its texts (as received, not
truncated) in ``texts`` instead of ``inputs``, with ``truncated`` the rows over its token
limit, and a model that answers JSON values (entities) has them in ``outputs_json`` (JSON
text) instead of ``outputs``;
``event_time`` is when the traffic happened by the client's clock (epoch seconds, sent with
the request; NULL when it was not, and in records written before it existed), ``time`` when
the server answered."""

_SEGMENT = re.compile(r"^(?P<stamp>\d{8}T\d{6})-(?P<worker>.+)-(?P<seq>\d+)\.jsonl$")
_TMP_PART = re.compile(r"^\.part-(?P<batch>.+)\.parquet\.tmp$")
_JOURNAL = "_journal"
_PARQUET = "predictions_parquet"


@dataclass
class CompactionResult:
    """What one :func:`compact` call moved (summed over the endpoints it compacted)."""

    segments: int = 0
    """Closed segments moved into Parquet (and deleted)."""
    records: int = 0
    """Records written to Parquet."""
    skipped_lines: int = 0
    """Lines of those segments that were not valid JSON (torn writes), dropped."""
    parts: list[Path] = field(default_factory=list)
    """The Parquet files written."""
    recovered: int = 0
    """Batches of an interrupted earlier run that this run finished."""


def parquet_folder(workspace: Workspace, endpoint: str) -> Path:
    """Where the compacted Parquet partitions of ``endpoint`` live."""
    return workspace.artifact_root / _PARQUET / f"endpoint={endpoint}"


def closed_segments(folder: Path) -> list[Path]:
    """The segments in ``folder`` that no worker appends to any more, oldest first.

    Every segment but each worker's newest (by sequence, and by stamp then sequence).
    """
    by_worker: dict[str, list[tuple[str, int, Path]]] = {}
    for path in folder.glob("*.jsonl"):
        match = _SEGMENT.match(path.name)
        if match:
            key = (match["stamp"], int(match["seq"]), path)
            by_worker.setdefault(match["worker"], []).append(key)
    closed = []
    for segments in by_worker.values():
        newest = {max(segments, key=lambda s: s[1])[2], max(segments)[2]}
        closed += [s for s in segments if s[2] not in newest]
    return [s[2] for s in sorted(closed)]


# -- compaction ----------------------------------------------------------------------------


def compact(
    workspace: Workspace, endpoint: str | None = None, batch_bytes: int = 256 << 20
) -> CompactionResult:
    """Move the records of closed prediction-log segments into Parquet partitions by day.

    ``endpoint=None`` compacts every endpoint. Segments are moved in batches of about
    ``batch_bytes`` of JSON, each batch atomically (see the module's docstring); a crash
    leaves nothing lost or doubled, and the next call finishes the interrupted batch.
    """
    from shipyard.serving.predlog import log_folder

    if endpoint is None:
        root = workspace.artifact_root / "predictions"
        endpoints = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    else:
        endpoints = [endpoint]
    from shipyard.governance.audit import record_compaction

    result = CompactionResult()
    for name in endpoints:
        _compact_endpoint(
            log_folder(workspace, name),
            parquet_folder(workspace, name),
            result,
            batch_bytes,
            functools.partial(record_compaction, workspace, name),
        )
    return result


def _compact_endpoint(
    source: Path,
    target: Path,
    result: CompactionResult,
    batch_bytes: int,
    record: Callable[[dict[str, Any]], object] | None = None,
) -> None:
    if not source.is_dir():
        return
    target.mkdir(parents=True, exist_ok=True)
    with locked(target / ".compact.lock"):
        for journal in sorted((target / _JOURNAL).glob("*.json")):
            _finish(journal, source, target, record)
            result.recovered += 1
        for orphan in target.glob("day=*/.part-*.parquet.tmp"):  # written, never committed
            orphan.unlink()
        for stale in (target / _JOURNAL).glob(".*.tmp"):
            stale.unlink()
        batch: list[Path] = []
        size = 0
        for segment in closed_segments(source):
            batch.append(segment)
            size += segment.stat().st_size
            if size >= batch_bytes:
                _move(batch, source, target, result, record)
                batch, size = [], 0
        if batch:
            _move(batch, source, target, result, record)


def _move(
    segments: list[Path],
    source: Path,
    target: Path,
    result: CompactionResult,
    record: Callable[[dict[str, Any]], object] | None = None,
) -> None:
    """Steps 1-5 for one batch of segments."""
    from shipyard.integrity import file_sha256

    batch = f"{time.time_ns() // 1_000_000:013d}-{uuid.uuid4().hex[:8]}"
    parts, records, skipped = _write_parts(segments, target, batch)
    _pause("parts-written")
    sha256 = {  # kept in the journal; the audit trail records them before segments go
        "segments": {s.name: file_sha256(s) for s in segments},
        "parts": {
            str(p.relative_to(target)): file_sha256(p.with_name(f".{p.name}.tmp")) for p in parts
        },
    }
    journal = target / _JOURNAL / f"{batch}.json"
    entry = {
        "batch": batch,
        "segments": [s.name for s in segments],
        "parts": [str(p.relative_to(target)) for p in parts],
        "records": records,
        "skipped_lines": skipped,
        "sha256": sha256,
    }
    write_atomically(journal, json.dumps(entry, indent=1).encode())
    _pause("committed")
    _finish(journal, source, target, record)
    result.segments += len(segments)
    result.records += records
    result.skipped_lines += skipped
    result.parts += parts


def _write_parts(segments: list[Path], target: Path, batch: str) -> tuple[list[Path], int, int]:
    """Step 1: each day's records to a fsync-ed temporary part; (final paths, records, skipped)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET threads = 2")
        nonempty = [s for s in segments if s.stat().st_size > 0]
        if not nonempty:
            return [], 0, 0
        con.execute(f"CREATE TEMP TABLE batch AS {_segments_sql(nonempty, with_nulls=True)}")
        (skipped,) = _one(con, "SELECT count(*) FROM batch WHERE request_id IS NULL")
        con.execute("DELETE FROM batch WHERE request_id IS NULL")  # lines that were not JSON
        (records,) = _one(con, "SELECT count(*) FROM batch")
        if skipped != _torn_lines(nonempty):  # a JSON object without request_id: refused
            raise RuntimeError(f"DuckDB and msgspec disagree on the torn lines of {nonempty}")
        days = [
            d for (d,) in con.execute(f"SELECT DISTINCT {_DAY} FROM batch ORDER BY 1").fetchall()
        ]
        parts = []
        columns = ", ".join(name for name, _ in SCHEMA)
        for day in days:
            folder = target / f"day={day}"
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".part-{batch}.parquet.tmp"
            con.execute(
                f"COPY (SELECT {columns} FROM batch WHERE {_DAY} = ? ORDER BY time) "
                f"TO {_quote(str(tmp))} (FORMAT parquet, COMPRESSION zstd)",
                [day],
            )
            _fsync(tmp)
            _fsync(folder)
            parts.append(folder / f"part-{batch}.parquet")
            _pause("part-written")
        return parts, int(records), int(skipped)
    finally:
        con.close()


class _Record(msgspec.Struct):
    """What a record must hold to be stored in :data:`SCHEMA` without losing a value."""

    request_id: str
    time: float | None = None
    endpoint: str | None = None
    model: str | None = None
    version: int | None = None
    arm: str | None = None
    routing_key: str | None = None
    protocol: str | None = None
    inputs: list[list[float | None]] | None = None
    outputs: list[float | None] | None = None
    latency_ms: float | None = None
    out_of_range: list[str] | None = None
    events: dict[str, Any] | None = None  # the raw event columns (a JSON object)
    stale_features: list[str] | None = None
    event_time: float | None = None
    explanations: list[dict[str, Any]] | None = None  # per row, when explain=true was asked
    texts: list[list[str]] | None = None  # a text model's request, instead of inputs
    truncated: list[int] | None = None
    outputs_json: list[Any] | None = None  # JSON answers (entities), instead of outputs


_JSON_COLUMNS = frozenset({"events", "explanations", "outputs_json"})

_decode_all = msgspec.json.Decoder(list[_Record]).decode
_decode_one = msgspec.json.Decoder(_Record).decode


def _torn_lines(segments: list[Path]) -> int:
    """Count the lines that are not JSON; refuse records whose values do not fit the schema.

    DuckDB would store a value it cannot cast (a string among the inputs, say) as NULL, and
    compaction then deletes the only copy, so every line is validated first (msgspec: one
    call per segment while all is well, one per line to find a bad one).
    """
    from shipyard.errors import SchemaError

    torn = 0
    for segment in segments:
        lines = [line for line in segment.read_bytes().split(b"\n") if line.strip()]
        try:
            _decode_all(b"[" + b",".join(lines) + b"]")
            continue
        except msgspec.DecodeError:  # ValidationError included: find the line
            pass
        for number, line in enumerate(lines, 1):
            try:
                _decode_one(line)
            except msgspec.ValidationError as exc:
                raise SchemaError(
                    f"prediction log segment {segment} line {number}: {exc}; the record "
                    "does not fit the Parquet schema, so nothing was compacted"
                ) from None
            except msgspec.DecodeError:  # a write cut short: half a line
                torn += 1
    return torn


def _finish(
    journal: Path,
    source: Path,
    target: Path,
    record: Callable[[dict[str, Any]], object] | None = None,
) -> None:
    """Steps 3-5 of a committed batch; idempotent, so a crashed run's batch is finished later.

    ``record`` (the audit trail's, given the journal entry) runs before any segment is
    deleted, so that the hashes of every deleted segment are on record.
    """
    entry = json.loads(journal.read_bytes())
    folders = set()
    for part in entry["parts"]:
        final = target / part
        tmp = final.with_name(f".{final.name}.tmp")
        if tmp.exists():
            os.replace(tmp, final)
            _pause("part-renamed")
        folders.add(final.parent)
    for folder in folders:
        _fsync(folder)
    if record is not None and "sha256" in entry:
        record(entry)
    for name in entry["segments"]:
        with contextlib.suppress(FileNotFoundError):
            (source / name).unlink()
            _pause("segment-removed")
    _fsync(source)
    _pause("segments-removed")
    journal.unlink()
    _fsync(journal.parent)


# -- reading -------------------------------------------------------------------------------


def predictions(
    workspace: Workspace,
    endpoint: str,
    start: float | datetime | None = None,
    end: float | datetime | None = None,
) -> pa.Table:
    """Every prediction record of ``endpoint`` with ``start <= time < end``, as an Arrow table.

    Reads the Parquet partitions and the segments not compacted yet (the open ones too),
    each record exactly once, even while :func:`compact` runs. ``start`` and ``end`` are
    epoch seconds or datetimes (naive ones are UTC); ``None`` leaves that side open. The
    columns are :data:`SCHEMA`; lines that are not valid JSON are left out.
    """

    lo, hi = epoch_seconds(start, "start", "predictions"), epoch_seconds(end, "end", "predictions")
    where = " AND ".join(
        [f"time >= {lo!r}"] * (lo is not None) + [f"time < {hi!r}"] * (hi is not None)
    )
    sql = "SELECT * FROM predictions" + (f" WHERE {where}" if where else "")
    return _read(workspace, endpoint, lambda con: con.sql(sql).to_arrow_table(), lo, hi)


def query(workspace: Workspace, endpoint: str, sql: str) -> Any:
    """Run ``sql`` in DuckDB over a ``predictions`` view of compacted and live records.

    Returns a pandas DataFrame; each record once, compacted or not (what ``shipyard logs
    query`` runs). ``out_of_range`` lists the input columns of a request that were outside
    the range seen in training (NULL when every value was inside it). For a raw-event
    request, ``inputs`` are the features computed from the events, ``events`` the event
    columns as sent (JSON text) and ``stale_features`` the delayed feature views read stale
    (NULL otherwise). Example: ``query(ws, "fraud", "SELECT version, count(*) FROM
    predictions GROUP BY 1")``.
    """
    return _read(workspace, endpoint, lambda con: con.execute(sql).df(), None, None)


@dataclass(frozen=True)
class _Snapshot:
    journals: tuple[tuple[str, bytes], ...]
    parts: tuple[str, ...]
    segments: tuple[str, ...]


def _snapshot(source: Path, target: Path) -> _Snapshot:
    """Journals first, then parts, then segments: the order the readers' proof relies on."""
    journals = []
    for path in sorted((target / _JOURNAL).glob("*.json")):
        with contextlib.suppress(FileNotFoundError):  # finished meanwhile: seen as changed
            journals.append((path.name, path.read_bytes()))
    parts = sorted(str(p) for p in target.glob("day=*/part-*.parquet"))
    segments = sorted(str(p) for p in source.glob("*.jsonl") if _size(p) > 0)
    return _Snapshot(tuple(journals), tuple(parts), tuple(segments))


def _read(
    workspace: Workspace,
    endpoint: str,
    run: Any,
    lo: float | None,
    hi: float | None,
) -> Any:
    """Read a consistent snapshot: retry while compaction changes the listing under us.

    After a few changed listings (compaction of many small batches), wait for the running
    compaction and read while holding its lock, so that a reader cannot starve.
    """
    from shipyard.serving.predlog import log_folder

    source, target = log_folder(workspace, endpoint), parquet_folder(workspace, endpoint)
    for attempt in range(20):
        lock = target / ".compact.lock"
        holding = attempt >= 3 and lock.exists()
        with locked(lock, shared=True) if holding else contextlib.nullcontext():
            done, out = _read_once(source, target, run, lo, hi, last=attempt == 19)
        if done:
            return out
    raise RuntimeError(f"the prediction log of {endpoint!r} kept changing while it was read")


def _read_once(
    source: Path, target: Path, run: Any, lo: float | None, hi: float | None, last: bool
) -> tuple[bool, Any]:
    """(True, result) if the listing did not change while it was read, else (False, None)."""
    import duckdb

    before = _snapshot(source, target)
    con = duckdb.connect()
    try:
        con.execute(f"CREATE VIEW predictions AS {_view_sql(before, target, lo, hi)}")
        out = run(con)
    except (duckdb.IOException, duckdb.InvalidInputException):
        if last or _snapshot(source, target) == before:
            raise  # not a file compaction moved: a real error
        return False, None
    finally:
        con.close()
    return _snapshot(source, target) == before, out


def _view_sql(snap: _Snapshot, target: Path, lo: float | None, hi: float | None) -> str:
    skipped: set[str] = set()
    parts = set(snap.parts)
    for _, text in snap.journals:
        entry = json.loads(text)
        skipped.update(entry["segments"])
        for part in entry["parts"]:
            final = target / part
            if str(final) not in parts:
                parts.add(str(final.with_name(f".{final.name}.tmp")))
    lo_day = _day(lo) if lo is not None else None
    hi_day = _day(hi) if hi is not None else None
    kept = sorted(p for p in parts if _in_days(Path(p).parent.name, lo_day, hi_day))
    segments = [Path(s) for s in snap.segments if Path(s).name not in skipped]
    # first an empty row set of every column: the view has SCHEMA's columns, in order, even
    # when every part was written before a column was added (its records read it as NULL)
    columns = ", ".join(f"NULL::{kind} AS {name}" for name, kind in SCHEMA)
    selects = [f"SELECT {columns} WHERE false"]
    if kept:
        listed = ", ".join(_quote(p) for p in kept)
        selects.append(
            f"SELECT * FROM read_parquet([{listed}], hive_partitioning = false, "
            "union_by_name = true)"
        )
    if segments:
        selects.append(f"SELECT * FROM ({_segments_sql(segments, with_nulls=False)})")
    return " UNION ALL BY NAME ".join(selects)


def _segments_sql(segments: list[Path], with_nulls: bool) -> str:
    """Records of JSON-lines segments in :data:`SCHEMA`; a line that is not JSON reads as NULLs."""
    listed = ", ".join(_quote(str(s)) for s in segments)
    columns = ", ".join(
        f"{name}: '{'JSON' if name in _JSON_COLUMNS else kind}'" for name, kind in SCHEMA
    )
    names = ", ".join(
        f"CAST({name} AS VARCHAR) AS {name}" if name in _JSON_COLUMNS else name
        for name, _ in SCHEMA
    )
    # ignore_errors: DuckDB reads a line cut short by a crash mid-write as a row of NULLs
    sql = (
        f"SELECT {names} FROM read_json([{listed}], format = 'newline_delimited', "
        f"ignore_errors = true, columns = {{{columns}}})"
    )
    return sql if with_nulls else f"{sql} WHERE request_id IS NOT NULL"


_DAY = (
    "coalesce(strftime(make_timestamp(CAST(round(time * 1e6) AS BIGINT)), '%Y-%m-%d'), 'unknown')"
)


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def _in_days(folder: str, lo: str | None, hi: str | None) -> bool:
    day = folder.removeprefix("day=")
    if day == "unknown":
        return lo is None and hi is None
    return (lo is None or day >= lo) and (hi is None or day <= hi)


# -- small file-system helpers -------------------------------------------------------------


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    row = con.execute(sql).fetchone()
    assert row is not None  # an aggregate always returns one row
    return tuple(row)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pause(step: str) -> None:
    """Test-only (PAUSE_ENV): tell the test harness on stdout, then wait to be killed."""
    if os.environ.get(PAUSE_ENV) == step:
        sys.stdout.write(f"paused at {step}\n")
        sys.stdout.flush()
        while True:
            time.sleep(60)
