"""The recommendation protocol: the per-user temporal split, NDCG@k and recall@k on
hand-computed cases, seen items never recommended, bootstrap intervals, the tuning loop."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import ParameterError
from shipyard.solutions.recsys.data import FitData, Movies, Split, load_movielens, temporal_split
from shipyard.solutions.recsys.metrics import (
    bootstrap_mean,
    evaluate,
    ndcg_at_k,
    paired_difference,
    recall_at_k,
    top_k,
)
from shipyard.solutions.recsys.tuning import tune


def tiny_movies(n_users: int = 120, n_items: int = 150, clusters: int = 4, seed: int = 0) -> Movies:
    """A few thousand ratings with taste clusters (so personal models beat popularity):
    each user draws 80% of their items from their cluster, popularity-skewed."""
    rng = np.random.default_rng(seed)
    item_cluster = np.arange(n_items) % clusters
    weight = 1.0 / (1.0 + np.arange(n_items)) ** 0.7
    rows = []
    for user in range(n_users):
        mine = item_cluster == user % clusters
        p = np.where(mine, 4.0, 0.25) * weight
        count = int(rng.integers(8, 40))
        items = rng.choice(n_items, size=count, replace=False, p=p / p.sum())
        times = 1_000_000 + np.sort(rng.integers(0, 10_000_000, size=count))
        ratings = rng.integers(1, 11, size=count) / 2.0
        rows += [
            (user + 1, int(i) + 10, float(r), int(t))
            for i, r, t in zip(items, ratings, times, strict=True)
        ]
    ratings_frame = pd.DataFrame(rows, columns=["user", "item", "rating", "time"])
    items_frame = pd.DataFrame(
        {
            "item": np.arange(n_items) + 10,
            "title": [f"movie {i}" for i in range(n_items)],
            "year": 1990 + np.arange(n_items) % 30,
            "genres": [f"G{c}|Drama" for c in item_cluster],
        }
    )
    return Movies(ratings_frame, items_frame)


@pytest.fixture(scope="module")
def tiny_split() -> Split:
    return temporal_split(tiny_movies(), "all")


def _movies(rows: list[tuple[int, int, float, int]]) -> Movies:
    ratings = pd.DataFrame(rows, columns=["user", "item", "rating", "time"])
    items = pd.DataFrame({"item": sorted(ratings["item"].unique())})
    items["title"], items["year"], items["genres"] = "t", 2000, "Drama"
    return Movies(ratings, items)


def test_split_holds_out_each_users_latest_interactions_by_time() -> None:
    # User 1: 10 interactions (times shuffled); user 2: 4 (trains only); ties broken by item.
    rows = [(1, 100 + i, 3.0, t) for i, t in enumerate([9, 3, 7, 1, 5, 0, 8, 2, 6, 4])]
    rows += [(2, 100 + i, 3.0, 50) for i in range(4)]
    split = temporal_split(_movies(rows), "all")
    item_of_time = {t: i for i, t in enumerate([9, 3, 7, 1, 5, 0, 8, 2, 6, 4])}
    assert sorted(split.test["time"]) == [8, 9]
    assert sorted(split.validation["time"]) == [6, 7]
    assert len(split.train) == 6 + 4
    assert set(split.test["user"]) == {0} and set(split.validation["user"]) == {0}
    # Dense ids map back to the MovieLens ids.
    test_items = split.item_ids[split.test["item"].to_numpy()]
    assert sorted(test_items) == sorted(100 + item_of_time[t] for t in (8, 9))
    assert list(split.user_ids) == [1, 2]
    assert list(split.truth("test")) == [0]
    assert len(split.fitting("test").interactions) == 12
    assert len(split.fitting("validation").interactions) == 10


def test_positive_variant_drops_low_ratings_before_splitting() -> None:
    rows = [(1, 100 + i, 4.0 if i % 2 else 2.0, i) for i in range(12)]
    split = temporal_split(_movies(rows), "positive")
    kept = pd.concat([split.train, split.validation, split.test])
    assert len(kept) == 6 and (kept["rating"] >= 4).all()
    assert split.n_items == 6
    with pytest.raises(ParameterError, match="'variant'"):
        temporal_split(_movies(rows), "likes")
    with pytest.raises(ParameterError, match="'stage'"):
        split.truth("train")


def test_movielens_split_sizes() -> None:
    split = temporal_split(load_movielens(), "all")
    assert (len(split.train), len(split.validation), len(split.test)) == (59_998, 20_003, 20_003)
    assert (split.n_users, split.n_items) == (671, 9_066)
    # Nothing held out precedes that user's fitting data.
    last_train = split.train.groupby("user")["time"].max()
    first_test = split.test.groupby("user")["time"].min()
    assert (last_train.loc[first_test.index] <= first_test).all()


def test_ndcg_and_recall_on_hand_computed_lists() -> None:
    recommended = np.array([[5, 1, 7, 2], [3, 4, 8, 9]], dtype=np.int64)
    relevant = [np.array([1, 2, 6]), np.array([9])]
    ndcg = ndcg_at_k(recommended, relevant, k=4)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg[0] == pytest.approx(dcg / ideal)
    assert ndcg[1] == pytest.approx((1 / math.log2(5)) / 1.0)
    recall = recall_at_k(recommended, relevant, k=4)
    assert recall.tolist() == pytest.approx([2 / 3, 1.0])
    # The denominator is min(k, relevant): 3 relevant items, k = 2, one hit -> 0.5.
    assert recall_at_k(recommended, relevant, k=2)[0] == pytest.approx(0.5)


def test_top_k_excludes_seen_items_and_breaks_ties_by_index() -> None:
    import scipy.sparse as sp

    scores = np.array([[1.0, 5.0, 5.0, 3.0, 0.0]], dtype=np.float32)
    seen = sp.csr_matrix(np.array([[0, 0, 0, 0, 0], [0, 1, 0, 0, 0]], dtype=np.float32))
    assert top_k(scores.copy(), None, np.array([0]), 3).tolist() == [[1, 2, 3]]
    assert top_k(scores.copy(), seen, np.array([1]), 3).tolist() == [[2, 3, 0]]
    with pytest.raises(ParameterError, match="'k'"):
        top_k(scores, None, np.array([0]), 0)


class _SeenFirst:
    """Scores every item a user saw highest: evaluation must still never recommend them."""

    def fit(self, data: FitData) -> None:
        self.matrix = data.matrix()

    def score(self, users: Any) -> Any:
        return self.matrix[users].toarray() * 100.0 + np.linspace(1, 0, self.matrix.shape[1])


def test_evaluate_never_recommends_seen_items(tiny_split: Split) -> None:
    result = evaluate(_SeenFirst(), tiny_split, "validation")
    seen = tiny_split.fitting("validation").matrix()
    for user, items in zip(result.users, result.recommended, strict=True):
        assert not seen[int(user), items].toarray().any()
    assert result.users.tolist() == sorted(tiny_split.truth("validation"))
    assert 0.0 <= result.ndcg.mean() <= 1.0


def test_bootstrap_intervals_cover_the_mean_and_repeat_for_a_seed() -> None:
    values = np.random.default_rng(1).random(300)
    first, again = bootstrap_mean(values), bootstrap_mean(values)
    assert first == again
    assert first.low < values.mean() < first.high
    assert first.high - first.low < 0.1
    assert math.isnan(bootstrap_mean(values, n_boot=0).low)
    absolute, relative = paired_difference(values, values * 1.2)
    assert absolute.low > 0 and relative.estimate == pytest.approx(0.2)
    with pytest.raises(ParameterError, match="'b'"):
        paired_difference(values, values[:10])
    with pytest.raises(ParameterError, match="'values'"):
        bootstrap_mean(np.array([]))


class _Shift:
    """Popularity plus ``bias`` times an item's index: the grid's best setting is known."""

    def __init__(self, bias: float) -> None:
        self.bias = bias

    def fit(self, data: FitData) -> None:
        self.counts = np.asarray(data.matrix().sum(axis=0)).ravel()
        self.fits = getattr(self, "fits", 0) + 1

    def score(self, users: Any) -> Any:
        row = self.counts + self.bias * np.arange(len(self.counts))
        return np.tile(row, (len(users), 1))


def test_tune_chooses_on_validation_and_tests_the_refit_once(tiny_split: Split) -> None:
    lines: list[str] = []
    tuned = tune(
        "shift", lambda p: _Shift(**p), [{"bias": 10.0}, {"bias": 0.0}], tiny_split,
        progress=lines.append,
    )  # fmt: skip
    assert [t.params for t in tuned.trials] == [{"bias": 10.0}, {"bias": 0.0}]
    best = max(tuned.trials, key=lambda t: t.ndcg)
    assert tuned.params == best.params == {"bias": 0.0}
    assert tuned.validation.ndcg.mean() == pytest.approx(best.ndcg)
    assert tuned.test.stage == "test" and tuned.validation.stage == "validation"
    assert isinstance(tuned.scorer, _Shift) and tuned.scorer.fits == 1
    assert len(lines) == 2 and "shift" in lines[0]
    with pytest.raises(ParameterError, match="'grid'"):
        tune("shift", lambda p: _Shift(**p), [], tiny_split)
