"""Reference profiles per model version, current profiles from the prediction log, and drift.

A model version's **reference profile** profiles its evaluation (out-of-time validation)
frame: every input column of its schema and its ``prediction`` (the positive-class score of
the registered, hash-verified model on that frame). It is stored once per version as::

    <artifact_root>/monitoring/reference/<model>/v<version>.json
    <artifact_root>/monitoring/reference/<model>/v<version>.json.sha256

written atomically, and verified against the recorded SHA-256 before every load (a mismatch
is refused; a missing hash file means an interrupted build, and the profile is rebuilt from
the version's lineage, which is deterministic).

A **current profile** is built from the prediction log over a window
(:func:`shipyard.monitoring.logstore.predictions`) with the reference's bins
(``reference.empty().update(...)``), per model version and optionally per traffic arm.
:func:`drift_report` compares each with its version's reference with
:class:`~shipyard.monitoring.report.DatasetDriftTest`; a group with too few rows is
"insufficient data", never "no drift".

Example::

    profile = load_reference_profile(ws, "fraud", 1)      # built on first use
    report = drift_report(ws, "fraud", "2026-11-20", "2026-11-27", by="arm")
    print(json.dumps(report.to_dict(), indent=2))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from shipyard.errors import (
    DataValidationError,
    IntegrityError,
    ParameterError,
    SchemaError,
    invalid_parameter,
)
from shipyard.integrity import locked, write_atomically
from shipyard.monitoring.profiles import DatasetProfile
from shipyard.monitoring.report import DatasetDriftTest, DriftReport
from shipyard.times import epoch_seconds

if TYPE_CHECKING:
    import pyarrow as pa

    from shipyard.registry.models import ModelVersion
    from shipyard.workspace import Workspace

PREDICTION = "prediction"
"""The profiled column that holds the model's score (probability of the positive class)."""

Time = float | datetime | str | None
"""Epoch seconds, a datetime (naive is UTC), an ISO date or date-time text, or open."""


def reference_path(workspace: Workspace, model: str, version: int) -> Path:
    """Where the reference profile of ``model`` v``version`` is stored (JSON)."""
    return workspace.artifact_root / "monitoring" / "reference" / model / f"v{int(version)}.json"


def _hash_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def reference_profile(
    workspace: Workspace, model: str, version: int | str, *, n_bins: int = 20
) -> DatasetProfile:
    """Build, store and return the reference profile of a registered model version.

    Rebuilds the version's evaluation frame from its lineage
    (``load_frame(ws, Window.from_dict(version.eval_window))``), scores it with the
    registered model (loaded hash-verified), and profiles the input columns plus
    :data:`PREDICTION`. ``version`` is a number or an alias (``"champion"``). Overwrites a
    stored profile. This is what registration would call for each new version.
    """
    from shipyard.registry.models import ModelRegistry
    from shipyard.training.frames import Window, load_frame

    registry = ModelRegistry(workspace)
    registered = registry.get(model, version)
    window = Window.from_dict(_eval_window(registered))
    frame = load_frame(workspace, window)
    names = registered.input_schema.names
    if PREDICTION in names:
        raise SchemaError(
            f"{model} v{registered.version} has an input column named {PREDICTION!r}, which "
            "the reference profile uses for the model's score; rename the feature."
        )
    if frame.empty:
        raise DataValidationError(
            f"The evaluation window {window.start} .. {window.end} of {model} "
            f"v{registered.version} ({window.dataset} v{window.version}) has no rows; "
            "cannot build its reference profile."
        )
    absent = [n for n in names if n not in frame.columns]
    if absent:
        raise SchemaError(
            f"The evaluation frame of {model} v{registered.version} lacks its input columns "
            f"{absent}; were the feature views {window.views} materialized?"
        )
    matrix = frame[names].to_numpy(dtype=np.float64)
    scores = registry.load(model, registered.version).predict(matrix)
    batch: dict[str, NDArray[np.float64]] = {n: matrix[:, i] for i, n in enumerate(names)}
    batch[PREDICTION] = np.asarray(scores, dtype=np.float64)
    profile = DatasetProfile.from_reference(batch, n_bins=n_bins)
    path = reference_path(workspace, model, registered.version)
    label = registered.lineage.columns.label
    if label in frame.columns:
        _store_scores(scores_path(path), batch[PREDICTION], frame[label].to_numpy())
    _store(path, profile.to_json())
    return profile


def scores_path(profile: Path) -> Path:
    """Where the reference scores and labels beside a reference profile are stored."""
    return profile.with_name(profile.stem + ".scores.parquet")


