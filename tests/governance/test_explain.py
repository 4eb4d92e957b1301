"""Per-row attributions equal shap's and add up to the model's raw output, on real models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.data.catalog import Dataset, write_dataset
from shipyard.errors import ParameterError, SchemaError
from shipyard.features.fraud import BASELINE_FEATURES
from shipyard.features.offline import OfflineStore
from shipyard.governance.explain import (
    GLOBAL_EXPLANATION_TITLE,
    NATIVE_ROWS,
    Explainer,
    UnexplainableModelError,
    explain,
    global_explanation,
)
from shipyard.training.frames import Window, load_frame
from shipyard.training.trainers import NativePredictor, TrainedModel, load_native, make_config
from shipyard.types import Lineage
from shipyard.workspace import Workspace
from tests.registry.credit import COLUMNS, DATASET, FEATURES, VIEWS, VIEWS_REF, applications

shap = pytest.importorskip("shap")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # shap's notes on LightGBM output


@pytest.fixture(scope="module")
def credit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Dataset]]:
    """A workspace with the synthetic credit applications and their feature views."""
    ws = Workspace.init(tmp_path_factory.mktemp("credit") / "ws")
    dataset = write_dataset(
        ws, DATASET, applications(), time_column="application_date", label_column="default"
    )
    OfflineStore(ws).materialize(VIEWS)
    yield ws, dataset
    ws.close()


@pytest.fixture(scope="module")
def credit_frame(credit: tuple[Workspace, Dataset]) -> pd.DataFrame:
    """The credit applications with their features."""
    ws, dataset = credit
    lineage = Lineage.of(dataset, VIEWS_REF, columns=COLUMNS)
    return load_frame(ws, Window.of(lineage, "2021-01-01", "2021-03-01"))


def _data(name: str, small_frame: pd.DataFrame, credit_frame: pd.DataFrame) -> Any:
    """(train X, train y, explained X) of the fraud fixture or the credit data."""
    if name == "fraud":
        frame, features, label = small_frame, list(BASELINE_FEATURES), "TX_FRAUD"
    else:
        frame, features, label = credit_frame, FEATURES, COLUMNS.label
    half = len(frame) // 2
    train, test = frame.iloc[:half], frame.iloc[half:]
    return train[features], train[label], test[features].head(400)


Trained = tuple[dict[str, TrainedModel], pd.DataFrame, pd.DataFrame]
"""The trained models, the rows they explain and their training rows."""

MODELS = {
    "lightgbm": {"n_estimators": 60},
    "xgboost": {"n_estimators": 60},
    "decision_tree": {"max_depth": 5},
    "random_forest": {"n_estimators": 15, "max_depth": 6, "n_jobs": 1},
    "logistic_regression": {},
}


@pytest.fixture(scope="module", params=["fraud", "credit"])
def trained(
    request: pytest.FixtureRequest, small_frame: pd.DataFrame, credit_frame: pd.DataFrame
) -> Trained:
    X, y, explained = _data(request.param, small_frame, credit_frame)
    models = {name: make_config(name, **params).fit(X, y) for name, params in MODELS.items()}
    return models, explained, X


def _shap_values(
    model: TrainedModel, X: pd.DataFrame, train: pd.DataFrame
) -> tuple[np.ndarray, float]:
    """shap's own attributions (positive class) and expected value."""
    estimator = model.estimator
    if model.config.model_type == "logistic_regression":
        scaler, linear = estimator.steps[0][1], estimator.steps[1][1]
        background = scaler.transform(model._matrix(train))  # every training row
        masker = shap.maskers.Independent(background, max_samples=len(background))
        explainer = shap.LinearExplainer(linear, masker)
        values = explainer.shap_values(scaler.transform(model._matrix(X)))
        return np.asarray(values), float(explainer.expected_value)
    explainer = shap.TreeExplainer(estimator)
    values = np.asarray(explainer.shap_values(model._matrix(X)))
    if values.ndim == 3:
        values = values[:, :, -1]
    return values, float(np.ravel(explainer.expected_value)[-1])


