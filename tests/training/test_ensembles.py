"""Imbalance handling and calibration: class weights and histogram bins of the boosted trees,
balanced bagging and calibrated models, on real fitting (small data)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.errors import IntegrityError, ParameterError, TrainingError
from shipyard.features.fraud import BASELINE_FEATURES
from shipyard.training import metrics as m
from shipyard.training.ensembles import BalancedBaggingConfig, CalibratedConfig, EnsembleModel
from shipyard.training.trainers import (
    PROBABILITY,
    NativePredictor,
    load_native,
    make_config,
)
from shipyard.types import Predictor
from shipyard.workspace import Workspace

FEATURES = list(BASELINE_FEATURES)
SMALL_BASE = {"n_estimators": 30}
ENSEMBLES = {
    "balanced_bagging": {"n_bags": 3, "base_params": SMALL_BASE},
    "calibrated": {"base_params": SMALL_BASE},
    "calibrated_platt_over_bagging": {
        "base": "balanced_bagging",
        "base_params": {"n_bags": 2, "base": "xgboost", "base_params": SMALL_BASE},
        "method": "platt",
    },
}


def _config(name: str) -> BalancedBaggingConfig | CalibratedConfig:
    model_type = "calibrated" if name.startswith("calibrated") else name
    config = make_config(model_type, **ENSEMBLES[name])
    assert isinstance(config, BalancedBaggingConfig | CalibratedConfig)
    return config


def synthetic(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A rare-positive problem (about 4%) with an interaction the trees must find."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    logit = -4.5 + 1.5 * X["a"] + X["b"] * X["c"]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


@pytest.fixture(scope="module")
def data(small_frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    train = small_frame.iloc[:15_000]  # the frame is in time order
    return train[FEATURES], train["TX_FRAUD"].to_numpy(), small_frame.iloc[15_000:16_000][FEATURES]


# -- class weights and histogram bins ------------------------------------------------------


@pytest.mark.parametrize("model_type", ["xgboost", "lightgbm"])
def test_the_new_defaults_change_no_result(model_type: str) -> None:
    """scale_pos_weight=1 and the library's own max_bin give what the library gives alone."""
    from lightgbm import LGBMClassifier
    from xgboost import XGBClassifier

    X, y = synthetic(3000, 0)
    config = make_config(model_type)
    assert config.get_params()["scale_pos_weight"] == 1.0
    older = {k: v for k, v in config.params.items() if k not in ("scale_pos_weight", "max_bin")}
    if model_type == "xgboost":
        library: object = XGBClassifier(**older, eval_metric="logloss")
    else:
        library = LGBMClassifier(**older)
    library.fit(X.to_numpy(dtype=float), y)  # type: ignore[attr-defined]
    theirs = library.predict_proba(X.to_numpy(dtype=float))[:, 1]  # type: ignore[attr-defined]
    np.testing.assert_array_equal(config.fit(X, y).predict_proba(X), theirs)


@pytest.mark.parametrize("model_type", ["xgboost", "lightgbm"])
def test_class_weight_and_bins_reach_the_model(model_type: str) -> None:
    X, y = synthetic(3000, 0)
    plain = make_config(model_type, n_estimators=30).fit(X, y).predict_proba(X)
    weighted = make_config(model_type, n_estimators=30, scale_pos_weight=20).fit(X, y)
    # weighting the positives raises every score's level (what calibration then corrects)
    assert weighted.predict_proba(X).mean() > 3 * plain.mean()
    fine = make_config(model_type, n_estimators=30, max_bin=1024).fit(X, y).predict_proba(X)
    assert not np.allclose(fine, plain)


@pytest.mark.parametrize("model_type", ["xgboost", "lightgbm", "balanced_bagging", "calibrated"])
def test_search_spaces_give_valid_configurations(model_type: str) -> None:
    config_class = type(make_config(model_type))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = config_class.search_space(study.ask())
        config = make_config(model_type, **params)
        assert config.get_params().items() >= params.items()
        if model_type in ("xgboost", "lightgbm"):
            assert 1.0 <= params["scale_pos_weight"] <= 20.0
            assert params["max_bin"] in (256, 1024)