def _store_scores(path: Path, scores: NDArray[np.float64], labels: NDArray[Any]) -> None:
    """The evaluation frame's scores and 0/1 labels as Parquet, with its SHA-256 beside it."""
    import hashlib
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    table = pa.table(
        {
            "score": pa.array(np.asarray(scores, dtype=np.float64)),
            "label": pa.array(np.asarray(labels).astype(np.int8)),
        }
    )
    pq.write_table(table, sink)
    data = sink.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path, shared=False):
        write_atomically(path, data)
        write_atomically(_hash_path(path), (hashlib.sha256(data).hexdigest() + "\n").encode())


def load_reference_scores(
    workspace: Workspace, model: str, version: int | str
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """The scores and labels of ``model`` v``version`` on its evaluation window, verified.

    Stored with the reference profile (built on first use like it); performance estimation
    without labels (CBPE) fits its calibration on them.
    """
    import pyarrow.parquet as pq

    from shipyard.integrity import verify_sha256
    from shipyard.registry.models import ModelRegistry

    registered = ModelRegistry(workspace).get(model, version)
    path = scores_path(reference_path(workspace, model, registered.version))
    recorded = _hash_path(path)
    if not path.exists() or not recorded.exists():
        reference_profile(workspace, model, registered.version)
    if not path.exists():
        raise DataValidationError(
            f"The evaluation frame of {model} v{registered.version} has no label column "
            f"{registered.lineage.columns.label!r}, so its reference scores have no labels."
        )
    with _locked(path, shared=True):
        try:
            verify_sha256(path, recorded.read_text().strip())
        except IntegrityError as exc:
            raise IntegrityError(
                f"{exc} (reference scores of {model} v{registered.version}; delete "
                f"{path.name} and {recorded.name} to rebuild them from the version's lineage)"
            ) from None
        table = pq.read_table(path)
    scores = table.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    labels = table.column("label").to_numpy(zero_copy_only=False).astype(np.int64)
    return scores, labels


def _eval_window(registered: ModelVersion) -> dict[str, Any]:
    from shipyard.types import text_columns

    if text_columns(registered.input_schema):
        raise ParameterError(
            f"{registered.name} v{registered.version} takes string inputs "
            f"({', '.join(registered.input_schema.names)}): drift monitoring compares numeric "
            "inputs and scores with a reference profile, which a text model or a recommender "
            "does not have. Its answers are in the prediction log (texts, outputs_json: "
            "`shipyard logs`), and label-based metrics such as a recommender's click-through "
            "in `shipyard experiment` (metric ctr)."
        )
    if registered.lineage.eval_window is None:
        raise ParameterError(
            f"{registered.name} v{registered.version} records no evaluation window in its "
            f"lineage ({registered.lineage.dataset} v{registered.lineage.dataset_version}), so "
            "its reference profile cannot be rebuilt. Register a version whose lineage has "
            "windows (lineage.with_windows(train, evaluation)), or build a profile yourself "
            "with DatasetProfile.from_reference."
        )
    return registered.eval_window


def _store(path: Path, text: str) -> None:
    """Write the JSON, then its SHA-256 beside it, each atomically (temp file, fsync, rename)."""
    import hashlib

    data = text.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    # two builders at once (float sums may differ in their last bits) must not pair one's
    # JSON with the other's hash: the pair is written under one exclusive lock
    with _locked(path, shared=False):
        write_atomically(path, data)
        write_atomically(_hash_path(path), (hashlib.sha256(data).hexdigest() + "\n").encode())


def _locked(path: Path, shared: bool) -> contextlib.AbstractContextManager[None]:
    """Hold a lock beside ``path``: exclusive to write the pair, shared to read it."""
    return locked(path.with_name(f".{path.name}.lock"), shared=shared)


def load_reference_profile(
    workspace: Workspace, model: str, version: int | str, *, build: bool = True
) -> DatasetProfile:
    """The stored reference profile of ``model`` v``version``, verified against its SHA-256.

    Built (and stored) on first use unless ``build=False`` (then a missing profile is a
    ModelNotFoundError). A profile whose bytes do not match the recorded hash is refused
    with IntegrityError; delete both files to rebuild it from the version's lineage.
    """
    from shipyard.errors import ModelNotFoundError
    from shipyard.integrity import verify_sha256
    from shipyard.registry.models import ModelRegistry

    if isinstance(version, int):
        number = version
    else:
        number = ModelRegistry(workspace).get(model, version).version
    path = reference_path(workspace, model, number)
    recorded = _hash_path(path)
    if not path.exists() or not recorded.exists():
        # no profile, or a build interrupted between its two writes: (re)build it
        if not build:
            raise ModelNotFoundError(
                f"No reference profile for {model} v{number} at {path}; build it with "
                "reference_profile(ws, model, version)."
            )
        return reference_profile(workspace, model, number)
    with _locked(path, shared=True):
        try:
            verify_sha256(path, recorded.read_text().strip())
        except IntegrityError as exc:
            raise IntegrityError(
                f"{exc} (reference profile of {model} v{number}; delete {path.name} and "
                f"{recorded.name} to rebuild it from the version's lineage)"
            ) from None
        text = path.read_text()
    return DatasetProfile.from_json(text)


# -- current profiles from the prediction log -----------------------------------------------


@dataclass(frozen=True)
class Group:
    """Which records a current profile holds: one model version, and one arm or all."""

    model: str
    version: int
    arm: str | None = None

    def label(self) -> str:
        return f"{self.model} v{self.version}" + (f" ({self.arm})" if self.arm else "")


def _read(workspace: Workspace, endpoint: str, start: Time, end: Time) -> pa.Table:
    from shipyard.monitoring.logstore import predictions

    return predictions(
        workspace,
        endpoint,
        epoch_seconds(start, "start", "current_profile"),
        epoch_seconds(end, "end", "current_profile"),
    )


def _groups(table: pa.Table, by_arm: bool) -> dict[Group, pa.Table]:
    """The records of each (model, version[, arm]) in the table, in a stable order."""
    import pyarrow.compute as pc

    keys = ["model", "version", *(["arm"] if by_arm else [])]
    distinct = table.select(keys).group_by(keys).aggregate([]).to_pylist()
    out: dict[Group, pa.Table] = {}
    distinct = [r for r in distinct if r["model"] is not None and r["version"] is not None]
    for row in sorted(distinct, key=lambda r: (r["model"], r["version"], str(r.get("arm")))):
        mask = pc.and_(
            pc.equal(table["model"], row["model"]), pc.equal(table["version"], row["version"])
        )
        if by_arm:
            arm = row["arm"]
            mask = pc.and_(
                mask, pc.is_null(table["arm"]) if arm is None else pc.equal(table["arm"], arm)
            )
        group = Group(str(row["model"]), int(row["version"]), row.get("arm") if by_arm else None)
        out[group] = table.filter(mask)
    return out


def _batches(table: pa.Table, names: list[str]) -> Iterator[dict[str, NDArray[np.float64]]]:
    """Each record batch of ``table`` as columns: ``names`` from inputs, the score from outputs."""
    import pyarrow.compute as pc

    for batch in table.select(["inputs", "outputs"]).to_batches(max_chunksize=65_536):
        if batch.num_rows == 0:
            continue
        inputs, outputs = batch.column(0), batch.column(1)
        rows = pc.list_flatten(inputs)
        widths = np.asarray(pc.fill_null(pc.list_value_length(rows), 0), dtype=np.int64)
        if widths.size and (widths != len(names)).any():
            bad = int(widths[widths != len(names)][0])
            raise SchemaError(
                f"A logged input row has {bad} values; the version's input schema has "
                f"{len(names)} columns ({', '.join(names)}). Was this record written by "
                "another model?"
            )
        values = pc.list_flatten(rows).to_numpy(zero_copy_only=False).astype(np.float64)
        matrix = values.reshape(-1, len(names))
        scores = pc.list_flatten(outputs).to_numpy(zero_copy_only=False).astype(np.float64)
        if scores.size != matrix.shape[0]:
            raise SchemaError(
                f"The logged records hold {matrix.shape[0]} input rows but {scores.size} "
                "outputs; each input row needs one score."
            )
        columns = {n: matrix[:, i] for i, n in enumerate(names)}
        columns[PREDICTION] = scores
        yield columns


def _profile(reference: DatasetProfile, table: pa.Table, names: list[str]) -> DatasetProfile:
    expected = [*names, PREDICTION]
    if reference.names != expected:
        raise SchemaError(
            f"The reference profile has columns {reference.names}, but the version's input "
            f"schema and score are {expected}; rebuild it with reference_profile()."
        )
    current = reference.empty()
    for columns in _batches(table, names):
        current.update(columns)
    return current


def _input_names(workspace: Workspace, model: str, version: int) -> list[str]:
    from shipyard.registry.models import ModelRegistry

    return ModelRegistry(workspace).get(model, version).input_schema.names


def current_profile(
    workspace: Workspace,
    endpoint: str,
    start: Time = None,
    end: Time = None,
    *,
    version: int | None = None,
    arm: str | None = None,
    model: str | None = None,
) -> DatasetProfile:
    """The profile of ``endpoint``'s logged predictions with ``start <= time < end``.

    Inputs are profiled under the version's input column names, outputs as
    :data:`PREDICTION`, with the bins of the version's reference profile. ``version`` is
    needed when the window holds several; ``arm`` keeps one traffic arm (``"shadow"`` ...).
    ``model`` defaults to the one in the records, else the endpoint's traffic policy. An
    empty selection gives an empty profile, which the drift test calls insufficient data.
    """
    table = _read(workspace, endpoint, start, end)
    groups = _groups(table, by_arm=arm is not None)
    chosen = {
        g: t
        for g, t in groups.items()
        if (version is None or g.version == version)
        and (arm is None or g.arm == arm)
        and (model is None or g.model == model)
    }
    versions = sorted({(g.model, g.version) for g in chosen})
    if len(versions) > 1:
        held = ", ".join(f"{m} v{v}" for m, v in versions)
        raise ParameterError(
            f"The window of endpoint {endpoint!r} holds predictions of {held}; pass version= "
            "(and model=) to choose one, or use drift_report(), which compares each."
        )
    if versions:
        name, number = versions[0]
    else:
        name, number = _fallback(workspace, endpoint, model, version)
    reference = load_reference_profile(workspace, name, number)
    names = _input_names(workspace, name, number)
    import pyarrow as pa

    tables = [t for g, t in chosen.items() if (g.model, g.version) == (name, number)]
    selected = pa.concat_tables(tables) if tables else table.slice(0, 0)
    return _profile(reference, selected, names)


def _fallback(
    workspace: Workspace, endpoint: str, model: str | None, version: int | None
) -> tuple[str, int]:
    """The model version to profile when the window has no records of it."""
    if version is None:
        raise ParameterError(
            f"Endpoint {endpoint!r} logged no predictions in this window; pass version= to get "
            "an empty profile of one version."
        )
    if model is None:
        from shipyard.errors import ModelNotFoundError
        from shipyard.serving.policy import get_policy

        try:
            model = get_policy(workspace, endpoint).model
        except ModelNotFoundError:
            raise ParameterError(
                f"Endpoint {endpoint!r} logged no predictions in this window and has no "
                "traffic policy naming its model; pass model= as well as version=."
            ) from None
    return model, version


# -- drift per version or per arm -----------------------------------------------------------


@dataclass(frozen=True)
class GroupDrift:
    """The drift of one version's (or one arm's) logged inputs and scores against its reference."""

    group: Group
    n_records: int
    report: DriftReport

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.group.model,
            "version": self.group.version,
            "arm": self.group.arm,
            "n_records": self.n_records,
            "n_rows": self.report.n_current,
            **self.report.to_dict(),
        }


