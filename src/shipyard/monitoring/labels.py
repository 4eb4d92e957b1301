"""Late labels joined to the prediction log, and realized performance per window from them.

Labels (fraud confirmed days later) are ingested in batches with :func:`ingest_labels`,
joined to the logged predictions with :func:`labelled_predictions`, and scored per window
with :func:`realized_performance` (:class:`~shipyard.monitoring.performance.RealizedPerformance`
over the labelled records only, with the label coverage of each window).

**What is labelled.** One logged request may score several rows (``outputs`` holds the
positive-class probability of each row), so the unit is a *prediction*: (request id, row).
A model that answers JSON values (a recommender's list, an entity recognizer's spans) logs
one value per row in ``outputs_json``; its predictions are labelled the same way (1: the
list got a click), and their ``score`` is NaN: there is no probability to compare.

**Keys.** A batch names its key columns (``key=``):

- ``"request_id"`` (the default): matched against the record's request id; an optional
  ``row`` column (0-based) picks the row of a multi-row request, row 0 when absent;
- any other columns, e.g. ``"TRANSACTION_ID"`` or ``["CUSTOMER_ID", "TX_DATETIME"]``:
  matched against the raw events a request carried (the record's ``events`` JSON, row by
  row). Values compare as text after one normalization on both sides: integers as
  integers (``7.0`` and ``"7"`` are 7), date-times as ``YYYY-MM-DD HH:MM:SS[.ffffff]``.
  Requests sent as features (no events) cannot be matched by such keys.

**Supersede rule.** Labels are never edited in place. A later batch's label for the same
key (same key columns and values) supersedes an earlier one; when one prediction is
reached by labels of different keys (by request id and by transaction id), the label of
the latest batch wins. Every logged prediction with the key gets the label (the primary
answer and, when asked for, its shadows).

**Storage.** One Parquet file per batch, written under a temporary name, fsynced and
renamed, so a reader sees a batch entirely or not at all::

    <artifact_root>/labels/<endpoint>/<ingested-at-ns>-<batch>.parquet

with columns ``key_names`` (the key columns, comma-separated), ``key`` (the normalized
values, joined by ``\\x1f``), ``row``, ``label`` (0/1) and ``ingested_at`` (epoch seconds).
"""

from __future__ import annotations

import math
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shipyard.errors import DataValidationError, invalid_parameter
from shipyard.monitoring.performance import PerformanceReport, RealizedPerformance
from shipyard.times import epoch_seconds

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from numpy.typing import NDArray

    from shipyard.workspace import Workspace

_FOLDER = "labels"
_SEP = "\x1f"
_WINDOWS = {"1D": 86_400.0, "7D": 7 * 86_400.0}
_BY = ("version", "arm")
_TIMES = {"log": "time", "event": "coalesce(event_time, time)"}
"""Which moment windows a prediction: when it was logged, or its request's event time."""
_ROWS = "coalesce(len(outputs), CAST(json_array_length(outputs_json) AS BIGINT), 0)"
"""The rows a record answered: its scores, or its JSON answers (a list output per row)."""

# Integers as integers, date-times in DuckDB's timestamp text, anything else as given.
_NORMALIZE = """
CREATE MACRO norm(x) AS CASE
    WHEN x IS NULL THEN NULL
    WHEN regexp_matches(x, '^\\d{4}-\\d{2}-\\d{2}([ T]\\d{2}:\\d{2}(:\\d{2}(\\.\\d+)?)?)?$')
        THEN coalesce(CAST(TRY_CAST(replace(x, 'T', ' ') AS TIMESTAMP) AS VARCHAR), x)
    WHEN TRY_CAST(x AS HUGEINT) IS NOT NULL THEN CAST(CAST(x AS HUGEINT) AS VARCHAR)
    WHEN TRY_CAST(x AS DOUBLE) IS NOT NULL
        AND CAST(x AS DOUBLE) = floor(CAST(x AS DOUBLE))
        AND abs(CAST(x AS DOUBLE)) < 9e15
        THEN CAST(CAST(CAST(x AS DOUBLE) AS HUGEINT) AS VARCHAR)
    ELSE x
END
"""


