"""Batch scoring: a registered model over a data set, partitions in, Parquet predictions out.

The input's partitions (a registered data set's partition files; a plain Parquet file split
by row groups) run on the workspace's engine: one engine task per partition, or, when the
features come from the model's feature views, about four runs of partitions per worker (one
point-in-time join per run). Every partition gets its own part file
(``part-00000.parquet``, ...), written under a temporary name and renamed into place, so a
task that Ray retries after its worker died rewrites the same files and the output holds
every row exactly once. The output folder becomes visible only when every part is written, with
a ``_manifest.json`` (model, version, SHA-256, data, rows per part, engine) written last.

Each worker process loads the model once per run, through :func:`load_native` (which checks
the native file's SHA-256); the model's input comes from the data when it holds the model's
columns, else from the model's feature views, point-in-time, in the offline store.

Example::

    result = score_dataset(ws, "fraud@champion", "fraud", "scores/")
    print(result.rows, result.files[0])
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import (
    ConfigError,
    DataValidationError,
    ModelNotFoundError,
    ParameterError,
    SchemaError,
)
from shipyard.integrity import write_atomically

if TYPE_CHECKING:
    import pyarrow as pa

    from shipyard.data.catalog import Dataset
    from shipyard.engines import Engine, Progress
    from shipyard.registry.models import ModelVersion
    from shipyard.workspace import Workspace

SCORE = "score"
MODEL_VERSION = "model_version"
MANIFEST = "_manifest.json"
PARTITION_ROWS = 500_000
"""Rows per task when a plain Parquet file is split by row groups (a lower bound: whole
row groups are grouped until they hold at least this many)."""
TRAIN_EXTRA = "pip install 'shipyard[train]'"

_NUMERIC = re.compile(r"^(bool|u?int\d*|float\d*|double|halffloat|decimal.*)$")


@dataclass(frozen=True)
class ScoringTask:
    """One partition to score and everything a worker needs to do it (plain, picklable)."""

    index: int
    source: str
    row_groups: tuple[int, ...] | None
    """Row groups of ``source`` to read; None reads the whole file."""
    sha256: str | None
    """The partition's recorded SHA-256 (registered data sets), checked before reading."""
    out_dir: str
    model: str
    version: int
    framework: str
    native_path: str
    native_sha256: str
    features: tuple[str, ...]
    keep: tuple[str, ...]
    workspace_root: str | None = None
    """Set when the features come from the offline store (the model's feature views)."""
    views: str | None = None
    dataset_version: int | None = None
    columns: tuple[str, ...] | None = None
    """Columns of the partition to read (None: all); with views, the events' columns."""

    @property
    def part_name(self) -> str:
        """The part file this task writes: ``part-00003.parquet``."""
        return f"part-{self.index:05d}.parquet"


@dataclass(frozen=True)
class PartResult:
    """What one task wrote, and which process wrote it with how many model loads so far."""

    index: int
    file: str
    rows: int
    pid: int
    loads: int


@dataclass(frozen=True)
class BatchScoreResult:
    """A finished batch scoring run: rows, parts, the model by hash, files, time."""

    model: str
    version: int
    sha256: str
    data: str
    engine: str
    out: Path
    rows: int
    partitions: int
    files: list[Path]
    seconds: float
    loads_per_worker: dict[int, int] = field(default_factory=dict)
    """Model loads per worker process id (one each: the model is cached per process)."""
    tasks: int = 0
    """Engine tasks run: one per partition, or runs of partitions with feature views."""

    @property
    def rows_per_second(self) -> float:
        """Scoring throughput of the whole run, in rows per second."""
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


# -- the worker side: one task per partition ---------------------------------------------

_MODELS: dict[tuple[str, str], tuple[tuple[int, int, int], Any]] = {}
_LOADS: dict[tuple[str, str], int] = {}
_WORKSPACES: dict[str, Workspace] = {}


