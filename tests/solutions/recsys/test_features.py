"""The two-stage ranker's features: feature-store counts are point-in-time exact at each
user's moment, and nothing after that moment reaches a feature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import ParameterError
from shipyard.solutions.recsys.data import FitData, Movies, Split, temporal_split
from shipyard.solutions.recsys.features import (
    FEATURE_NAMES,
    WINDOWS_DAYS,
    pair_features,
    write_interactions,
)
from shipyard.workspace import Workspace

DAY = 86_400
GENRES = ("Action", "Comedy", "Drama", "Horror")


def tiny_movies(seed: int = 0, n_users: int = 120, n_items: int = 80) -> Movies:
    """A few thousand interactions with skewed popularity that drifts over a year."""
    rng = np.random.default_rng(seed)
    rows = []
    start = 1_300_000_000
    for user in range(n_users):
        n = int(rng.integers(6, 40))
        begin = start + int(rng.integers(0, 300)) * DAY
        times = np.sort(begin + rng.integers(0, 60 * DAY, size=n))
        for t in times:
            # popular items drift with time: the favourite block moves every 50 days
            shift = (t - start) // (50 * DAY) * 10
            item = int((shift + rng.zipf(1.6)) % n_items) + 1
            rows.append((user + 1, item, float(rng.integers(1, 11)) / 2, int(t)))
    ratings = pd.DataFrame(rows, columns=["user", "item", "rating", "time"])
    ratings = ratings.drop_duplicates(["user", "item"]).reset_index(drop=True)
    items = pd.DataFrame(
        {
            "item": np.arange(1, n_items + 1, dtype=np.int64),
            "title": [f"movie {i}" for i in range(1, n_items + 1)],
            "year": 1980 + np.arange(n_items) % 35,
            "genres": [f"{GENRES[i % 4]}|{GENRES[(i // 4) % 4]}" for i in range(n_items)],
        }
    )
    return Movies(ratings, items)


@pytest.fixture(scope="module")
def split() -> Split:
    return temporal_split(tiny_movies(), "all")


@pytest.fixture(scope="module")
def featured(
    split: Split, tmp_path_factory: pytest.TempPathFactory
) -> tuple[FitData, pd.DataFrame]:
    data = split.fitting("validation")
    workspace = Workspace.init(tmp_path_factory.mktemp("features") / "ws")
    try:
        version = write_interactions(workspace, data)
        users = np.repeat(np.arange(data.n_users), data.n_items)
        items = np.tile(np.arange(data.n_items), data.n_users)
        pairs = pd.DataFrame({"user": users, "item": items})
        frame = pair_features(workspace, version, data, pairs)
    finally:
        workspace.close()
    return data, frame


def test_item_popularity_is_counted_over_windows_ending_at_each_users_moment(
    featured: tuple[FitData, pd.DataFrame],
) -> None:
    data, frame = featured
    moments = data.last_time()
    times = data.interactions["time"].to_numpy()
    items = data.interactions["item"].to_numpy()
    rng = np.random.default_rng(1)
    for row in rng.choice(len(frame), size=300, replace=False):
        user, item = int(frame["user"].iloc[row]), int(frame["item"].iloc[row])
        t = moments[user]
        mine = times[items == item]
        assert frame["ITEM_INTERACTIONS"].iloc[row] == np.sum(mine <= t)
        for n in WINDOWS_DAYS:
            expected = np.sum((mine <= t) & (mine > t - n * DAY))
            assert frame[f"ITEM_INTERACTIONS_{n}D"].iloc[row] == expected


def test_user_activity_and_item_age_use_nothing_after_the_users_moment(
    featured: tuple[FitData, pd.DataFrame],
) -> None:
    data, frame = featured
    moments = data.last_time()
    interactions = data.interactions
    first = interactions.groupby("item")["time"].min()
    for user in (0, 7, 33):
        rows = frame[frame["user"] == user]
        mine = interactions[interactions["user"] == user]["time"].to_numpy()
        assert (rows["USER_INTERACTIONS"] == len(mine)).all()
        week = np.sum(mine > moments[user] - 7 * DAY)
        assert (rows["USER_INTERACTIONS_7D"] == week).all()
        later = rows["item"].map(first).fillna(np.inf).to_numpy() > moments[user]
        assert later.any(), "the tiny data has items first seen after this user's moment"
        assert (rows["item_age_days"].to_numpy()[later] == -1.0).all()
        assert (rows["item_age_days"].to_numpy()[~later] >= 0.0).all()


def test_every_feature_is_present_and_similarities_are_cosines(
    featured: tuple[FitData, pd.DataFrame],
) -> None:
    _, frame = featured
    assert set(FEATURE_NAMES) <= set(frame.columns)
    for name in ("genre_affinity", "last_1_similarity", "last_20_similarity"):
        assert frame[name].between(0.0, 1.0 + 1e-6).all(), name
    assert frame["genre_affinity"].max() > 0.5


def test_pairs_without_an_item_column_are_refused(split: Split) -> None:
    data = split.fitting("validation")
    with pytest.raises(ParameterError, match="pairs"):
        pair_features(None, 1, data, pd.DataFrame({"user": [0]}))  # type: ignore[arg-type]
