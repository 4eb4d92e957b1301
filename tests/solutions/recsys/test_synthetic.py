"""The synthetic implicit-feedback generator: CSR shape, determinism and the three skews."""

from __future__ import annotations

import numpy as np
import pytest

from shipyard.errors import ParameterError
from shipyard.solutions.recsys.synthetic import catalogue, generate, interaction_matrix

USERS, ITEMS, CLUSTERS = 3000, 1000, 16


@pytest.fixture(scope="module")
def clicks() -> tuple[np.ndarray, np.ndarray]:
    return generate(USERS, ITEMS, mean_interactions=10, clusters=CLUSTERS, seed=5)


def item_shares(indices: np.ndarray) -> np.ndarray:
    counts = np.sort(np.bincount(indices, minlength=ITEMS))[::-1]
    return counts / counts.sum()


def test_output_is_a_csr_pattern_of_distinct_sorted_items(
    clicks: tuple[np.ndarray, np.ndarray],
) -> None:
    indptr, indices = clicks
    assert indptr.dtype == np.int64 and indices.dtype == np.int32
    assert len(indptr) == USERS + 1 and indptr[0] == 0 and indptr[-1] == len(indices)
    assert (np.diff(indptr) >= 1).all()
    assert indices.min() >= 0 and indices.max() < ITEMS
    matrix = interaction_matrix(indptr, indices, ITEMS)
    assert matrix.shape == (USERS, ITEMS) and matrix.has_sorted_indices
    matrix.sum_duplicates()
    assert matrix.nnz == len(indices)  # no (user, item) pair twice


def test_the_same_seed_gives_the_same_clicks(clicks: tuple[np.ndarray, np.ndarray]) -> None:
    again = generate(USERS, ITEMS, mean_interactions=10, clusters=CLUSTERS, seed=5)
    other = generate(USERS, ITEMS, mean_interactions=10, clusters=CLUSTERS, seed=6)
    for got, want in zip(again, clicks, strict=True):
        np.testing.assert_array_equal(got, want)
    assert len(other[1]) != len(clicks[1]) or (other[1] != clicks[1]).any()


def test_user_activity_has_the_asked_mean_and_a_heavy_tail(
    clicks: tuple[np.ndarray, np.ndarray],
) -> None:
    per_user = np.diff(clicks[0])
    assert 9.0 <= per_user.mean() <= 11.0
    assert np.median(per_user) < per_user.mean()  # right-skewed: most users below the mean
    assert per_user.max() >= 8 * np.median(per_user)


def test_item_popularity_follows_the_power_law_and_zipf_controls_it(
    clicks: tuple[np.ndarray, np.ndarray],
) -> None:
    skewed = item_shares(clicks[1])
    assert skewed[: ITEMS // 10].sum() > 0.5  # the top 10% of items take most clicks
    flat = item_shares(generate(USERS, ITEMS, zipf=0.0, taste=0.0, seed=5)[1])
    assert flat[: ITEMS // 10].sum() < 0.15  # uniform items, no clusters: about 10%
    weight = catalogue(ITEMS, clusters=CLUSTERS, zipf=1.1, seed=5).weight
    ranked = np.sort(weight)[::-1]
    np.testing.assert_allclose(ranked[9] / ranked[0], 10**-1.1)


def test_users_take_most_clicks_from_one_taste_cluster(
    clicks: tuple[np.ndarray, np.ndarray],
) -> None:
    def modal_share(indptr: np.ndarray, indices: np.ndarray) -> float:
        cluster = catalogue(ITEMS, clusters=CLUSTERS, seed=5).cluster[indices]
        users = np.repeat(np.arange(USERS), np.diff(indptr))
        table = np.zeros((USERS, CLUSTERS))
        np.add.at(table, (users, cluster), 1)
        active = table.sum(axis=1) >= 10
        return float((table.max(axis=1) / table.sum(axis=1))[active].mean())

    no_taste = generate(USERS, ITEMS, clusters=CLUSTERS, taste=0.0, seed=5)
    assert modal_share(*clicks) > 0.6
    assert modal_share(*no_taste) < 0.4


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"n_users": 0}, "n_users"),
        ({"n_items": 2.5}, "n_items"),
        ({"zipf": -1.0}, "zipf"),
        ({"taste": 1.5}, "taste"),
        ({"mean_interactions": 0.5}, "mean_interactions"),
        ({"clusters": 0}, "clusters"),
        ({"seed": -3}, "seed"),
    ],
)
def test_bad_arguments_are_refused_by_name(arguments: dict[str, object], name: str) -> None:
    values: dict[str, object] = {"n_users": 10, "n_items": 10, **arguments}
    with pytest.raises(ParameterError, match=f"'{name}' parameter of generate"):
        generate(**values)  # type: ignore[arg-type]


def test_users_generated_in_several_chunks_form_one_valid_matrix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shipyard.solutions.recsys import synthetic

    monkeypatch.setattr(synthetic, "CHUNK_USERS", 700)  # 3000 users: 5 chunks, the last short
    indptr, indices = generate(USERS, ITEMS, clusters=CLUSTERS, seed=5)
    per_user = np.diff(indptr)
    assert len(indptr) == USERS + 1 and indptr[-1] == len(indices)
    assert (per_user >= 1).all() and 9.0 <= per_user.mean() <= 11.0
    rows = np.split(indices, indptr[1:-1])
    assert all((np.diff(row) > 0).all() for row in rows)  # distinct, sorted, in every chunk
    again = generate(USERS, ITEMS, clusters=CLUSTERS, seed=5)
    np.testing.assert_array_equal(again[1], indices)
