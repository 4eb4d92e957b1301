"""Column constraints and schemas: what a model's input schema declares and records."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pandas as pd
import pytest

import shipyard.types
from shipyard.errors import SchemaError
from shipyard.types import (
    COUNT,
    FLAG,
    NON_NEGATIVE,
    RATE,
    ColumnSpec,
    Constraint,
    Schema,
)


def test_the_module_examples_hold() -> None:
    result = doctest.testmod(shipyard.types)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    ("constraint", "allowed", "refused"),
    [
        (COUNT, [0, 1, 3.0, 10**9, True], [-1, 2.5, -0.0001, 1e-9, math.inf]),
        (FLAG, [0, 1, 0.0, 1.0, False], [2, -1, 0.5, 1.0000001, math.inf]),
        (RATE, [0, 0.37, 1, 1.0], [1.01, -0.01, -math.inf, math.inf]),
        (NON_NEGATIVE, [0, 0.01, 1e12], [-0.01, -1, -math.inf, math.inf]),
        (Constraint(maximum=2.5), [-1e9, 2.5], [2.51, math.inf, -math.inf]),
        (Constraint(), [-1e300, 0, 1e300, -0.5], [math.inf, -math.inf]),
        (Constraint(integer=True), [-3, 0, 7.0], [0.5, -math.inf, math.inf]),
    ],
)
def test_allows_takes_what_the_constraint_permits_and_nothing_else(
    constraint: Constraint, allowed: list[float], refused: list[float]
) -> None:
    for value in allowed:
        assert constraint.allows(value), (constraint, value)
    for value in refused:
        assert not constraint.allows(value), (constraint, value)


@pytest.mark.parametrize("constraint", [COUNT, FLAG, RATE, NON_NEGATIVE, Constraint()])
def test_nan_is_left_to_nullability(constraint: Constraint) -> None:
    """NaN is missing, not out of range: whether it may appear is the column's nullability."""
    assert constraint.allows(math.nan)
    assert constraint.allows(np.float64("nan"))


def test_allows_takes_numpy_scalars() -> None:
    assert COUNT.allows(np.int64(4)) and not COUNT.allows(np.int64(-4))
    assert FLAG.allows(np.int8(1)) and not FLAG.allows(np.float32(0.5))
    assert RATE.allows(np.float64(0.5)) and not RATE.allows(np.float64(1.5))


@pytest.mark.parametrize(
    ("constraint", "words"),
    [
        (COUNT, "an integer >= 0"),
        (FLAG, "an integer in [0, 1]"),
        (RATE, "a number in [0, 1]"),
        (NON_NEGATIVE, "a number >= 0"),
        (Constraint(maximum=2.5), "a number <= 2.5"),
        (Constraint(minimum=-1.25, maximum=3), "a number in [-1.25, 3]"),
        (Constraint(), "a number"),
        (Constraint(integer=True), "an integer"),
    ],
)
def test_describe_says_what_is_asked_in_words(constraint: Constraint, words: str) -> None:
    assert constraint.describe() == words


@pytest.mark.parametrize(
    "constraint", [COUNT, FLAG, RATE, NON_NEGATIVE, Constraint(), Constraint(-2.5, 7.25)]
)
def test_constraint_round_trips_through_json(constraint: Constraint) -> None:
    data = json.loads(json.dumps(constraint.to_dict()))
    assert Constraint.from_dict(data) == constraint
    assert Constraint.from_dict(data).describe() == constraint.describe()


def test_a_constraint_no_value_can_satisfy_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"minimum of a Constraint must be <= its maximum"):
        Constraint(minimum=1, maximum=0)
    with pytest.raises(SchemaError, match="must be numbers, not NaN"):
        Constraint(minimum=math.nan)
    assert Constraint(minimum=1, maximum=1).allows(1)


def test_column_spec_round_trips_with_constraint_and_observed_range() -> None:
    spec = ColumnSpec("NB_TX", "int", nullable=True, constraint=COUNT, observed=(0.0, 41.0))
    data = json.loads(json.dumps(spec.to_dict()))
    assert data == {
        "name": "NB_TX",
        "dtype": "int",
        "nullable": True,
        "constraint": {"minimum": 0, "maximum": None, "integer": True},
        "observed": [0.0, 41.0],
    }
    assert ColumnSpec.from_dict(data) == spec


def test_old_schema_records_without_constraints_read_as_unconstrained() -> None:
    """Model versions registered before constraints existed still load."""
    old = [
        {"name": "TX_AMOUNT", "dtype": "float", "nullable": False},
        {"name": "TX_DURING_NIGHT", "dtype": "int"},
    ]
    schema = Schema.from_dict(old)
    assert schema == Schema(
        (ColumnSpec("TX_AMOUNT", "float"), ColumnSpec("TX_DURING_NIGHT", "int", nullable=False))
    )
    assert all(c.constraint is None and c.observed is None for c in schema.columns)
    # and an unconstrained column writes the old form, so old readers read new records
    assert schema.to_dict()[0] == old[0]


