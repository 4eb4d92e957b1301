from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from shipyard.data.catalog import Dataset
from shipyard.engines import LocalEngine
from shipyard.errors import DataValidationError, TrainingError
from shipyard.features.fraud import BASELINE_FEATURES
from shipyard.solutions.fraud import COLUMNS
from shipyard.training.evaluation import evaluate
from shipyard.training.metrics import card_precision_at_k
from shipyard.training.search import search
from shipyard.training.splits import PrequentialSplit
from shipyard.training.trainers import MODEL_TYPES, make_config
from shipyard.workspace import Workspace

FEATURES = list(BASELINE_FEATURES)
SPLIT = PrequentialSplit("2018-05-13", n_folds=3, columns=COLUMNS)


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
    # each fold's labels are its test rows' labels, and its metrics are scikit-learn's on them
    for fold in result.folds:
        assert fold.labels.tolist() == small_frame["TX_FRAUD"].iloc[fold.fold.test].tolist()
        assert fold.metrics["roc_auc"] == pytest.approx(roc_auc_score(fold.labels, fold.scores))
    summary = result.summary()
    per_fold = [average_precision_score(f.labels, f.scores) for f in result.folds]
    assert summary["average_precision_mean"] == pytest.approx(np.mean(per_fold))
    assert summary["average_precision_std"] == pytest.approx(np.std(per_fold))
    assert summary["card_precision@100_ci_low"] <= summary["card_precision@100_mean"]


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
    assert 2 <= result.best_params["max_depth"] <= 20
    # the best parameters, evaluated again on the same folds, give the best value reported
    again = evaluate(
        small_frame, FEATURES, make_config("decision_tree", **result.best_params), SPLIT, n_boot=0
    )
    assert again.mean("average_precision") == pytest.approx(result.best_value)


@pytest.mark.parametrize(
    "model_type",
    # unit_scaled packages a unit conversion (the bad-deploy scenario's fault) around a base
    # model: nothing of its own to tune, and it says so (its space is empty)
    sorted(t for t in MODEL_TYPES if t != "unit_scaled"),
)
def test_every_model_type_declares_a_search_space_of_its_own_parameters(model_type: str) -> None:
    import optuna

    config_class = MODEL_TYPES[model_type]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    suggested = config_class.search_space(study.ask())
    assert suggested, model_type
    assert set(suggested) <= set(config_class.defaults)
    assert make_config(model_type, **suggested).get_params().items() >= suggested.items()


@pytest.mark.slow
def test_a_perfect_ranking_reaches_the_published_card_precision_ceiling(
    reference_workspace: tuple[Workspace, Dataset],
) -> None:
    """FRAUD_PROTOCOL.md: with a perfect ranking, mean CP@100 on the 4 test folds is ~0.42."""
    _, dataset = reference_workspace
    frame = dataset.read(["CUSTOMER_ID", "TX_DATETIME", "TX_FRAUD"])
    days = frame["TX_DATETIME"].to_numpy().astype("datetime64[D]")
    values = []
    for fold in PrequentialSplit("2018-08-15", n_folds=4, columns=COLUMNS).split(frame):
        test = frame.iloc[fold.test]
        cp = card_precision_at_k(
            days[fold.test], test["CUSTOMER_ID"], test["TX_FRAUD"], test["TX_FRAUD"]
        )
        values.append(cp.mean)
    assert abs(sum(values) / 4 - 0.42) < 0.01
