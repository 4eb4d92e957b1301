"""Fairness assessment on real credit data: our numbers are fairlearn's, small groups are
reported as insufficient, intervals are seeded, bad input names the column."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import precision_score

from shipyard.errors import DataValidationError, ParameterError
from shipyard.governance.fairness import assess_fairness, expected_calibration_error
from tests.governance.fair_data import GERMAN_SENSITIVE, german_credit, hmda, split_scores

THRESHOLDS = {"german": 0.3, "hmda": 0.2}


@pytest.fixture(scope="module", params=["german", "hmda"])
def scored(request: pytest.FixtureRequest) -> tuple[str, np.ndarray, np.ndarray, pd.DataFrame]:
    """(data set name, test labels, test scores, test rows' sensitive attributes)."""
    X, y, sensitive = german_credit() if request.param == "german" else hmda()
    test, labels, scores = split_scores(X, y)
    return request.param, labels, scores, sensitive.iloc[test].reset_index(drop=True)


def _attributes(name: str) -> list[str]:
    return ["sex", "age_group"] if name == "german" else ["afam"]


def test_disparities_and_group_rates_equal_fairlearns(
    scored: tuple[str, np.ndarray, np.ndarray, pd.DataFrame],
) -> None:
    name, y, scores, sensitive = scored
    threshold = THRESHOLDS[name]
    report = assess_fairness(
        y, scores, sensitive, _attributes(name), threshold=threshold, n_boot=200
    )
    decisions = (scores >= threshold).astype(int)
    for attribute in _attributes(name):
        result = report.attribute(attribute)
        assert result.insufficient == ()  # these groups are all large enough
        groups = sensitive[attribute]
        expected = {
            "demographic_parity_difference": demographic_parity_difference(
                y, decisions, sensitive_features=groups
            ),
            "demographic_parity_ratio": demographic_parity_ratio(
                y, decisions, sensitive_features=groups
            ),
            "equalized_odds_difference": equalized_odds_difference(
                y, decisions, sensitive_features=groups
            ),
            "equalized_odds_ratio": equalized_odds_ratio(y, decisions, sensitive_features=groups),
        }
        for measure, value in expected.items():
            got = result.disparity(measure)
            assert got is not None
            assert got.estimate == pytest.approx(value, abs=1e-12), (attribute, measure)
        frame = MetricFrame(
            metrics={
                "selection_rate": selection_rate,
                "tpr": true_positive_rate,
                "fpr": false_positive_rate,
            },
            y_true=y,
            y_pred=decisions,
            sensitive_features=groups,
        ).by_group
        for group in result.groups:
            assert group.sufficient
            assert group.selection_rate == pytest.approx(frame.loc[group.group, "selection_rate"])
            assert group.tpr == pytest.approx(frame.loc[group.group, "tpr"])
            assert group.fpr == pytest.approx(frame.loc[group.group, "fpr"])
            mask = (groups == group.group).to_numpy()
            assert group.n == mask.sum() and group.positives == y[mask].sum()
            assert group.precision == pytest.approx(precision_score(y[mask], decisions[mask]))
            assert group.mean_score == pytest.approx(scores[mask].mean())
            assert group.observed_rate == pytest.approx(y[mask].mean())


def test_intervals_hold_the_estimate_are_seeded_and_narrow_with_more_rows(
    scored: tuple[str, np.ndarray, np.ndarray, pd.DataFrame],
) -> None:
    name, y, scores, sensitive = scored
    attribute = _attributes(name)[0]
    kwargs = {"threshold": THRESHOLDS[name], "n_boot": 300}
    first = assess_fairness(y, scores, sensitive, [attribute], seed=7, **kwargs)
    again = assess_fairness(y, scores, sensitive, [attribute], seed=7, **kwargs)
    other = assess_fairness(y, scores, sensitive, [attribute], seed=8, **kwargs)
    eo = first.attribute(attribute).equalized_odds_difference
    assert eo is not None and eo.low <= eo.estimate <= eo.high and eo.low < eo.high
    assert again.to_dict() == first.to_dict()
    assert other.attribute(attribute).equalized_odds_difference != eo
    # four copies of every row: the same estimate, a narrower interval
    big = assess_fairness(
        np.tile(y, 4), np.tile(scores, 4), pd.concat([sensitive] * 4), [attribute], seed=7, **kwargs
    )
    eo4 = big.attribute(attribute).equalized_odds_difference
    assert eo4 is not None and eo4.estimate == pytest.approx(eo.estimate)
    assert eo4.high - eo4.low < eo.high - eo.low


def test_a_group_too_small_is_reported_as_insufficient_not_as_numbers() -> None:
    """German credit's 37 applicants who are not foreign workers hold only 4 bad risks."""
    X, y, sensitive = german_credit()
    test, labels, scores = split_scores(X, y)
    rows = sensitive.iloc[test].reset_index(drop=True)
    report = assess_fairness(labels, scores, rows, list(GERMAN_SENSITIVE), threshold=0.3)
    foreign = report.attribute("foreign_worker")
    assert foreign.insufficient == ("no",)
    small = next(g for g in foreign.groups if g.group == "no")
    assert small.n == (rows["foreign_worker"] == "no").sum() and small.tpr is None
    assert small.selection_rate is None and small.ece is None
    assert not foreign.assessable and foreign.equalized_odds_difference is None
    text = report.table()
    assert "insufficient" in text and "not assessable" in text
    # the other attributes are still assessed
    assert report.attribute("sex").assessable
    # with a lower bar the group is assessed (and the disparity becomes a number)
    lenient = assess_fairness(
        labels, scores, rows, ["foreign_worker"], threshold=0.3, min_rows=10, min_positives=1
    )
    assert lenient.attribute("foreign_worker").assessable


def test_the_report_serializes_and_renders_as_a_card_section(
    scored: tuple[str, np.ndarray, np.ndarray, pd.DataFrame],
) -> None:
    name, y, scores, sensitive = scored
    report = assess_fairness(y, scores, sensitive, _attributes(name), n_boot=100)
    data = json.loads(json.dumps(report.to_dict()))
    assert [a["attribute"] for a in data["attributes"]] == _attributes(name)
    assert data["attributes"][0]["equalized_odds_difference"]["level"] == 0.95
    section = report.card_section()
    assert section.title == "Fairness"
    assert "| attribute | group | rows |" in section.markdown
    assert "equalized odds difference" in section.markdown
    assert section.html.startswith("<p>") and "<table>" in section.html
    with pytest.raises(ParameterError, match="'name' parameter"):
        report.attribute("religion")


def test_calibration_error_is_zero_for_perfect_bins_and_positive_otherwise() -> None:
    y = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    assert expected_calibration_error(y, np.array([0.0, 0.0, 1, 1, 0.75, 0.75, 0.75, 0.75])) == 0
    assert expected_calibration_error(y, np.full(8, 0.5)) == pytest.approx(abs(5 / 8 - 0.5))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (pd.DataFrame({"other": ["a", "b"] * 50}), "'sex' is not a column of the data"),
        (pd.DataFrame({"sex": ["a", None] * 50}), "'sex' has 50 missing value"),
        (pd.DataFrame({"sex": [np.nan, "a"] * 50}), "'sex' has 50 missing value"),
        (pd.DataFrame({"sex": ["a"] * 100}), "'sex' has a single group"),
    ],
)
def test_unusable_sensitive_attributes_are_refused_naming_the_column(
    data: pd.DataFrame, message: str
) -> None:
    y = np.array([0, 1] * 50)
    with pytest.raises(DataValidationError, match=message):
        assess_fairness(y, np.linspace(0, 1, 100), data, ["sex"])


def test_bad_parameters_are_refused() -> None:
    y, data = np.array([0, 1] * 50), pd.DataFrame({"g": ["a", "b"] * 50})
    with pytest.raises(ParameterError, match="'threshold' parameter"):
        assess_fairness(y, np.zeros(100), data, ["g"], threshold=2)
    with pytest.raises(ParameterError, match="'attributes' parameter"):
        assess_fairness(y, np.zeros(100), data, "g")
    with pytest.raises(DataValidationError, match="one label, one score"):
        assess_fairness(y, np.zeros(99), data, ["g"])
