"""The ``onnx-text`` native format: a text classifier as one ONNX file, scored by ONNX Runtime.

The file ``model.onnx`` holds the graph (fp32, or int8 after quantization) and, in its
``metadata_props``, everything needed to score raw text: the tokenizer's JSON
(``shipyard.tokenizer``, :class:`~shipyard.training.text.TextTokenizer`), the token limit
(``shipyard.max_tokens``) and the format's version. :class:`OnnxTextModel` reads it back
(after the registry checked its SHA-256) and implements the
:class:`~shipyard.training.text.TextModel` protocol: ``predict_proba(texts)``,
``max_tokens``, ``count_tokens(texts)``. Batches are padded to their longest review.

Example::

    model = OnnxTextModel.from_bytes(path.read_bytes(), threads=1)
    model.predict_proba(["A quietly moving film.", "Two hours I will not get back."])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from shipyard.errors import IntegrityError, TrainingError
from shipyard.integrity import write_atomically
from shipyard.training.trainers import ModelConfig, NativeFormat, TrainedModel, register_format

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.training.text import TextTokenizer

FRAMEWORK = "onnx-text"
FORMAT_VERSION = "shipyard.onnx-text/1"
META_FORMAT = "shipyard.format"
META_TOKENIZER = "shipyard.tokenizer"
META_MAX_TOKENS = "shipyard.max_tokens"
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "probability"
BATCH = 32
"""Reviews scored at once by ``predict_proba`` (each batch padded to its longest review)."""


def with_metadata(model: Any, tokenizer: TextTokenizer) -> bytes:
    """The serialized ``onnx.ModelProto`` with the tokenizer and token limit in its metadata."""
    for key, value in (
        (META_FORMAT, FORMAT_VERSION),
        (META_TOKENIZER, tokenizer.to_json()),
        (META_MAX_TOKENS, str(tokenizer.max_tokens)),
    ):
        kept = [p for p in model.metadata_props if p.key != key]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    data: bytes = model.SerializeToString()
    return data


def session(data: bytes, threads: int = 1) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session over ``data`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


class OnnxTextModel:
    """A text classifier scored by an ONNX Runtime session (the ``onnx-text`` format).

    ``data`` is the whole ``model.onnx`` file (kept, so :meth:`with_threads` can open a
    session with another thread count); ``tokenizer`` comes from its metadata.
    """

    def __init__(self, data: bytes, tokenizer: TextTokenizer, threads: int = 1) -> None:
        self.data = data
        self.tokenizer = tokenizer
        self.threads = threads
        self.session = session(data, threads)

    @classmethod
    def from_bytes(cls, data: bytes, threads: int = 1) -> OnnxTextModel:
        """Read a ``model.onnx`` file's bytes; IntegrityError if its metadata is not ours."""
        from shipyard.training.text import TextTokenizer

        probe = session(data, 1)
        meta = probe.get_modelmeta().custom_metadata_map
        if meta.get(META_FORMAT) != FORMAT_VERSION or META_TOKENIZER not in meta:
            raise IntegrityError(
                f"This ONNX file is not a Shipyard text model: its metadata has "
                f"{META_FORMAT}={meta.get(META_FORMAT)!r} (expected {FORMAT_VERSION!r}) and "
                f"{'a' if META_TOKENIZER in meta else 'no'} tokenizer."
            )
        tokenizer = TextTokenizer.from_json(meta[META_TOKENIZER])
        if str(tokenizer.max_tokens) != meta.get(META_MAX_TOKENS):
            raise IntegrityError(
                f"The ONNX text model's tokenizer allows {tokenizer.max_tokens} tokens but its "
                f"metadata records {meta.get(META_MAX_TOKENS)!r}."
            )
        model = cls.__new__(cls)
        model.data, model.tokenizer, model.threads = data, tokenizer, threads
        model.session = probe if threads == 1 else session(data, threads)
        return model

    @property
    def max_tokens(self) -> int:
        """Word pieces a review is truncated to (with [CLS] and [SEP])."""
        return int(self.tokenizer.max_tokens)

    @property
    def size_bytes(self) -> int:
        """Size of the ONNX file in bytes."""
        return len(self.data)

    def count_tokens(self, texts: Sequence[str]) -> NDArray[np.int64]:
        """Word pieces of each text before truncation (with [CLS] and [SEP])."""
        return self.tokenizer.count(texts)

    def with_threads(self, threads: int) -> OnnxTextModel:
        """The same model on a session with ``threads`` intra-op threads."""
        return OnnxTextModel(self.data, self.tokenizer, threads)

    def predict_proba(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """Probability of the positive class for each text, 32 at a time in order of length
        (each batch padded to its longest text)."""
        from shipyard.training.text import score_by_length

        def score(ids: NDArray[np.int64], mask: NDArray[np.int64]) -> Any:
            return self.session.run([OUTPUT], {INPUTS[0]: ids, INPUTS[1]: mask})[0]

        return score_by_length(self.tokenizer, texts, score, BATCH)


class OnnxTextFormat(NativeFormat):
    """One ``model.onnx`` file with the tokenizer in its metadata, scored by ONNX Runtime."""

    file = "model.onnx"

    def save(self, estimator: Any, path: Path) -> None:
        write_atomically(path, estimator.data)

    def load(self, path: Path) -> Any:
        return OnnxTextModel.from_bytes(path.read_bytes())

    def predict(self, model: Any, batch: NDArray[Any]) -> NDArray[np.float64]:
        """Probabilities for a 2-D object array of ``str`` (one column: the text)."""
        from shipyard.training.text import texts_of

        result: NDArray[np.float64] = model.predict_proba(texts_of(batch))
        return result


class OptimizedTextConfig(ModelConfig):
    """What an optimized text version is: its source version and the transform that made it.

    Made by :func:`shipyard.optimize.optimize`, never trained: :meth:`fit` refuses.
    """

    model_type = "optimized-text"
    framework = FRAMEWORK
    defaults: ClassVar[dict[str, Any]] = {
        "source_version": 0,
        "source_model_type": "",
        "transform": "onnx",
        "sparsity": None,
        "student_layers": None,
        "max_tokens": 128,
    }

    def fit(self, X: pd.DataFrame, y: Any) -> TrainedModel:
        """Refused: optimize a trained version with ``shipyard optimize`` instead."""
        raise TrainingError(
            "An optimized-text model is made by `shipyard optimize MODEL@VERSION` from a "
            "registered torch-text version; it cannot be trained."
        )


register_format(FRAMEWORK, OnnxTextFormat())
