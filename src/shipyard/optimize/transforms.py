"""The transforms of a text classifier: ONNX export, int8 quantization, pruning.

Each takes a :class:`~shipyard.training.text.TextClassifier` (eager PyTorch) and returns
either the bytes of an ``onnx-text`` file (:mod:`shipyard.optimize.formats`) or another
classifier (pruning), never changing its input:

- :func:`export_onnx`: the module traced to ONNX (opset 17), with ONNX Runtime's graph
  optimizations applied and saved (exact: same arithmetic, fused);
- :func:`dynamic_int8`: weights of MatMul and Gather stored as int8, activations quantized
  on the fly per batch (``onnxruntime.quantization.quantize_dynamic``);
- :func:`static_int8`: MatMul weights and activations int8 with activation ranges fixed
  from calibration reviews (``quantize_static``, QDQ format, MinMax);
- :func:`prune`: L1 magnitude pruning of the encoder's Linear weights at a stated sparsity,
  made permanent (the zeros stay dense: it shrinks nothing unless compressed, and speeds up
  nothing on dense kernels; it is there to trade accuracy for a sparser model knowingly).

Distillation lives in :mod:`shipyard.optimize.distill`.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter
from shipyard.logs import dropping
from shipyard.optimize.formats import INPUTS, OUTPUT, with_metadata

if TYPE_CHECKING:
    from shipyard.training.text import TextClassifier

OPSET = 17
_EXAMPLE = ("A short review.", "A somewhat longer review, so that the two differ in length.")
_QUANT_NOTE = "Please consider"  # ORT's advice to pre-process; its optimizations run at load


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the TorchScript exporter's known warnings (and nothing else) around one export.

    ``dynamo=False`` is deprecated in favour of ``torch.export`` (DeprecationWarning);
    tracing BERT's mask handling warns that Python booleans become constants (TracerWarning:
    true here, shapes are dynamic axes); advanced indexing in opset 17 (UserWarning).
    """
    from torch.jit import TracerWarning  # type: ignore[attr-defined]

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=TracerWarning)
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript", DeprecationWarning
        )
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        warnings.filterwarnings("ignore", "Exporting aten::index", UserWarning)
        yield


def _traced(classifier: TextClassifier, path: Path) -> None:
    """Write the classifier's module as an fp32 ONNX graph to ``path`` (dynamic batch, length)."""
    import torch

    ids, mask = classifier.tokenizer.encode(list(_EXAMPLE))
    axes = {"batch": 0, "tokens": 1}
    dynamic = {name: {v: k for k, v in axes.items()} for name in INPUTS}
    module = classifier.module.eval()
    with _quiet_export(), torch.no_grad():
        torch.onnx.export(
            module,
            (torch.from_numpy(ids), torch.from_numpy(mask)),
            str(path),
            input_names=list(INPUTS),
            output_names=[OUTPUT],
            dynamic_axes={**dynamic, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def export_onnx(classifier: TextClassifier) -> bytes:
    """The classifier as an fp32 ``onnx-text`` file, ONNX Runtime's graph optimizations saved."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="shipyard-onnx-") as tmp:
        raw, optimized = Path(tmp) / "raw.onnx", Path(tmp) / "optimized.onnx"
        _traced(classifier, raw)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimized)
        ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
        return with_metadata(onnx.load(str(optimized)), classifier.tokenizer)


def dynamic_int8(classifier: TextClassifier) -> bytes:
    """The classifier as an ``onnx-text`` file: int8 weights, activations quantized per batch."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="shipyard-onnx-") as tmp:
        raw, quantized = Path(tmp) / "raw.onnx", Path(tmp) / "int8.onnx"
        _traced(classifier, raw)
        with dropping("root", _QUANT_NOTE):
            quantize_dynamic(raw, quantized, weight_type=QuantType.QInt8)
        return with_metadata(onnx.load(str(quantized)), classifier.tokenizer)


class _Calibration:
    """Feeds of calibration reviews, 32 at a time, for ``quantize_static``."""

    def __init__(self, classifier: TextClassifier, texts: Sequence[str]) -> None:
        self._batches = iter([list(texts[i : i + 32]) for i in range(0, len(texts), 32)])
        self._tokenizer = classifier.tokenizer

    def get_next(self) -> dict[str, Any] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        ids, mask = self._tokenizer.encode(batch)
        return {INPUTS[0]: ids, INPUTS[1]: mask}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (feed := self.get_next()) is not None:
            yield feed

    def rewind(self) -> None:  # ORT calls this between calibration passes; one pass is used
        return None

    def set_range(self, start_index: int, end_index: int) -> None:
        return None


def static_int8(classifier: TextClassifier, calibration: Sequence[str]) -> bytes:
    """The classifier as an ``onnx-text`` file with int8 MatMuls, activation ranges calibrated.

    ``calibration``: reviews whose activations fix the int8 ranges (MinMax), e.g. a few
    hundred validation reviews. Only MatMuls with constant weights are quantized (QDQ);
    attention's activation-by-activation products stay fp32.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if len(calibration) == 0:
        raise invalid_parameter("calibration", "static_int8", "at least one review", "none")

    class Reader(_Calibration, CalibrationDataReader):  # type: ignore[misc]  # ORT checks it
        pass

    with tempfile.TemporaryDirectory(prefix="shipyard-onnx-") as tmp:
        raw, quantized = Path(tmp) / "raw.onnx", Path(tmp) / "int8.onnx"
        _traced(classifier, raw)
        with dropping("root", _QUANT_NOTE):
            quantize_static(
                raw,
                quantized,
                Reader(classifier, calibration),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["MatMul"],
                per_channel=False,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                extra_options={"MatMulConstBOnly": True},
            )
        return with_metadata(onnx.load(str(quantized)), classifier.tokenizer)


def prune(classifier: TextClassifier, sparsity: float) -> TextClassifier:
    """A copy of the classifier with the smallest ``sparsity`` share of each encoder Linear
    layer's weights set to zero (L1 magnitude, per layer), made permanent.

    Example: ``prune(model, 0.3)`` zeroes 30% of every attention and feed-forward weight.
    """
    import copy

    import torch
    from torch.nn.utils import prune as torch_prune

    if not 0.0 < sparsity < 1.0:
        raise invalid_parameter("sparsity", "prune", "a float in (0, 1)", sparsity)
    pruned = copy.deepcopy(classifier)
    encoder = _encoder(pruned.module)
    for layer in encoder.modules():
        if isinstance(layer, torch.nn.Linear):
            torch_prune.l1_unstructured(layer, name="weight", amount=sparsity)  # type: ignore[no-untyped-call]
            torch_prune.remove(layer, "weight")  # type: ignore[no-untyped-call]
    return pruned


def _encoder(module: Any) -> Any:
    """The BERT encoder inside an EncoderClassifier (its Linear layers are what pruning cuts)."""
    for name in ("bert", "encoder"):
        found = getattr(module, name, None)
        if found is not None:
            return found
    return module


def zero_share(classifier: TextClassifier) -> float:
    """Share of exact zeros among the encoder's Linear weights (pruning's achieved sparsity)."""
    import torch

    zeros = total = 0
    for layer in _encoder(classifier.module).modules():
        if isinstance(layer, torch.nn.Linear):
            zeros += int((layer.weight == 0).sum())
            total += layer.weight.numel()
    return zeros / total if total else 0.0
