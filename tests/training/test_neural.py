"""The PyTorch families behind the trainer contract, on small synthetic problems (CPU)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.errors import IntegrityError, ParameterError, TrainingError
from shipyard.training.metrics import roc_auc
from shipyard.training.neural import EpochRecord, FeedForwardConfig, SequenceConfig
from shipyard.training.sequences import add_sequence_columns, sequence_columns
from shipyard.training.trainers import (
    MODEL_TYPES,
    PROBABILITY,
    NativePredictor,
    TrainedModel,
    load_native,
    make_config,
)
from shipyard.types import Predictor
from shipyard.workspace import Workspace

FAST = {
    "width": 16,
    "depth": 1,
    "max_epochs": 8,
    "batch_size": 128,
    "learning_rate": 5e-3,
    "n_jobs": 1,
}


def _planted(n: int = 3_000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Five features; the label is an interaction of two of them (no linear signal)."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 5)), columns=["a", "b", "c", "d", "e"])
    y = ((X["a"] * X["b"] > 0.5) | (rng.random(n) < 0.02)).astype(int).to_numpy()
    return X, y


@pytest.fixture(scope="module")
def planted() -> tuple[pd.DataFrame, np.ndarray]:
    return _planted()


@pytest.fixture(scope="module")
def model(planted: tuple[pd.DataFrame, np.ndarray]) -> TrainedModel:
    X, y = planted
    config = make_config("feedforward", **{**FAST, "width": 32, "depth": 2, "max_epochs": 30})
    return config.fit(X[:2_000], y[:2_000])


@pytest.fixture(scope="module")
def sequence_frame() -> pd.DataFrame:
    """Customers whose fraud shows only in the previous transaction's amount."""
    rng = np.random.default_rng(1)
    n_customers, per_customer = 150, 24
    n = n_customers * per_customer
    frame = pd.DataFrame(
        {
            "CUSTOMER_ID": np.repeat(np.arange(n_customers), per_customer),
            "TX_DATETIME": pd.Timestamp("2018-04-01")
            + pd.to_timedelta(np.sort(rng.integers(0, 30 * 86_400, n)), unit="s"),
            "TX_AMOUNT": rng.exponential(50.0, n),
        }
    )
    frame = frame.sort_values("TX_DATETIME", kind="stable").reset_index(drop=True)
    frame = add_sequence_columns(frame, "CUSTOMER_ID", "TX_DATETIME", ["TX_AMOUNT"], 3)
    previous = frame["SEQ_1_TX_AMOUNT"].fillna(0.0)
    frame["TX_FRAUD"] = (previous > previous.quantile(0.85)).astype(int)
    return frame


def test_the_families_register_themselves() -> None:
    assert MODEL_TYPES["feedforward"] is FeedForwardConfig
    assert MODEL_TYPES["sequence"] is SequenceConfig
    config = make_config("feedforward", width=32, depth=3)
    assert config.framework == "torch"
    assert config.hidden() == [32, 16, 8]
    assert make_config("sequence").hidden() == [64]
    assert config == make_config("feedforward", depth=3, width=32)
    assert "width=32, depth=3" in repr(config)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("dropout", 1.0, "a float in [0, 1)"),
        ("width", 0, "an int >= 1"),
        ("depth", True, "an int >= 0"),
        ("validation_fraction", 0.9, "a float in [0, 0.5]"),
        ("pos_weight", -1.0, "a finite float > 0"),
        ("batch_size", 12.5, "an int >= 1"),
    ],
)
def test_bad_parameters_are_named(name: str, value: object, expected: str) -> None:
    with pytest.raises(ParameterError, match=f"'{name}' parameter of FeedForwardConfig") as info:
        make_config("feedforward", **{name: value})
    assert expected in str(info.value)
    with pytest.raises(ParameterError, match="has no parameter 'colour'"):
        make_config("sequence", colour="red")


def test_the_model_learns_a_planted_interaction(
    model: TrainedModel, planted: tuple[pd.DataFrame, np.ndarray]
) -> None:
    X, y = planted
    assert roc_auc(y[2_000:], model.predict_proba(X[2_000:])) > 0.85
    linear = make_config("logistic_regression").fit(X[:2_000], y[:2_000])
    assert roc_auc(y[2_000:], linear.predict_proba(X[2_000:])) < 0.6  # no linear shortcut


