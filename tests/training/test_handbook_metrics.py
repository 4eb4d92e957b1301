"""Shipyard's CP@k, AUC and AP against the handbook's own code on the prequential test folds."""

from __future__ import annotations

import datetime

import pandas as pd
import pytest

from shipyard.solutions.fraud import COLUMNS
from shipyard.training.evaluation import Evaluation, evaluate
from shipyard.training.metrics import card_precision_at_k
from shipyard.training.splits import PrequentialSplit
from shipyard.training.trainers import make_config
from tests.training.handbook_metrics import card_precision_top_k, performance_assessment
from tests.training.handbook_split import get_train_test_set

FEATURES_START = "2018-05-13"
SPLIT = PrequentialSplit(FEATURES_START, n_folds=3, columns=COLUMNS)


@pytest.fixture(scope="module")
def transactions(small_frame: pd.DataFrame) -> pd.DataFrame:
    """The small data set's frame with the handbook's day number column."""
    days = (small_frame["TX_DATETIME"].dt.normalize() - pd.Timestamp("2018-04-01")).dt.days
    return small_frame.assign(TX_TIME_DAYS=days.to_numpy())


@pytest.fixture(scope="module")
def evaluation(transactions: pd.DataFrame) -> Evaluation:
    from shipyard.features.fraud import BASELINE_FEATURES

    config = make_config("logistic_regression")
    return evaluate(transactions, list(BASELINE_FEATURES), config, SPLIT, n_boot=0)


def _handbook_test_set(transactions: pd.DataFrame, fold_index: int) -> pd.DataFrame:
    start = datetime.datetime.fromisoformat(FEATURES_START) - datetime.timedelta(
        days=7 * fold_index
    )
    _, test_df = get_train_test_set(transactions, start)
    return test_df


def test_card_precision_equals_the_handbooks_on_every_test_fold(
    transactions: pd.DataFrame, evaluation: Evaluation
) -> None:
    for result in evaluation.folds:
        test_df = _handbook_test_set(transactions, result.fold.index).copy()
        assert test_df.index.tolist() == result.fold.test.tolist()  # the same rows, in order
        test_df["predictions"] = result.scores
        _, per_day, mean = card_precision_top_k(test_df, 100)
        assert list(result.cp_per_day.values()) == pytest.approx(per_day, abs=1e-12)
        assert result.metrics["card_precision@100"] == pytest.approx(mean, abs=1e-12)
        assert 0 < mean < 1  # a real ranking: neither everything nor nothing found
        handbook = performance_assessment(test_df, rounded=False).iloc[0]
        assert result.metrics["roc_auc"] == pytest.approx(handbook["AUC ROC"], abs=1e-12)
        assert result.metrics["average_precision"] == pytest.approx(
            handbook["Average precision"], abs=1e-12
        )


@pytest.mark.parametrize("k", [5, 20, 100])
def test_card_precision_equals_the_handbooks_for_small_k_where_detection_removal_matters(
    transactions: pd.DataFrame, evaluation: Evaluation, k: int
) -> None:
    """Small k fills each day's top k, so removing detected cards changes later days."""
    removal_mattered = False
    for result in evaluation.folds:
        test_df = _handbook_test_set(transactions, result.fold.index).copy()
        test_df["predictions"] = result.scores
        _, per_day, mean = card_precision_top_k(test_df, k)
        _, per_day_kept, _ = card_precision_top_k(
            test_df, k, remove_detected_compromised_cards=False
        )
        ours = card_precision_at_k(
            test_df["TX_DATETIME"].to_numpy().astype("datetime64[D]"),
            test_df["CUSTOMER_ID"],
            test_df["TX_FRAUD"],
            test_df["predictions"],
            k=k,
        )
        assert list(ours.per_day.values()) == pytest.approx(per_day, abs=1e-12)
        assert ours.mean == pytest.approx(mean, abs=1e-12)
        removal_mattered |= per_day_kept != per_day
    # the removal of detected cards is exercised: without it, some later day differs
    assert removal_mattered


def test_a_perfect_ranking_matches_the_handbook(transactions: pd.DataFrame) -> None:
    for fold in SPLIT.split(transactions):
        test_df = _handbook_test_set(transactions, fold.index).copy()
        test_df["predictions"] = test_df["TX_FRAUD"].astype(float)
        _, per_day, mean = card_precision_top_k(test_df, 100)
        ours = card_precision_at_k(
            test_df["TX_DATETIME"].to_numpy().astype("datetime64[D]"),
            test_df["CUSTOMER_ID"],
            test_df["TX_FRAUD"],
            test_df["predictions"],
        )
        assert list(ours.per_day.values()) == pytest.approx(per_day, abs=1e-12)
        assert ours.mean == pytest.approx(mean, abs=1e-12)