def _cached_model(task: ScoringTask) -> tuple[Any, int]:
    """The task's model, loaded (and hash-verified) once per process; (model, loads so far).

    A cached model is reused only while its file is unchanged on disk (same size, inode and
    modification time); a replaced or edited file is loaded, and so verified, again.
    """
    from shipyard.training.trainers import load_native

    key = (task.native_path, task.native_sha256)
    stat = os.stat(task.native_path)
    signature = (stat.st_size, stat.st_ino, stat.st_mtime_ns)
    cached = _MODELS.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1], _LOADS[key]
    try:
        model = load_native(task.framework, Path(task.native_path), task.native_sha256)
    except ImportError as exc:
        import socket

        missing = exc.name or str(exc)
        raise ConfigError(
            f"The worker process {os.getpid()} on {socket.gethostname()} cannot import "
            f"{missing!r}, which {task.framework} models need to score ({exc}). Install the "
            f"model's dependencies on every node of the cluster: {TRAIN_EXTRA}."
        ) from None
    _MODELS[key] = (signature, model)
    _LOADS[key] = _LOADS.get(key, 0) + 1
    return model, _LOADS[key]


def _read_partition(task: ScoringTask) -> pa.Table:
    """The partition's rows (verified against its recorded SHA-256 when it has one)."""
    import pyarrow.parquet as pq

    from shipyard.integrity import verify_sha256

    if task.sha256 is not None:
        verify_sha256(Path(task.source), task.sha256)
    columns = None if task.columns is None else list(task.columns)
    if task.row_groups is None:
        return pq.read_table(task.source, columns=columns)
    return pq.ParquetFile(task.source).read_row_groups(list(task.row_groups), columns=columns)


def _with_features(task: ScoringTask, table: pa.Table) -> pa.Table:
    """The partition's rows with the model's features from the offline store, point-in-time."""
    from shipyard.features.definitions import load_views
    from shipyard.features.offline import OfflineStore
    from shipyard.workspace import Workspace

    assert task.workspace_root is not None and task.views is not None
    ws = _WORKSPACES.get(task.workspace_root)
    if ws is None:
        ws = _WORKSPACES[task.workspace_root] = Workspace(task.workspace_root)
    views = load_views(task.views)
    try:
        found = OfflineStore(ws).get_historical_features(
            table, views, dataset_version=task.dataset_version
        )
        try:
            return found.to_arrow()
        finally:
            found.close()
    finally:
        ws.close()  # no database connection held between tasks (the workspace stays usable)


def score_partition(task: ScoringTask) -> PartResult:
    """Score one partition and write its part file (temp name, then rename: retry-safe)."""
    return score_run((task,))[0]


def score_run(run: Sequence[ScoringTask]) -> list[PartResult]:
    """Score a run of partitions (one engine task) and write one part file per partition.

    With feature views, the run's rows get their features in one point-in-time join (one
    join per partition would read the whole materialization once per partition); every row's
    features and score are the same whichever run it is in, so the parts are too.
    """
    import pyarrow as pa

    model, loads = _cached_model(run[0])
    tables = [_read_partition(task) for task in run]
    if run[0].workspace_root is not None:
        joined = _with_features(run[0], pa.concat_tables(tables))
        offsets = [0]
        for table in tables:
            offsets.append(offsets[-1] + table.num_rows)
        tables = [joined.slice(a, b - a) for a, b in itertools.pairwise(offsets)]
    return [_write_part(task, table, model, loads) for task, table in zip(run, tables, strict=True)]