@dataclass(frozen=True)
class LabelIngestion:
    """What one :func:`ingest_labels` call stored, and which labels match no prediction."""

    path: Path
    """The batch's Parquet file."""
    key: tuple[str, ...]
    """The key columns of the batch."""
    labels: int
    """Labels stored (every row of the batch, matched or not)."""
    positives: int
    """Labels equal to 1."""
    matched: int
    """Labels whose key matches at least one logged prediction now."""
    unknown: int
    """Labels whose key matches no logged prediction (stored all the same: the prediction
    may not be logged yet, or the key is wrong)."""
    unknown_examples: tuple[str, ...] = ()
    """Up to ten unknown keys, as text."""

    def __str__(self) -> str:
        text = (
            f"{self.labels} label(s) by {', '.join(self.key)} ({self.positives} positive): "
            f"{self.matched} matched, {self.unknown} unknown"
        )
        if self.unknown_examples:
            text += f" (e.g. {', '.join(self.unknown_examples)})"
        return text


@dataclass(frozen=True)
class Coverage:
    """How many predictions of a window have a label."""

    records: int
    labelled: int

    @property
    def share(self) -> float:
        """Labelled predictions over all predictions (NaN for an empty window)."""
        return self.labelled / self.records if self.records else math.nan


@dataclass(frozen=True)
class LabelledPerformance:
    """Realized metrics per group (``"all"``, ``"v2"``, ``"arm champion"``) and window."""

    reports: dict[str, PerformanceReport]
    """Per group, the metrics of each window that has labelled predictions."""
    coverage: dict[str, dict[str, Coverage]] = field(default_factory=dict)
    """Per group and window (every window with predictions), the label coverage."""

    def __getitem__(self, group: str) -> PerformanceReport:
        return self.reports[group]


# ------------------------------------------------------------------------------ ingestion


def label_folder(workspace: Workspace, endpoint: str) -> Path:
    """Where the label batches of ``endpoint`` are stored."""
    return workspace.artifact_root / _FOLDER / endpoint


