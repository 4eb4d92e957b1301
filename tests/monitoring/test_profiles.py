"""Profiles: quantile bins, exact merges, JSON round-trips, clear errors on bad input."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import ParameterError, SchemaError
from shipyard.monitoring import CategoricalProfile, DatasetProfile, NumericProfile


def frame(seed: int, n: int) -> pd.DataFrame:
    """Numeric, integer, mostly-zero and categorical columns, with missing values."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3, 1, n)
    amount[rng.random(n) < 0.05] = np.nan
    zeros = np.where(rng.random(n) < 0.8, 0.0, rng.exponential(5, n))
    city = rng.choice(np.array(["paris", "lyon", "nice", "lille"], dtype=object), n)
    city[rng.random(n) < 0.03] = None
    return pd.DataFrame(
        {
            "amount": amount,
            "n_items": rng.poisson(3, n),
            "zeros": zeros,
            "city": city,
            "segment": rng.integers(0, 6, n),
        }
    )


def assert_same(a: DatasetProfile, b: DatasetProfile) -> None:
    """Equal profiles: integer counts exactly, float moments and sums to rounding."""
    left, right = a.to_dict(), b.to_dict()
    assert left["n_rows"] == right["n_rows"]
    for x, y in zip(left["columns"], right["columns"], strict=True):
        for key, value in x.items():
            if key in ("sums", "mean", "m2"):
                assert np.allclose(value, y[key], rtol=1e-9, atol=1e-6), key
            else:
                assert value == y[key], (x["name"], key)


def reference(n: int = 5000, seed: int = 0) -> DatasetProfile:
    return DatasetProfile.from_reference(frame(seed, n), categorical=["segment"])


class TestNumericBins:
    def test_edges_are_reference_quantiles_and_bins_hold_equal_shares(self) -> None:
        values = np.random.default_rng(1).normal(size=20_000)
        profile = NumericProfile.from_reference("x", values)
        assert profile.edges == tuple(
            np.quantile(values, np.arange(1, 20) / 20, method="inverted_cdf")
        )
        assert len(profile.counts) == 20
        assert np.all(np.abs(profile.counts - 1000) <= 1)

    def test_tied_quantiles_collapse_and_later_values_outside_the_range_have_a_bin(self) -> None:
        profile = NumericProfile.from_reference("flag", np.array([0, 1, 1, 0, 1] * 100))
        assert profile.edges == (0.0, 1.0)
        profile.update([-5.0, 7.0])
        assert profile.counts.tolist() == [1, 200, 301]

    def test_moments_match_numpy_and_non_finite_values_are_missing(self) -> None:
        values = np.array([1.0, 2.0, np.nan, 4.0, np.inf, None, 10.0], dtype=object)
        profile = NumericProfile.from_reference("x", values, n_bins=4)
        finite = np.array([1.0, 2.0, 4.0, 10.0])
        assert (profile.count, profile.missing) == (4, 3)
        assert profile.mean == pytest.approx(finite.mean())
        assert profile.variance == pytest.approx(finite.var(ddof=1))
        assert (profile.minimum, profile.maximum) == (1.0, 10.0)
        assert np.nansum(profile.bin_means * profile.counts) == pytest.approx(finite.sum())

    def test_text_in_a_numeric_column_is_a_schema_error_naming_it(self) -> None:
        profile = NumericProfile.from_reference("amount", [1.0, 2.0])
        with pytest.raises(SchemaError, match="'amount'"):
            profile.update(["12", "abc"])

    @pytest.mark.parametrize("n_bins", [1, 2.5, True])
    def test_bad_bin_count_is_a_parameter_error(self, n_bins: Any) -> None:
        with pytest.raises(ParameterError, match="'n_bins' parameter of NumericProfile"):
            NumericProfile.from_reference("x", [1.0, 2.0], n_bins=n_bins)