def _write_part(task: ScoringTask, table: pa.Table, model: Any, loads: int) -> PartResult:
    """Score ``table`` (the partition's rows with their features) and write its part file."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from shipyard.training.trainers import native_format

    columns = [table.column(name).to_numpy(zero_copy_only=False) for name in task.features]
    matrix = (
        np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
        if columns
        else np.empty((table.num_rows, 0))
    )
    scores = (
        native_format(task.framework).predict(model, matrix)
        if table.num_rows
        else np.empty(0, dtype=np.float64)
    )
    out = pa.table(
        {
            **{name: table.column(name) for name in task.keep},
            SCORE: pa.array(scores, type=pa.float64()),
            MODEL_VERSION: pa.array(np.full(table.num_rows, task.version, dtype=np.int32)),
        }
    )
    final = Path(task.out_dir) / task.part_name
    tmp = final.with_name(f".{task.part_name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(out, tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return PartResult(task.index, task.part_name, table.num_rows, os.getpid(), loads)


def runs_of(tasks: list[ScoringTask], parallelism: int) -> list[tuple[ScoringTask, ...]]:
    """The engine's items: one partition each, or (with feature views, where each task pays
    a join over the whole materialization) about four runs of partitions per worker."""
    if not tasks or tasks[0].workspace_root is None:
        return [(task,) for task in tasks]
    size = max(1, math.ceil(len(tasks) / (4 * max(1, parallelism))))
    return [tuple(tasks[i : i + size]) for i in range(0, len(tasks), size)]


# -- the driver side ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Input:
    """The data to score, resolved: its partitions and, for a registered data set, itself."""

    label: str
    parts: list[tuple[str, tuple[int, ...] | None, str | None]]
    schema: pa.Schema
    dataset: Dataset | None


def _resolve_model(workspace: Workspace, model: str) -> ModelVersion:
    from shipyard.registry.models import ModelRegistry

    name, _, ref = model.partition("@")
    if not name:
        raise ParameterError(
            f"The 'model' parameter of score_dataset must be NAME, NAME@ALIAS or NAME@VERSION "
            f"(e.g. fraud@champion). Got {model!r} instead."
        )
    registry = ModelRegistry(workspace)
    if not registry.versions(name):
        known = sorted({v.name for v in registry.versions()})
        raise ModelNotFoundError(
            f"No registered model {name!r}. Registered models: {', '.join(known) or 'none'}."
        )
    return registry.get(name, ref or "latest")


def _resolve_data(workspace: Workspace, data: str, partition_rows: int) -> _Input:
    """A registered data set (``name`` / ``name@version``) or a Parquet file or folder."""
    import pyarrow.parquet as pq

    from shipyard.data.catalog import get_dataset

    path = Path(data).expanduser()
    named = re.fullmatch(r"[A-Za-z][A-Za-z0-9_\-]*(@\d+)?", data) is not None
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    files = [f for f in files if f.is_file() and not f.name.startswith((".", "_"))]
    if path.exists() and not files and not named:
        raise DataValidationError(f"data: no Parquet files under {path}.")
    if files:
        parts: list[tuple[str, tuple[int, ...] | None, str | None]] = []
        for file in files:
            parts.extend((str(file), groups, None) for groups in _row_groups(file, partition_rows))
        return _Input(str(path), parts, pq.read_schema(files[0]), None)
    name, _, version = data.partition("@")
    if not named:
        raise DataValidationError(
            f"data: {data!r} is neither a Parquet file or folder nor a registered data set "
            "(NAME or NAME@VERSION)."
        )
    dataset = get_dataset(workspace, name, int(version) if version else None)
    parts = [(str(dataset.path / p.file), None, p.sha256) for p in dataset.partitions]
    if not parts:
        raise DataValidationError(f"Data set {dataset.name} v{dataset.version} has no rows.")
    schema = pq.read_schema(parts[0][0])
    return _Input(f"{dataset.name}@{dataset.version}", parts, schema, dataset)


def _row_groups(file: Path, partition_rows: int) -> list[tuple[int, ...] | None]:
    """Whole row groups of ``file`` grouped into tasks of at least ``partition_rows`` rows."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(file).metadata
    if meta.num_row_groups <= 1:
        return [None]
    groups: list[tuple[int, ...] | None] = []
    current: list[int] = []
    rows = 0
    for i in range(meta.num_row_groups):
        current.append(i)
        rows += meta.row_group(i).num_rows
        if rows >= partition_rows:
            groups.append(tuple(current))
            current, rows = [], 0
    if current:
        groups.append(tuple(current))
    return groups


def _event_columns(version: ModelVersion, keep: Sequence[str]) -> tuple[str, ...]:
    """What a partition contributes when the views supply the features: kept columns and
    the views' join keys, never a column named like a feature (the join adds those)."""
    from shipyard.features.definitions import load_views

    views = load_views(version.features_ref)
    features = {n for v in views for n in v.feature_names}
    keys = [c for v in views for c in (v.entity, v.timestamp)]
    return tuple(c for c in dict.fromkeys([*keep, *keys]) if c not in features)


