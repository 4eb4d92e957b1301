"""DatasetDriftTest: significance after correction and an effect-size floor, per column."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from shipyard.errors import ParameterError, SchemaError
from shipyard.monitoring import (
    ChiSquareTest,
    Correction,
    DatasetDriftTest,
    DatasetProfile,
    JensenShannonDistance,
    KolmogorovSmirnovTest,
    Verdict,
    WassersteinDistance,
)

SIGNIFICANCE_ONLY = {
    "numeric_distance": JensenShannonDistance(floor=0.0),
    "categorical_distance": JensenShannonDistance(floor=0.0),
}


def data(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    """Ten numeric and three categorical columns; ``shift`` moves the mean of ``x0``."""
    columns = {f"x{i}": rng.normal(shift if i == 0 else 0.0, 1.0, n) for i in range(10)}
    for i, k in enumerate((3, 8, 20)):
        columns[f"c{i}"] = rng.integers(0, k, n)
    return pd.DataFrame(columns)


def profiles(
    seed: int, n: int, shift: float = 0.0, m: int | None = None
) -> tuple[DatasetProfile, DatasetProfile]:
    rng = np.random.default_rng(seed)
    categorical = ["c0", "c1", "c2"]
    reference = DatasetProfile.from_reference(data(rng, n), categorical=categorical)
    return reference, reference.empty().update(data(rng, n if m is None else m, shift))


class TestErrorRate:
    def test_benjamini_hochberg_keeps_aa_false_alarms_within_a_binomial_bound_of_alpha(
        self,
    ) -> None:
        trials, alpha = 50, 0.05
        bound = binom.ppf(0.999, trials, alpha)  # exceeded by chance once in 1,000 runs
        corrected, uncorrected = 0, 0
        for seed in range(trials):
            reference, current = profiles(seed, 2000)
            bh = DatasetDriftTest(alpha=alpha, **SIGNIFICANCE_ONLY)  # type: ignore[arg-type]
            raw = DatasetDriftTest(alpha=alpha, correction="none", **SIGNIFICANCE_ONLY)  # type: ignore[arg-type]
            corrected += bh.compare(reference, current).verdict is Verdict.DRIFT
            uncorrected += raw.compare(reference, current).verdict is Verdict.DRIFT
        assert corrected <= bound
        assert uncorrected > bound  # without a correction, 13 columns alarm far too often

    def test_a_huge_sample_with_a_negligible_shift_is_not_drift_but_a_real_shift_is(
        self,
    ) -> None:
        reference, negligible = profiles(100, 300_000, shift=0.03)
        report = DatasetDriftTest().compare(reference, negligible)
        x0 = report["x0"]
        assert x0.adjusted_p_value is not None and x0.adjusted_p_value < 1e-6  # significant
        assert x0.distance.verdict is Verdict.NO_DRIFT  # ... but below the floor
        assert report.verdict is Verdict.NO_DRIFT
        _, real = profiles(100, 300_000, shift=0.3)
        assert DatasetDriftTest().compare(reference, real).drifted == ["x0"]

    def test_bonferroni_is_an_option(self) -> None:
        reference, current = profiles(200, 5000, shift=0.5)
        report = DatasetDriftTest(correction="bonferroni").compare(reference, current)
        raw = [c.test.p_value for c in report.columns]
        assert [c.adjusted_p_value for c in report.columns] == pytest.approx(
            [min(1.0, 13 * p) for p in raw if p is not None]
        )
        assert report.correction is Correction.BONFERRONI
        assert report.drifted == ["x0"]


class TestBadInput:
    def test_too_few_rows_is_insufficient_data(self) -> None:
        reference, current = profiles(1, 5000, m=40)
        report = DatasetDriftTest().compare(reference, current)
        assert report.verdict is Verdict.INSUFFICIENT_DATA
        assert {c.verdict for c in report.columns} == {Verdict.INSUFFICIENT_DATA}

    def test_an_empty_window_is_insufficient_data(self) -> None:
        reference, _ = profiles(2, 1000)
        report = DatasetDriftTest().compare(reference, reference.empty())
        assert (report.verdict, report.n_current) == (Verdict.INSUFFICIENT_DATA, 0)

    def test_a_category_never_seen_in_the_reference_is_drift_in_its_column(self) -> None:
        reference, _ = profiles(3, 5000)
        frame = data(np.random.default_rng(4), 5000)
        frame["c1"] = frame["c1"].astype(object)
        frame.loc[:999, "c1"] = "brand-new"
        report = DatasetDriftTest().compare(reference, reference.empty().update(frame))
        assert report.drifted == ["c1"]
        assert reference.empty().update(frame)["c1"].unseen == 1000

    def test_an_all_missing_column_is_drift_when_the_reference_had_values(self) -> None:
        reference, _ = profiles(5, 5000)
        frame = data(np.random.default_rng(6), 5000)
        frame["x3"] = np.nan
        frame["c2"] = None
        report = DatasetDriftTest().compare(reference, reference.empty().update(frame))
        assert report.drifted == ["x3", "c2"]

    def test_a_column_missing_on_both_sides_is_no_drift(self) -> None:
        frame = pd.DataFrame({"x": np.full(500, np.nan), "y": np.arange(500.0)})
        reference = DatasetProfile.from_reference(frame)
        report = DatasetDriftTest().compare(reference, reference.empty().update(frame))
        assert report["x"].verdict is Verdict.NO_DRIFT

    def test_an_all_missing_window_with_a_distance_on_values_is_insufficient(self) -> None:
        reference, _ = profiles(7, 2000)
        frame = data(np.random.default_rng(8), 2000)
        frame["x1"] = np.nan
        check = DatasetDriftTest(
            numeric_test=KolmogorovSmirnovTest(), numeric_distance=WassersteinDistance()
        )
        report = check.compare(reference, reference.empty().update(frame))
        assert report["x1"].verdict is Verdict.INSUFFICIENT_DATA
        assert report.verdict is Verdict.INSUFFICIENT_DATA

    def test_a_profile_from_an_incompatible_schema_is_a_schema_error_naming_the_column(
        self,
    ) -> None:
        reference, _ = profiles(9, 1000)
        other, _ = profiles(10, 1000)
        with pytest.raises(SchemaError, match="'x0'"):
            DatasetDriftTest().compare(reference, other)

    @pytest.mark.parametrize(
        ("params", "name"),
        [
            ({"alpha": 0}, "alpha"),
            ({"correction": "holm"}, "correction"),
            ({"categorical_test": KolmogorovSmirnovTest()}, "categorical_test"),
            ({"numeric_distance": ChiSquareTest()}, "numeric_distance"),
        ],
    )
    def test_bad_parameters_are_named(self, params: dict[str, object], name: str) -> None:
        reference, current = profiles(11, 200)
        with pytest.raises(ParameterError, match=f"'{name}' parameter of DatasetDriftTest"):
            DatasetDriftTest(**params).compare(reference, current)  # type: ignore[arg-type]


class TestReport:
    def test_the_report_is_json_with_every_number_a_column_needs(self) -> None:
        reference, current = profiles(13, 3000, shift=0.5)
        data = DatasetDriftTest().compare(reference, current).to_dict()
        assert json.loads(json.dumps(data, allow_nan=False)) == data
        x0 = data["columns"][0]
        assert (x0["verdict"], x0["test"]["test"], x0["distance"]["test"]) == (
            "drift",
            "chi-square",
            "jensen-shannon",
        )
        assert data["drifted"] == ["x0"]
