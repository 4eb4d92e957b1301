"""The served MovieLens recommender: fit on a split, choose the session weight, register."""

from __future__ import annotations

import numpy as np
import pytest

from shipyard.errors import ParameterError
from shipyard.registry.models import ModelRegistry
from shipyard.solutions.recsys.data import Split, temporal_split
from shipyard.solutions.recsys.served import (
    choose_session_weight,
    fit_recommender,
    interactions_frame,
    register_recommender,
)
from shipyard.training.recommend import Recommender
from shipyard.workspace import Workspace
from tests.solutions.recsys.test_metrics import tiny_movies

FAST = {"factors": 8, "iterations": 3, "candidates": 50}


@pytest.fixture(scope="module")
def split() -> Split:
    return temporal_split(tiny_movies(), "all")


@pytest.fixture(scope="module")
def fitted(split: Split) -> Recommender:
    return fit_recommender(split.fitting("test"), user_ids=split.user_ids, **FAST)


def test_the_fitted_model_speaks_movielens_ids_and_excludes_what_was_watched(
    split: Split, fitted: Recommender
) -> None:
    data = split.fitting("test")
    user = int(data.interactions["user"].iloc[0])
    watched = {str(split.item_ids[i]) for i in data.interactions.query(f"user == {user}")["item"]}
    (answer,) = fitted.recommend([str(split.user_ids[user])], k=5)
    assert answer["source"] == "personal" and len(answer["items"]) == 5
    ids = [e["item"] for e in answer["items"]]
    assert set(ids) <= {str(i) for i in split.item_ids} and not set(ids) & watched
    titles = dict(zip(split.items["movie_id"].astype(str), split.items["title"], strict=True))
    assert [e["title"] for e in answer["items"]] == [titles[i] for i in ids]
    assert fitted.index is not None and fitted.index.kind == "hnsw"
    # seeded: the same data and seed give the same answer
    again = fit_recommender(split.fitting("test"), user_ids=split.user_ids, **FAST)
    assert again.recommend([str(split.user_ids[user])], k=5) == [answer]


def test_user_ids_must_name_every_user(split: Split) -> None:
    with pytest.raises(ParameterError, match="'user_ids' parameter of fit_recommender"):
        fit_recommender(split.fitting("test"), user_ids=["1", "2"], **FAST)


def test_the_session_weight_is_scored_on_validation_for_each_weight(split: Split) -> None:
    scores = choose_session_weight(split, (0.0, 4.0), **FAST)
    assert list(scores) == [0.0, 4.0] and all(0.0 <= v <= 1.0 for v in scores.values())
    assert scores[0.0] != scores[4.0]  # the session moved the queries


def test_registering_names_the_data_and_the_rules_and_serves_the_same_answers(
    workspace: Workspace, split: Split, fitted: Recommender
) -> None:
    frame = interactions_frame(split.fitting("test"), split.user_ids)
    assert frame["time"].is_monotonic_increasing and frame["user"].iloc[0] in {
        str(u) for u in split.user_ids
    }
    mv = register_recommender(
        workspace,
        fitted,
        metrics={"test_ndcg_at_10": 0.25},
        interactions=frame,
        params=FAST,
        split_note="tiny ratings, fitted on train + validation",
    )
    assert "champion" in mv.aliases and mv.model_type == "recommender"
    assert mv.lineage.dataset == "movielens" and len(mv.lineage.dataset_hash) == 64
    assert mv.params["factors"] == 8 and mv.params["index"] == "hnsw"
    card = mv.card_path.read_text()
    assert "Cold start" in card and "session" in card and "| test_ndcg_at_10 | 0.2500 |" in card
    run = ModelRegistry(workspace).tracker.client.get_run(mv.run_id)
    assert run.data.metrics["test_ndcg_at_10"] == 0.25 and run.data.params["items"] == "150"
    served = ModelRegistry(workspace).load("movies", "champion")
    users = [str(u) for u in split.user_ids[:3]]
    batch = np.array([[u, "", "4", "", ""] for u in users], dtype=object)
    assert list(served.predict(batch)) == fitted.recommend(users, k=4)
    assert mv.metrics["test_ndcg_at_10"] == 0.25  # the version's recorded metrics, no Evaluation
    assert "Not applicable: the model answers a JSON value per row" in card
    # drift monitoring has no numeric inputs or scores to compare: it says so, naming the inputs
    from shipyard.monitoring.reference import reference_profile

    with pytest.raises(ParameterError, match=r"takes string inputs \(user, session, k"):
        reference_profile(workspace, "movies", mv.version)
