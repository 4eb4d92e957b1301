"""The generic check suite every model configuration must pass (cf. scikit-learn's
estimator checks), run over each model type on real simulated data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import IntegrityError, ParameterError, TrainingError
from shipyard.features.fraud import BASELINE_FEATURES
from shipyard.training.sequences import add_sequence_columns, sequence_columns
from shipyard.training.trainers import (
    MODEL_TYPES,
    PROBABILITY,
    NativePredictor,
    load_families,
    load_native,
    make_config,
)
from shipyard.types import Predictor

load_families()  # every family's types, whichever test module was collected first
FEATURES = list(BASELINE_FEATURES)
FAST = {
    "random_forest": {"n_estimators": 20},
    "xgboost": {"n_estimators": 30},
    "lightgbm": {"n_estimators": 30},
    "feedforward": {"max_epochs": 5},
    "sequence": {"max_epochs": 5},
}
LAGS = sequence_columns(["TX_AMOUNT"], 2)  # the sequence model's input: lag columns
# these read a 'text' column, not features: tests/training/test_text.py checks their contract
TEXT_MODEL_TYPES = {"minilm-classifier", "tfidf-logreg"}


@pytest.fixture(scope="module")
def data(small_frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    train = small_frame.iloc[:15_000]
    return train[FEATURES], train["TX_FRAUD"].to_numpy(), small_frame.iloc[15_000:16_000][FEATURES]


@pytest.mark.parametrize("model_type", sorted(MODEL_TYPES))
def test_configuration_stores_parameters_and_nothing_else(model_type: str) -> None:
    config = make_config(model_type)
    clone = config.set_params(random_state=1)
    assert config.get_params()["random_state"] == 0
    assert clone.get_params()["random_state"] == 1
    assert config == make_config(model_type)
    assert config != clone
    assert "random_state=1" in repr(clone)
    with pytest.raises(ParameterError, match="has no parameter 'colour'; its parameters are"):
        make_config(model_type, colour="red")


@pytest.fixture(scope="module")
def lagged(small_frame: pd.DataFrame) -> pd.DataFrame:
    return add_sequence_columns(small_frame, "CUSTOMER_ID", "TX_DATETIME", ["TX_AMOUNT"], 2)


@pytest.mark.parametrize("model_type", sorted(MODEL_TYPES.keys() - TEXT_MODEL_TYPES))
def test_trained_model_contract(
    model_type: str,
    data: tuple[pd.DataFrame, np.ndarray, pd.DataFrame],
    lagged: pd.DataFrame,
    tmp_path: Path,
) -> None:
    X, y, X_new = data
    if model_type == "sequence":
        X, X_new = (
            lagged.iloc[:15_000][FEATURES + LAGS],
            lagged.iloc[15_000:16_000][FEATURES + LAGS],
        )
    features = list(X.columns)
    model = make_config(model_type, **FAST.get(model_type, {})).fit(X, y)
    before = X_new.copy()
    scores = model.predict_proba(X_new)
    pd.testing.assert_frame_equal(X_new, before)  # scoring does not mutate its input
    assert scores.shape == (len(X_new),)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert model.features == features
    # one row at a time gives what a batch gives
    singles = np.array([model.predict_proba(X_new.iloc[[i]])[0] for i in range(20)])
    np.testing.assert_allclose(singles, scores[:20], rtol=1e-6)
    importance = model.feature_importance()
    assert set(importance) == set(features)
    assert sum(importance.values()) == pytest.approx(1.0)
    # native file round trip, hash-verified
    path, sha = model.save_native(tmp_path)
    predictor = NativePredictor(
        model.config.framework, load_native(model.config.framework, path, sha), model.input_schema
    )
    assert isinstance(predictor, Predictor)
    assert predictor.output_schema == model.output_schema == PROBABILITY
    # the input schema records the range each feature took in the training data
    observed = {c.name: c.observed for c in model.input_schema.columns}
    assert observed == {f: (float(X[f].min()), float(X[f].max())) for f in features}
    np.testing.assert_allclose(
        predictor.predict(X_new.to_numpy(dtype=float)), scores, rtol=1e-6, atol=1e-9
    )
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(IntegrityError, match="Refusing to load"):
        load_native(model.config.framework, path, sha)


def test_training_without_positives_is_refused(
    data: tuple[pd.DataFrame, np.ndarray, pd.DataFrame],
) -> None:
    X, y, _ = data
    with pytest.raises(TrainingError, match="no positive"):
        make_config("lightgbm").fit(X, np.zeros_like(y))
    with pytest.raises(TrainingError, match="holds no rows"):
        make_config("lightgbm").fit(X.iloc[:0], y[:0])


def test_unknown_model_type_lists_the_known_ones() -> None:
    with pytest.raises(
        ParameterError, match="Unknown model type 'catboost'; known: logistic_regression"
    ):
        make_config("catboost")


def test_scoring_data_missing_a_feature_is_named(
    data: tuple[pd.DataFrame, np.ndarray, pd.DataFrame],
) -> None:
    X, y, X_new = data
    model = make_config("decision_tree").fit(X, y)
    with pytest.raises(TrainingError, match="TX_AMOUNT"):
        model.predict_proba(X_new.drop(columns="TX_AMOUNT"))


def test_an_unknown_framework_is_named() -> None:
    with pytest.raises(ParameterError, match="No native format for framework 'onnx'; known: light"):
        load_native("onnx", Path("model.onnx"), "0" * 64)


def test_a_random_forest_scores_the_same_rows_identically_every_time() -> None:
    """Threaded predict_proba summed the trees in thread-finish order: scores differed in the
    last bits from call to call (and so between the local and Ray engines)."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(20_000, 6)), columns=[f"f{i}" for i in range(6)])
    y = (X["f0"] + rng.normal(size=len(X)) > 1).astype(int)
    model = make_config("random_forest", n_estimators=50).fit(X, y)
    first = model.predict_proba(X)
    assert all(np.array_equal(first, model.predict_proba(X)) for _ in range(5))
    assert model.estimator.n_jobs == 1 and model.config.get_params()["n_jobs"] == -1
