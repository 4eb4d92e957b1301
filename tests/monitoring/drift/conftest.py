"""Profiles shared by the drift-test tests."""

from __future__ import annotations

import numpy as np
import pytest

from shipyard.monitoring import CategoricalProfile, NumericProfile


def normal(seed: int, n: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, 1.0, n)


@pytest.fixture
def numeric_pair() -> tuple[NumericProfile, NumericProfile, np.ndarray, np.ndarray]:
    """A reference and a current profile of one numeric column, and their raw values."""
    ref_values, cur_values = normal(1, 4000), normal(2, 3000, shift=0.15)
    cur_values[:60] = np.nan
    reference = NumericProfile.from_reference("x", ref_values)
    return reference, reference.empty().update(cur_values), ref_values, cur_values


@pytest.fixture
def categorical_pair() -> tuple[CategoricalProfile, CategoricalProfile]:
    rng = np.random.default_rng(3)
    labels = np.array(["a", "b", "c", "d"], dtype=object)
    reference = CategoricalProfile.from_reference("c", rng.choice(labels, 3000))
    current = rng.choice(labels, 2000, p=[0.3, 0.3, 0.3, 0.1])
    current[:50] = "new"
    return reference, reference.empty().update(current)
