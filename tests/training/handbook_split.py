"""The handbook's get_train_test_set, transcribed (an independent oracle for the splits)."""

from __future__ import annotations

import datetime

import pandas as pd


def get_train_test_set(
    transactions_df: pd.DataFrame,
    start_date_training: datetime.datetime,
    delta_train: int = 7,
    delta_delay: int = 7,
    delta_test: int = 7,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    train_df = transactions_df[
        (transactions_df.TX_DATETIME >= start_date_training)
        & (transactions_df.TX_DATETIME < start_date_training + datetime.timedelta(days=delta_train))
    ]
    test_df = []
    known_defrauded_customers = set(train_df[train_df.TX_FRAUD == 1].CUSTOMER_ID)
    start_tx_time_days_training = train_df.TX_TIME_DAYS.min()
    for day in range(delta_test):
        test_df_day = transactions_df[
            transactions_df.TX_TIME_DAYS
            == start_tx_time_days_training + delta_train + delta_delay + day
        ]
        test_df_day_delay_period = transactions_df[
            transactions_df.TX_TIME_DAYS == start_tx_time_days_training + delta_train + day - 1
        ]
        new_defrauded_customers = set(
            test_df_day_delay_period[test_df_day_delay_period.TX_FRAUD == 1].CUSTOMER_ID
        )
        known_defrauded_customers = known_defrauded_customers.union(new_defrauded_customers)
        test_df_day = test_df_day[~test_df_day.CUSTOMER_ID.isin(known_defrauded_customers)]
        test_df.append(test_df_day)
    return train_df, pd.concat(test_df)
