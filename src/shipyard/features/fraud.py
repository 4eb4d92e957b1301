"""The handbook's 15 baseline fraud features, as Shipyard feature views.

From chapter 3.4 of the *Fraud Detection Handbook* (Le Borgne et al.), source data set
``fraud`` (see :mod:`shipyard.data.fraud_simulator`):

* ``transaction``: TX_AMOUNT, TX_DURING_WEEKEND (weekday >= 5), TX_DURING_NIGHT (hour <= 6);
* ``customer_spending``: for n in 1, 7, 30 days, the number of the customer's transactions
  and their average amount over (t - n days, t], the current transaction included;
* ``terminal_risk``: for n in 1, 7, 30 days, with a delay of 7 days (labels of the last week
  are not yet known), the number of the terminal's transactions over (t - 7 - n, t - 7] and
  RISK = frauds / transactions over that window, 0 when it is empty.
"""

from __future__ import annotations

from datetime import timedelta

from shipyard.features.definitions import Aggregation, FeatureView, RowFeature
from shipyard.types import FLAG, NON_NEGATIVE, RATE

WINDOWS_DAYS = (1, 7, 30)
TERMINAL_DELAY = timedelta(days=7)

TRANSACTION = FeatureView(
    name="transaction",
    entity="TRANSACTION_ID",
    timestamp="TX_DATETIME",
    source="fraud",
    description="Features of the transaction itself.",
    features=(
        RowFeature("TX_AMOUNT", '"TX_AMOUNT"', inputs=("TX_AMOUNT",), constraint=NON_NEGATIVE),
        RowFeature(
            "TX_DURING_WEEKEND",
            # isodow: Monday = 1 ... Sunday = 7, so Python's weekday() >= 5 is isodow >= 6
            'CAST(isodow("TX_DATETIME") >= 6 AS TINYINT)',
            inputs=("TX_DATETIME",),
            constraint=FLAG,
        ),
        RowFeature(
            "TX_DURING_NIGHT",
            'CAST(hour("TX_DATETIME") <= 6 AS TINYINT)',
            inputs=("TX_DATETIME",),
            constraint=FLAG,
        ),
    ),
)

CUSTOMER_SPENDING = FeatureView(
    name="customer_spending",
    entity="CUSTOMER_ID",
    timestamp="TX_DATETIME",
    source="fraud",
    description="How often and how much the card spent recently.",
    features=tuple(
        feature
        for n in WINDOWS_DAYS
        for feature in (
            Aggregation(f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW", "count", timedelta(days=n)),
            Aggregation(
                f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW",
                "mean",
                timedelta(days=n),
                column="TX_AMOUNT",
                decimals=2,
                constraint=NON_NEGATIVE,
            ),
        )
    ),
)

TERMINAL_RISK = FeatureView(
    name="terminal_risk",
    entity="TERMINAL_ID",
    timestamp="TX_DATETIME",
    source="fraud",
    description="How busy and how often compromised the terminal was, with known labels only.",
    features=tuple(
        feature
        for n in WINDOWS_DAYS
        for feature in (
            Aggregation(
                f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW", "count", timedelta(days=n), delay=TERMINAL_DELAY
            ),
            Aggregation(
                f"TERMINAL_ID_RISK_{n}DAY_WINDOW",
                "mean",
                timedelta(days=n),
                column="TX_FRAUD",
                delay=TERMINAL_DELAY,
                fill_value=0.0,
                constraint=RATE,
            ),
        )
    ),
)

BASELINE_VIEWS = (TRANSACTION, CUSTOMER_SPENDING, TERMINAL_RISK)
BASELINE_VIEWS_REF = "shipyard.features.fraud:BASELINE_VIEWS"
"""How runs, model versions and the CLI name these views (``module:attribute``)."""
BASELINE_FEATURES = tuple(name for view in BASELINE_VIEWS for name in view.feature_names)