def ingest_labels(
    workspace: Workspace,
    endpoint: str,
    labels: pd.DataFrame | pa.Table | str | os.PathLike[str],
    *,
    key: str | list[str] | tuple[str, ...] = "request_id",
    label: str = "label",
) -> LabelIngestion:
    """Store one batch of labels of ``endpoint``; report those that match no prediction.

    ``labels`` is a pandas frame, an Arrow table or the path of a CSV or Parquet file with
    the ``key`` column(s) and the 0/1 ``label`` column (see the module docstring for how keys
    match). Missing columns, missing key values, labels other than 0/1 and keys repeated in
    the batch are refused naming the column; unknown keys are stored and counted.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    owner = "ingest_labels"
    keys = _key_names(key, owner)
    if not isinstance(label, str) or not label or label in keys:
        raise invalid_parameter("label", owner, "a column name other than the keys", label)
    frame = _as_frame(labels, owner)
    missing = [c for c in (*keys, label) if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"the label batch lacks column(s) {missing}; it has {list(frame.columns)}"
        )
    if len(frame) == 0:
        raise DataValidationError("the label batch is empty")
    values = _as_label_values(frame[label], label)
    rows = _rows(frame, keys)
    texts = _key_texts(frame, keys)
    batch = pa.table(
        {
            "key_names": pa.array([",".join(keys)] * len(frame), pa.string()),
            "key": pa.array(texts, pa.string()),
            "row": pa.array(rows, pa.int64()),
            "label": pa.array(values, pa.int8()),
        }
    )
    duplicated = _duplicates(batch)
    if duplicated:
        raise DataValidationError(
            f"the label batch repeats {len(duplicated)} key(s) of {list(keys)}"
            f"{' + row' if keys == ('request_id',) else ''}, e.g. {duplicated[:5]}; "
            "send one label per key (a later batch supersedes an earlier one)"
        )
    now = time.time_ns()
    batch = batch.append_column("ingested_at", pa.array([now / 1e9] * len(frame), pa.float64()))
    folder = label_folder(workspace, endpoint)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{now:020d}-{uuid.uuid4().hex[:12]}.parquet"
    tmp = folder / f".{path.name}.tmp"
    pq.write_table(batch, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_folder(folder)
    unknown = _unknown(workspace, endpoint, path, ",".join(keys))
    return LabelIngestion(
        path=path,
        key=keys,
        labels=len(frame),
        positives=int(np.sum(values)),
        matched=len(frame) - len(unknown),
        unknown=len(unknown),
        unknown_examples=tuple(unknown[:10]),
    )


def _key_names(key: object, owner: str) -> tuple[str, ...]:
    names = (key,) if isinstance(key, str) else key
    if (
        not isinstance(names, list | tuple)
        or not names
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) != len(names)
    ):
        raise invalid_parameter("key", owner, "a column name or a list of distinct names", key)
    if "request_id" in names and len(names) > 1:
        raise invalid_parameter("key", owner, "'request_id' alone or event columns", key)
    if "row" in names:
        raise invalid_parameter("key", owner, "columns other than 'row'", key)
    return tuple(names)


def _as_frame(labels: object, owner: str) -> pd.DataFrame:
    import pandas as pd
    import pyarrow as pa

    if isinstance(labels, pd.DataFrame):
        return labels
    if isinstance(labels, pa.Table):
        return labels.to_pandas()
    if isinstance(labels, str | os.PathLike):
        path = Path(labels)
        if not path.is_file():
            raise DataValidationError(f"label file {str(path)!r} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        raise DataValidationError(
            f"label file {str(path)!r}: expected a .csv or .parquet file, got {suffix!r}"
        )
    raise invalid_parameter(
        "labels", owner, "a pandas DataFrame, an Arrow table or a CSV/Parquet path", labels
    )


def _as_label_values(column: pd.Series[Any], name: str) -> NDArray[np.int64]:
    import pandas as pd

    missing = int(column.isna().sum())
    if missing:
        raise DataValidationError(f"label column {name!r}: {missing} missing value(s)")
    numeric = pd.to_numeric(column, errors="coerce")
    if column.dtype.kind not in "biuf" or not numeric.isin((0, 1)).all():
        bad = column[~numeric.isin((0, 1))] if column.dtype.kind in "biuf" else column
        shown = sorted({repr(v) for v in bad.head(1000).tolist()})[:5]
        raise DataValidationError(
            f"label column {name!r}: expected 0/1 labels, got values such as {', '.join(shown)}"
        )
    out: NDArray[np.int64] = numeric.to_numpy(dtype=np.int64)
    return out


def _rows(frame: pd.DataFrame, keys: tuple[str, ...]) -> list[int | None]:
    if keys != ("request_id",):
        return [None] * len(frame)
    if "row" not in frame.columns:
        return [0] * len(frame)
    column = frame["row"]
    ok = column.dtype.kind in "iu" and bool((column >= 0).all())
    if not ok:
        shown = sorted({repr(v) for v in column.head(1000).tolist()})[:5]
        raise DataValidationError(
            f"row column 'row': expected integers >= 0, got values such as {', '.join(shown)}"
        )
    return [int(v) for v in column]


def _key_texts(frame: pd.DataFrame, keys: tuple[str, ...]) -> list[str]:
    """Each row's key values, normalized as the join normalizes the events, joined."""
    import duckdb
    import pandas as pd

    columns: list[list[str]] = []
    for name in keys:
        column = frame[name]
        missing = int(column.isna().sum())
        if missing:
            raise DataValidationError(f"key column {name!r}: {missing} missing value(s)")
        if column.dtype.kind == "M":
            column = pd.to_datetime(column)
            if column.dt.tz is not None:
                column = column.dt.tz_convert("UTC").dt.tz_localize(None)
            text = column.map(lambda t: t.isoformat(sep=" "))
        elif column.dtype.kind == "f":
            text = column.map(lambda v: str(int(v)) if float(v).is_integer() else repr(v))
        else:
            text = column.map(str)
        columns.append([str(v) for v in text.tolist()])
    if any(_SEP in v for column in columns for v in column):
        raise DataValidationError(f"key columns {list(keys)}: values contain \\x1f")
    if keys == ("request_id",):  # request ids compare exactly as logged
        return columns[0]
    con = duckdb.connect()
    try:
        con.execute(_NORMALIZE)
        out: list[str] = []
        for i, column in enumerate(columns):
            rows = con.execute("SELECT norm(unnest(?::VARCHAR[]))", [column]).fetchall()
            normal = [str(r[0]) for r in rows]
            out = normal if i == 0 else [a + _SEP + b for a, b in zip(out, normal, strict=True)]
        return out
    finally:
        con.close()


def _duplicates(batch: pa.Table) -> list[str]:
    import pandas as pd

    frame = pd.DataFrame({"key": batch["key"].to_pylist(), "row": batch["row"].to_pylist()})
    repeated = frame[frame.duplicated(keep="first")]
    return [k.replace(_SEP, ", ") for k in repeated["key"].drop_duplicates().tolist()]


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ the join


def _label_files(workspace: Workspace, endpoint: str) -> list[str]:
    folder = label_folder(workspace, endpoint)
    return sorted(str(p) for p in folder.glob("*.parquet")) if folder.is_dir() else []


