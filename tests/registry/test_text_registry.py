"""Text models through the registry: no feature views, no time windows, optional evaluation.

Real reviews (Rotten Tomatoes), a one-layer MiniLM classifier, a real workspace and MLflow.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.data.catalog import write_dataset
from shipyard.errors import IntegrityError, ParameterError
from shipyard.registry.gate import FairnessGate
from shipyard.registry.models import ModelRegistry
from shipyard.training.text import TEXT_SCHEMA, TextClassifier, evaluate_texts
from shipyard.training.trainers import TrainedModel, make_config
from shipyard.types import ColumnRoles, Lineage
from shipyard.workspace import Workspace
from tests.training.test_text import PLUMBING, rotten_tomatoes

ROLES = ColumnRoles(label="fresh", time="", entity="")


@pytest.fixture(scope="module")
def database(request: pytest.FixtureRequest) -> str:
    """One backend (the --database option): text registration is backend-neutral SQL, and
    the other registry modules cover both."""
    return str(request.config.getoption("--database"))


@pytest.fixture(scope="module")
def reviews() -> tuple[pd.DataFrame, np.ndarray]:
    return rotten_tomatoes(200)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """One fresh workspace for the module (each test registers its own model names)."""
    ws = Workspace.init(tmp_path_factory.mktemp("text-registry") / "ws")
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def text_model(reviews: tuple[pd.DataFrame, np.ndarray]) -> TrainedModel:
    X, y = reviews
    return make_config("minilm-classifier", **PLUMBING).fit(X[:150], y[:150])


def _lineage(ws: Workspace, X: pd.DataFrame, y: np.ndarray) -> Lineage:
    dataset = write_dataset(ws, "reviews", X.assign(fresh=y), time_column=None)
    return Lineage(
        dataset=dataset.name,
        dataset_version=dataset.version,
        dataset_hash=dataset.content_hash,
        views="",
        view_hashes={},
        features_hash="",
        columns=ROLES,
        protocol="first 150 reviews train, last 50 test",
    )


def _run(registry: ModelRegistry) -> str:
    client = registry.tracker.client
    run = client.create_run(registry.tracker.experiment_id("text-tests"))
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def test_a_text_model_registers_loads_and_serves_through_mlflow(
    workspace: Workspace, text_model: TrainedModel, reviews: tuple[pd.DataFrame, np.ndarray]
) -> None:
    import mlflow.pyfunc

    X, y = reviews
    test = X[150:]
    evaluation = evaluate_texts(text_model, test["text"].tolist(), y[150:], n_boot=200)
    registry = ModelRegistry(workspace)
    version = registry.register(
        "sentiment",
        text_model,
        lineage=_lineage(workspace, X, y),
        evaluation=evaluation,
        run_id=_run(registry),
        sample=test,
        reason="test",
    )
    assert version.framework == "torch-text" and version.input_schema == TEXT_SCHEMA
    assert version.lineage.views == "" and version.lineage.eval_window is None
    assert version.metrics["accuracy_mean"] == pytest.approx(evaluation.mean("accuracy"))
    low, high = version.metrics["roc_auc_ci_low"], version.metrics["roc_auc_ci_high"]
    assert low <= version.metrics["roc_auc_mean"] <= high
    card = version.card_path.read_text()
    assert "raw text in column `text`" in card and "| f1 |" in card
    assert "SHAP" not in card

    predictor = registry.load("sentiment", version.version)
    assert isinstance(predictor.model, TextClassifier)
    expected = text_model.predict_proba(test)
    np.testing.assert_array_equal(
        predictor.predict(test[["text"]].to_numpy(dtype=object)), expected
    )

    mlflow.set_tracking_uri(workspace.mlflow_tracking_uri)  # MLflow's own client, as users do
    theirs = mlflow.pyfunc.load_model(f"models:/sentiment/{version.version}").predict(test)
    np.testing.assert_array_equal(np.asarray(theirs), expected)

    with pytest.raises(ParameterError, match=r"is a text model .* no fairness gate can score"):
        registry.promote("sentiment", version.version, reason="t", fairness=[FairnessGate("g")])
    assert "champion" not in registry.aliases("sentiment")

    version.native_path.write_bytes(version.native_path.read_bytes() + b" ")
    with pytest.raises(IntegrityError, match="Refusing to load"):
        registry.load("sentiment", version.version)


def test_a_pretrained_pipeline_registers_without_evaluation_and_promotes_without_gate(
    workspace: Workspace, reviews: tuple[pd.DataFrame, np.ndarray]
) -> None:
    from shipyard.registry.gate import PromotionGate

    X, y = reviews
    baseline = make_config("tfidf-logreg", min_df=1).fit(X[:150], y[:150])
    registry = ModelRegistry(workspace)
    lineage = _lineage(workspace, X, y)
    first = registry.register(
        "baseline", baseline, lineage=lineage, evaluation=None, run_id=_run(registry), sample=X
    )
    assert first.metrics == {}
    card = first.card_path.read_text()
    assert "Not evaluated here: pretrained pipeline" in card
    assert "Features: no feature views (the model reads its input columns as sent)" in card
    assert f"output: probability that `{ROLES.label}` is 1" in card
    assert not (first.card_path.parent / "plots").exists()
    registry.promote("baseline", first.version, reason="first")
    second = registry.register(
        "baseline", baseline, lineage=lineage, evaluation=None, run_id=_run(registry), sample=X
    )
    with pytest.raises(ParameterError, match="no promotion gate can score it against the champion"):
        registry.promote("baseline", second.version, reason="gated", gate=PromotionGate())
    assert registry.aliases("baseline")["champion"] == first.version  # nothing changed
    registry.promote("baseline", second.version, reason="same data, compared by hand")
    assert registry.aliases("baseline")["champion"] == second.version
    scores = registry.load("baseline", "champion").predict(X[["text"]].to_numpy(dtype=object))
    np.testing.assert_array_equal(scores, baseline.predict_proba(X))


def test_a_tabular_model_still_needs_its_windows_and_views(
    workspace: Workspace, reviews: tuple[pd.DataFrame, np.ndarray]
) -> None:
    X, y = reviews
    tabular = make_config("logistic_regression").fit(pd.DataFrame({"n": X["text"].str.len()}), y)
    registry = ModelRegistry(workspace)
    with pytest.raises(ParameterError, match="must record its training and evaluation windows"):
        registry.register(
            "lengths",
            tabular,
            lineage=_lineage(workspace, X, y),
            evaluation=None,
            run_id="refused-before-any-run-is-read",
            sample=X,
        )
    assert registry.versions("lengths") == []


def test_evaluate_texts_gives_review_bootstrap_intervals(
    text_model: TrainedModel, reviews: tuple[pd.DataFrame, np.ndarray]
) -> None:
    X, y = reviews
    texts, labels = X["text"].tolist()[150:], y[150:]
    evaluation = evaluate_texts(text_model, texts, labels, n_boot=300, seed=1)
    scores = text_model.predict_proba(texts)
    fold = evaluation.folds[0]
    assert fold.metrics["accuracy"] == pytest.approx(np.mean((scores >= 0.5) == labels))
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    assert fold.metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert fold.metrics["average_precision"] == pytest.approx(
        average_precision_score(labels, scores)
    )
    assert fold.metrics["f1"] == pytest.approx(f1_score(labels, scores >= 0.5))
    for name, interval in evaluation.intervals.items():
        assert interval.low <= fold.metrics[name] <= interval.high, name
    assert (
        evaluation.intervals
        == evaluate_texts(text_model, texts, labels, n_boot=300, seed=1).intervals
    )
    with pytest.raises(Exception, match="one label per text"):
        evaluate_texts(text_model, texts, labels[:-1])


def test_the_card_of_a_pretrained_pipeline_answering_json_says_so() -> None:
    from shipyard.registry.card import ModelCard

    lineage = Lineage("", 0, "", "", {}, "", ColumnRoles("", "", ""), "pretrained pipelines")
    card = ModelCard(
        "entities", 1, "spacy-entities", {}, "run", lineage, ["text"], [], {},
        text_input=True, evaluated=False, json_output="entities",
    )  # fmt: skip
    for text in (card.markdown(), card.html()):
        assert "one JSON value per row in column" in text
        assert "Data set: none (a pretrained pipeline, not trained here)" in text
        assert "probability that" not in text


def test_curves_of_an_undated_test_set_are_labelled_as_such() -> None:
    import datetime as dt

    from shipyard.registry.plots import fold_label
    from shipyard.training.splits import Fold

    rows = np.arange(3, dtype=np.int64)
    day = dt.date(2018, 8, 8)
    assert fold_label(Fold(2, rows, rows, day, day, day, day)) == "fold 2 (test 2018-08-08)"
    undated: Any = None  # what evaluate_texts records: reviews have no dates
    assert fold_label(Fold(0, rows, rows, undated, undated, undated, undated)) == "test set"
