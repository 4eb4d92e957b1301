"""The contract every drift test keeps (the drift-test check suite)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from shipyard.errors import SchemaError
from shipyard.monitoring import (
    ChiSquareTest,
    JensenShannonDistance,
    KolmogorovSmirnovTest,
    NumericProfile,
    PopulationStabilityIndex,
    Verdict,
    WassersteinDistance,
)
from shipyard.monitoring.drift import DriftTest

ALL_TESTS: list[DriftTest] = [
    ChiSquareTest(),
    KolmogorovSmirnovTest(),
    PopulationStabilityIndex(),
    JensenShannonDistance(),
    WassersteinDistance(),
]


def profiles(seed: int, n: int, shift: float) -> tuple[NumericProfile, NumericProfile]:
    rng = np.random.default_rng(seed)
    reference = NumericProfile.from_reference("x", rng.normal(size=n))
    return reference, reference.empty().update(rng.normal(shift, 1, n))


@pytest.mark.parametrize("test", ALL_TESTS, ids=lambda t: t.name)
class TestEveryDriftTest:
    def test_a_profile_against_itself_is_no_drift(self, test: DriftTest) -> None:
        reference, _ = profiles(0, 5000, 0.0)
        result = test.compare(reference, reference)
        assert result.verdict is Verdict.NO_DRIFT
        assert result.effect_size == pytest.approx(0.0, abs=1e-12)

    def test_a_one_sigma_shift_is_drift(self, test: DriftTest) -> None:
        assert test.compare(*profiles(1, 5000, 1.0)).verdict is Verdict.DRIFT

    def test_too_few_rows_is_insufficient_data_never_no_drift(self, test: DriftTest) -> None:
        reference, current = profiles(2, test.min_rows - 1, 0.0)
        result = test.compare(reference, current)
        assert result.verdict is Verdict.INSUFFICIENT_DATA
        assert json.loads(json.dumps(result.to_dict()))["statistic"] is None

    def test_comparing_does_not_change_either_profile(self, test: DriftTest) -> None:
        reference, current = profiles(3, 2000, 0.3)
        before = copy.deepcopy((reference.to_dict(), current.to_dict()))
        test.compare(reference, current)
        assert (reference.to_dict(), current.to_dict()) == before

    def test_profiles_of_another_reference_are_a_schema_error(self, test: DriftTest) -> None:
        reference, _ = profiles(4, 2000, 0.0)
        other, _ = profiles(5, 2000, 0.0)
        with pytest.raises(SchemaError, match="'x' have different bin edges"):
            test.compare(reference, other)

    def test_the_result_is_json(self, test: DriftTest) -> None:
        data = test.compare(*profiles(6, 2000, 0.2)).to_dict()
        assert json.loads(json.dumps(data, allow_nan=False)) == data
        assert data["test"] == test.name