def test_trained_model_contract(
    model: TrainedModel, planted: tuple[pd.DataFrame, np.ndarray], tmp_path: Path
) -> None:
    X, _ = planted
    X_new = X[2_000:2_300]
    before = X_new.copy()
    scores = model.predict_proba(X_new)
    pd.testing.assert_frame_equal(X_new, before)  # scoring does not mutate its input
    assert scores.shape == (len(X_new),) and ((scores > 0) & (scores < 1)).all()
    singles = np.array([model.predict_proba(X_new.iloc[[i]])[0] for i in range(20)])
    np.testing.assert_allclose(singles, scores[:20], rtol=1e-12)
    importance = model.feature_importance()
    assert set(importance) == set(model.features) and sum(importance.values()) == pytest.approx(1)
    # the two features the label depends on matter most
    assert sorted(importance, key=importance.__getitem__)[-2:] in (["a", "b"], ["b", "a"])
    # save, hash-verified load, identical scores through the serving path's Predictor
    path, sha = model.save_native(tmp_path)
    assert path.name == "model.pt"
    predictor = NativePredictor("torch", load_native("torch", path, sha), model.input_schema)
    assert isinstance(predictor, Predictor) and predictor.output_schema == PROBABILITY
    np.testing.assert_array_equal(predictor.predict(X_new.to_numpy(dtype=float)), scores)
    # pickled (what MLflow's flavour stores) it scores the same too
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict_proba(X_new), scores)
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(IntegrityError, match="Refusing to load"):
        load_native("torch", path, sha)


def test_a_file_that_is_not_a_model_is_refused_even_with_its_hash(tmp_path: Path) -> None:
    from shipyard.integrity import file_sha256

    path = tmp_path / "model.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(IntegrityError, match="Cannot read torch model"):
        load_native("torch", path, file_sha256(path))


def test_same_seed_same_scores_other_seed_other_scores(
    planted: tuple[pd.DataFrame, np.ndarray],
) -> None:
    X, y = planted
    config = make_config("feedforward", **FAST)
    first = config.fit(X[:1_500], y[:1_500]).predict_proba(X[2_000:])
    again = config.fit(X[:1_500], y[:1_500]).predict_proba(X[2_000:])
    other = config.set_params(random_state=1).fit(X[:1_500], y[:1_500]).predict_proba(X[2_000:])
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_training_leaves_the_process_torch_settings_as_they_were(
    planted: tuple[pd.DataFrame, np.ndarray],
) -> None:
    import torch

    X, y = planted
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_config("feedforward", **{**FAST, "max_epochs": 1, "n_jobs": 1}).fit(X[:500], y[:500])
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream did not move
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_early_stopping_stops_at_the_best_validation_loss() -> None:
    rng = np.random.default_rng(2)
    X = pd.DataFrame(rng.normal(size=(600, 20)))
    X.columns = [f"x{j}" for j in range(20)]
    y = (rng.random(600) < 0.3).astype(int)  # pure noise: validation loss soon rises
    config = make_config(
        "feedforward", width=128, dropout=0.0, learning_rate=1e-2, max_epochs=60, patience=2
    )
    model = config.fit(X, y)
    history = model.estimator.history
    assert len(history) < 60
    losses = [e.validation_loss for e in history]
    assert model.estimator.best_epoch == int(np.argmin(losses)) + 1
    assert len(history) == model.estimator.best_epoch + 2  # two epochs without improvement
    # the kept weights are the best epoch's: scoring the validation slice gives its loss
    scores = model.predict_proba(X[540:])
    labels = y[540:]
    loss = -np.mean(labels * np.log(scores) + (1 - labels) * np.log(1 - scores))
    assert loss == pytest.approx(min(losses), rel=1e-4)


def test_the_validation_slice_is_the_last_rows_not_a_random_sample(
    planted: tuple[pd.DataFrame, np.ndarray],
) -> None:
    X, y = planted
    X, y = X[:2_000], y[:2_000].copy()
    y[1_500:] = 1 - y[1_500:]  # the last quarter follows the opposite rule
    model = make_config("feedforward", **{**FAST, "validation_fraction": 0.25}).fit(X, y)
    history = model.estimator.history
    assert all(isinstance(e, EpochRecord) for e in history)
    # the model learns the first rule; on the flipped tail it can only rank worse than chance
    assert history[-1].validation_average_precision < y[1_500:].mean()
    assert set(history[0].metrics()) == {
        "train_loss",
        "validation_loss",
        "validation_average_precision",
    }
    no_positive_before_the_tail = np.r_[np.zeros(1_500, dtype=int), np.ones(500, dtype=int)]
    with pytest.raises(TrainingError, match="training slice holds no positive labels"):
        make_config("feedforward", validation_fraction=0.25).fit(X, no_positive_before_the_tail)


