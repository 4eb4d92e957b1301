"""The two-stage model: retrieval proposes unseen candidates, the ranker learns only from a
time slice of the fitting data, the same seed gives the same scores, and the grids tune."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import ParameterError
from shipyard.solutions.recsys.data import Split, temporal_split
from shipyard.solutions.recsys.metrics import evaluate
from shipyard.solutions.recsys.models import (
    GRIDS,
    NOT_A_CANDIDATE,
    OUR_MODELS,
    QUICK_GRIDS,
    Retrieval,
    TwoStage,
    split_for_ranker,
)
from tests.solutions.recsys.test_features import tiny_movies

SMALL = {"factors": 8, "iterations": 5, "candidates": 20, "popular": 10, "trees": 20}


@pytest.fixture(scope="module")
def split() -> Split:
    return temporal_split(tiny_movies(), "all")


@pytest.fixture(scope="module")
def fitted(split: Split) -> TwoStage:
    model = TwoStage(**SMALL)
    model.fit(split.fitting("validation"))
    return model


def test_the_ranker_learns_from_each_users_latest_fitting_interactions_only(split: Split) -> None:
    data = split.fitting("validation")
    history, targets = split_for_ranker(data, 0.2)
    frame = data.interactions
    for user, group in frame.groupby("user"):
        mine = history.interactions[history.interactions["user"] == user]
        held = targets.get(int(user), set())
        assert len(mine) + len(held) >= len(group.drop_duplicates("item"))
        if held:
            # the targets are the user's latest items: nothing kept is later than them
            latest_kept = mine["time"].max()
            target_times = group[group["item"].isin(held)]["time"]
            assert target_times.min() >= latest_kept
    validation_items = {
        (u, i) for u, i in zip(split.validation["user"], split.validation["item"], strict=True)
    }
    assert not validation_items & {(u, i) for u, items in targets.items() for i in items}


def test_retrieval_never_proposes_seen_items(split: Split) -> None:
    data = split.fitting("validation")
    retrieval = Retrieval(factors=8, iterations=5, candidates=20, popular=10)
    retrieval.fit(data)
    users = np.arange(data.n_users, dtype=np.int64)
    pairs = retrieval.retrieve(users)
    seen = data.matrix()
    assert not seen[pairs["user"].to_numpy(), pairs["item"].to_numpy()].any()
    assert pairs.groupby("user").size().min() >= 20


def test_candidates_rank_above_other_items_and_the_model_beats_chance(
    split: Split, fitted: TwoStage
) -> None:
    users = np.arange(split.n_users, dtype=np.int64)
    scores = fitted.score(users)
    assert scores.shape == (split.n_users, split.n_items)
    candidates = fitted.candidates_
    ranked = scores[candidates["user"], candidates["item"]]
    assert (ranked > NOT_A_CANDIDATE).all()
    assert (scores == NOT_A_CANDIDATE).sum() == scores.size - len(candidates)
    result = evaluate(fitted, split, "validation", fit=False)
    # random ranking of the ~80 items finds a held-out item in the top 10 far less often
    assert result.ndcg.mean() > 0.2
    assert 0.0 < fitted.candidate_recall(split.truth("validation")) <= 1.0


def test_retrieval_gives_the_same_candidates_and_scores_for_a_seed(split: Split) -> None:
    data = split.fitting("validation")
    users = np.arange(data.n_users, dtype=np.int64)
    frames = []
    for _ in range(2):
        retrieval = Retrieval(factors=8, iterations=5, candidates=20, popular=10, seed=3)
        retrieval.fit(data)
        frames.append(retrieval.retrieve(users))
    pd.testing.assert_frame_equal(frames[0], frames[1])


@pytest.mark.parametrize(
    ("params", "name"),
    [({"trees": 0}, "trees"), ({"candidates": -1}, "candidates"), ({"ranker_share": 1.5}, "")],
)
def test_bad_settings_are_refused_naming_the_parameter(
    split: Split, params: dict[str, object], name: str
) -> None:
    with pytest.raises(ParameterError, match=name or "ranker_share"):
        TwoStage(**{**SMALL, **params}).fit(split.fitting("validation"))  # type: ignore[arg-type]


def test_scoring_an_unfitted_model_is_refused() -> None:
    with pytest.raises(ParameterError, match="fit"):
        TwoStage().score(np.array([0]))


def test_every_model_has_a_grid_and_a_quick_grid() -> None:
    assert set(OUR_MODELS) == set(GRIDS) == set(QUICK_GRIDS)
    assert all(GRIDS[name] and QUICK_GRIDS[name] for name in OUR_MODELS)