def _labels_sql(files: list[str]) -> str:
    if not files:
        return (
            "(SELECT NULL::VARCHAR AS key_names, NULL::VARCHAR AS key, NULL::BIGINT AS row, "
            "NULL::TINYINT AS label, NULL::DOUBLE AS ingested_at, NULL::VARCHAR AS filename "
            "WHERE false)"
        )
    listed = ", ".join(_quote(f) for f in files)
    return f"read_parquet([{listed}], filename = true, union_by_name = true)"


def _events_key_sql(names: list[str], alias: str = "p.") -> str:
    """The normalized key of a prediction row (``p.row``) from its events, for ``names``."""
    path = "'$.\"' || {name} || '\"[' || {alias}row || ']'"
    parts = [
        f"norm(json_extract_string({alias}events, {path.format(name=_quote(n), alias=alias)}))"
        for n in names
    ]
    return f" || {_quote(_SEP)} || ".join(parts)


def _join_sql(
    key_sets: list[str], files: list[str], where: str, extra: tuple[str, ...], moment: str
) -> str:
    """SQL of every prediction row with its latest label (or NULL)."""
    candidates = []
    for names in key_sets:
        if names == "request_id":
            on = "l.key = p.request_id AND l.row = p.row"
        else:
            on = f"l.key = {_events_key_sql(names.split(','))}"
        candidates.append(
            f"SELECT p.rid, l.label, l.ingested_at, l.filename FROM rows_ p JOIN labels_ l "
            f"ON l.key_names = {_quote(names)} AND {on}"
        )
    matched = " UNION ALL ".join(candidates) or (
        "SELECT NULL::BIGINT AS rid, NULL::TINYINT AS label, NULL::DOUBLE AS ingested_at, "
        "NULL::VARCHAR AS filename WHERE false"
    )
    columns = "".join(
        f", {_events_key_sql([name], alias='r.')} AS {_ident(name)}" for name in extra
    )
    return f"""
    WITH rows_ AS (
        SELECT row_number() OVER () AS rid, *
        FROM (
            SELECT request_id, {moment} AS time, version, arm, events, outputs,
                   unnest(range({_ROWS})) AS row
            FROM predictions WHERE {where}
        )
    ),
    labels_ AS (
        -- within one key, the latest batch wins
        SELECT * FROM {_labels_sql(files)}
        QUALIFY row_number() OVER (
            PARTITION BY key_names, key, row ORDER BY ingested_at DESC, filename DESC
        ) = 1
    ),
    matched AS ({matched}),
    best AS (
        -- across keys, the latest batch wins
        SELECT rid, label FROM matched
        QUALIFY row_number() OVER (
            PARTITION BY rid ORDER BY ingested_at DESC, filename DESC
        ) = 1
    )
    SELECT r.request_id, r.row, r.time, r.version, r.arm,
           r.outputs[r.row + 1] AS score, b.label{columns}
    FROM rows_ r LEFT JOIN best b USING (rid)
    ORDER BY r.time, r.request_id, r.arm, r.version, r.row
    """


def _key_sets(files: list[str]) -> list[str]:
    if not files:
        return []
    import duckdb

    con = duckdb.connect()
    try:
        sql = f"SELECT DISTINCT key_names FROM {_labels_sql(files)} ORDER BY 1"
        return [r[0] for r in con.execute(sql).fetchall()]
    finally:
        con.close()