def test_the_families_load_on_first_need() -> None:
    """make_config knows the ensembles' types without anyone importing their module."""
    code = (
        "import sys; from shipyard.training.trainers import make_config; "
        "c = make_config('calibrated', base='balanced_bagging'); "
        "print(type(c).__module__, 'sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["shipyard.training.ensembles", "False"]


# -- the model contract --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ENSEMBLES))
def test_ensembles_keep_the_trained_model_contract(
    name: str, data: tuple[pd.DataFrame, np.ndarray, pd.DataFrame], tmp_path: Path
) -> None:
    X, y, X_new = data
    model = _config(name).fit(X, y)
    assert isinstance(model, EnsembleModel)
    before = X_new.copy()
    scores = model.predict_proba(X_new)
    pd.testing.assert_frame_equal(X_new, before)
    assert scores.shape == (len(X_new),)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert model.features == FEATURES
    singles = np.array([model.predict_proba(X_new.iloc[[i]])[0] for i in range(20)])
    np.testing.assert_allclose(singles, scores[:20], rtol=1e-6)
    importance = model.feature_importance()
    assert list(importance) == FEATURES
    assert sum(importance.values()) == pytest.approx(1.0)
    assert model.config.framework == "sklearn"
    path, sha = model.save_native(tmp_path)
    predictor = NativePredictor("sklearn", load_native("sklearn", path, sha), model.input_schema)
    assert isinstance(predictor, Predictor)
    assert predictor.output_schema == model.output_schema == PROBABILITY
    np.testing.assert_allclose(predictor.predict(X_new.to_numpy(dtype=float)), scores, rtol=1e-6)
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(IntegrityError, match="Refusing to load"):
        load_native("sklearn", path, sha)


# -- balanced bagging ----------------------------------------------------------------------


def test_bagging_trains_each_member_on_every_positive_and_a_seeded_draw() -> None:
    X, y = synthetic(4000, 0)
    params = {"base_params": SMALL_BASE, "n_bags": 3, "ratio": 2.0}
    model = make_config("balanced_bagging", **params).fit(X, y)
    again = make_config("balanced_bagging", **params).fit(X, y)
    other = make_config("balanced_bagging", **params, random_state=1).fit(X, y)
    np.testing.assert_array_equal(model.predict_proba(X), again.predict_proba(X))
    assert not np.allclose(model.predict_proba(X), other.predict_proba(X))
    members = model.estimator.members
    assert len(members) == 3
    assert [mb.config.params["random_state"] for mb in members] == [0, 1, 2]
    # each member learnt a problem with 2 negatives per positive: its mean score on the
    # positives and an equal draw of negatives is near 1/3, far above the 4% prevalence
    positives = np.flatnonzero(y == 1)
    rng = np.random.default_rng(5)
    balanced = np.concatenate([positives, rng.choice(np.flatnonzero(y == 0), 2 * len(positives))])
    for member in members:
        assert member.predict_proba(X.iloc[balanced]).mean() == pytest.approx(1 / 3, abs=0.08)


def test_a_single_bag_of_all_rows_is_the_base_model() -> None:
    """With more negatives asked for than there are, a bag holds every row, in order."""
    X, y = synthetic(3000, 0)
    bagged = make_config(
        "balanced_bagging", base="xgboost", base_params=SMALL_BASE, n_bags=1, ratio=1e6
    ).fit(X, y)
    plain = make_config("xgboost", **SMALL_BASE).fit(X, y)
    np.testing.assert_allclose(bagged.predict_proba(X), plain.predict_proba(X), rtol=1e-6)


# -- calibration ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_corrects_a_miscalibrated_base_out_of_sample(method: str) -> None:
    """A positive weight of 20 overstates every probability; the calibrated model's Brier
    score and reliability curve on new rows are better than the base model's."""
    X, y = synthetic(12_000, 0)
    X_new, y_new = synthetic(8_000, 1)
    base_params = {"n_estimators": 50, "scale_pos_weight": 20}
    base = make_config("xgboost", **base_params).fit(X, y)
    calibrated = make_config(
        "calibrated", base="xgboost", base_params=base_params, method=method
    ).fit(X, y)

    def gap(scores: np.ndarray) -> float:
        curve = m.reliability_curve(y_new, scores)
        diff = np.abs(np.array(curve["predicted"]) - np.array(curve["observed"]))
        return float(np.average(diff, weights=curve["count"]))

    raw, fixed = base.predict_proba(X_new), calibrated.predict_proba(X_new)
    assert m.brier(y_new, fixed) < 0.5 * m.brier(y_new, raw)
    assert gap(fixed) < 0.25 * gap(raw)
    assert fixed.mean() == pytest.approx(y_new.mean(), rel=0.25)
    assert m.roc_auc(y_new, fixed) > m.roc_auc(y_new, raw) - 0.02  # ranking barely moves


def test_the_base_trains_on_the_first_rows_and_the_calibrator_on_the_last() -> None:
    X, y = synthetic(5000, 0)
    config = make_config("calibrated", base_params=SMALL_BASE, calibration_fraction=0.3)
    model = config.fit(X, y)
    first = make_config("xgboost", **SMALL_BASE).fit(X.iloc[:3500], y[:3500])
    np.testing.assert_array_equal(model.estimator.base.predict_proba(X), first.predict_proba(X))
    # the calibrator saw the last rows: it reproduces their positive rate
    last = model.predict_proba(X.iloc[3500:])
    assert last.mean() == pytest.approx(y[3500:].mean(), rel=0.05)


def test_a_calibration_share_without_positives_is_refused() -> None:
    X, y = synthetic(2000, 0)
    y = y.copy()
    y[-400:] = 0
    with pytest.raises(TrainingError, match="the last part of the training window"):
        make_config("calibrated", base_params=SMALL_BASE).fit(X, y)
    with pytest.raises(TrainingError, match="no positive labels"):
        make_config("balanced_bagging").fit(X, np.zeros_like(y))


@pytest.mark.parametrize(
    ("model_type", "params", "message"),
    [
        ("balanced_bagging", {"n_bags": 0}, "'n_bags' parameter of BalancedBaggingConfig"),
        ("balanced_bagging", {"ratio": -1}, "'ratio' parameter of BalancedBaggingConfig must"),
        ("balanced_bagging", {"base": "calibrated"}, "'base' parameter .* one of logistic_reg"),
        ("calibrated", {"method": "beta"}, "'method' parameter of CalibratedConfig must be one"),
        ("calibrated", {"calibration_fraction": 0.9}, "'calibration_fraction' parameter"),
        ("calibrated", {"base": "calibrated"}, "a model type other than 'calibrated'"),
        ("calibrated", {"base": "catboost"}, "base model of CalibratedConfig: Unknown model"),
        ("calibrated", {"base_params": {"depth": 3}}, "XGBoostConfig has no parameter 'depth'"),
        ("calibrated", {"base_params": {"random_state": 3}}, "without random_state"),
        ("balanced_bagging", {"random_state": "x"}, "'random_state' parameter of Balanced"),
    ],
)
def test_bad_parameters_are_named(model_type: str, params: dict[str, object], message: str) -> None:
    X, y = synthetic(500, 0)
    with pytest.raises(ParameterError, match=message):
        make_config(model_type, **params).fit(X, y)


# -- registered, loaded and scored ---------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Dataset]]:
    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
    from shipyard.features.fraud import BASELINE_VIEWS
    from shipyard.features.offline import OfflineStore
    from tests.conftest import SMALL

    ws = Workspace.init(tmp_path_factory.mktemp("ensembles") / "ws")
    dataset = simulate_fraud_dataset(ws, FraudSimulator(**SMALL))  # type: ignore[arg-type]
    OfflineStore(ws).materialize(BASELINE_VIEWS)
    yield ws, dataset
    ws.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["balanced_bagging", "calibrated"])
