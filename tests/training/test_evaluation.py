from __future__ import annotations

import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.engines import LocalEngine
from shipyard.errors import DataValidationError, TrainingError
from shipyard.features.fraud import BASELINE_FEATURES
from shipyard.training.evaluation import evaluate
from shipyard.training.metrics import card_precision_at_k
from shipyard.training.search import SPACES, search
from shipyard.training.splits import PrequentialSplit
from shipyard.training.trainers import make_config
from shipyard.workspace import Workspace

FEATURES = list(BASELINE_FEATURES)
SPLIT = PrequentialSplit("2018-05-13", n_folds=3)


def test_evaluation_reports_every_metric_per_fold_with_intervals(small_frame: pd.DataFrame) -> None:
    result = evaluate(small_frame, FEATURES, make_config("logistic_regression"), SPLIT, n_boot=200)
    assert len(result.folds) == 3
    assert set(result.folds[0].metrics) == {
        "roc_auc",
        "average_precision",
        "card_precision@100",
        "brier",
        "precision@100_per_day",
        "recall@100_per_day",
    }
    assert 0.6 < result.mean("roc_auc") <= 1
    for name, interval in result.intervals.items():
        assert interval.low <= result.mean(name) <= interval.high, name
    summary = result.summary()
    assert summary["roc_auc_mean"] == result.mean("roc_auc")
    assert "card_precision@100_ci_low" in summary


def test_the_same_seed_reproduces_the_metrics(small_frame: pd.DataFrame) -> None:
    config = make_config("lightgbm", n_estimators=30)
    a = evaluate(small_frame, FEATURES, config, SPLIT, n_boot=100)
    b = evaluate(
        small_frame, FEATURES, config, SPLIT, n_boot=100, engine=LocalEngine(max_workers=2)
    )
    assert a.summary() == b.summary()


def test_a_feature_missing_from_the_data_is_named(small_frame: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError, match="Feature 'TX_TIP' is not in the training data"):
        evaluate(small_frame, [*FEATURES, "TX_TIP"], make_config("decision_tree"), SPLIT)


def test_a_window_without_positives_names_the_fold(small_frame: pd.DataFrame) -> None:
    frame = small_frame.assign(TX_FRAUD=0)
    with pytest.raises(TrainingError, match=r"Fold 0 \(2018-05-13..2018-05-19\).*no positive"):
        evaluate(frame, FEATURES, make_config("decision_tree"), SPLIT)


def test_search_tunes_on_validation_folds(small_frame: pd.DataFrame) -> None:
    result = search(small_frame, FEATURES, "decision_tree", SPLIT, n_trials=4)
    assert len(result.trials) == 4
    assert result.best_value == max(t["value"] for t in result.trials)
    assert 2 <= result.best_params["max_depth"] <= 20
    assert set(SPACES) == {
        "logistic_regression",
        "decision_tree",
        "random_forest",
        "xgboost",
        "lightgbm",
    }


@pytest.mark.slow
def test_a_perfect_ranking_reaches_the_published_card_precision_ceiling(
    reference_workspace: tuple[Workspace, Dataset],
) -> None:
    """FRAUD_PROTOCOL.md: with a perfect ranking, mean CP@100 on the 4 test folds is ~0.42."""
    _, dataset = reference_workspace
    frame = dataset.read(["CUSTOMER_ID", "TX_DATETIME", "TX_FRAUD"])
    days = frame["TX_DATETIME"].to_numpy().astype("datetime64[D]")
    values = []
    for fold in PrequentialSplit("2018-08-15", n_folds=4).split(frame):
        test = frame.iloc[fold.test]
        cp = card_precision_at_k(
            days[fold.test], test["CUSTOMER_ID"], test["TX_FRAUD"], test["TX_FRAUD"]
        )
        values.append(cp.mean)
    assert abs(sum(values) / 4 - 0.42) < 0.01
