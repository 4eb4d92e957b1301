"""Input values against a version's schema: nulls, declared constraints, the training range."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shipyard.errors import RequestError
from shipyard.serving.validation import InputValidator
from shipyard.types import COUNT, FLAG, RATE, ColumnSpec, Schema

NAN = math.nan

MIXED = Schema(
    (
        ColumnSpec("optional", "float", nullable=True),
        ColumnSpec("required", "float"),
        ColumnSpec("also_optional", "float", nullable=True),
    )
)


def test_nan_in_a_non_nullable_column_after_one_in_a_nullable_column_is_rejected() -> None:
    validator = InputValidator(MIXED)
    with pytest.raises(RequestError, match=r"input 'required' \(row 0\) must be a finite"):
        validator.check(np.array([[NAN, NAN, 1.0]]))
    with pytest.raises(RequestError, match=r"input 'required' \(row 2\)") as caught:
        validator.check(np.array([[NAN, 1.0, NAN], [1.0, 2.0, NAN], [NAN, NAN, NAN]]))
    assert caught.value.status == 422


def test_nan_only_in_nullable_columns_is_accepted() -> None:
    validator = InputValidator(MIXED)
    assert validator.check(np.array([[NAN, 1.0, NAN], [2.0, 3.0, NAN]])) == ()


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_infinity_is_rejected_even_where_null_is_allowed(value: float) -> None:
    with pytest.raises(RequestError, match=r"input 'optional' \(row 1\) must be a finite number"):
        InputValidator(MIXED).check(np.array([[1.0, 1.0, 1.0], [value, 1.0, 1.0]]))


CONSTRAINED = Schema(
    (
        ColumnSpec("n_tx", "float", constraint=COUNT, observed=(0.0, 40.0)),
        ColumnSpec("night", "float", constraint=FLAG, observed=(0.0, 1.0)),
        ColumnSpec("risk", "float", nullable=True, constraint=RATE, observed=(0.0, 0.5)),
        ColumnSpec("amount", "float", observed=(1.0, 500.0)),
    )
)
GOOD = [3.0, 1.0, 0.2, 25.0]


@pytest.mark.parametrize("n_rows", [3, 10])  # few rows: checked in Python; more: numpy
@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        (0, -1.0, "must be an integer >= 0; got -1"),
        (0, 2.5, "must be an integer >= 0; got 2.5"),
        (1, 2.0, "must be an integer in [0, 1]; got 2"),
        (1, 0.5, "must be an integer in [0, 1]; got 0.5"),
        (2, 1.5, "must be a number in [0, 1]; got 1.5"),
    ],
)
def test_a_value_breaking_a_declared_constraint_is_rejected_naming_column_row_and_rule(
    column: int, value: float, expected: str, n_rows: int
) -> None:
    rows = np.array([GOOD] * n_rows)
    rows[1, column] = value
    name = CONSTRAINED.columns[column].name
    with pytest.raises(RequestError) as caught:
        InputValidator(CONSTRAINED).check(rows)
    assert caught.value.status == 422
    assert caught.value.message == f"input {name!r} (row 1) {expected}"


@pytest.mark.parametrize("n_good", [0, 10])
def test_values_outside_the_training_range_are_flagged_not_rejected(n_good: int) -> None:
    validator = InputValidator(CONSTRAINED)
    assert validator.check(np.array([GOOD] * (n_good + 1))) == ()
    rows = np.array([GOOD] * n_good + [[41.0, 1.0, 0.9, 25.0], [3.0, 0.0, NAN, 0.5]])
    assert validator.check(rows) == ("n_tx", "risk", "amount")
    assert validator.check(np.array([GOOD] * n_good + [[3.0, 0.0, 0.1, 600.0]])) == ("amount",)


def test_out_of_range_values_are_rejected_when_the_endpoint_says_so() -> None:
    validator = InputValidator(CONSTRAINED, reject_out_of_range=True)
    assert validator.check(np.array([GOOD])) == ()
    with pytest.raises(RequestError, match=r"input 'amount' \(row 0\) is outside the range") as e:
        validator.check(np.array([[3.0, 1.0, 0.2, 900.0]]))
    assert e.value.status == 422 and "[1, 500]; got 900" in e.value.message


def test_a_schema_without_constraints_or_ranges_checks_only_finiteness() -> None:
    plain = Schema((ColumnSpec("a", "float"), ColumnSpec("b", "float")))
    validator = InputValidator(plain)
    assert validator.check(np.array([[-1e9, 0.5]])) == ()
    with pytest.raises(RequestError, match="input 'b'"):
        validator.check(np.array([[1.0, NAN]]))