def labelled_predictions(
    workspace: Workspace,
    endpoint: str,
    start: float | datetime | None = None,
    end: float | datetime | None = None,
    *,
    versions: list[int] | tuple[int, ...] | None = None,
    arms: list[str] | tuple[str, ...] | None = None,
    include_shadows: bool = False,
    event_columns: list[str] | tuple[str, ...] = (),
    time: str = "log",
) -> pd.DataFrame:
    """Every logged prediction of ``endpoint`` with its label, or NULL (NA) while unlabelled.

    One row per prediction (request id, row of the request) with ``start <= time < end``:
    ``request_id, row, time, version, arm, score, label``; ``score`` is the positive-class
    probability as logged (NaN for a JSON answer: a recommendation list). ``time="log"``
    is when the server logged the answer; ``time="event"`` the request's event time
    (``X-Event-Time``, see docs/serving.md) where it has one, else the log time. Shadow
    answers are left out unless ``include_shadows``;
    ``versions`` and ``arms`` keep only those; ``event_columns`` adds those columns of the
    raw events (normalized text, NA for requests without them). The join runs in DuckDB
    over the compacted and live log (:func:`shipyard.monitoring.logstore.query`) and the
    label batches.
    """
    from shipyard.monitoring.logstore import query

    owner = "labelled_predictions"
    if time not in _TIMES:
        raise invalid_parameter("time", owner, f"one of {list(_TIMES)}", time)
    moment = _TIMES[time]
    conditions = ["(outputs IS NOT NULL OR outputs_json IS NOT NULL)"]
    lo, hi = epoch_seconds(start, "start", owner), epoch_seconds(end, "end", owner)
    if lo is not None:
        conditions.append(f"{moment} >= {lo!r}")
    if hi is not None:
        conditions.append(f"{moment} < {hi!r}")
    if versions is not None:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in versions):
            raise invalid_parameter("versions", owner, "a list of ints", versions)
        conditions.append(f"version IN ({', '.join(map(str, versions)) or 'NULL'})")
    if arms is not None:
        if not all(isinstance(a, str) for a in arms):
            raise invalid_parameter("arms", owner, "a list of arm names", arms)
        conditions.append(f"arm IN ({', '.join(_quote(a) for a in arms) or 'NULL'})")
    if not include_shadows:
        conditions.append("arm IS DISTINCT FROM 'shadow'")
    extra = tuple(event_columns)
    reserved = {"request_id", "row", "time", "version", "arm", "score", "label"}
    if not all(isinstance(c, str) and c and c not in reserved for c in extra):
        raise invalid_parameter(
            "event_columns", owner, "event column names other than the output's", event_columns
        )
    files = _label_files(workspace, endpoint)
    sql = _join_sql(_key_sets(files), files, " AND ".join(conditions), extra, moment)
    if not _log_exists(workspace, endpoint):
        empty = _empty_frame()
        for name in extra:
            empty[name] = empty["request_id"]
        return empty
    frame: pd.DataFrame = query(workspace, endpoint, _NORMALIZE + ";\n" + sql)
    frame["label"] = frame["label"].astype("Int64")
    return frame


def _unknown(workspace: Workspace, endpoint: str, path: Path, key_names: str) -> list[str]:
    """The keys of the batch at ``path`` that match no logged prediction (any arm)."""
    import duckdb

    batch = f"read_parquet({_quote(str(path))})"
    if key_names == "request_id":
        known = f"SELECT DISTINCT request_id AS key, unnest(range({_ROWS})) AS row FROM predictions"
        on = "k.key = l.key AND k.row = l.row"
    else:
        sql_key = _events_key_sql(key_names.split(","), alias="")
        known = (
            f"SELECT DISTINCT {sql_key} AS key FROM ("
            f"SELECT events, unnest(range({_ROWS})) AS row FROM predictions "
            "WHERE events IS NOT NULL)"
        )
        on = "k.key = l.key"
    sql = (
        f"{_NORMALIZE};\nSELECT l.key, l.row FROM {batch} l "
        f"WHERE NOT EXISTS (SELECT 1 FROM ({known}) k WHERE {on}) ORDER BY l.key, l.row"
    )
    if not _log_exists(workspace, endpoint):
        con = duckdb.connect()
        try:
            rows = con.execute(f"SELECT key, row FROM {batch} ORDER BY key, row").fetchall()
        finally:
            con.close()
    else:
        from shipyard.monitoring.logstore import query

        rows = list(query(workspace, endpoint, sql).itertuples(index=False, name=None))
    return [_shown(k, r, key_names) for k, r in rows]


def _shown(key: str, row: Any, key_names: str) -> str:
    text = key.replace(_SEP, ", ")
    if key_names == "request_id" and row:
        text += f" row {int(row)}"
    return text


def _log_exists(workspace: Workspace, endpoint: str) -> bool:
    from shipyard.monitoring.logstore import parquet_folder
    from shipyard.serving.predlog import log_folder

    segments = log_folder(workspace, endpoint)
    parts = parquet_folder(workspace, endpoint)
    return any(segments.glob("*.jsonl")) or any(parts.glob("day=*/part-*.parquet"))


def _empty_frame() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            "request_id": pd.Series([], dtype=object),
            "row": pd.Series([], dtype="int64"),
            "time": pd.Series([], dtype="float64"),
            "version": pd.Series([], dtype="Int32"),
            "arm": pd.Series([], dtype=object),
            "score": pd.Series([], dtype="float64"),
            "label": pd.Series([], dtype="Int64"),
        }
    )


