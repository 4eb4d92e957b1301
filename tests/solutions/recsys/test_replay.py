"""The offline session replay: every test step replayed in process through the served
Recommender, scored against a recount of the module's definitions, with and without the
session signal."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shipyard.errors import ParameterError
from shipyard.solutions.recsys.data import Split, temporal_split
from shipyard.solutions.recsys.replay import ReplayResult, replay_sessions
from shipyard.training.recommend import Recommender
from tests.solutions.recsys.test_metrics import tiny_movies


def factor_recommender(split: Split, weight: float, factors: int = 8) -> Recommender:
    """A Recommender over a truncated SVD of train + validation (MovieLens-style ids)."""
    import scipy.sparse.linalg as sla

    matrix = split.fitting("test").matrix().astype(np.float64)
    u, s, vt = sla.svds(matrix, k=factors, v0=np.ones(min(matrix.shape)))
    root = np.sqrt(s)
    return Recommender(
        item_ids=[str(i) for i in split.item_ids],
        item_vectors=(vt.T * root).astype(np.float32),
        user_ids=[str(i) for i in split.user_ids],
        user_vectors=(u * root).astype(np.float32),
        seen_indptr=matrix.indptr.astype(np.int64),
        seen_indices=matrix.indices.astype(np.int32),
        popularity=np.asarray(matrix.sum(axis=0)).ravel().astype(np.float32),
        session_weight=weight,
        session_length=5,
    )


@pytest.fixture(scope="module")
def split() -> Split:
    return temporal_split(tiny_movies(n_users=60), "all")


@pytest.fixture(scope="module")
def model(split: Split) -> Recommender:
    return factor_recommender(split, weight=2.0)


@pytest.fixture(scope="module")
def result(model: Recommender, split: Split) -> ReplayResult:
    return replay_sessions(model, split, buckets=(0, 1, 3), n_boot=200)


def _recount(model: Recommender, split: Split, user: int, step: int) -> tuple[float, float]:
    """hit@10 and NDCG@10 of one step, from the module doc's definitions."""
    items = split.held_out("test").query("user == @user")["item"].to_numpy()
    ids = [str(i) for i in split.item_ids[items]]
    session = ids[max(0, step - model.session_length) : step]
    answer = model.recommend([str(split.user_ids[user])], sessions=[session], k=10)[0]
    listed = [entry["item"] for entry in answer["items"]]
    remaining = set(ids[step:])
    gains = [1 / math.log2(rank + 2) for rank, item in enumerate(listed) if item in remaining]
    ideal = sum(1 / math.log2(rank + 2) for rank in range(min(10, len(remaining))))
    return float(ids[step] in listed), sum(gains) / ideal


def test_every_step_is_scored_as_the_module_defines(
    result: ReplayResult, model: Recommender, split: Split
) -> None:
    steps = result.steps
    test = split.held_out("test")
    assert len(steps) == len(test) and result.overall.users == test["user"].nunique()
    # each user's steps are 0 .. n-1 in order
    counts = test.groupby("user").size()
    assert (steps.groupby("user")["step"].max() + 1).equals(counts)
    without = factor_recommender(split, weight=0.0)
    rng = np.random.default_rng(0)
    for row in steps.iloc[rng.choice(len(steps), size=25, replace=False)].itertuples():
        assert (row.hit_with, row.ndcg_with) == pytest.approx(
            _recount(model, split, row.user, row.step)
        )
        assert (row.hit_without, row.ndcg_without) == pytest.approx(
            _recount(without, split, row.user, row.step)
        )


def test_the_session_changes_lists_after_the_first_step_only(result: ReplayResult) -> None:
    steps = result.steps
    first = steps[steps["step"] == 0]
    assert (first["ndcg_with"] == first["ndcg_without"]).all()
    assert (first["hit_with"] == first["hit_without"]).all()
    later = steps[steps["step"] > 0]
    assert (later["ndcg_with"] != later["ndcg_without"]).any()


def test_buckets_average_users_and_the_table_has_a_row_each(result: ReplayResult) -> None:
    assert [b.bucket for b in result.buckets] == ["0", "1-2", "3+"]
    steps = result.steps
    for bucket in result.buckets:
        part = steps[steps["bucket"] == bucket.bucket]
        per_user = part.groupby("user")[["ndcg_with", "ndcg_without"]].mean()
        assert bucket.steps == len(part) and bucket.users == len(per_user)
        assert bucket.with_session["ndcg"].estimate == pytest.approx(per_user["ndcg_with"].mean())
        difference = bucket.difference["ndcg"]
        assert difference.estimate == pytest.approx(
            (per_user["ndcg_with"] - per_user["ndcg_without"]).mean()
        )
        assert difference.low <= difference.estimate <= difference.high
    table = result.table().splitlines()
    assert len(table) == 2 + len(result.buckets) + 1 and table[-1].startswith("| all |")
    assert "weight 0 vs 2" in result.describe()


def test_same_inputs_same_numbers_and_a_zero_weight_is_noted(
    model: Recommender, split: Split, result: ReplayResult
) -> None:
    again = replay_sessions(model, split, buckets=(0, 1, 3), n_boot=200)
    assert again.steps.equals(result.steps) and again.table() == result.table()
    flat = replay_sessions(model, split, weight=0.0, users=5, n_boot=50)
    assert flat.steps["ndcg_with"].equals(flat.steps["ndcg_without"])
    assert any("weight is 0" in note for note in flat.notes)
    assert model.session_weight == 2.0  # the replay works on copies


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"weight": -1.0}, "'weight'"),
        ({"k": 0}, "'k'"),
        ({"session_length": 0}, "'session_length'"),
        ({"users": 0}, "'users'"),
        ({"buckets": (1, 5)}, "'buckets'"),
        ({"buckets": (0, 5, 5)}, "'buckets'"),
    ],
)
def test_bad_parameters_are_named(
    model: Recommender, split: Split, arguments: dict[str, object], name: str
) -> None:
    with pytest.raises(ParameterError, match=name):
        replay_sessions(model, split, **arguments)  # type: ignore[arg-type]