def _features_version(version: ModelVersion, dataset: Dataset | None) -> int | None:
    """The source version whose materialized features a data set's rows are joined with:
    that data set's own version when the views read it, else the views' latest source."""
    from shipyard.features.definitions import load_views

    views = load_views(version.features_ref)
    if dataset is not None and all(v.source == dataset.name for v in views):
        return dataset.version
    return None


def _check_inputs(version: ModelVersion, source: _Input) -> bool:
    """Check the data can feed the model; True when its features come from the views.

    SchemaError names the columns, what the model expects and what the data holds.
    """
    expected = version.input_schema.names
    held = {f.name: str(f.type) for f in source.schema}
    what = f"{version.name} v{version.version}"
    wrong = [n for n in expected if n in held and not _NUMERIC.match(held[n])]
    if wrong:
        found = ", ".join(f"{n} ({held[n]})" for n in wrong)
        raise SchemaError(
            f"The data {source.label} cannot feed {what}: the model expects numeric (float) "
            f"input columns, got {found}."
        )
    missing = [n for n in expected if n not in held]
    if not missing:
        return False
    if source.dataset is not None:
        from shipyard.features.definitions import load_views

        views = load_views(version.features_ref)
        provided = {n for v in views for n in v.feature_names}
        keys = [c for v in views for c in (v.entity, v.timestamp) if c not in held]
        if set(missing) <= provided and not keys:
            return True
    raise SchemaError(
        f"The data {source.label} cannot feed {what}: it lacks the model's input column(s) "
        f"{missing}"
        + ("" if source.dataset is not None else " (a Parquet file must hold them)")
        + f". The model expects {expected}; the data holds {list(held)}."
    )


def _keep_columns(
    version: ModelVersion, schema: pa.Schema, keep: Sequence[str] | None
) -> list[str]:
    """Columns copied to the output: ``keep``, else the data's id column and time column."""
    names = list(schema.names)
    if keep is not None:
        missing = [c for c in keep if c not in names]
        if missing:
            raise SchemaError(f"keep: the data has no column(s) {missing}; it holds {names}.")
        return list(keep)
    ids = [c for c in names if c.lower() == "id" or c.lower().endswith("_id")]
    chosen = ids[:1] + [c for c in (version.lineage.columns.time,) if c in names]
    return [c for c in dict.fromkeys(chosen) if c not in (SCORE, MODEL_VERSION)]


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty output folder unless ``overwrite`` (and it is one of ours)."""
    if out.exists() and not out.is_dir():
        raise ParameterError(f"out: {out} exists and is not a folder.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ParameterError(
                f"out: {out} exists and is not empty; choose another folder or pass "
                "overwrite=True (--overwrite) to replace a previous scoring output."
            )
        if not (out / MANIFEST).is_file():
            raise ParameterError(
                f"out: {out} holds files but no {MANIFEST}; it is not a scoring output, so "
                "overwrite will not delete it. Choose another folder."
            )


def _publish(staging: Path, out: Path) -> None:
    """Move the finished output into place (replacing an earlier scoring output)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _tasks(
    workspace: Workspace,
    version: ModelVersion,
    source: _Input,
    kept: list[str],
    from_views: bool,
    staging: Path,
) -> list[ScoringTask]:
    """One task per input partition, each naming everything its worker needs."""
    return [
        ScoringTask(
            index=i,
            source=file,
            row_groups=groups,
            sha256=sha,
            out_dir=str(staging),
            model=version.name,
            version=version.version,
            framework=version.framework,
            native_path=str(version.native_path),
            native_sha256=version.native_sha256,
            features=tuple(version.input_schema.names),
            keep=tuple(kept),
            workspace_root=str(workspace.root) if from_views else None,
            views=version.features_ref if from_views else None,
            dataset_version=_features_version(version, source.dataset) if from_views else None,
            columns=_event_columns(version, kept) if from_views else None,
        )
        for i, (file, groups, sha) in enumerate(source.parts)
    ]


