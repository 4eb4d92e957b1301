"""The served recommender in process: semantics, bad input, sessions, ranker, file format."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from shipyard.errors import SchemaError
from shipyard.features.online import open_online_store
from shipyard.training.recommend import (
    FILE,
    RankContext,
    Recommender,
    load_recommender,
    register_ranker,
    save_recommender,
)
from shipyard.workspace import Workspace

N_ITEMS, N_USERS, FACTORS = 300, 200, 8
GENRES = ("Action", "Comedy", "Drama")


def tiny_recommender(seed: int = 0, **options: Any) -> Recommender:
    """300 items ("100".."399", genres cycling, item 105 alone 'Noir'), 200 users ("u0"..),
    each with 10 seen items, random factors: fast to build, to register and to serve."""
    rng = np.random.default_rng(seed)
    seen = [np.sort(rng.choice(N_ITEMS, 10, replace=False)) for _ in range(N_USERS)]
    genres = [GENRES[i % 3] + ("|Drama" if i % 5 == 0 else "") for i in range(N_ITEMS)]
    genres[5] = "Noir"
    return Recommender(
        item_ids=[str(100 + i) for i in range(N_ITEMS)],
        item_vectors=rng.normal(size=(N_ITEMS, FACTORS)).astype(np.float32),
        user_ids=[f"u{i}" for i in range(N_USERS)],
        user_vectors=rng.normal(size=(N_USERS, FACTORS)).astype(np.float32),
        seen_indptr=np.arange(0, 10 * N_USERS + 1, 10, dtype=np.int64),
        seen_indices=np.concatenate(seen).astype(np.int32),
        popularity=rng.random(N_ITEMS).astype(np.float32),
        titles=[f"Movie {i}" for i in range(N_ITEMS)],
        genres=genres,
        **{"candidates": 20, **options},
    )


def exact_top(rec: Recommender, query: NDArray[np.float32], banned: set[str], k: int) -> list[str]:
    """The brute-force answer: every item scored, banned ones dropped."""
    scores = np.asarray(rec.item_vectors) @ query
    ids = [str(100 + i) for i in np.argsort(-scores, kind="stable")]
    return [i for i in ids if i not in banned][:k]


def seen_ids(rec: Recommender, user: int) -> set[str]:
    start, end = rec.seen_indptr[user], rec.seen_indptr[user + 1]
    return {str(100 + i) for i in rec.seen_indices[start:end]}


def items_of(answer: dict[str, Any]) -> list[str]:
    return [e["item"] for e in answer["items"]]


@pytest.fixture(scope="module")
def rec() -> Recommender:
    return tiny_recommender()


def test_a_known_user_gets_the_exact_top_k_of_unseen_items(rec: Recommender) -> None:
    # candidates (20) are fewer than the 10 seen + 10 asked: the exact fallback must answer
    answer = rec.recommend(["u3"], k=15)[0]
    assert answer["source"] == "personal" and answer["k"] == 15 and "reason" not in answer
    expected = exact_top(rec, rec.user_vectors[3], seen_ids(rec, 3), 15)
    assert items_of(answer) == expected
    assert [e["title"] for e in answer["items"]][:1] == [f"Movie {int(expected[0]) - 100}"]
    scores = [e["score"] for e in answer["items"]]
    assert scores == sorted(scores, reverse=True)
    with_seen = rec.recommend(["u3"], k=15, exclude_seen=False)[0]
    assert items_of(with_seen) == exact_top(rec, rec.user_vectors[3], set(), 15)


def test_a_batch_excludes_each_users_own_seen_items_fetching_few_candidates() -> None:
    # 10 + at most 5 items fetched per row: rows whose seen items crowd the top fall back
    rec = tiny_recommender(candidates=5)
    users = [f"u{i}" for i in range(60)]
    answers = rec.recommend(users, k=10)
    for i, answer in enumerate(answers):
        assert items_of(answer) == exact_top(rec, rec.user_vectors[i], seen_ids(rec, i), 10)


def test_a_batch_answers_as_its_rows_one_at_a_time(rec: Recommender) -> None:
    users, sessions = ["u1", "nobody", "u2", "u1"], ["", "101 102", "103", ""]
    batch = rec.recommend(users, sessions=sessions, k=[5, 3, 4, 2], genre=[None, "Drama", "", ""])
    singles = [
        rec.recommend([u], sessions=[s], k=k, genre=g)[0]
        for u, s, k, g in zip(
            users, sessions, [5, 3, 4, 2], [None, "Drama", None, None], strict=True
        )
    ]
    assert [items_of(a) for a in batch] == [items_of(a) for a in singles]
    for a, b in zip(batch, singles, strict=True):  # one BLAS call or four: float32 rounding
        assert [e["score"] for e in a["items"]] == pytest.approx([e["score"] for e in b["items"]])
        assert {**a, "items": []} == {**b, "items": []}


def test_genre_filter_keeps_only_that_genre_and_either_of_two(rec: Recommender) -> None:
    drama = rec.recommend(["u0"], k=10, genre="Drama")[0]
    assert len(drama["items"]) == 10 and all("Drama" in e["genres"] for e in drama["items"])
    either = rec.recommend(["u0"], k=30, genre="Noir|Comedy")[0]
    assert {g for e in either["items"] for g in e["genres"].split("|")} <= {
        "Noir",
        "Comedy",
        "Drama",
    }
    assert all({"Noir", "Comedy"} & set(e["genres"].split("|")) for e in either["items"])


def test_ids_are_found_exactly() -> None:
    items = tiny_recommender().items
    found = items.lookup(["100", "399", "10", "1000", "100\0", "", "abc"]).tolist()
    assert found == [0, 299, -1, -1, -1, -1, -1]


def test_unknown_user_cold_start_is_session_based_then_popular(rec: Recommender) -> None:
    session, popular = rec.recommend(["stranger", "stranger"], sessions=["110 111 nope", ""], k=5)
    assert session["source"] == "session" and session["ignored"] == ["nope"]
    mean = np.asarray(rec.item_vectors)[[10, 11]].mean(axis=0)
    assert items_of(session) == exact_top(rec, mean, {"110", "111"}, 5)
    assert popular["source"] == "popular" and popular["ignored"] == []
    assert items_of(popular) == [str(100 + i) for i in np.argsort(-rec.popularity)[:5]]


def test_a_known_users_session_moves_the_query(rec: Recommender) -> None:
    answer = rec.recommend(["u4"], sessions=[["120", "121"]], k=8)[0]
    query = rec.user_vectors[4] + rec.session_weight * rec.item_vectors[[20, 21]].mean(axis=0)
    assert answer["source"] == "personal"
    assert items_of(answer) == exact_top(rec, query, seen_ids(rec, 4) | {"120", "121"}, 8)


def test_k_above_the_catalogue_is_capped_and_says_so(rec: Recommender) -> None:
    answer = rec.recommend(["u0"], k=10_000, exclude_seen=False)[0]
    assert answer["k"] == N_ITEMS and len(answer["items"]) == N_ITEMS
    assert "k=10000 is more than the 300 items in the catalogue" in answer["reason"]


def test_filters_that_leave_nothing_answer_an_empty_list_with_a_reason() -> None:
    rec = tiny_recommender()
    noir = "105"  # the only Noir item: a user who has seen it has nothing left in the genre
    user = next(u for u in range(N_USERS) if noir in seen_ids(rec, u))
    answer = rec.recommend([f"u{user}"], genre="Noir")[0]
    assert answer["items"] == []
    assert (
        answer["reason"] == "no item passes the filters (items already seen excluded, genre 'Noir')"
    )
    fewer = rec.recommend(["stranger"], genre="Noir", k=3)[0]
    assert items_of(fewer) == [noir] and "only 1 of 3 pass the filters" in fewer["reason"]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("k", "0", r"Column 'k' \(row 1\): expected an integer >= 1 \(or empty for 10\), got '0'"),
        ("k", "-3", "got '-3'"),
        ("k", "2.5", "got '2.5'"),
        ("k", "ten", "got 'ten'"),
        ("exclude_seen", "maybe", r"'exclude_seen' \(row 1\): expected true or false"),
        (
            "genre",
            "Western",
            r"'genre' \(row 1\): expected one of the catalogue's genres "
            r"\(Action, Comedy, Drama, Noir\), got 'Western'",
        ),
    ],
)
def test_bad_request_values_are_refused_naming_column_row_and_value(
    rec: Recommender, column: str, value: str, message: str
) -> None:
    columns = {
        "user": ["u0", "u1"],
        "session": ["", ""],
        "k": ["", ""],
        "exclude_seen": ["", ""],
        "genre": ["", ""],
    }
    columns[column] = ["", value]
    with pytest.raises(SchemaError, match=message):
        rec.check_inputs(columns)


def test_sessions_live_in_the_online_store_trimmed_by_length_and_age(workspace: Workspace) -> None:
    rec = tiny_recommender(session_length=3, session_ttl_s=60.0)
    alone = rec.recommend(["u7"], k=5, now=1000.0)[0]
    rec.bind_online(open_online_store(workspace), "movies")
    rec.recommend(["u7"], sessions=["130 131 132 133 nope"], k=5, now=1000.0)
    later = rec.recommend(["u7"], k=5, now=1001.0)[0]  # no session items: the stored ones
    query = rec.user_vectors[7] + rec.session_weight * rec.item_vectors[[31, 32, 33]].mean(axis=0)
    assert later["ignored"] == [] and later != alone
    assert items_of(later) == exact_top(rec, query, seen_ids(rec, 7) | {"131", "132", "133"}, 5)
    # another version of the same model shares the state; another model does not
    other = tiny_recommender(session_length=3, session_ttl_s=60.0)
    other.bind_online(open_online_store(workspace), "movies")
    assert other.recommend(["u7"], k=5, now=1001.0)[0] == later
    other.bind_online(open_online_store(workspace), "books")
    assert other.recommend(["u7"], k=5, now=1001.0)[0] == alone
    # after the time to live, the state is gone
    assert rec.recommend(["u7"], k=5, now=1000.0 + 61)[0] == alone


class ReverseRanker:
    """Scores candidates by their item index, lowest first: a ranker whose order shows."""

    kind = "test-reverse"

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.seen: list[RankContext] = []

    def rerank(self, context: RankContext) -> NDArray[np.float32]:
        self.seen.append(context)
        return (self.offset - context.candidates).astype(np.float32)

    def to_bytes(self) -> bytes:
        return struct.pack("<d", self.offset)


def load_reverse(data: bytes) -> ReverseRanker:
    return ReverseRanker(struct.unpack("<d", data)[0])


register_ranker("test-reverse", f"{__name__}:load_reverse")


def test_a_ranker_reorders_the_filtered_candidates_and_survives_saving(tmp_path: Path) -> None:
    ranker = ReverseRanker(5.0)
    rec = tiny_recommender(ranker=ranker)
    answer = rec.recommend(["u2"], sessions=["150"], k=5)[0]
    context = ranker.seen[-1]
    assert context.users.tolist() == [2] and context.sessions[0].tolist() == [50]
    candidates = context.candidates[0]
    kept = candidates[candidates >= 0]
    assert not set(kept.tolist()) & ({int(i) - 100 for i in seen_ids(rec, 2)} | {50})
    assert items_of(answer) == [str(100 + i) for i in np.sort(kept)[:5]]
    assert answer["items"][0]["score"] == 5.0 - np.sort(kept)[0]
    save_recommender(rec, tmp_path / FILE)
    again = load_recommender(tmp_path / FILE)
    assert isinstance(again.ranker, ReverseRanker) and again.ranker.offset == 5.0
    assert again.recommend(["u2"], sessions=["150"], k=5)[0] == answer


def test_an_hnsw_index_answers_as_exact_search_on_a_small_catalogue(tmp_path: Path) -> None:
    from shipyard.training.ann import ItemIndex

    exact = tiny_recommender()
    index = ItemIndex.build(np.asarray(exact.item_vectors), kind="hnsw", ef_search=300)
    indexed = tiny_recommender(index=index)
    users = [f"u{i}" for i in range(20)]
    expected = [items_of(a) for a in exact.recommend(users, k=10)]
    assert [items_of(a) for a in indexed.recommend(users, k=10)] == expected
    save_recommender(indexed, tmp_path / FILE)
    loaded = load_recommender(tmp_path / FILE)
    assert loaded.index is not None and loaded.index.kind == "hnsw"
    assert [items_of(a) for a in loaded.recommend(users, k=10)] == expected


def test_an_approximate_index_that_misses_items_is_completed_exactly() -> None:
    from shipyard.training.ann import ItemIndex

    exact = tiny_recommender()
    index = ItemIndex.build(np.asarray(exact.item_vectors), kind="hnsw", M=2, ef_search=1)
    sparse = tiny_recommender(index=index, candidates=5)  # a poor graph, a short list
    answer = sparse.recommend(["u5"], k=N_ITEMS, exclude_seen=False)[0]
    assert len(answer["items"]) == N_ITEMS and "reason" not in answer
    assert items_of(answer) == items_of(exact.recommend(["u5"], k=N_ITEMS, exclude_seen=False)[0])
