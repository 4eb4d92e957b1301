from __future__ import annotations

import datetime

import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.errors import DataValidationError, ParameterError
from shipyard.solutions.fraud import COLUMNS
from shipyard.training.splits import HoldoutSplit, PrequentialSplit
from shipyard.types import ColumnRoles
from shipyard.workspace import Workspace
from tests.training.handbook_split import get_train_test_set


@pytest.fixture(scope="module")
def transactions(small_workspace: tuple[Workspace, Dataset]) -> pd.DataFrame:
    return small_workspace[1].read()


@pytest.mark.parametrize("start", ["2018-04-10", "2018-04-24"])
def test_holdout_equals_the_handbook_split(transactions: pd.DataFrame, start: str) -> None:
    fold = HoldoutSplit(start, columns=COLUMNS).split(transactions)[0]
    train, test = get_train_test_set(transactions, datetime.datetime.fromisoformat(start))
    assert fold.train.tolist() == train.index.tolist()
    assert fold.test.tolist() == test.index.tolist()
    assert len(fold.test) > 1000


def test_known_compromised_cards_leave_the_test_days(transactions: pd.DataFrame) -> None:
    kept = HoldoutSplit("2018-04-10", columns=COLUMNS).split(transactions)[0]
    everything = HoldoutSplit("2018-04-10", remove_known_compromised=False, columns=COLUMNS).split(
        transactions
    )[0]
    assert set(kept.test) < set(everything.test)
    train_frauds = set(transactions.iloc[kept.train].query("TX_FRAUD == 1").CUSTOMER_ID)
    assert not train_frauds & set(transactions.iloc[kept.test].CUSTOMER_ID)


def test_prequential_folds_step_back_one_test_period(transactions: pd.DataFrame) -> None:
    folds = PrequentialSplit("2018-05-01", n_folds=3, columns=COLUMNS).split(transactions)
    assert [f.train_start.isoformat() for f in folds] == ["2018-05-01", "2018-04-24", "2018-04-17"]
    for fold in folds:
        assert fold.test_start == fold.train_end + datetime.timedelta(days=8)  # 7 delay days
        times = transactions["TX_DATETIME"]
        assert times.iloc[fold.train].max() < times.iloc[fold.test].min()
        assert fold.describe()["n_test"] == len(fold.test)
    shifted = PrequentialSplit("2018-05-01", columns=COLUMNS).shifted(-14)
    assert shifted.start_date_training == "2018-04-17"


@pytest.mark.parametrize(
    ("split", "message"),
    [
        (HoldoutSplit("April", columns=COLUMNS), "'start_date_training' parameter of HoldoutSplit"),
        (
            HoldoutSplit("2018-04-10", delta_train=0, columns=COLUMNS),
            "'delta_train' parameter of HoldoutSplit must be an int >= 1",
        ),
        (
            PrequentialSplit("2018-04-10", n_folds=0, columns=COLUMNS),
            "'n_folds' parameter of PrequentialSplit",
        ),
    ],
)
def test_bad_parameters_are_named(
    transactions: pd.DataFrame, split: HoldoutSplit, message: str
) -> None:
    with pytest.raises(ParameterError, match=message):
        split.split(transactions)


def test_missing_column_is_named(transactions: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError, match="needs column 'TX_FRAUD'"):
        HoldoutSplit("2018-04-10", columns=COLUMNS).split(transactions.drop(columns="TX_FRAUD"))


def test_columns_must_be_column_roles(transactions: pd.DataFrame) -> None:
    split = HoldoutSplit("2018-04-10", columns="TX_FRAUD")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'columns' parameter of HoldoutSplit must be a Col"):
        split.split(transactions)


def test_the_split_reads_the_columns_it_is_given(transactions: pd.DataFrame) -> None:
    """The same data under other names splits the same way: no column name is built in."""
    renamed = transactions.rename(
        columns={"TX_DATETIME": "when", "CUSTOMER_ID": "who", "TX_FRAUD": "bad"}
    )
    roles = ColumnRoles(label="bad", time="when", entity="who")
    theirs = PrequentialSplit("2018-05-01", n_folds=2, columns=roles).split(renamed)
    ours = PrequentialSplit("2018-05-01", n_folds=2, columns=COLUMNS).split(transactions)
    for a, b in zip(theirs, ours, strict=True):
        assert a.train.tolist() == b.train.tolist()
        assert a.test.tolist() == b.test.tolist()


