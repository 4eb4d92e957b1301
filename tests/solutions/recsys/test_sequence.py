"""The sequence-aware model learns what follows what, and is deterministic for a seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import ParameterError
from shipyard.solutions.recsys.data import FitData
from shipyard.solutions.recsys.sequence import SequenceRecommender

N_ITEMS = 20
TINY = {
    "dim": 16,
    "blocks": 1,
    "heads": 2,
    "max_len": 8,
    "dropout": 0.0,
    "learning_rate": 0.01,
    "batch_size": 16,
    "max_epochs": 25,
    "patience": 25,
}


def cycles(n_users: int = 40, seed: int = 0) -> FitData:
    """Every user watches items in the cycle 0, 1, ..., 19, 0, ... from a random start."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        start, length = int(rng.integers(N_ITEMS)), int(rng.integers(10, 18))
        rows += [(user, (start + s) % N_ITEMS, 4.0, 1_000_000 + 60 * s) for s in range(length)]
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "time"])
    items = pd.DataFrame(
        {
            "item": np.arange(N_ITEMS),
            "movie_id": np.arange(N_ITEMS),
            "title": [f"m{i}" for i in range(N_ITEMS)],
            "year": 2000,
            "genres": "Drama",
        }
    )
    return FitData(frame, n_users, N_ITEMS, items)


@pytest.fixture(scope="module")
def data() -> FitData:
    return cycles()


@pytest.fixture(scope="module")
def fitted(data: FitData) -> SequenceRecommender:
    model = SequenceRecommender(**TINY, negatives=0)  # type: ignore[arg-type]
    model.fit(data)
    return model


def test_the_next_item_after_a_users_history_scores_highest(
    data: FitData, fitted: SequenceRecommender
) -> None:
    users = np.arange(data.n_users, dtype=np.int64)
    scores = fitted.score(users)
    assert scores.shape == (data.n_users, N_ITEMS)
    last = data.interactions.groupby("user")["item"].last().to_numpy()
    predicted = scores.argmax(axis=1)
    assert np.mean(predicted == (last + 1) % N_ITEMS) >= 0.9
    assert fitted.best_ndcg_ > 0.5
    assert 1 <= fitted.epochs_ <= TINY["max_epochs"]


def test_the_same_seed_gives_the_same_scores_with_a_sampled_softmax(data: FitData) -> None:
    settings = {**TINY, "max_epochs": 3, "negatives": 5, "refit": True}
    first, second = SequenceRecommender(**settings), SequenceRecommender(**settings)  # type: ignore[arg-type]
    first.fit(data)
    second.fit(data)
    users = np.arange(data.n_users, dtype=np.int64)
    np.testing.assert_array_equal(first.score(users), second.score(users))


@pytest.mark.parametrize(
    ("params", "name"),
    [({"heads": 3}, "heads"), ({"negatives": -1}, "negatives"), ({"max_len": 0}, "max_len")],
)
def test_bad_settings_are_refused_naming_the_parameter(
    data: FitData, params: dict[str, object], name: str
) -> None:
    with pytest.raises(ParameterError, match=name):
        SequenceRecommender(**{**TINY, **params}).fit(data)  # type: ignore[arg-type]


def test_scoring_an_unfitted_model_is_refused() -> None:
    with pytest.raises(ParameterError, match="fit"):
        SequenceRecommender().score(np.array([0]))
