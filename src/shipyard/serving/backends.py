"""Serving backends for a registered version, and the choice between them.

``prepare_backends`` runs once per version (the CLI does it before a version takes
traffic; a worker does it itself if nobody did). Besides the native model it builds every
faster form that applies — ONNX Runtime (LightGBM via onnxmltools, scikit-learn via
skl2onnx) and an LLVM-compiled LightGBM (lleaves) — checks each against the native model
on held-out rows of the version's out-of-time window (max |Δ probability| ≤ 1e-5), times
them, and writes ``serving.json`` beside the model with each file's SHA-256. Workers load
the fastest parity-verified backend, hash-checked, and say which one they use.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.integrity import file_sha256, locked, verify_sha256, write_atomically
from shipyard.training.trainers import PROBABILITY

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from shipyard.registry.models import ModelRegistry, ModelVersion
    from shipyard.types import Predictor, Schema

PARITY_TOLERANCE = 1e-5
REPORT_FILE = "serving.json"
FILES = {"onnx": "model.onnx", "lleaves": "model.lleaves.so"}
TABULAR_FRAMEWORKS = frozenset({"lightgbm", "xgboost", "sklearn"})
"""Frameworks whose versions get ONNX / compiled backends built and checked on a frame."""


class OnnxPredictor:
    """Scores with an ONNX Runtime session (one intra-op thread: workers scale by process)."""

    def __init__(self, path: Path, input_schema: Schema) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[1].name
        self.input_schema = input_schema
        self.output_schema = PROBABILITY

    def predict(self, batch: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probability of the positive class for each row."""
        import numpy as np

        out = self.session.run([self.output_name], {self.input_name: batch.astype(np.float32)})[0]
        return np.asarray(out[:, 1] if out.ndim == 2 else out, dtype=np.float64)


