"""The 15 baseline features computed the obvious way, one event at a time, with pandas.

An independent oracle for the DuckDB implementation: it follows the written definitions
(windows (t - n, t] per customer, (t - 7 - n, t - 7] per terminal) with boolean masks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DAY = pd.Timedelta(days=1)


def baseline_features(history: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    by_customer = dict(list(history.groupby("CUSTOMER_ID")))
    by_terminal = dict(list(history.groupby("TERMINAL_ID")))
    empty = history.iloc[:0]
    amount = history.set_index("TRANSACTION_ID")["TX_AMOUNT"]
    rows = []
    for event in events.itertuples(index=False):
        t = event.TX_DATETIME
        row: dict[str, float] = {
            "TRANSACTION_ID": event.TRANSACTION_ID,
            "TX_AMOUNT": amount[event.TRANSACTION_ID],
            "TX_DURING_WEEKEND": float(t.weekday() >= 5),
            "TX_DURING_NIGHT": float(t.hour <= 6),
        }
        cust = by_customer.get(event.CUSTOMER_ID, empty)
        term = by_terminal.get(event.TERMINAL_ID, empty)
        for n in (1, 7, 30):
            window = cust[(t - n * DAY < cust.TX_DATETIME) & (t >= cust.TX_DATETIME)]
            row[f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW"] = len(window)
            row[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] = (
                window.TX_AMOUNT.mean() if len(window) else np.nan
            )
            lo, hi = t - (7 + n) * DAY, t - 7 * DAY
            window = term[(lo < term.TX_DATETIME) & (hi >= term.TX_DATETIME)]
            row[f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW"] = len(window)
            row[f"TERMINAL_ID_RISK_{n}DAY_WINDOW"] = window.TX_FRAUD.mean() if len(window) else 0.0
        rows.append(row)
    return pd.DataFrame(rows)