def test_a_longer_training_window_keeps_the_test_rows(transactions: pd.DataFrame) -> None:
    """train_days=28 trains on the 28 days ending on the protocol's last training day and
    tests on exactly the rows of the 7-day protocol (same delay, same known cards)."""
    short = PrequentialSplit("2018-05-15", n_folds=2, columns=COLUMNS).split(transactions)
    seven = PrequentialSplit("2018-05-15", n_folds=2, columns=COLUMNS, train_days=7).split(
        transactions
    )
    long = PrequentialSplit("2018-05-15", n_folds=2, columns=COLUMNS, train_days=28).split(
        transactions
    )
    days = transactions["TX_DATETIME"].dt.normalize()
    for a, b, c in zip(short, seven, long, strict=True):
        assert a.train.tolist() == b.train.tolist()
        assert a.test.tolist() == b.test.tolist() == c.test.tolist()
        assert c.train_end == a.train_end
        assert c.train_start == a.train_end - datetime.timedelta(days=27)
        first, last = pd.Timestamp(c.train_start), pd.Timestamp(c.train_end)
        expected = days[(days >= first) & (days <= last)].index
        assert c.train.tolist() == expected.tolist()
        assert days.iloc[c.train].nunique() == 28
        delay_start = pd.Timestamp(c.train_end + datetime.timedelta(days=1))
        assert days.iloc[c.train].max() < delay_start
        assert set(a.train) < set(c.train)
        assert c.describe()["n_train"] > 3 * a.describe()["n_train"]


def test_known_cards_come_from_the_protocol_window(transactions: pd.DataFrame) -> None:
    """A card compromised only before the 7-day protocol window is not dropped from the
    test days because the model happened to train on more days."""
    fold = HoldoutSplit("2018-05-15", columns=COLUMNS, train_days=28).split(transactions)[0]
    everything = HoldoutSplit(
        "2018-05-15", remove_known_compromised=False, columns=COLUMNS, train_days=28
    ).split(transactions)[0]
    frauds = transactions.query("TX_FRAUD == 1")
    days = frauds["TX_DATETIME"].dt.normalize()
    early = set(frauds[days < pd.Timestamp("2018-05-15")].CUSTOMER_ID)
    protocol = set(frauds[days >= pd.Timestamp("2018-05-15")].CUSTOMER_ID)
    only_early = early - protocol
    tested = set(transactions.iloc[fold.test].CUSTOMER_ID)
    could_be = set(transactions.iloc[everything.test].CUSTOMER_ID)
    assert only_early & could_be  # the data has such cards on the test days ...
    assert only_early & could_be <= tested  # ... and they stay in the test rows


def test_the_training_window_is_logged_and_shifted() -> None:
    split = PrequentialSplit("2018-05-15", columns=COLUMNS, train_days=28)
    assert split.get_params()["train_days"] == 28
    assert split.describe()["train_days"] == 28
    assert PrequentialSplit("2018-05-15", columns=COLUMNS).describe()["train_days"] is None
    shifted = split.shifted(-7)
    assert shifted.train_days == 28
    assert shifted.start_date_training == "2018-05-08"


def test_a_frame_too_short_for_the_window_names_the_fold_and_day(
    transactions: pd.DataFrame,
) -> None:
    # the frame starts on 2018-04-01; fold 2 trains from 2018-03-27
    split = PrequentialSplit("2018-05-01", n_folds=3, columns=COLUMNS, train_days=28)
    with pytest.raises(DataValidationError, match=r"Fold 2 .* from 2018-03-27.*load it from"):
        split.split(transactions)
    assert (
        len(
            PrequentialSplit("2018-05-01", n_folds=2, columns=COLUMNS, train_days=28).split(
                transactions
            )
        )
        == 2
    )  # folds 0 and 1 fit in the frame


def test_train_days_must_be_a_positive_int(transactions: pd.DataFrame) -> None:
    split = HoldoutSplit("2018-05-01", columns=COLUMNS, train_days=0)
    with pytest.raises(
        ParameterError, match="'train_days' parameter of HoldoutSplit must be an int"
    ):
        split.split(transactions)
