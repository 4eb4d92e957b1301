from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.errors import FeatureDefinitionError
from shipyard.features.definitions import (
    Aggregation,
    FeatureView,
    RowFeature,
    definitions_hash,
    view_constraints,
)
from shipyard.features.fraud import BASELINE_FEATURES, BASELINE_VIEWS, CUSTOMER_SPENDING
from shipyard.features.offline import OfflineStore
from shipyard.types import COUNT, FLAG, NON_NEGATIVE, RATE, Constraint
from shipyard.workspace import Workspace


def _view(**changes: object) -> FeatureView:
    base: dict[str, object] = {
        "name": "v",
        "entity": "CUSTOMER_ID",
        "timestamp": "TX_DATETIME",
        "source": "fraud",
        "features": (Aggregation("N", "count", timedelta(days=1)),),
    }
    base.update(changes)
    return FeatureView(**base)  # type: ignore[arg-type]


def test_the_baseline_has_the_handbook_15_features() -> None:
    assert len(BASELINE_FEATURES) == 15
    assert BASELINE_FEATURES[:3] == ("TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT")
    assert "TERMINAL_ID_RISK_30DAY_WINDOW" in BASELINE_FEATURES


def test_hash_is_stable_and_follows_every_value_changing_field() -> None:
    assert _view().definition_hash == _view().definition_hash
    assert _view(description="other words").definition_hash == _view().definition_hash
    changed = [
        _view(features=(Aggregation("N", "count", timedelta(days=2)),)),
        _view(features=(Aggregation("N", "count", timedelta(days=1), delay=timedelta(days=7)),)),
        _view(entity="TERMINAL_ID"),
        _view(source="other"),
    ]
    hashes = {v.definition_hash for v in changed} | {_view().definition_hash}
    assert len(hashes) == 5
    assert definitions_hash(BASELINE_VIEWS) == definitions_hash(tuple(reversed(BASELINE_VIEWS)))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Aggregation("N", "median", timedelta(days=1)), "function must be one of"),  # type: ignore[arg-type]
        (lambda: Aggregation("N", "mean", timedelta(days=1)), "needs a column"),
        (lambda: Aggregation("N", "count", timedelta(0)), "window must be a positive"),
        (lambda: Aggregation("N", "count", timedelta(1), delay=timedelta(-1)), "delay must be"),
        (lambda: RowFeature("1x", "1", inputs=()), "must be an identifier"),
        (lambda: _view(features=()), "defines no features"),
        (
            lambda: _view(features=(RowFeature("A", "1", ()), RowFeature("A", "2", ()))),
            "more than once",
        ),
        (lambda: _view(features=(RowFeature("CUSTOMER_ID", "1", ()),)), "collides"),
    ],
)
def test_inconsistent_definitions_are_refused(build: object, message: str) -> None:
    with pytest.raises(FeatureDefinitionError, match=message):
        build()  # type: ignore[operator]


def test_missing_column_is_named_with_what_is_available() -> None:
    with pytest.raises(
        FeatureDefinitionError, match=r"'TX_AMOUNT', which data set x does not have"
    ):
        CUSTOMER_SPENDING.check_columns(["CUSTOMER_ID", "TX_DATETIME"], where="data set x")


def test_baseline_features_declare_what_values_are_possible() -> None:
    declared = view_constraints(BASELINE_VIEWS)
    assert set(declared) == set(BASELINE_FEATURES)
    assert declared["TX_AMOUNT"] == NON_NEGATIVE
    assert declared["TX_DURING_WEEKEND"] == declared["TX_DURING_NIGHT"] == FLAG
    for n in (1, 7, 30):
        assert declared[f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW"] == COUNT
        assert declared[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] == NON_NEGATIVE
        assert declared[f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW"] == COUNT
        assert declared[f"TERMINAL_ID_RISK_{n}DAY_WINDOW"] == RATE
    assert CUSTOMER_SPENDING.constraints() == {
        name: declared[name] for name in CUSTOMER_SPENDING.feature_names
    }


def test_a_count_is_a_non_negative_integer_without_saying() -> None:
    count = Aggregation("N", "count", timedelta(days=1))
    assert count.constraint is None and count.declared_constraint == COUNT
    at_most = Constraint(minimum=0, maximum=10, integer=True)
    assert replace(count, constraint=at_most).declared_constraint == at_most
    mean = Aggregation("M", "mean", timedelta(days=1), column="X")
    assert mean.declared_constraint is None
    assert RowFeature("R", "1", inputs=()).declared_constraint is None
    view = _view(features=(count, mean, RowFeature("F", "1", (), constraint=FLAG)))
    assert view.constraints() == {"N": COUNT, "F": FLAG}


def test_a_constraint_does_not_change_the_definition_hash() -> None:
    """Constraints say what is possible; they do not change values, so stored features stay."""
    plain = _view(
        features=(
            Aggregation("M", "mean", timedelta(days=1), column="X"),
            RowFeature("F", '"X" > 0', inputs=("X",)),
        )
    )
    constrained = _view(
        features=(
            Aggregation("M", "mean", timedelta(days=1), column="X", constraint=NON_NEGATIVE),
            RowFeature("F", '"X" > 0', inputs=("X",), constraint=FLAG),
        )
    )
    assert constrained.definition_hash == plain.definition_hash
    assert "constraint" not in json.dumps(constrained.to_dict())


def test_every_materialized_baseline_value_satisfies_its_declared_constraint(
    small_workspace: tuple[Workspace, Dataset],
) -> None:
    """The declarations are true of the data: no stored feature value breaks one."""
    ws, _ = small_workspace
    store = OfflineStore(ws)
    for view in BASELINE_VIEWS:
        stored = pd.read_parquet(store.materialization(view).path)
        assert len(stored) > 10_000
        for name, constraint in view.constraints().items():
            values = stored[name].to_numpy(dtype=float)
            assert np.isfinite(values).all(), name  # no NaN either: every row has a value
            broken = [v for v in np.unique(values) if not constraint.allows(v)]
            assert broken == [], f"{name} ({constraint.describe()}): {broken[:5]}"
            assert len(np.unique(values)) > 1, name  # the check is not vacuous
            if constraint == FLAG:
                assert set(np.unique(values)) == {0.0, 1.0}, name