# ------------------------------------------------------------------------ realized metrics


def realized_performance(
    workspace: Workspace,
    endpoint: str,
    *,
    threshold: float,
    window: str = "1D",
    start: float | datetime | None = None,
    end: float | datetime | None = None,
    by: str | None = None,
    include_shadows: bool = False,
    entity: str | None = None,
    metrics: RealizedPerformance | None = None,
    time: str = "log",
) -> LabelledPerformance:
    """Realized metrics of ``endpoint`` per window, over its labelled predictions only.

    Windows are UTC days (``"1D"``) or weeks (``"7D"``, counted from the Unix epoch), named
    by their first day (``"2026-11-20"``). ``by="version"`` or ``"arm"`` splits the
    predictions into groups (``"v2"``, ``"arm champion"``), else one group ``"all"``.
    ``metrics`` sets k, the level and the bootstrap (its threshold is replaced by
    ``threshold``). Each window's label coverage is in :attr:`LabelledPerformance.coverage`;
    a window with predictions but no labels has coverage and no metrics. With ``entity``
    (an event column, the card: ``"CUSTOMER_ID"``), the top-k metric is Card Precision@k;
    every labelled prediction must then carry it. Predictions without a time or a score
    are left out of windows and metrics. ``time`` as in :func:`labelled_predictions`.
    """
    owner = "realized_performance"
    if window not in _WINDOWS:
        raise invalid_parameter("window", owner, f"one of {sorted(_WINDOWS)}", window)
    if by is not None and by not in _BY:
        raise invalid_parameter("by", owner, "'version', 'arm' or None", by)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise invalid_parameter("threshold", owner, "a finite float", threshold)
    if metrics is not None and not isinstance(metrics, RealizedPerformance):
        raise invalid_parameter("metrics", owner, "a RealizedPerformance", metrics)
    base = metrics if metrics is not None else RealizedPerformance()
    engine = RealizedPerformance(
        threshold=threshold,
        k=base.k,
        level=base.level,
        n_boot=base.n_boot,
        min_rows=base.min_rows,
        min_positives=base.min_positives,
        seed=base.seed,
    )
    if entity is not None and (not isinstance(entity, str) or not entity):
        raise invalid_parameter("entity", owner, "an event column name or None", entity)
    frame = labelled_predictions(
        workspace,
        endpoint,
        start,
        end,
        include_shadows=include_shadows,
        event_columns=() if entity is None else (entity,),
        time=time,
    )
    frame = frame[frame["time"].notna() & frame["score"].notna()]
    labelled = frame["label"].notna().to_numpy()
    cards = None
    if entity is not None:
        without = int((frame[entity].isna().to_numpy() & labelled).sum())
        if without:
            raise DataValidationError(
                f"entity column {entity!r}: {without} labelled prediction(s) carry no such "
                "event value (requests sent as features, or another event schema)"
            )
        cards = frame[entity].to_numpy(dtype=object)
    width = _WINDOWS[window]
    times = frame["time"].to_numpy(dtype=float)
    starts = np.floor(times / width) * width
    names = np.array(
        [datetime.fromtimestamp(s, tz=UTC).strftime("%Y-%m-%d") for s in starts], dtype=object
    )
    days = (np.floor(times / 86_400.0)).astype(np.int64)
    if by is None:
        groups: NDArray[Any] = np.full(len(frame), "all", dtype=object)
    elif by == "version":
        groups = np.array([f"v{v}" for v in frame["version"].tolist()], dtype=object)
    else:
        groups = np.array([f"arm {a}" for a in frame["arm"].tolist()], dtype=object)
    reports: dict[str, PerformanceReport] = {}
    coverage: dict[str, dict[str, Coverage]] = {}
    for group in sorted(set(groups.tolist())):
        in_group = groups == group
        coverage[group] = {
            w: Coverage(
                int((in_group & (names == w)).sum()),
                int((in_group & labelled & (names == w)).sum()),
            )
            for w in sorted(set(names[in_group].tolist()))
        }
        rows = in_group & labelled
        if not rows.any():
            continue
        reports[group] = engine.compute(
            frame["score"].to_numpy(dtype=float)[rows],
            frame["label"].to_numpy(dtype=np.int64, na_value=0)[rows],
            window=names[rows],
            day=days[rows],
            entity=None if cards is None else cards[rows],
        )
    return LabelledPerformance(reports, coverage)


# ------------------------------------------------------------------------------ helpers


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