def score_dataset(
    workspace: Workspace,
    model: str,
    data: str,
    out: str | os.PathLike[str],
    *,
    engine: Engine | None = None,
    partition_rows: int = PARTITION_ROWS,
    keep: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> BatchScoreResult:
    """Score ``data`` with a registered model; write one Parquet part per input partition.

    ``model`` is ``name@alias``, ``name@3`` or ``name`` (the latest version); ``data`` a
    registered data set (``name`` or ``name@version``) or a Parquet file or folder. Output
    columns: ``keep`` (default: the data's id and time columns), ``score``, ``model_version``.
    Runs on ``engine`` (default: the workspace's). Example::

        score_dataset(ws, "fraud@champion", "fraud@1", "out/scores", progress=print)
    """
    from shipyard.engines import get_engine
    from shipyard.integrity import verify_sha256

    if partition_rows < 1:
        raise ParameterError(
            "The 'partition_rows' parameter of score_dataset must be an int >= 1. "
            f"Got {partition_rows!r} instead."
        )
    started = time.perf_counter()
    version = _resolve_model(workspace, model)
    source = _resolve_data(workspace, data, partition_rows)
    from_views = _check_inputs(version, source)
    kept = _keep_columns(version, source.schema, keep)
    target = Path(out).expanduser().resolve()
    _prepare_out(target, overwrite)
    verify_sha256(version.native_path, version.native_sha256)
    engine = engine if engine is not None else get_engine(workspace)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    tasks = _tasks(workspace, version, source, kept, from_views, staging)
    try:
        batches = runs_of(tasks, engine.parallelism)
        size = len(batches[0]) if batches else 1

        def partitions_done(done: int, total: int) -> None:  # progress counts partitions
            if progress is not None:
                progress(min(done * size, len(tasks)), len(tasks))

        runs = engine.map(
            score_run, batches, label="partitions", describe=_describe, progress=partitions_done
        )
        parts = [part for run in runs for part in run]
        result = _finish(version, source, engine.name, target, parts, started)
        result = dataclasses.replace(result, tasks=len(batches))
        _write_manifest(staging, result, parts)
        _publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _describe(index: int, run: object) -> str:
    """``partition 3 (2018-04-04.parquet)`` or ``partitions 3-5 (2018-04-04.parquet ..)``."""
    tasks = [t for t in run if isinstance(t, ScoringTask)] if isinstance(run, tuple) else []
    if not tasks:
        return f"task {index}"
    first, last = tasks[0], tasks[-1]
    if first is last:
        return f"partition {first.index} ({Path(first.source).name})"
    span = f"{Path(first.source).name} .. {Path(last.source).name}"
    return f"partitions {first.index}-{last.index} ({span})"


def _finish(
    version: ModelVersion,
    source: _Input,
    engine: str,
    target: Path,
    parts: list[PartResult],
    started: float,
) -> BatchScoreResult:
    loads: dict[int, int] = {}
    for part in parts:
        loads[part.pid] = max(loads.get(part.pid, 0), part.loads)
    return BatchScoreResult(
        model=version.name,
        version=version.version,
        sha256=version.native_sha256,
        data=source.label,
        engine=engine,
        out=target,
        rows=sum(p.rows for p in parts),
        partitions=len(parts),
        files=[target / p.file for p in parts],
        seconds=time.perf_counter() - started,
        loads_per_worker=loads,
    )


def _write_manifest(folder: Path, result: BatchScoreResult, parts: list[PartResult]) -> None:
    """``_manifest.json``: the model by hash, the data, the engine and every part's rows."""
    manifest = {
        "model": result.model,
        "version": result.version,
        "sha256": result.sha256,
        "data": result.data,
        "engine": result.engine,
        "rows": result.rows,
        "tasks": result.tasks,
        "seconds": round(result.seconds, 3),
        "parts": [asdict(p) for p in parts],
        "loads_per_worker": {str(pid): n for pid, n in result.loads_per_worker.items()},
    }
    write_atomically(folder / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


def read_manifest(out: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``_manifest.json`` of a scoring output folder."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise DataValidationError(f"{path} does not exist: {out} is not a finished scoring output.")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
