from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.data.fraud_simulator import TRANSACTION_COLUMNS, FraudSimulator
from shipyard.errors import ParameterError
from shipyard.workspace import Workspace
from tests.data import handbook


@pytest.mark.slow
def test_reference_mode_reproduces_the_published_data_set(
    reference_workspace: tuple[Workspace, Dataset],
) -> None:
    _, dataset = reference_workspace
    assert dataset.n_rows == 1_754_155
    assert dataset.n_positives == 14_681
    tx = dataset.read()
    assert tx["TX_FRAUD_SCENARIO"].value_counts().to_dict() == {
        0: 1_739_474,
        2: 9_077,
        3: 4_631,
        1: 973,
    }
    # The first rows as printed in the handbook (chapter 3.2): same IDs, same draws.
    head = tx.head(5)[["TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT"]]
    assert head.values.tolist() == [
        [0, 596, 3156, 57.16],
        [1, 4961, 3412, 81.51],
        [2, 2, 1365, 146.00],
        [3, 4128, 8737, 64.49],
        [4, 927, 9906, 50.99],
    ]
    assert str(tx["TX_DATETIME"].iloc[0]) == "2018-04-01 00:00:31"
    assert str(tx["TX_DATETIME"].iloc[-1]) == "2018-09-30 23:59:57"
    assert len(dataset.partitions) == 183


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_reference_mode_equals_the_straightforward_handbook_code(n_jobs: int) -> None:
    expected = handbook.generate(n_customers=120, n_terminals=300, nb_days=40)
    got = FraudSimulator(n_customers=120, n_terminals=300, n_days=40, n_jobs=n_jobs).simulate()
    tx = got.transactions
    assert len(tx) == len(expected) > 1000
    for column in (
        "CUSTOMER_ID",
        "TERMINAL_ID",
        "TX_TIME_SECONDS",
        "TX_FRAUD",
        "TX_FRAUD_SCENARIO",
    ):
        np.testing.assert_array_equal(tx[column].to_numpy(), expected[column].to_numpy(), column)
    np.testing.assert_array_equal(tx["TX_AMOUNT"].to_numpy(), expected["TX_AMOUNT"].to_numpy())
    assert (tx["TX_DATETIME"].to_numpy() == expected["TX_DATETIME"].to_numpy()).all()
    assert set(expected["TX_FRAUD_SCENARIO"]) == {0, 1, 2, 3}


def test_fast_mode_has_the_reference_distributions() -> None:
    config = {"n_customers": 400, "n_terminals": 800, "n_days": 90}
    fast = FraudSimulator(mode="fast", **config).simulate()  # type: ignore[arg-type]
    ref = FraudSimulator(mode="reference", n_jobs=1, **config).simulate()  # type: ignore[arg-type]
    f, r = fast.transactions, ref.transactions
    assert list(f.columns) == list(TRANSACTION_COLUMNS) == list(r.columns)
    assert abs(len(f) / len(r) - 1) < 0.03
    assert abs(f["TX_AMOUNT"].mean() / r["TX_AMOUNT"].mean() - 1) < 0.03
    assert abs(f["TX_FRAUD"].mean() - r["TX_FRAUD"].mean()) < 0.004
    assert f["TX_TIME_SECONDS"].between(0, 90 * 86_400).all()
    assert (f["TX_AMOUNT"] >= 0).all()
    # customer profiles and terminal choice are shared: every terminal is within radius
    cust = fast.customers.set_index("CUSTOMER_ID")
    term = fast.terminals.set_index("TERMINAL_ID")
    dx = (
        cust.loc[f["CUSTOMER_ID"], "x_customer_id"].to_numpy()
        - term.loc[f["TERMINAL_ID"], "x_terminal_id"].to_numpy()
    )
    dy = (
        cust.loc[f["CUSTOMER_ID"], "y_customer_id"].to_numpy()
        - term.loc[f["TERMINAL_ID"], "y_terminal_id"].to_numpy()
    )
    assert (np.sqrt(dx**2 + dy**2) < 5).all()


def test_fast_mode_is_deterministic_per_seed() -> None:
    a = FraudSimulator(200, 400, 20, mode="fast", seed=3).simulate().transactions
    b = FraudSimulator(200, 400, 20, mode="fast", seed=3).simulate().transactions
    pd.testing.assert_frame_equal(a, b)


def test_progress_reports_every_stage() -> None:
    seen: dict[str, tuple[int, int]] = {}
    FraudSimulator(50, 100, 20, mode="fast").simulate(
        progress=lambda stage, done, total: seen.__setitem__(stage, (done, total))
    )
    assert seen["transactions"] == (50, 50)
    assert seen["frauds"][0] == seen["frauds"][1] > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"n_customers": 0},
            "'n_customers' parameter of FraudSimulator must be an int >= 1. Got 0",
        ),
        ({"n_days": 2.5}, "'n_days' parameter of FraudSimulator must be an int >= 1. Got 2.5"),
        ({"mode": "exact"}, "'mode' parameter of FraudSimulator must be one of"),
        ({"start_date": "April"}, "'start_date' parameter of FraudSimulator must be an ISO date"),
        ({"radius": -1}, "'radius' parameter"),
    ],
)
def test_invalid_parameters_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        FraudSimulator(**kwargs).simulate()  # type: ignore[arg-type]