def test_registered_ensembles_load_verified_and_score_the_same(
    name: str, workspace: tuple[Workspace, Dataset]
) -> None:
    from shipyard.registry.models import ModelRegistry
    from shipyard.solutions.fraud import COLUMNS, Protocol
    from shipyard.training.evaluation import evaluate
    from shipyard.training.frames import Window, load_frame
    from shipyard.training.splits import PrequentialSplit

    ws, dataset = workspace
    lineage = Protocol(start_date_training="2018-05-06", n_folds=1).lineage(dataset)
    frame = load_frame(ws, Window.of(lineage, "2018-04-01", "2018-06-30"))
    split = PrequentialSplit("2018-05-13", n_folds=1, columns=COLUMNS, train_days=21)
    evaluation = evaluate(frame, FEATURES, _config(name), split, n_boot=0, keep_models=True)
    fold = evaluation.folds[0]
    assert fold.model is not None
    registry = ModelRegistry(ws)
    client = registry.tracker.client
    run_id = client.create_run(registry.tracker.experiment_id("tests")).info.run_id
    f = fold.fold
    version = registry.register(
        f"fraud_{name}",
        fold.model,
        lineage=lineage.with_windows(
            train=(str(f.train_start), str(f.train_end)),
            evaluation=(str(f.test_start), str(f.test_end)),
        ),
        evaluation=evaluation,
        run_id=run_id,
        sample=frame.iloc[f.test[:200]],
        actor="tester",
    )
    assert (version.model_type, version.framework) == (name, "sklearn")
    predictor = registry.load(f"fraud_{name}", version.version)
    assert isinstance(predictor, NativePredictor)
    rows = frame.iloc[f.test][predictor.input_schema.names].to_numpy(dtype=float)
    np.testing.assert_allclose(predictor.predict(rows), fold.scores, rtol=1e-6)