def test_missing_values_are_the_training_median(planted: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = planted
    X = X[:1_500].copy()
    X.loc[X.index % 7 == 0, "c"] = np.nan
    X["empty"] = np.nan  # a window with no transaction: null everywhere
    model = make_config("feedforward", **FAST).fit(X, y[:1_500])
    n_train = 1_500 - int(1_500 * 0.1)
    median = float(np.nanmedian(X["c"].to_numpy()[:n_train]))
    assert model.estimator.median[2] == median
    row = X.iloc[[0]].copy()  # index 0: c is missing
    filled = row.assign(c=median, empty=0.0)
    np.testing.assert_array_equal(model.predict_proba(row), model.predict_proba(filled))
    infinite = row.assign(c=np.inf)
    np.testing.assert_array_equal(model.predict_proba(infinite), model.predict_proba(filled))
    assert np.isfinite(model.predict_proba(X)).all()
    assert np.isfinite(list(model.feature_importance().values())).all()


@pytest.mark.parametrize("config_type", [FeedForwardConfig, SequenceConfig])
def test_search_space_names_are_parameters(config_type: type[FeedForwardConfig]) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: len(config_type.search_space(trial)), n_trials=5)
    # search() hands Optuna's best parameters straight back to make_config
    best = make_config(config_type.model_type, **study.best_params)
    assert best.get_params().items() >= study.best_params.items()


def test_the_sequence_model_learns_what_only_the_sequence_reveals(
    sequence_frame: pd.DataFrame, tmp_path: Path
) -> None:
    frame = sequence_frame
    train, test = frame.iloc[:2_600], frame.iloc[2_600:]
    features = ["TX_AMOUNT", *sequence_columns(["TX_AMOUNT"], 3)]
    params = {**FAST, "gru_hidden": 8, "max_epochs": 20}
    model = make_config("sequence", **params).fit(train[features], train["TX_FRAUD"])
    scores = model.predict_proba(test[features])
    assert roc_auc(test["TX_FRAUD"], scores) > 0.9
    # the current row alone says nothing
    current = make_config("feedforward", **FAST).fit(train[["TX_AMOUNT"]], train["TX_FRAUD"])
    assert roc_auc(test["TX_FRAUD"], current.predict_proba(test[["TX_AMOUNT"]])) < 0.6
    # native round trip
    path, sha = model.save_native(tmp_path)
    predictor = NativePredictor("torch", load_native("torch", path, sha), model.input_schema)
    np.testing.assert_array_equal(predictor.predict(test[features].to_numpy(dtype=float)), scores)
    assert set(model.feature_importance()) == set(features)


def test_the_sequence_model_needs_lag_columns(sequence_frame: pd.DataFrame) -> None:
    with pytest.raises(TrainingError, match="add_sequence_columns"):
        make_config("sequence").fit(sequence_frame[["TX_AMOUNT"]], sequence_frame["TX_FRAUD"])


def test_a_registered_feedforward_model_is_served_from_its_verified_file(
    small_workspace: tuple[Workspace, Dataset], small_frame: pd.DataFrame
) -> None:
    """The lead's path: evaluate, register (MLflow flavour + model.pt), load as a Predictor."""
    import mlflow.pyfunc

    from shipyard.features.fraud import BASELINE_FEATURES, BASELINE_VIEWS_REF
    from shipyard.registry.models import ModelRegistry
    from shipyard.training.evaluation import evaluate
    from shipyard.training.splits import PrequentialSplit
    from shipyard.types import ColumnRoles, Lineage

    ws, dataset = small_workspace
    roles = ColumnRoles(label="TX_FRAUD", time="TX_DATETIME", entity="CUSTOMER_ID")
    features = list(BASELINE_FEATURES)
    split = PrequentialSplit("2018-05-13", n_folds=1, columns=roles)
    config = make_config("feedforward", **FAST)
    evaluation = evaluate(small_frame, features, config, split, n_boot=0, keep_models=True)
    fold = evaluation.folds[0]
    assert fold.model is not None
    registry = ModelRegistry(ws)
    run = registry.tracker.client.create_run(registry.tracker.experiment_id("tests"))
    registry.tracker.client.set_terminated(run.info.run_id)
    f = fold.fold
    lineage = Lineage.of(dataset, BASELINE_VIEWS_REF, columns=roles, protocol="test")
    version = registry.register(
        "neural-test",
        fold.model,
        lineage=lineage.with_windows(
            train=(str(f.train_start), str(f.train_end)),
            evaluation=(str(f.test_start), str(f.test_end)),
        ),
        evaluation=evaluation,
        run_id=str(run.info.run_id),
        sample=small_frame.iloc[f.test[:200]],
        reason="test",
        actor="tester",
    )
    assert version.framework == "torch" and version.native_path.name == "model.pt"
    predictor = registry.load("neural-test", version.version)
    test = small_frame.iloc[f.test][features]
    np.testing.assert_array_equal(predictor.predict(test.to_numpy(dtype=float)), fold.scores)
    mlflow.set_tracking_uri(ws.mlflow_tracking_uri)  # MLflow's own client, as users load it
    theirs = mlflow.pyfunc.load_model(f"models:/neural-test/{version.version}").predict(
        test.astype(float)
    )
    np.testing.assert_allclose(np.asarray(theirs)[:, 1], fold.scores, rtol=1e-12)
