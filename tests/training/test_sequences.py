"""Lag columns for sequence models: point-in-time correct against a brute-force loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import DataValidationError, ParameterError, TrainingError
from shipyard.training.sequences import (
    add_sequence_columns,
    sequence_columns,
    sequence_layout,
)


def _brute_force(
    frame: pd.DataFrame, entity: str, time: str, columns: list[str], length: int
) -> pd.DataFrame:
    """For each row, scan every row: earlier instants of the same entity, latest first."""
    rows = []
    for i in range(len(frame)):
        me = frame.iloc[i]
        earlier = [
            j
            for j in range(len(frame))
            if frame[entity].iloc[j] == me[entity] and frame[time].iloc[j] < me[time]
        ]
        # most recent first; at one instant, the row later in the frame is the more recent
        earlier.sort(key=lambda j: (frame[time].iloc[j], j), reverse=True)
        out: dict[str, float] = {}
        for step in range(1, length + 1):
            there = step <= len(earlier)
            j = earlier[step - 1] if there else None
            for column in columns:
                out[f"SEQ_{step}_{column}"] = (
                    float(frame[column].iloc[j]) if j is not None else np.nan
                )
            gap = (me[time] - frame[time].iloc[j]).total_seconds() if j is not None else np.nan
            out[f"SEQ_{step}_GAP_SECONDS"] = gap
            out[f"SEQ_{step}_PRESENT"] = float(there)
        rows.append(out)
    return pd.DataFrame(rows, index=frame.index)


def _tiny() -> pd.DataFrame:
    """Two customers, ties at one instant, a customer with one transaction, rows unsorted."""
    t = pd.Timestamp("2018-04-01 10:00:00")
    s = pd.Timedelta(seconds=1)
    rows = [
        ("b", t + 50 * s, 5.0, 1),
        ("a", t + 10 * s, 2.0, 0),
        ("a", t, 1.0, 1),
        ("a", t + 10 * s, 3.0, 1),  # tied with the row above at t + 10 s
        ("c", t + 5 * s, 9.0, 0),
        ("a", t + 30 * s, 4.0, 0),
        ("b", t + 20 * s, 6.0, 1),
        ("a", t + 30 * s, 7.0, 1),  # tied again
        ("a", t + 95 * s, 8.0, 0),
    ]
    frame = pd.DataFrame(rows, columns=["CUSTOMER_ID", "TX_DATETIME", "TX_AMOUNT", "FLAG"])
    frame.index = pd.Index([10 * i for i in range(len(rows))])  # a non-default index survives
    return frame


def test_lag_columns_match_a_brute_force_loop_including_ties() -> None:
    frame = _tiny()
    before = frame.copy()
    out = add_sequence_columns(frame, "CUSTOMER_ID", "TX_DATETIME", ["TX_AMOUNT", "FLAG"], 3)
    pd.testing.assert_frame_equal(frame, before)  # the input is untouched
    expected = _brute_force(frame, "CUSTOMER_ID", "TX_DATETIME", ["TX_AMOUNT", "FLAG"], 3)
    added = sequence_columns(["TX_AMOUNT", "FLAG"], 3)
    assert list(out.columns) == [*frame.columns, *added]
    pd.testing.assert_frame_equal(out[frame.columns], frame)
    pd.testing.assert_frame_equal(out[added], expected[added])
    # the two rows tied at t + 10 s both see only the row at t
    tied = out.loc[[10, 30]]
    assert tied["SEQ_1_TX_AMOUNT"].tolist() == [1.0, 1.0]
    assert tied["SEQ_2_PRESENT"].tolist() == [0.0, 0.0]


def test_lag_columns_match_brute_force_on_a_random_frame_with_many_ties() -> None:
    rng = np.random.default_rng(3)
    n = 120
    frame = pd.DataFrame(
        {
            "CUSTOMER_ID": rng.integers(0, 6, n),
            "TX_DATETIME": pd.Timestamp("2018-04-01")
            + pd.to_timedelta(rng.integers(0, 40, n), unit="min"),
            "TX_AMOUNT": rng.exponential(50, n).round(2),
        }
    )
    out = add_sequence_columns(frame, "CUSTOMER_ID", "TX_DATETIME", ["TX_AMOUNT"], 4)
    expected = _brute_force(frame, "CUSTOMER_ID", "TX_DATETIME", ["TX_AMOUNT"], 4)
    added = sequence_columns(["TX_AMOUNT"], 4)
    pd.testing.assert_frame_equal(out[added], expected[added])


def test_dropping_the_future_changes_no_lag_column_of_the_past() -> None:
    rng = np.random.default_rng(5)
    n = 2_000
    frame = pd.DataFrame(
        {
            "CUSTOMER_ID": rng.integers(0, 50, n),
            "TX_DATETIME": pd.Timestamp("2018-04-01")
            + pd.to_timedelta(rng.integers(0, 10 * 86_400, n), unit="s"),
            "TX_AMOUNT": rng.exponential(50, n),
        }
    )
    cut = pd.Timestamp("2018-04-06")
    full = add_sequence_columns(frame, "CUSTOMER_ID", "TX_DATETIME", ["TX_AMOUNT"], 5)
    past = frame[frame["TX_DATETIME"] <= cut]
    truncated = add_sequence_columns(past, "CUSTOMER_ID", "TX_DATETIME", ["TX_AMOUNT"], 5)
    pd.testing.assert_frame_equal(full.loc[past.index], truncated)


def test_timezone_aware_instants_and_entities_without_an_id() -> None:
    frame = pd.DataFrame(
        {
            "CUSTOMER_ID": ["a", None, "a", None],
            "TX_DATETIME": pd.to_datetime(
                ["2018-04-01 10:00", "2018-04-01 10:01", "2018-04-01 11:00", "2018-04-01 12:00"]
            ).tz_localize("Europe/Paris"),
            "TX_AMOUNT": [1.0, 2.0, 3.0, 4.0],
        }
    )
    out = add_sequence_columns(frame, "CUSTOMER_ID", "TX_DATETIME", ["TX_AMOUNT"], 1)
    assert out["SEQ_1_TX_AMOUNT"].tolist()[2] == 1.0
    assert out["SEQ_1_GAP_SECONDS"].tolist()[2] == 3600.0
    assert out["SEQ_1_PRESENT"].tolist() == [0.0, 0.0, 1.0, 0.0]  # no id: no history


def test_bad_input_is_named() -> None:
    frame = _tiny()
    with pytest.raises(ParameterError, match="'length' parameter of add_sequence_columns"):
        add_sequence_columns(frame, "CUSTOMER_ID", "TX_DATETIME", ["TX_AMOUNT"], 0)
    with pytest.raises(DataValidationError, match="Column 'AMOUNT' is not in the frame"):
        add_sequence_columns(frame, "CUSTOMER_ID", "TX_DATETIME", ["AMOUNT"], 2)
    with pytest.raises(DataValidationError, match="'TX_AMOUNT' must hold datetimes"):
        add_sequence_columns(frame, "CUSTOMER_ID", "TX_AMOUNT", ["FLAG"], 2)
    with pytest.raises(DataValidationError, match="'CUSTOMER_ID' must be numeric"):
        add_sequence_columns(frame, "FLAG", "TX_DATETIME", ["CUSTOMER_ID"], 2)
    once = add_sequence_columns(frame, "CUSTOMER_ID", "TX_DATETIME", ["TX_AMOUNT"], 2)
    with pytest.raises(DataValidationError, match="already has lag column 'SEQ_1_TX_AMOUNT'"):
        add_sequence_columns(once, "CUSTOMER_ID", "TX_DATETIME", ["TX_AMOUNT"], 2)


def test_the_layout_finds_steps_channels_and_the_current_row_columns() -> None:
    features = ["TX_AMOUNT", *sequence_columns(["TX_AMOUNT"], 2), "C_NB_1"]
    layout = sequence_layout(features)
    assert layout.channels == ("TX_AMOUNT", "GAP_SECONDS", "PRESENT")
    assert layout.tabular == (0, 7)
    assert [[features[j] for j in step] for step in layout.steps] == [
        ["SEQ_1_TX_AMOUNT", "SEQ_1_GAP_SECONDS", "SEQ_1_PRESENT"],
        ["SEQ_2_TX_AMOUNT", "SEQ_2_GAP_SECONDS", "SEQ_2_PRESENT"],
    ]
    with pytest.raises(TrainingError, match="SEQ_2_PRESENT is missing"):
        sequence_layout(features[:-2])
    with pytest.raises(TrainingError, match="add_sequence_columns"):
        sequence_layout(["TX_AMOUNT"])