@dataclass(frozen=True)
class EndpointDrift:
    """Drift of an endpoint over a window, one report per version or per (arm, version)."""

    endpoint: str
    start: float | None
    end: float | None
    by: str
    groups: tuple[GroupDrift, ...]

    def __getitem__(self, key: int | str | tuple[str, int]) -> GroupDrift:
        """A group by version (``1``), arm (``"shadow"``, if one version served it) or
        (arm, version)."""
        found = [g for g in self.groups if _matches(g.group, key)]
        if len(found) != 1:
            known = ", ".join(g.group.label() for g in self.groups) or "none"
            what = "no" if not found else "several"
            raise KeyError(f"{what} group matches {key!r}; groups: {known}")
        return found[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable: the window (epoch seconds), grouping and every group's report."""
        return {
            "endpoint": self.endpoint,
            "start": self.start,
            "end": self.end,
            "by": self.by,
            "groups": [g.to_dict() for g in self.groups],
        }


def _matches(group: Group, key: int | str | tuple[str, int]) -> bool:
    if isinstance(key, tuple):
        return (group.arm, group.version) == key
    if isinstance(key, str):
        return group.arm == key
    return group.version == key


def drift_report(
    workspace: Workspace,
    endpoint: str,
    start: Time = None,
    end: Time = None,
    *,
    by: Literal["version", "arm"] = "version",
    test: DatasetDriftTest | None = None,
) -> EndpointDrift:
    """Drift of inputs and prediction of every model version (or arm) in a window of the log.

    Each version's records (``by="version"``), or each arm's records of each version
    (``by="arm"``: an arm that served two versions in the window is two groups) are profiled
    with that version's reference bins and compared with its reference by ``test``
    (default :class:`DatasetDriftTest`: chi-square + Jensen–Shannon floor, BH at 0.05).
    """
    if by not in ("version", "arm"):
        raise invalid_parameter("by", "drift_report", "'version' or 'arm'", by)
    test = test if test is not None else DatasetDriftTest()
    table = _read(workspace, endpoint, start, end)
    references: dict[tuple[str, int], tuple[DatasetProfile, list[str]]] = {}
    out = []
    for group, records in _groups(table, by_arm=by == "arm").items():
        key = (group.model, group.version)
        if key not in references:
            references[key] = (
                load_reference_profile(workspace, *key),
                _input_names(workspace, *key),
            )
        reference, names = references[key]
        current = _profile(reference, records, names)
        out.append(GroupDrift(group, records.num_rows, test.compare(reference, current)))
    return EndpointDrift(
        endpoint=endpoint,
        start=epoch_seconds(start, "start", "drift_report"),
        end=epoch_seconds(end, "end", "drift_report"),
        by=by,
        groups=tuple(out),
    )
