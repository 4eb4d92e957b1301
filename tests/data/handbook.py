"""The handbook's generator written the straightforward way, as an independent oracle.

Global numpy / Python generators, per-row pandas, one fraud scenario loop over the whole
table per day: slow, but obviously the published algorithm. Tests compare Shipyard's
optimized implementation against it on small configurations.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd


def generate(n_customers: int, n_terminals: int, nb_days: int, r: float = 5.0) -> pd.DataFrame:
    np.random.seed(0)
    customers = []
    for customer_id in range(n_customers):
        x, y = np.random.uniform(0, 100), np.random.uniform(0, 100)
        mean_amount = np.random.uniform(5, 100)
        customers.append([customer_id, x, y, mean_amount, mean_amount / 2, np.random.uniform(0, 4)])
    cust = pd.DataFrame(
        customers, columns=["CUSTOMER_ID", "x", "y", "mean_amount", "std_amount", "mean_nb"]
    )
    np.random.seed(1)
    terms = pd.DataFrame(
        [[t, np.random.uniform(0, 100), np.random.uniform(0, 100)] for t in range(n_terminals)],
        columns=["TERMINAL_ID", "x", "y"],
    )
    xy_t = terms[["x", "y"]].values.astype(float)
    rows = []
    for _, c in cust.iterrows():
        dist = np.sqrt(np.sum(np.square(c[["x", "y"]].values.astype(float) - xy_t), axis=1))
        available = list(np.where(dist < r)[0])
        random.seed(int(c.CUSTOMER_ID))
        np.random.seed(int(c.CUSTOMER_ID))
        for day in range(nb_days):
            for _ in range(np.random.poisson(c.mean_nb)):
                time_tx = int(np.random.normal(86400 / 2, 20000))
                if 0 < time_tx < 86400:
                    amount = np.random.normal(c.mean_amount, c.std_amount)
                    if amount < 0:
                        amount = np.random.uniform(0, c.mean_amount * 2)
                    amount = np.round(amount, decimals=2)
                    if len(available) > 0:
                        terminal = random.choice(available)
                        rows.append(
                            [time_tx + day * 86400, day, int(c.CUSTOMER_ID), terminal, amount]
                        )
    tx = pd.DataFrame(
        rows, columns=["TX_TIME_SECONDS", "TX_TIME_DAYS", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT"]
    )
    tx["TX_DATETIME"] = pd.to_datetime(tx["TX_TIME_SECONDS"], unit="s", origin="2018-04-01")
    tx = tx.sort_values("TX_DATETIME").reset_index(drop=True)
    tx["TX_FRAUD"] = 0
    tx["TX_FRAUD_SCENARIO"] = 0
    tx.loc[tx.TX_AMOUNT > 220, ["TX_FRAUD", "TX_FRAUD_SCENARIO"]] = 1
    for day in range(tx.TX_TIME_DAYS.max()):
        compromised = terms.TERMINAL_ID.sample(n=2, random_state=day)
        hit = tx[
            (day <= tx.TX_TIME_DAYS)
            & (day + 28 > tx.TX_TIME_DAYS)
            & tx.TERMINAL_ID.isin(compromised)
        ]
        tx.loc[hit.index, "TX_FRAUD"] = 1
        tx.loc[hit.index, "TX_FRAUD_SCENARIO"] = 2
    for day in range(tx.TX_TIME_DAYS.max()):
        compromised = cust.CUSTOMER_ID.sample(n=3, random_state=day).values
        hit = tx[
            (day <= tx.TX_TIME_DAYS)
            & (day + 14 > tx.TX_TIME_DAYS)
            & tx.CUSTOMER_ID.isin(compromised)
        ]
        random.seed(day)
        index = random.sample(list(hit.index.values), k=int(len(hit) / 3))
        tx.loc[index, "TX_AMOUNT"] = tx.loc[index, "TX_AMOUNT"] * 5
        tx.loc[index, "TX_FRAUD"] = 1
        tx.loc[index, "TX_FRAUD_SCENARIO"] = 3
    return tx