@pytest.mark.parametrize("model_type", list(MODELS))
def test_attributions_equal_shaps_within_1e_6(trained: Trained, model_type: str) -> None:
    models, X, train = trained
    explanation = explain(models[model_type], X)
    expected, base = _shap_values(models[model_type], X, train)
    assert explanation.values.shape == (len(X), len(X.columns))
    np.testing.assert_allclose(explanation.values, expected, rtol=0, atol=1e-6)
    assert explanation.base_value == pytest.approx(base, abs=1e-6)
    assert explanation.features == tuple(X.columns)


def _raw_output(model: TrainedModel, X: pd.DataFrame) -> np.ndarray:
    """The model's own raw output: margin (log-odds) or probability."""
    matrix = model._matrix(X)
    estimator = model.estimator
    kind = model.config.model_type
    if kind == "lightgbm":
        return np.asarray(estimator.booster_.predict(matrix, raw_score=True))
    if kind == "xgboost":
        import xgboost

        booster = estimator.get_booster()
        return np.asarray(booster.predict(xgboost.DMatrix(matrix), output_margin=True))
    if kind == "logistic_regression":
        return np.asarray(estimator.decision_function(matrix))
    return model.predict_proba(matrix)


@pytest.mark.parametrize("model_type", list(MODELS))
def test_attributions_plus_base_value_are_the_raw_output(trained: Trained, model_type: str) -> None:
    model = trained[0][model_type]
    X = trained[1]
    explanation = explain(model, X)
    trees = ("decision_tree", "random_forest")
    assert explanation.output_space == ("probability" if model_type in trees else "log-odds")
    # XGBoost adds its float32 tree outputs in float32; everything else is float64
    tolerance = 1e-5 if model_type == "xgboost" else 1e-9
    np.testing.assert_allclose(
        explanation.raw_output(), _raw_output(model, X), rtol=0, atol=tolerance
    )
    np.testing.assert_allclose(explanation.probability(), model.predict_proba(X), rtol=0, atol=1e-6)


@pytest.mark.parametrize("model_type", ["lightgbm", "xgboost", "decision_tree"])
def test_a_loaded_native_model_explains_like_the_trained_one(
    trained: Trained, model_type: str, tmp_path: Path
) -> None:
    model, X = trained[0][model_type], trained[1]
    path, sha256 = model.save_native(tmp_path)
    framework = model.config.framework
    loaded = NativePredictor(framework, load_native(framework, path, sha256), model.input_schema)
    from_file = explain(loaded, X)
    np.testing.assert_allclose(from_file.values, explain(model, X).values, rtol=0, atol=1e-9)
    assert from_file.features == tuple(model.features)


def test_an_explainer_built_once_explains_each_request_alike(
    trained: Trained,
) -> None:
    model, X = trained[0]["lightgbm"], trained[1]
    explainer = Explainer.of(model)
    whole = explainer(X.to_numpy(dtype=float))
    one = explainer(X.to_numpy(dtype=float)[7:8])
    np.testing.assert_allclose(one.values[0], whole.values[7], rtol=0, atol=1e-12)
    assert one.row(0) == pytest.approx(whole.row(7))


def test_global_importance_is_the_mean_absolute_attribution_largest_first(
    trained: Trained,
) -> None:
    explanation = explain(trained[0]["lightgbm"], trained[1])
    importance = explanation.mean_abs()
    assert list(importance.values()) == sorted(importance.values(), reverse=True)
    for j, name in enumerate(explanation.features):
        assert importance[name] == pytest.approx(np.abs(explanation.values[:, j]).mean())


def test_a_model_type_that_cannot_be_explained_is_named() -> None:
    from sklearn.neighbors import KNeighborsClassifier

    X = np.random.default_rng(0).normal(size=(50, 3))
    knn = KNeighborsClassifier().fit(X, (X[:, 0] > 0).astype(int))
    with pytest.raises(UnexplainableModelError, match="KNeighborsClassifier") as refused:
        explain(knn, X)
    assert isinstance(refused.value, TypeError)
    with pytest.raises(UnexplainableModelError, match=r"builtins\.str"):
        explain("model.txt", X)


