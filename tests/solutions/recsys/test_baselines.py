"""The tuned baselines: each scorer's maths on tiny matrices, seeds, parameter errors, and the
tuning of all five through the protocol on a few thousand clustered interactions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import ParameterError
from shipyard.solutions.recsys.baselines import (
    ALS,
    BASELINES,
    BPR,
    EASE,
    GRIDS,
    QUICK_GRIDS,
    ItemKNN,
    MostPopular,
    search,
    tune_baselines,
)
from shipyard.solutions.recsys.data import FitData, Split, temporal_split
from shipyard.solutions.recsys.tuning import Tuned
from tests.solutions.recsys.test_metrics import tiny_movies

DAY = 86_400


def _fit_data(rows: list[tuple[int, int, int]], n_users: int, n_items: int) -> FitData:
    """(user, item, time) rows as dense fitting data."""
    frame = pd.DataFrame(rows, columns=["user", "item", "time"]).assign(rating=4.0)
    items = pd.DataFrame({"item": np.arange(n_items)})
    return FitData(frame[["user", "item", "rating", "time"]], n_users, n_items, items)


@pytest.fixture(scope="module")
def split() -> Split:
    return temporal_split(tiny_movies(), "all")


@pytest.fixture(scope="module")
def tuned(split: Split) -> dict[str, Tuned]:
    grids: dict[str, list[dict[str, Any]]] = {
        "most-popular": [{"window_days": None}, {"window_days": 30}],
        "item-knn": [{"neighbours": 20, "shrink": 0}, {"neighbours": 50, "shrink": 10}],
        "ease": [{"l2": 10.0}, {"l2": 100.0}],
        "als": [{"factors": 8, "regularization": 0.1, "alpha": 5.0, "iterations": 5}],
        "bpr": [{"factors": 8, "learning_rate": 0.05, "iterations": 30}],
    }
    return tune_baselines(split, grids=grids)


def test_most_popular_counts_all_time_or_the_window_before_each_user() -> None:
    rows = [(0, 0, 0), (1, 0, 1), (2, 1, 100 * DAY), (1, 1, 100 * DAY), (0, 2, 101 * DAY)]
    data = _fit_data(rows, n_users=3, n_items=3)
    everything = MostPopular()
    everything.fit(data)
    assert everything.score(np.array([0, 2]))[0].tolist() == [2.0, 2.0, 1.0]
    recent = MostPopular(window_days=30)
    recent.fit(data)
    scores = recent.score(np.array([0, 1]))
    # User 0 is asked at day 101: items 1 (twice) and 2 are recent, item 0 is not.
    assert np.argsort(-scores[0]).tolist() == [1, 2, 0]
    # User 1 is asked at day 100: item 2 (day 101) is in the future and does not count.
    assert scores[1, 2] < 1.0 <= scores[1, 1]


def test_item_knn_is_the_cosine_and_keeps_k_neighbours() -> None:
    rows = [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 2, 0), (2, 0, 0), (2, 1, 0), (2, 3, 0)]
    data = _fit_data(rows, n_users=3, n_items=4)
    matrix = data.matrix().toarray()
    norms = np.sqrt(matrix.sum(axis=0))
    cosine = matrix.T @ matrix / np.outer(norms, norms)
    np.fill_diagonal(cosine, 0.0)
    full = ItemKNN(neighbours=10, shrink=0.0)
    full.fit(data)
    np.testing.assert_allclose(full.similarity_.toarray(), cosine, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full.score(np.array([1])), [matrix[1] @ cosine], rtol=1e-5)
    one = ItemKNN(neighbours=1, shrink=0.0)
    one.fit(data)
    assert (np.diff(one.similarity_.tocsc().indptr) <= 1).all()
    shrunk = ItemKNN(neighbours=10, shrink=5.0)
    shrunk.fit(data)
    assert (shrunk.similarity_.toarray() < full.similarity_.toarray() + 1e-9).all()


def test_ease_is_the_closed_form_and_never_recommends_absent_items() -> None:
    rng = np.random.default_rng(0)
    dense = rng.random((30, 6)) < 0.4
    rows = [(int(u), int(i), 0) for u, i in zip(*np.nonzero(dense), strict=True)]
    data = _fit_data(rows, n_users=30, n_items=7)  # item 6 is in no interaction
    model = EASE(l2=3.0)
    model.fit(data)
    x = dense.astype(float)
    inverse = np.linalg.inv(x.T @ x + 3.0 * np.eye(6))
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    scores = model.score(np.arange(30))
    np.testing.assert_allclose(scores[:, :6], x @ weights, rtol=1e-4, atol=1e-5)
    assert np.isneginf(scores[:, 6]).all()


@pytest.mark.parametrize("model", [ALS, BPR])
def test_factor_models_repeat_for_a_seed(model: Any, split: Split) -> None:
    data = split.fitting("validation")
    users = np.arange(5)
    first, again = model(factors=4, iterations=3), model(factors=4, iterations=3)
    first.fit(data)
    again.fit(data)
    scores = first.score(users)
    assert scores.shape == (5, split.n_items) and scores.dtype == np.float32
    np.testing.assert_array_equal(scores, again.score(users))


def test_bad_settings_name_the_parameter() -> None:
    with pytest.raises(ParameterError, match="'l2' parameter of EASE"):
        EASE(l2=0)
    with pytest.raises(ParameterError, match="'neighbours' parameter of ItemKNN"):
        ItemKNN(neighbours=0)
    with pytest.raises(ParameterError, match=r"'weighting'.*'none' or 'bm25'"):
        ALS(weighting="tfidf")
    with pytest.raises(ParameterError, match="'window_days'"):
        MostPopular(window_days=-1)
    with pytest.raises(ParameterError, match=r"'params'.*'factor'"):
        BASELINES["bpr"]({"factor": 8})


def test_every_grid_setting_builds_a_scorer() -> None:
    assert set(GRIDS) == set(QUICK_GRIDS) == set(BASELINES)
    for name, grid in [*GRIDS.items(), *QUICK_GRIDS.items()]:
        for params in grid:
            assert hasattr(BASELINES[name](params), "fit")


def test_tune_baselines_tunes_all_five_on_validation(tuned: dict[str, Tuned]) -> None:
    assert list(tuned) == ["most-popular", "item-knn", "ease", "als", "bpr"]
    for result in tuned.values():
        best = max(result.trials, key=lambda t: t.ndcg)
        assert result.params == best.params
        assert result.test.stage == "test"
    # The data has taste clusters: every personal model beats popularity on test.
    popular = tuned["most-popular"].test.ndcg.mean()
    for name in ("item-knn", "ease", "als"):
        assert tuned[name].test.ndcg.mean() > popular, name


def test_tune_baselines_rejects_an_unknown_baseline(split: Split) -> None:
    with pytest.raises(ParameterError, match=r"'grids'.*'svd'"):
        tune_baselines(split, grids={"svd": [{}]})


def test_search_reports_results_timings_and_every_setting_tried() -> None:
    grids = {"most-popular": [{"window_days": None}, {"window_days": 90}]}
    lines: list[str] = []
    text = search(["positive"], grids, progress=lines.append)
    assert "### MovieLens, positive interactions: test on 659 users" in text
    assert "most-popular (best baseline)" in text
    assert "Search time (MovieLens (positive)" in text
    assert "| most-popular | window_days=90 |" in text
    assert len(lines) == 2
