from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from shipyard.training import metrics as m


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_ap_equal_scikit_learn_with_ties_and_weights(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(2000) < 0.05
    score = np.round(rng.random(2000) + y * 0.3, 2)  # rounding makes many ties
    weight = rng.integers(0, 4, 2000).astype(float)
    assert m.roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert m.average_precision(y, score) == pytest.approx(
        average_precision_score(y, score), abs=1e-12
    )
    assert m.roc_auc(y, score, weight) == pytest.approx(
        roc_auc_score(y, score, sample_weight=weight), abs=1e-12
    )
    assert m.average_precision(y, score, weight) == pytest.approx(
        average_precision_score(y, score, sample_weight=weight), abs=1e-12
    )


def test_single_class_gives_nan_not_an_exception() -> None:
    assert np.isnan(m.roc_auc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert np.isnan(m.average_precision([0, 0], [0.1, 0.2]))


def test_card_precision_groups_by_card_and_removes_only_detected_frauds() -> None:
    # day 1: card A (fraud) and card B (genuine) are the top 2; day 2: both again plus C (fraud)
    day = ["d1", "d1", "d1", "d2", "d2", "d2"]
    card = ["A", "A", "B", "A", "B", "C"]
    label = [0, 1, 0, 1, 0, 1]
    score = [0.9, 0.1, 0.8, 0.9, 0.8, 0.1]
    cp = m.card_precision_at_k(day, card, label, score, k=2)
    # d1: A (max label 1) and B -> 1/2. d2: A was detected and leaves; B stays (it was in the
    # top k but genuine); the top 2 are B and C -> 1/2.
    assert cp.per_day == {"d1": 0.5, "d2": 0.5}
    assert cp.mean == 0.5


def test_alert_budget_brier_and_reliability() -> None:
    day = [1, 1, 1, 2, 2, 2]
    label = [1, 0, 0, 0, 1, 1]
    score = [0.9, 0.8, 0.1, 0.7, 0.6, 0.5]
    budget = m.alert_budget(day, label, score, per_day=1)
    assert budget == {"precision": 0.5, "recall": 1 / 3}
    assert m.brier([1, 0], [1.0, 0.5]) == pytest.approx(0.125)
    curve = m.reliability_curve([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], n_bins=2)
    assert curve["observed"] == [0.0, 1.0]
    assert sum(curve["count"]) == 4


def test_day_bootstrap_is_reproducible_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(0)
    days = np.repeat(np.arange(20), 50)
    values = rng.normal(size=len(days))
    estimate, reps = m.day_bootstrap(
        days, lambda w: float(np.average(values, weights=w)), n_boot=300
    )
    again, reps_again = m.day_bootstrap(
        days, lambda w: float(np.average(values, weights=w)), n_boot=300
    )
    assert estimate == again and np.array_equal(reps, reps_again)
    interval = m.interval(estimate, reps)
    assert interval.low < estimate < interval.high
    assert interval.high - interval.low < 0.5
