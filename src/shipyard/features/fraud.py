"""The handbook's 15 baseline fraud features, as Shipyard feature views.

From chapter 3.4 of the *Fraud Detection Handbook* (Le Borgne et al.), source data set
``fraud`` (see :mod:`shipyard.data.fraud_simulator`):

* ``transaction``: TX_AMOUNT, TX_DURING_WEEKEND (weekday >= 5), TX_DURING_NIGHT (hour <= 6);
* ``customer_spending``: for n in 1, 7, 30 days, the number of the customer's transactions
  and their average amount over (t - n days, t], the current transaction included;
* ``terminal_risk``: for n in 1, 7, 30 days, with a delay of 7 days (labels of the last week
  are not yet known), the number of the terminal's transactions over (t - 7 - n, t - 7] and
  RISK = frauds / transactions over that window, 0 when it is empty.

Two more views go beyond the handbook (what the extended fraud models use):

* ``customer_history``: the customer's amounts *before* the transaction (past-only windows of
  30 and 90 days: count, mean, standard deviation, maximum) and the transaction's amount
  against them (ratio to the mean, z-score, ratio to the maximum): a stolen card spending
  five times its usual amount stands out against its own past, not against everyone's;
* ``terminal_history``: the terminal's known frauds (labels with the 7-day delay) over more
  windows, and over older weeks (frauds 14–21, 21–28, 28–35, 35–42 days ago): a terminal
  compromised for four weeks is still risky while its frauds are recent, and harmless once
  they are older than the compromise lasts.
"""

from __future__ import annotations

from datetime import timedelta

from shipyard.features.definitions import Aggregation, Derived, FeatureView, RowFeature
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

HISTORY_DAYS = (30, 90)


def _customer_history() -> tuple[Aggregation | Derived, ...]:
    features: list[Aggregation | Derived] = []
    for n in HISTORY_DAYS:
        window = timedelta(days=n)
        avg, std = f"CUSTOMER_ID_PAST_AVG_AMOUNT_{n}DAY", f"CUSTOMER_ID_PAST_STD_AMOUNT_{n}DAY"
        features += [
            Aggregation(f"CUSTOMER_ID_PAST_NB_TX_{n}DAY", "count", window, past_only=True),
            Aggregation(
                avg,
                "mean",
                window,
                column="TX_AMOUNT",
                decimals=2,
                past_only=True,
                constraint=NON_NEGATIVE,
            ),
            Aggregation(
                std,
                "std",
                window,
                column="TX_AMOUNT",
                decimals=2,
                past_only=True,
                constraint=NON_NEGATIVE,
            ),
            Derived(
                f"CUSTOMER_ID_AMOUNT_RATIO_{n}DAY",
                "ratio",
                ("TX_AMOUNT", avg),
                constraint=NON_NEGATIVE,
            ),
            Derived(f"CUSTOMER_ID_AMOUNT_ZSCORE_{n}DAY", "zscore", ("TX_AMOUNT", avg, std)),
        ]
    longest = f"CUSTOMER_ID_PAST_MAX_AMOUNT_{HISTORY_DAYS[-1]}DAY"
    features += [
        Aggregation(
            longest,
            "max",
            timedelta(days=HISTORY_DAYS[-1]),
            column="TX_AMOUNT",
            past_only=True,
            constraint=NON_NEGATIVE,
        ),
        Derived(
            f"CUSTOMER_ID_AMOUNT_TO_MAX_{HISTORY_DAYS[-1]}DAY",
            "ratio",
            ("TX_AMOUNT", longest),
            constraint=NON_NEGATIVE,
        ),
    ]
    return tuple(features)


CUSTOMER_HISTORY = FeatureView(
    name="customer_history",
    entity="CUSTOMER_ID",
    timestamp="TX_DATETIME",
    source="fraud",
    description="The card's amounts before the transaction, and the transaction against them.",
    features=_customer_history(),
)

TERMINAL_WINDOWS = (
    (7, 1),
    (7, 2),
    (7, 7),
    (7, 14),
    (7, 21),
    (7, 30),
    (14, 7),
    (21, 7),
    (28, 1),
    (28, 7),
    (35, 7),
)
"""(delay, window) in days of the terminal history's counts: (t - delay - window, t - delay]."""


def _terminal_history() -> tuple[Aggregation, ...]:
    features: list[Aggregation] = []
    for delay, window in TERMINAL_WINDOWS:
        span = f"{window}DAY_WINDOW" if delay == 7 else f"{delay + window}_{delay}DAYS_AGO"
        frauds = Aggregation(
            f"TERMINAL_ID_NB_FRAUD_{span}",
            "sum",
            timedelta(days=window),
            column="TX_FRAUD",
            delay=timedelta(days=delay),
            decimals=0,
            fill_value=0.0,
            constraint=NON_NEGATIVE,
        )
        features.append(frauds)
        if delay != 7 or window not in WINDOWS_DAYS:  # the baseline counts these already
            features.append(
                Aggregation(
                    f"TERMINAL_ID_NB_TX_{span}",
                    "count",
                    timedelta(days=window),
                    delay=timedelta(days=delay),
                )
            )
    return tuple(features)


TERMINAL_HISTORY = FeatureView(
    name="terminal_history",
    entity="TERMINAL_ID",
    timestamp="TX_DATETIME",
    source="fraud",
    description="The terminal's known frauds over more windows and over older weeks.",
    features=_terminal_history(),
)

BASELINE_VIEWS = (TRANSACTION, CUSTOMER_SPENDING, TERMINAL_RISK)
BASELINE_VIEWS_REF = "shipyard.features.fraud:BASELINE_VIEWS"
"""How runs, model versions and the CLI name these views (``module:attribute``)."""
BASELINE_FEATURES = tuple(name for view in BASELINE_VIEWS for name in view.feature_names)
WITH_CUSTOMER_HISTORY = (*BASELINE_VIEWS, CUSTOMER_HISTORY)
WITH_TERMINAL_HISTORY = (*BASELINE_VIEWS, TERMINAL_HISTORY)
EXTENDED_VIEWS = (*BASELINE_VIEWS, CUSTOMER_HISTORY, TERMINAL_HISTORY)
FEATURE_SETS = {
    "baseline": BASELINE_VIEWS_REF,
    "customer_history": "shipyard.features.fraud:WITH_CUSTOMER_HISTORY",
    "terminal_history": "shipyard.features.fraud:WITH_TERMINAL_HISTORY",
    "extended": "shipyard.features.fraud:EXTENDED_VIEWS",
}
"""The feature sets of the ablation, by name: the baseline, each added group, and both."""