class TestCategories:
    def test_categories_are_ranked_and_unseen_and_missing_have_their_buckets(self) -> None:
        profile = CategoricalProfile.from_reference("c", ["b", "a", "b", None, "c", "b", "a"])
        assert profile.categories == ("b", "a", "c")
        profile.update(["z", "a", np.nan, "y"])
        hist = profile.histogram()
        assert dict(zip(hist.labels, hist.counts.tolist(), strict=True)) == {
            "b": 3,
            "a": 3,
            "c": 1,
            "<unseen>": 2,
            "<missing>": 2,
        }

    def test_integer_and_float_codes_are_one_category(self) -> None:
        profile = CategoricalProfile.from_reference("code", np.array([1, 2, 2]))
        profile.update(np.array([1.0, np.nan, 2.0]))  # an int column with a missing value
        profile.update(["1"])
        assert (profile.counts.tolist(), profile.unseen, profile.missing) == ([3, 3], 0, 1)

    def test_the_long_tail_beyond_max_categories_is_unseen(self) -> None:
        values = ["a"] * 5 + ["b"] * 4 + ["c", "d"]
        profile = CategoricalProfile.from_reference("c", values, max_categories=2)
        assert profile.categories == ("a", "b")
        assert profile.unseen == 2


class TestMerge:
    @pytest.mark.parametrize("seed", range(6))
    def test_update_in_pieces_equals_update_at_once(self, seed: int) -> None:
        data = frame(seed + 100, 3000)
        ref = reference(seed=seed)
        cuts = sorted(np.random.default_rng(seed).integers(0, len(data), 4))
        pieces = ref.empty()
        bounds = [0, *cuts, cuts[-1], len(data)]  # includes an empty piece
        for start, stop in itertools.pairwise(bounds):
            pieces.update(data.iloc[start:stop])
        assert_same(pieces, ref.empty().update(data))

    @pytest.mark.parametrize("seed", range(6))
    def test_sum_of_profiles_equals_profile_of_concatenation(self, seed: int) -> None:
        ref = reference(seed=seed)
        a, b = frame(seed + 200, 1500), frame(seed + 300, 700)
        merged = ref.empty().update(a) + ref.empty().update(b)
        assert_same(merged, ref.empty().update(pd.concat([a, b], ignore_index=True)))

    @pytest.mark.parametrize("seed", range(4))
    def test_merge_is_associative_and_an_empty_profile_is_neutral(self, seed: int) -> None:
        ref = reference(seed=seed)
        a, b, c = (ref.empty().update(frame(seed + k, 800 * k)) for k in (1, 2, 3))
        assert_same((a + b) + c, a + (b + c))
        assert_same(a + ref.empty(), a)
        assert_same(ref.empty() + a, a)

    def test_a_dict_of_arrays_profiles_like_a_frame(self) -> None:
        data = frame(7, 1000)
        ref = reference()
        as_dict = {name: data[name].to_numpy() for name in data.columns}
        assert_same(ref.empty().update(as_dict), ref.empty().update(data))

    def test_profiles_from_different_references_do_not_merge(self) -> None:
        a, b = reference(seed=1), reference(seed=2)
        with pytest.raises(SchemaError, match="'amount' have different bin edges"):
            a + b

    def test_different_kinds_or_columns_do_not_merge(self) -> None:
        numeric = DatasetProfile.from_reference({"segment": np.arange(100)})
        categorical = DatasetProfile.from_reference(
            {"segment": np.arange(100)}, categorical=["segment"]
        )
        with pytest.raises(SchemaError, match="'segment' is numeric here but categorical"):
            numeric + categorical
        other = DatasetProfile.from_reference({"other": np.arange(100)})
        with pytest.raises(SchemaError, match=r"only here \['segment'\]"):
            numeric + other

    def test_a_batch_without_a_profiled_column_is_a_schema_error(self) -> None:
        ref = reference()
        with pytest.raises(SchemaError, match="'city'"):
            ref.empty().update(frame(0, 10).drop(columns=["city"]))


class TestJson:
    def test_round_trip_is_exact(self) -> None:
        ref = reference()
        again = DatasetProfile.from_json(ref.to_json())
        assert again.to_dict() == ref.to_dict()
        assert json.loads(again.to_json()) == json.loads(ref.to_json())

    def test_an_all_missing_column_round_trips(self) -> None:
        ref = DatasetProfile.from_reference({"x": [np.nan] * 10, "c": [None] * 10})
        again = DatasetProfile.from_json(ref.to_json())
        x = again["x"]
        assert isinstance(x, NumericProfile)
        assert (x.edges, x.count, x.missing, x.minimum) == ((), 0, 10, None)
        assert again["c"].missing == 10

    def test_a_malformed_profile_is_a_schema_error_naming_the_column(self) -> None:
        data = reference().to_dict()
        data["columns"][0]["counts"] = [1, 2]
        with pytest.raises(SchemaError, match="'amount' is malformed"):
            DatasetProfile.from_dict(data)