def test_schema_round_trips_through_json() -> None:
    schema = Schema(
        (
            ColumnSpec("TX_AMOUNT", "float", constraint=NON_NEGATIVE, observed=(0.0, 2.5e3)),
            ColumnSpec("TX_DURING_NIGHT", "int", constraint=FLAG, observed=(0.0, 1.0)),
            ColumnSpec("RISK", "float", nullable=True, constraint=RATE),
            ColumnSpec("NOTE", "string", nullable=True),
        )
    )
    assert Schema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "count": np.array([3, 0, 7], dtype="int64"),
            "amount": [12.5, np.nan, -1.25],
            "flag": [True, False, True],
            "empty": [np.nan, np.nan, np.nan],
            "when": pd.to_datetime(["2018-04-01", "2018-04-02", "2018-04-03"]),
            "name": ["a", None, "c"],
        }
    )


def test_from_frame_records_types_nullability_and_observed_ranges() -> None:
    schema = Schema.from_frame(_frame())
    by_name = {c.name: c for c in schema.columns}
    assert schema.names == ["count", "amount", "flag", "empty", "when", "name"]
    assert by_name["count"] == ColumnSpec("count", "int", False, observed=(0.0, 7.0))
    assert by_name["amount"] == ColumnSpec("amount", "float", True, observed=(-1.25, 12.5))
    assert by_name["flag"] == ColumnSpec("flag", "bool", False, observed=(0.0, 1.0))
    assert by_name["when"] == ColumnSpec("when", "datetime", False)
    assert by_name["name"] == ColumnSpec("name", "string", True)
    assert all(c.constraint is None for c in schema.columns)


def test_from_frame_gives_a_nan_only_column_no_observed_range() -> None:
    spec = Schema.from_frame(_frame(), ["empty"]).columns[0]
    assert spec == ColumnSpec("empty", "float", nullable=True, observed=None)
    # and it still serializes to plain JSON (no NaN bounds)
    assert "observed" not in spec.to_dict()
    json.dumps(spec.to_dict(), allow_nan=False)


def test_from_frame_of_an_empty_frame_observes_nothing() -> None:
    schema = Schema.from_frame(_frame().iloc[:0])
    assert all(c.observed is None and not c.nullable for c in schema.columns)


def test_from_frame_takes_only_the_named_columns_in_that_order() -> None:
    assert Schema.from_frame(_frame(), ["flag", "count"]).names == ["flag", "count"]


def test_with_constraints_sets_the_named_columns_and_keeps_the_rest() -> None:
    schema = Schema.from_frame(_frame(), ["count", "amount", "flag"])
    constrained = schema.with_constraints({"count": COUNT, "flag": FLAG, "not_a_column": RATE})
    by_name = {c.name: c for c in constrained.columns}
    assert by_name["count"] == ColumnSpec("count", "int", False, COUNT, (0.0, 7.0))
    assert by_name["flag"] == ColumnSpec("flag", "bool", False, FLAG, (0.0, 1.0))
    assert by_name["amount"] == schema.columns[1]
    assert constrained.names == schema.names
    assert all(c.constraint is None for c in schema.columns)  # the original is unchanged
    assert Schema.from_dict(json.loads(json.dumps(constrained.to_dict()))) == constrained


def test_column_roles_and_lineage_round_trip_through_json() -> None:
    from shipyard.types import ColumnRoles, Lineage

    roles = ColumnRoles(label="default", time="application_date", entity="applicant_id")
    lineage = Lineage(
        dataset="credit",
        dataset_version=2,
        dataset_hash="a" * 64,
        views="my.features:VIEWS",
        view_hashes={"application": "b" * 64},
        features_hash="c" * 64,
        columns=roles,
        protocol="2 prequential folds",
    ).with_windows(("2021-02-01", "2021-02-14"), ("2021-02-22", "2021-02-28"))
    again = Lineage.from_dict(json.loads(json.dumps(lineage.to_dict())))
    assert again == lineage
    assert again.columns.names == ("application_date", "applicant_id", "default")
    assert again.eval_window == ("2021-02-22", "2021-02-28")
    assert ColumnRoles(label="y", time="t", entity="t").names == ("t", "y")


def test_types_imports_no_heavy_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys, shipyard.types; "
        "print(sorted(m for m in ('pandas', 'numpy', 'sqlalchemy', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