class CompiledLightGBMPredictor:
    """Scores with a LightGBM model compiled to machine code by lleaves (one thread)."""

    def __init__(self, model_file: Path, library: Path, input_schema: Schema) -> None:
        import lleaves

        self.model = lleaves.Model(model_file=str(model_file))
        self.model.compile(cache=str(library))  # an existing library is loaded, not rebuilt
        self.input_schema = input_schema
        self.output_schema = PROBABILITY

    def predict(self, batch: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probability of the positive class for each row."""
        import numpy as np

        return np.asarray(self.model.predict(batch, n_jobs=1), dtype=np.float64)


@dataclass(frozen=True)
class Candidate:
    """One backend as measured during preparation."""

    rows_per_s: float
    max_abs_diff: float
    sha256: str | None = None
    note: str = ""


@dataclass(frozen=True)
class BackendReport:
    """What preparation found: every candidate, the one chosen and why."""

    chosen: str
    candidates: dict[str, Candidate] = field(default_factory=dict)
    parity_rows: int = 0
    reason: str = ""
    """Why no other backend was tried (a text model, a framework with no converter)."""

    @property
    def note(self) -> str:
        """Why candidates were rejected, if any were."""
        return "; ".join(f"{name}: {c.note}" for name, c in self.candidates.items() if c.note)

    def describe(self) -> str:
        """One line: each candidate's speed and parity (or why the native model alone)."""
        if self.reason:
            return f"native only: {self.reason}"
        parts = []
        for name, c in self.candidates.items():
            if c.rows_per_s:
                parts.append(f"{name} {c.rows_per_s:,.0f} rows/s (max |Δ| {c.max_abs_diff:.1e})")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackendReport:
        """Inverse of :meth:`to_dict`."""
        candidates = {k: Candidate(**v) for k, v in data["candidates"].items()}
        return cls(data["chosen"], candidates, data["parity_rows"], data.get("reason", ""))


def _convert_onnx(version: ModelVersion, model: Any, path: Path) -> None:
    n = len(version.input_schema.names)
    if version.framework == "lightgbm":
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType

        onx = onnxmltools.convert_lightgbm(
            model,
            initial_types=[("input", FloatTensorType([None, n]))],
            zipmap=False,
            target_opset=15,
        )
    elif version.framework == "sklearn":
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType as SkFloat

        onx = convert_sklearn(
            model,
            initial_types=[("input", SkFloat([None, n]))],
            options={id(model): {"zipmap": False}},
            target_opset=15,
        )
    else:
        raise NotImplementedError(f"no ONNX converter for {version.framework} models")
    path.write_bytes(onx.SerializeToString())


def _build(name: str, version: ModelVersion, model: Any, folder: Path) -> Predictor:
    """Build backend ``name`` into ``folder`` and return a predictor over it."""
    path = folder / FILES[name]
    if name == "onnx":
        _convert_onnx(version, model, path)
        return OnnxPredictor(path, version.input_schema)
    if version.framework != "lightgbm":
        raise NotImplementedError("lleaves compiles LightGBM models only")
    path.unlink(missing_ok=True)
    return CompiledLightGBMPredictor(version.native_path, path, version.input_schema)


def _rows_per_second(predict: Any, rows: NDArray[np.float64]) -> float:
    predict(rows[:100])  # warm caches
    started = time.perf_counter()
    predict(rows)
    return len(rows) / max(time.perf_counter() - started, 1e-9)


def prepare_backends(
    registry: ModelRegistry, name: str, version: int, *, force: bool = False
) -> BackendReport:
    """Build, parity-check and time the backends of ``name`` v``version``; write the report."""
    mv = registry.get(name, version)
    folder = mv.native_path.parent
    report_path = folder / REPORT_FILE
    if not force and (report := _read_report(report_path)) is not None:
        return report
    # several workers (or replicas on a shared filesystem) loading a new version at once:
    # one builds, the others wait and read its report (never a file half-written by another)
    with locked(folder / ".prepare.lock"):
        if not force and (report := _read_report(report_path)) is not None:
            return report
        return _prepare(registry, mv, report_path)


def _read_report(path: Path) -> BackendReport | None:
    """The report at ``path``, or None if there is none (or another Shipyard wrote it)."""
    if not path.is_file():
        return None
    try:
        return BackendReport.from_dict(json.loads(path.read_text()))
    except (KeyError, TypeError, ValueError):
        return None  # written by another version of Shipyard: prepare again


def native_only(mv: ModelVersion) -> str:
    """Why ``mv`` is served by its native model alone, or ``""`` when its backends are built.

    Only tabular models of the tree and scikit-learn frameworks have converters and a
    feature frame (the eval window) to check them on: a text model, or any other framework
    (PyTorch, spaCy, an ONNX model ``shipyard optimize`` built), is served as registered.
    """
    from shipyard.types import text_columns

    if text_columns(mv.input_schema):
        return (
            f"{mv.framework} model of text inputs: no feature frame to check other backends "
            "on (`shipyard optimize` builds and parity-checks faster forms as new versions)"
        )
    if mv.framework not in TABULAR_FRAMEWORKS:
        return f"no converter for {mv.framework} models"
    return ""


def _prepare(registry: ModelRegistry, mv: ModelVersion, report_path: Path) -> BackendReport:
    """Build, check and time every backend of ``mv``; write the report atomically."""
    import numpy as np

    from shipyard.training.frames import Window, load_frame

    reason = native_only(mv)
    if reason:  # nothing to build, no frame to load: the native model, hash-verified at load
        native_candidate = Candidate(0.0, 0.0, mv.native_sha256)
        report = BackendReport("native", {"native": native_candidate}, 0, reason)
        write_atomically(report_path, json.dumps(report.to_dict(), indent=2).encode())
        return report
    name, version, folder = mv.name, mv.version, mv.native_path.parent
    native = registry.load(name, version)
    frame = load_frame(registry.workspace, Window.from_dict(mv.eval_window))
    rows = np.ascontiguousarray(frame[mv.input_schema.names].to_numpy(dtype="float64")[:5000])
    expected = native.predict(rows)
    candidates = {
        "native": Candidate(_rows_per_second(native.predict, rows), 0.0, mv.native_sha256)
    }
    for backend in FILES:
        try:
            predictor = _build(backend, mv, native.model, folder)
        except Exception as exc:  # a backend that cannot be built leaves the others in charge
            candidates[backend] = Candidate(
                0.0, float("nan"), None, f"{type(exc).__name__}: {exc}"[:200]
            )
            continue
        diff = float(np.max(np.abs(predictor.predict(rows) - expected)))
        note = (
            ""
            if diff <= PARITY_TOLERANCE
            else f"parity failed: max |Δ| {diff:.2e} > {PARITY_TOLERANCE:g}"
        )
        sha = file_sha256(folder / FILES[backend])
        candidates[backend] = Candidate(_rows_per_second(predictor.predict, rows), diff, sha, note)
    eligible = {k: c for k, c in candidates.items() if not c.note and c.rows_per_s > 0}
    chosen = max(eligible, key=lambda k: eligible[k].rows_per_s)
    report = BackendReport(chosen, candidates, len(rows))
    write_atomically(report_path, json.dumps(report.to_dict(), indent=2).encode())
    return report


def load_backend(
    registry: ModelRegistry, name: str, version: int
) -> tuple[Predictor, BackendReport]:
    """The chosen backend of a prepared version, its file verified against its SHA-256."""
    report = prepare_backends(registry, name, version)
    mv = registry.get(name, version)
    if report.chosen == "native":
        return registry.load(name, version), report
    path = mv.native_path.parent / FILES[report.chosen]
    verify_sha256(path, report.candidates[report.chosen].sha256)
    if report.chosen == "onnx":
        return OnnxPredictor(path, mv.input_schema), report
    verify_sha256(mv.native_path, mv.native_sha256)  # lleaves reads the model file too
    return CompiledLightGBMPredictor(mv.native_path, path, mv.input_schema), report
