"""Reason codes: the features pushing toward the adverse outcome, readable and deterministic."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import ParameterError
from shipyard.features.definitions import FeatureView
from shipyard.governance.explain import Explanation, explain
from shipyard.governance.reasons import (
    Reason,
    explanation_records,
    feature_descriptions,
    reasons,
)
from shipyard.training.trainers import make_config
from tests.registry.credit import APPLICATION, VIEWS, VIEWS_REF

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _explanation(values: list[list[float]], data: list[list[float]]) -> Explanation:
    return Explanation(
        np.asarray(values, dtype=float),
        -2.0,
        ("a", "b", "c", "d"),
        "log-odds",
        np.asarray(data, dtype=float),
    )


def test_only_features_pushing_toward_label_1_largest_first_with_the_applicants_values() -> None:
    explanation = _explanation(
        [[0.1, -0.5, 0.7, 0.0], [-0.1, -0.2, -0.3, -0.4]], [[1, 2, 3, 4], [5, 6, 7, np.nan]]
    )
    first, second = reasons(explanation, top_k=3)
    found = [(r.feature, r.value, r.contribution) for r in first]
    assert found == [("c", 3.0, 0.7), ("a", 1.0, 0.1)]
    assert second == ()  # nothing pushed it toward the adverse outcome


def test_top_k_keeps_the_largest_and_ties_follow_the_model_feature_order() -> None:
    explanation = _explanation([[0.2, 0.3, 0.2, 0.2]], [[0, 0, 0, 0]])
    assert [r.feature for r in reasons(explanation, top_k=3)[0]] == ["b", "a", "c"]
    assert [r.feature for r in reasons(explanation, top_k=1)[0]] == ["b"]
    assert reasons(explanation) == reasons(explanation)


@pytest.mark.parametrize("top_k", [0, -1, 2.5, True, "3"])
def test_a_bad_top_k_is_refused_naming_it(top_k: object) -> None:
    with pytest.raises(ParameterError, match="'top_k' parameter of reasons"):
        reasons(_explanation([[1, 1, 1, 1]], [[0, 0, 0, 0]]), top_k=top_k)  # type: ignore[arg-type]


def test_readable_names_come_from_feature_view_descriptions_else_the_column() -> None:
    described = dataclasses.replace(
        APPLICATION,
        features=(
            dataclasses.replace(APPLICATION.features[0], description="Debt to income ratio"),
            APPLICATION.features[1],
        ),
    )
    names = feature_descriptions([described])
    assert names == {"debt_to_income": "Debt to income ratio", "income_k": "income_k"}
    assert set(feature_descriptions(VIEWS_REF)) == {f.name for v in VIEWS for f in v.features}
    explanation = Explanation(
        np.array([[0.4, 0.1]]), 0.0, ("debt_to_income", "income_k"), "log-odds", np.ones((1, 2))
    )
    row = reasons(explanation, descriptions=names)[0]
    assert [r.description for r in row] == ["Debt to income ratio", "income_k"]
    assert isinstance(described, FeatureView)


def test_records_are_json_with_a_missing_value_as_null() -> None:
    explanation = _explanation([[0.5, 0.0, 0.0, 0.0]], [[np.nan, 1, 2, 3]])
    record = explanation_records(explanation)[0]
    assert json.loads(json.dumps(record, allow_nan=False)) == {
        "base_value": -2.0,
        "attributions": [0.5, 0.0, 0.0, 0.0],
        "reasons": [{"feature": "a", "description": "a", "value": None, "contribution": 0.5}],
    }
    assert Reason("a", "A", 1.0, 0.5).to_dict()["value"] == 1.0


def test_on_a_trained_credit_model_the_riskiest_ratio_is_the_first_reason() -> None:
    """Default risk grows with debt to income only: the highest ratio's first reason is it."""
    from tests.registry.credit import applications

    raw = applications(n_days=20)
    X = pd.DataFrame(
        {"debt_to_income": raw["debt"] / raw["income"], "income_k": raw["income"] / 1000}
    )
    model = make_config("lightgbm", n_estimators=60).fit(X, raw["default"])
    riskiest = X.sort_values("debt_to_income").tail(20)
    found = reasons(explain(model, riskiest), top_k=2)
    assert all(row and row[0].feature == "debt_to_income" for row in found)
    assert [row[0].value for row in found] == riskiest["debt_to_income"].tolist()
