"""Registered data sets: daily-partitioned Parquet in the workspace, recorded in its database.

A data set version is immutable. Writing one goes to a temporary folder first and becomes
visible (renamed into place, then recorded in one database transaction) only when every
partition is on disk, so a failure never leaves a half-written version behind. Each
partition's SHA-256 is recorded; :meth:`Dataset.verify` checks them before anything reads
the files.
"""

from __future__ import annotations

import getpass
import hashlib
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import CorruptDataError, DatasetNotFoundError, DataValidationError
from shipyard.integrity import file_sha256

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from shipyard.workspace import Workspace

PARTITION_FOLDER = "partitions"
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Partition:
    """One Parquet file of a data set: its path relative to the version folder, rows, hash."""

    file: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class Dataset:
    """A registered, immutable data set version."""

    name: str
    version: int
    content_hash: str
    path: Path
    n_rows: int
    n_positives: int | None
    time_column: str | None
    time_min: datetime | None
    time_max: datetime | None
    schema: list[dict[str, str]]
    partitions: list[Partition]
    params: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    created: bool = True
    """False when writing found an identical version already registered and reused it."""

    @property
    def columns(self) -> list[str]:
        """Column names of the partitioned table."""
        return [c["name"] for c in self.schema]

    def partition_files(self) -> list[Path]:
        """Absolute paths of the partition files, in time order."""
        return [self.path / p.file for p in self.partitions]

    def table_file(self, table: str) -> Path:
        """Path of a side table stored beside the partitions (e.g. ``customers``)."""
        path = self.path / f"{table}.parquet"
        if not path.is_file():
            raise DatasetNotFoundError(
                f"Data set {self.name} v{self.version} has no table {table!r}"
            )
        return path

    def verify(self) -> None:
        """Check every partition against its recorded SHA-256; raise CorruptDataError if not."""
        for partition in self.partitions:
            path = self.path / partition.file
            if not path.is_file():
                raise CorruptDataError(
                    f"Partition {partition.file} of data set {self.name} v{self.version} is "
                    f"missing from {self.path}."
                )
            found = file_sha256(path)
            if found != partition.sha256:
                raise CorruptDataError(
                    f"Partition {partition.file} of data set {self.name} v{self.version} is "
                    f"corrupt or was modified: SHA-256 {found[:12]}... does not match the "
                    f"recorded {partition.sha256[:12]}... ({path})."
                )

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        """Load the whole table into pandas after verifying it (for small data sets)."""
        import pyarrow.parquet as pq

        self.verify()
        tables = [pq.read_table(p, columns=columns) for p in self.partition_files()]
        import pyarrow as pa

        return pa.concat_tables(tables).to_pandas()


