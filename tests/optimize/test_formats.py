"""The onnx-text native format: one hash-verified file that scores raw text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from shipyard.errors import IntegrityError
from shipyard.integrity import file_sha256
from shipyard.optimize.formats import META_TOKENIZER, OnnxTextModel
from shipyard.training.text import TextModel
from shipyard.training.trainers import load_native, native_format


def test_saved_file_loads_after_its_hash_and_scores_text_columns(
    fp32_onnx: bytes, reviews: pd.DataFrame, tmp_path: Path
) -> None:
    model = OnnxTextModel.from_bytes(fp32_onnx)
    assert isinstance(model, TextModel)
    native = native_format("onnx-text")
    path = tmp_path / native.file
    native.save(model, path)
    loaded = load_native("onnx-text", path, file_sha256(path))
    texts = reviews["text"].head(40).tolist()
    batch = np.array([[t] for t in texts], dtype=object)
    assert np.array_equal(native.predict(loaded, batch), model.predict_proba(texts))
    assert np.array_equal(loaded.with_threads(2).predict_proba(texts), model.predict_proba(texts))

    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IntegrityError, match="does not match"):
        load_native("onnx-text", path, "0" * 64)


def test_an_onnx_file_without_a_tokenizer_is_refused(fp32_onnx: bytes) -> None:
    proto = onnx.load_from_string(fp32_onnx)
    kept = [p for p in proto.metadata_props if p.key != META_TOKENIZER]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    with pytest.raises(IntegrityError, match="not a Shipyard text model"):
        OnnxTextModel.from_bytes(proto.SerializeToString())
