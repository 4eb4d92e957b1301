"""Transforms of a text classifier: exact ONNX export, int8 quantization, pruning, distillation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import ParameterError
from shipyard.optimize import transforms
from shipyard.optimize.distill import distill
from shipyard.optimize.formats import OnnxTextModel
from shipyard.training.text import TextClassifier


def _texts(reviews: pd.DataFrame, split: str) -> list[str]:
    return reviews.loc[reviews["split"] == split, "text"].tolist()


def test_onnx_export_scores_like_the_eager_model(
    classifier: TextClassifier, reviews: pd.DataFrame, fp32_onnx: bytes
) -> None:
    texts = _texts(reviews, "test")
    exported = OnnxTextModel.from_bytes(fp32_onnx)
    eager = classifier.predict_proba(texts)
    assert np.max(np.abs(exported.predict_proba(texts) - eager)) < 1e-4
    # the tokenizer travels inside the file: same limit, same counts, same truncation
    assert exported.max_tokens == classifier.max_tokens
    long = ["word " * 400]
    assert exported.count_tokens(long)[0] == classifier.count_tokens(long)[0] > 128
    assert abs(exported.predict_proba(long)[0] - classifier.predict_proba(long)[0]) < 1e-4


def test_static_int8_is_smaller_and_close(
    classifier: TextClassifier, reviews: pd.DataFrame, fp32_onnx: bytes
) -> None:
    texts = _texts(reviews, "test")
    static = OnnxTextModel.from_bytes(
        transforms.static_int8(classifier, _texts(reviews, "validation")[:16])
    )
    assert static.size_bytes < len(fp32_onnx)  # int8 MatMul weights, fp32 embeddings
    diff = np.abs(static.predict_proba(texts) - classifier.predict_proba(texts))
    assert 0 < diff.max() < 0.2  # quantized: not exact, not another model


def test_static_int8_needs_calibration_reviews(classifier: TextClassifier) -> None:
    with pytest.raises(ParameterError, match="'calibration' parameter of static_int8"):
        transforms.static_int8(classifier, [])


def test_pruning_zeroes_the_stated_share_and_leaves_the_original(
    classifier: TextClassifier,
) -> None:
    before = transforms.zero_share(classifier)
    pruned = transforms.prune(classifier, 0.3)
    assert transforms.zero_share(pruned) == pytest.approx(0.3, abs=0.01)
    assert transforms.zero_share(classifier) == before < 0.01
    with pytest.raises(ParameterError, match=r"'sparsity' parameter of prune must be a float"):
        transforms.prune(classifier, 1.5)


def test_distilled_student_has_the_stated_layers_and_is_reproducible(
    classifier: TextClassifier, reviews: pd.DataFrame
) -> None:
    texts = _texts(reviews, "train")[:24]
    first = distill(classifier, texts, layers=1, epochs=1, random_state=1)
    again = distill(classifier, texts, layers=1, epochs=1, random_state=1)
    assert len(first.module.bert.encoder.layer) == 1
    probe = _texts(reviews, "test")[:8]
    assert np.array_equal(first.predict_proba(probe), again.predict_proba(probe))
    with pytest.raises(ParameterError, match="'layers' parameter of distill"):
        distill(classifier, texts, layers=7)