def test_bad_input_names_the_field(
    trained: Trained,
) -> None:
    model, X = trained[0]["lightgbm"], trained[1]
    with pytest.raises(ParameterError, match="'X' parameter of explain"):
        explain(model, X.to_numpy()[:, :3])
    with pytest.raises(SchemaError, match=X.columns[0]):
        explain(model, X.drop(columns=X.columns[0]))
    with pytest.raises(ParameterError, match="'features' parameter"):
        Explainer.of(model.estimator, features=["a", "b"])


# -- global explanations in the model card ---------------------------------------------------


def test_registration_puts_mean_abs_shap_and_dependence_plots_in_the_card(
    credit: tuple[Workspace, Dataset], credit_frame: pd.DataFrame
) -> None:
    from shipyard.registry.models import ModelRegistry
    from shipyard.registry.tracking import Tracker
    from shipyard.training.evaluation import evaluate
    from shipyard.training.splits import PrequentialSplit

    ws, dataset = credit
    split = PrequentialSplit(
        "2021-02-01", n_folds=1, delta_train=14, remove_known_compromised=False, columns=COLUMNS
    )
    evaluation = evaluate(
        credit_frame, FEATURES, make_config("lightgbm"), split, n_boot=0, keep_models=True
    )
    run_id = Tracker(ws).log_evaluation("explain-tests", "lightgbm", evaluation, params={}, tags={})
    result = evaluation.folds[0]
    fold = result.fold
    assert result.model is not None
    sample = credit_frame.iloc[fold.test]
    version = ModelRegistry(ws).register(
        DATASET,
        result.model,
        lineage=Lineage.of(dataset, VIEWS_REF, columns=COLUMNS).with_windows(
            train=(str(fold.train_start), str(fold.train_end)),
            evaluation=(str(fold.test_start), str(fold.test_end)),
        ),
        evaluation=evaluation,
        run_id=run_id,
        sample=sample,
    )
    markdown = version.card_path.read_text()
    page = version.card_html.read_text()
    assert f"## {GLOBAL_EXPLANATION_TITLE}" in markdown
    assert f"<h2>{GLOBAL_EXPLANATION_TITLE}</h2>" in page
    plots = version.card_path.parent / "plots"
    assert (plots / "shap_importance.png").is_file()
    assert (plots / "shap_dependence_1.png").is_file()
    assert "](plots/shap_dependence_1.png)" in markdown
    section = page.split(f"<h2>{GLOBAL_EXPLANATION_TITLE}</h2>")[1].split("<h2>")[0]
    assert section.count('src="data:image/png;base64,') == 4  # importance, 3 dependence plots
    # the card states the subsample and ranks features as the explanation of those rows does
    assert f"{NATIVE_ROWS} rows drawn at random (seed 0) from the {len(sample):,}" in markdown
    rows = np.sort(np.random.default_rng(0).choice(len(sample), NATIVE_ROWS, replace=False))
    importance = explain(result.model, sample.iloc[rows]).mean_abs()
    cells = [line.split("|")[1].strip() for line in markdown.splitlines() if line[:2] == "| "]
    listed = [cell for cell in cells if cell in importance]
    assert listed == list(importance)


def test_a_global_explanation_of_an_unexplainable_model_says_why(tmp_path: Path) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    X = np.random.default_rng(0).normal(size=(50, 3))
    knn = KNeighborsClassifier().fit(X, (X[:, 0] > 0).astype(int))
    section = global_explanation(knn, X, tmp_path, title="knn")
    assert "KNeighborsClassifier" in section.markdown and "No global explanation" in section.html
    assert not list(tmp_path.iterdir())


def test_a_global_explanation_takes_every_row_when_few_and_refuses_bad_limits(
    trained: Trained, tmp_path: Path
) -> None:
    model, X = trained[0]["lightgbm"], trained[1].head(50)
    section = global_explanation(model, X, tmp_path, title="t", top=2)
    assert "all 50 evaluation rows given" in section.markdown
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "shap_dependence_1.png",
        "shap_dependence_2.png",
        "shap_importance.png",
    ]
    with pytest.raises(ParameterError, match="'max_rows' parameter"):
        global_explanation(model, X, tmp_path, title="t", max_rows=0)
    with pytest.raises(ParameterError, match="'top' parameter"):
        global_explanation(model, X, tmp_path, title="t", top=-1)