def content_hash(frames: Mapping[str, pd.DataFrame]) -> str:
    """SHA-256 of table contents (names, dtypes, values), independent of the file format."""
    import numpy as np

    digest = hashlib.sha256()
    for table in sorted(frames):
        frame = frames[table]
        digest.update(f"table:{table}:{len(frame)}".encode())
        for column in frame.columns:
            values = frame[column].to_numpy()
            if values.dtype.kind == "M":
                values = values.astype("datetime64[us]")
            digest.update(f"column:{column}:{values.dtype.str}".encode())
            if values.dtype == object:
                digest.update("\x1f".join(map(str, values.tolist())).encode())
            else:
                digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    # Microsecond timestamps: what DuckDB, Spark and most readers call TIMESTAMP.
    fields = [
        pa.field(f.name, pa.timestamp("us")) if pa.types.is_timestamp(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def write_dataset(
    workspace: Workspace,
    name: str,
    table: pd.DataFrame,
    *,
    time_column: str | None,
    label_column: str | None = None,
    side_tables: Mapping[str, pd.DataFrame] | None = None,
    params: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> Dataset:
    """Store ``table`` as one Parquet file per day of ``time_column`` and register it.

    ``time_column=None`` is for data without a time (review texts): the table is stored as
    one partition (``partitions/all.parquet``) in the order given. Returns the new version,
    or the latest version unchanged (``created=False``) when its content hash is identical.
    """
    import numpy as np
    import pyarrow.parquet as pq
    from sqlalchemy import insert

    from shipyard.tables import datasets

    _check_name(name)
    if time_column is not None and time_column not in table.columns:
        raise DataValidationError(
            f"time_column {time_column!r} is not a column of the table; "
            f"columns: {list(table.columns)}"
        )
    times = None if time_column is None else table[time_column]
    if times is not None and times.isna().any():
        raise DataValidationError(
            f"Column {time_column!r} has {int(times.isna().sum())} null timestamps; "
            "every row of a data set needs a time."
        )
    if times is not None and not times.is_monotonic_increasing:
        raise DataValidationError(
            f"The table must be sorted by {time_column!r} before it is written."
        )
    side = dict(side_tables or {})
    digest = content_hash({"main": table, **side})
    latest = _latest(workspace, name)
    if latest is not None and latest.content_hash == digest:
        return _replace_created(latest)

    version = 1 if latest is None else latest.version + 1
    base = workspace.data_root / name
    tmp = base / f".tmp-{uuid.uuid4().hex}"
    final = base / f"v{version}"
    (tmp / PARTITION_FOLDER).mkdir(parents=True)
    try:
        if times is None:  # no time: one partition, rows in the order given
            days = np.array(["all"])
            starts, ends = [0], [len(table)]
        else:
            days = times.to_numpy().astype("datetime64[D]")
            edges = np.flatnonzero(np.diff(days.view("int64"))) + 1
            starts = np.concatenate([[0], edges]).tolist()
            ends = [*edges.tolist(), len(table)]
        partitions: list[Partition] = []
        for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
            rel = f"{PARTITION_FOLDER}/{days[a]}.parquet"
            pq.write_table(_arrow_table(table.iloc[a:b]), tmp / rel)
            partitions.append(Partition(rel, b - a, file_sha256(tmp / rel)))
            if progress is not None:
                progress("partitions", i + 1, len(starts))
        for side_name, frame in side.items():
            _check_name(side_name)
            pq.write_table(_arrow_table(frame), tmp / f"{side_name}.parquet")
        schema = [
            {"name": f.name, "type": str(f.type)} for f in _arrow_table(table.iloc[:0]).schema
        ]
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    row = {
        "name": name,
        "version": version,
        "content_hash": digest,
        "path": str(final.relative_to(workspace.data_root)),
        "n_rows": len(table),
        "n_positives": int(table[label_column].sum()) if label_column else None,
        "time_column": time_column,
        "time_min": _naive(times.iloc[0]) if times is not None and len(table) else None,
        "time_max": _naive(times.iloc[-1]) if times is not None and len(table) else None,
        "schema": schema,
        "partitions": [vars(p) for p in partitions],
        "params": dict(params or {}),
        "created_at": datetime.now(UTC).replace(tzinfo=None),
        "created_by": _user(),
    }
    try:
        with workspace.engine.begin() as conn:
            conn.execute(insert(datasets).values(**row))
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    return _from_row(workspace, row)


def get_dataset(workspace: Workspace, name: str, version: int | None = None) -> Dataset:
    """Return a registered data set (the latest version unless ``version`` is given)."""
    from shipyard.tables import datasets, latest_row

    row = latest_row(workspace.engine, datasets, ("name", name), ("version", version))
    if row is None:
        known = sorted({d.name for d in list_datasets(workspace)})
        what = f"{name!r} version {version}" if version is not None else repr(name)
        raise DatasetNotFoundError(
            f"No data set {what} in workspace {workspace.root}. "
            f"Registered: {', '.join(known) or 'none'} (create one with `shipyard data simulate`)."
        )
    return _from_row(workspace, row)


def list_datasets(workspace: Workspace) -> list[Dataset]:
    """Every registered data set version, newest first."""
    from sqlalchemy import select

    from shipyard.tables import datasets

    query = select(datasets).order_by(datasets.c.name, datasets.c.version.desc())
    with workspace.engine.connect() as conn:
        return [_from_row(workspace, dict(r)) for r in conn.execute(query).mappings()]


def _latest(workspace: Workspace, name: str) -> Dataset | None:
    try:
        return get_dataset(workspace, name)
    except DatasetNotFoundError:
        return None


def _from_row(workspace: Workspace, row: Mapping[str, Any]) -> Dataset:
    return Dataset(
        name=row["name"],
        version=row["version"],
        content_hash=row["content_hash"],
        path=workspace.data_root / row["path"],
        n_rows=row["n_rows"],
        n_positives=row["n_positives"],
        time_column=row["time_column"],
        time_min=row["time_min"],
        time_max=row["time_max"],
        schema=list(row["schema"]),
        partitions=[Partition(**p) for p in row["partitions"]],
        params=dict(row["params"]),
        created_at=row["created_at"],
    )


def _replace_created(dataset: Dataset) -> Dataset:
    from dataclasses import replace

    return replace(dataset, created=False)


def _check_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_\-]{0,99}", name):
        raise DataValidationError(
            f"Data set names must start with a letter and hold only letters, digits, '_' "
            f"and '-' (at most 100 characters). Got {name!r} instead."
        )


def _naive(value: Any) -> datetime:
    stamp: datetime = value.to_pydatetime()
    return stamp.replace(tzinfo=None)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
