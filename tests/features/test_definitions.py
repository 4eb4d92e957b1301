from __future__ import annotations

from datetime import timedelta

import pytest

from shipyard.errors import FeatureDefinitionError
from shipyard.features.definitions import Aggregation, FeatureView, RowFeature, definitions_hash
from shipyard.features.fraud import BASELINE_FEATURES, BASELINE_VIEWS, CUSTOMER_SPENDING


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
