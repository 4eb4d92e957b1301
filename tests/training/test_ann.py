"""ItemIndex: HNSW top-k by inner product against exact search, serialization, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from shipyard.errors import ParameterError, SchemaError
from shipyard.training.ann import (
    ItemIndex,
    exact_search,
    recall_against_exact,
    tune_ef_search,
)


@pytest.fixture(scope="module")
def catalogue() -> tuple[np.ndarray, np.ndarray]:
    """3,000 clustered item vectors (f=16) and 200 queries: small, but not trivially easy."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((20, 16)).astype(np.float32)
    items = centres[rng.integers(0, 20, 3000)] + 0.5 * rng.standard_normal((3000, 16))
    queries = centres[rng.integers(0, 20, 200)] + 0.5 * rng.standard_normal((200, 16))
    return items.astype(np.float32), queries.astype(np.float32)


@pytest.fixture(scope="module")
def hnsw(catalogue: tuple[np.ndarray, np.ndarray]) -> ItemIndex:
    return ItemIndex.build(catalogue[0], kind="hnsw", M=16, ef_construction=100, ef_search=16)


def brute_force(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries.astype(np.float64) @ items.astype(np.float64).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_exact_search_returns_the_k_best_items_best_first(
    catalogue: tuple[np.ndarray, np.ndarray],
) -> None:
    items, queries = catalogue
    scores, ids = exact_search(items, queries, 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert scores.shape == ids.shape == (200, 10)
    np.testing.assert_array_equal(ids, brute_force(items, queries, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ items.T, ids, 1), rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_hnsw_scores_are_true_inner_products_of_the_ids_it_returns(
    hnsw: ItemIndex, catalogue: tuple[np.ndarray, np.ndarray]
) -> None:
    items, queries = catalogue
    scores, ids = hnsw.search(queries, 10)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ items.T, ids, 1), rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    assert hnsw.size == 3000 and hnsw.dimension == 16 and hnsw.kind == "hnsw"


def test_recall_grows_with_ef_search_and_tuning_reaches_the_target(
    hnsw: ItemIndex, catalogue: tuple[np.ndarray, np.ndarray]
) -> None:
    items, queries = catalogue
    hnsw.ef_search = 10
    low = recall_against_exact(hnsw, items, queries, k=10)
    hnsw.ef_search = 400
    high = recall_against_exact(hnsw, items, queries, k=10)
    assert low < high and high >= 0.99
    ef, recall = tune_ef_search(hnsw, items, queries, k=10, target=0.97)
    assert recall >= 0.97 and hnsw.ef_search == ef
    hnsw.ef_search = ef - 1  # the smallest on the grid: one less misses the target
    assert ef == 10 or recall_against_exact(hnsw, items, queries, k=10) < 0.97


def test_recall_of_an_exact_index_is_one(catalogue: tuple[np.ndarray, np.ndarray]) -> None:
    items, queries = catalogue
    exact = ItemIndex.build(items, kind="exact")
    assert recall_against_exact(exact, items, queries, k=5) == 1.0
    assert exact.ef_search is None
    with pytest.raises(ParameterError, match="ef_search"):
        exact.ef_search = 10


def test_k_above_the_catalogue_pads_with_minus_one_and_minus_infinity() -> None:
    items = np.eye(3, 4, dtype=np.float32)
    for kind in ("hnsw", "exact"):
        index = ItemIndex.build(items, kind=kind)  # type: ignore[arg-type]
        scores, ids = index.search(np.ones((2, 4), np.float32), 5)
        assert sorted(ids[0, :3].tolist()) == [0, 1, 2]
        assert (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
        assert recall_against_exact(index, items, np.ones((2, 4), np.float32), k=5) == 1.0


def test_the_same_seed_builds_the_same_graph(catalogue: tuple[np.ndarray, np.ndarray]) -> None:
    items, queries = catalogue
    settings = {"M": 4, "ef_construction": 8, "ef_search": 10}
    first = ItemIndex.build(items, seed=3, **settings).search(queries, 10)[1]
    again = ItemIndex.build(items, seed=3, **settings).search(queries, 10)[1]
    other = ItemIndex.build(items, seed=4, **settings).search(queries, 10)[1]
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()


def test_bytes_round_trip_answers_identically(
    hnsw: ItemIndex, catalogue: tuple[np.ndarray, np.ndarray]
) -> None:
    _, queries = catalogue
    hnsw.ef_search = 32
    loaded = ItemIndex.from_bytes(hnsw.to_bytes(), "hnsw", threads=2)
    assert loaded.ef_search == 32 and loaded.threads == 2
    for got, want in zip(loaded.search(queries, 10), hnsw.search(queries, 10), strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(SchemaError, match="not a 'exact' index"):
        ItemIndex.from_bytes(hnsw.to_bytes(), "exact")


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (np.ones((3, 4), np.float64), "'vectors' .* dtype float32. Got float64"),
        (np.ones(4, np.float32), "'vectors' .* 2-dimensional"),
        (np.ones((0, 4), np.float32), "'vectors' .* empty"),
        ([[1.0, 2.0]], "'vectors' .* numpy float32 array"),
        (np.array([[np.nan, 1.0]], np.float32), "'vectors' .* NaN"),
    ],
)
def test_bad_vectors_are_refused_by_name(vectors: object, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        ItemIndex.build(vectors)  # type: ignore[arg-type]


def test_bad_queries_k_and_settings_are_refused_by_name(hnsw: ItemIndex) -> None:
    with pytest.raises(SchemaError, match=r"'queries' .* 16 columns .* Got shape \(1, 3\)"):
        hnsw.search(np.ones((1, 3), np.float32), 5)
    with pytest.raises(ParameterError, match=r"'k' parameter .* int >= 1. Got 0"):
        hnsw.search(np.ones((1, 16), np.float32), 0)
    with pytest.raises(ParameterError, match="'kind' parameter"):
        ItemIndex.build(np.ones((2, 2), np.float32), kind="ivf")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"'ef_search' parameter .* Got -1"):
        hnsw.ef_search = -1
    with pytest.raises(ParameterError, match="'target' parameter"):
        tune_ef_search(hnsw, np.ones((2, 16), np.float32), np.ones((1, 16), np.float32), target=2)
