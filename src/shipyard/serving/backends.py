"""Serving backends for a registered version, and the choice between them.

``prepare_backends`` runs once per version (the CLI does it before a version takes
traffic; a worker does it itself if nobody did): it converts the model to ONNX where a
converter exists, checks parity against the native model on held-out rows of the
version's out-of-time window (max |Δ probability| ≤ 1e-5 by default), times both, and
writes ``serving.json`` beside the model with the ONNX file's SHA-256. Workers then load
the fastest parity-verified backend, hash-checked, and say which one they use.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import IntegrityError
from shipyard.integrity import file_sha256
from shipyard.serving.predictors import PROBABILITY

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from shipyard.registry.models import ModelRegistry, ModelVersion
    from shipyard.types import Predictor, Schema

PARITY_TOLERANCE = 1e-5
REPORT_FILE = "serving.json"


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


@dataclass(frozen=True)
class BackendReport:
    """What preparation found: the chosen backend and why."""

    chosen: str
    native_rows_per_s: float
    onnx_rows_per_s: float | None
    onnx_max_abs_diff: float | None
    onnx_sha256: str | None
    parity_rows: int
    note: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return asdict(self)


def _convert_onnx(version: ModelVersion, model: Any, path: Path) -> bool:
    """Write an ONNX conversion of ``model`` to ``path``; False if no converter applies."""
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
        return False
    path.write_bytes(onx.SerializeToString())
    return True


def _rows_per_second(predict: Any, rows: NDArray[np.float64]) -> float:
    started = time.perf_counter()
    predict(rows)
    return len(rows) / max(time.perf_counter() - started, 1e-9)


def prepare_backends(
    registry: ModelRegistry, name: str, version: int, *, force: bool = False
) -> BackendReport:
    """Convert, parity-check and time the backends of ``name`` v``version``; write the report."""
    from shipyard.training.frames import Window, load_frame

    mv = registry.get(name, version)
    folder = mv.native_path.parent
    report_path = folder / REPORT_FILE
    if report_path.is_file() and not force:
        return BackendReport(**json.loads(report_path.read_text()))
    native = registry.load(name, version)
    frame = load_frame(registry.workspace, Window.from_dict(mv.eval_window))
    rows = frame[mv.input_schema.names].to_numpy(dtype="float64")[:5000]
    expected = native.predict(rows)
    native_speed = _rows_per_second(native.predict, rows)
    onnx_path = folder / "model.onnx"
    note = ""
    onnx_speed = diff = sha = None
    try:
        converted = _convert_onnx(mv, native.model, onnx_path)
    except Exception as exc:  # a converter that fails leaves the native backend in charge
        converted = False
        note = f"ONNX conversion failed: {type(exc).__name__}: {exc}"[:300]
    if converted:
        import numpy as np

        onnx = OnnxPredictor(onnx_path, mv.input_schema)
        diff = float(np.max(np.abs(onnx.predict(rows) - expected)))
        onnx_speed = _rows_per_second(onnx.predict, rows)
        sha = file_sha256(onnx_path)
        if diff > PARITY_TOLERANCE:
            note = f"ONNX parity failed: max |Δ| {diff:.2e} > {PARITY_TOLERANCE:g}"
    elif not note:
        note = f"no ONNX converter for {mv.framework} models"
    parity_ok = diff is not None and diff <= PARITY_TOLERANCE
    chosen = "onnx" if parity_ok and onnx_speed and onnx_speed > native_speed else "native"
    report = BackendReport(chosen, native_speed, onnx_speed, diff, sha, len(rows), note)
    report_path.write_text(json.dumps(report.to_dict(), indent=2))
    return report


def load_backend(
    registry: ModelRegistry, name: str, version: int
) -> tuple[Predictor, BackendReport]:
    """The chosen backend of a prepared version, its file verified against its SHA-256."""
    report = prepare_backends(registry, name, version)
    mv = registry.get(name, version)
    if report.chosen == "onnx":
        path = mv.native_path.parent / "model.onnx"
        if report.onnx_sha256 is None or file_sha256(path) != report.onnx_sha256:
            raise IntegrityError(
                f"Refusing to load {path}: it does not match its recorded SHA-256."
            )
        return OnnxPredictor(path, mv.input_schema), report
    return registry.load(name, version), report
