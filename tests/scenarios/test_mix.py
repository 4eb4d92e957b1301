"""The traffic-mix drift: only the drifted week changes, by copies of its segment's own rows."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from shipyard.errors import DataValidationError, ParameterError
from shipyard.scenarios import MixDrift, shift_mix
from shipyard.scenarios.mix import SMALL_RISKY_TERMINALS, in_segment

START, END = date(2018, 6, 24), date(2018, 7, 1)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Three weeks of replay rows in time order: the segment's two inputs, a label, an id."""
    rng = np.random.default_rng(5)
    n = 6_000
    times = pd.Timestamp("2018-06-10") + pd.to_timedelta(np.sort(rng.random(n)) * 21, unit="D")
    risk = np.where(rng.random(n) < 0.2, rng.random(n), 0.0)
    return pd.DataFrame(
        {
            "TX_DATETIME": times,
            "TERMINAL_ID_RISK_7DAY_WINDOW": risk,
            "TERMINAL_ID_NB_TX_7DAY_WINDOW": rng.integers(0, 20, n).astype(float),
            "TX_FRAUD": (rng.random(n) < 0.1 + 0.5 * risk).astype(int),
            "ROW_ID": np.arange(n),
        }
    )


def week(rows: pd.DataFrame) -> pd.Series[bool]:
    return (rows["TX_DATETIME"] >= pd.Timestamp(START)) & (rows["TX_DATETIME"] < pd.Timestamp(END))


def test_only_the_drifted_week_changes_and_every_row_is_an_original_with_its_label(
    frame: pd.DataFrame,
) -> None:
    shifted, source = shift_mix(frame, MixDrift(0.4, 0, start=START, end=END))
    pd.testing.assert_frame_equal(shifted, frame.iloc[source].reset_index(drop=True))
    # each row is an original row, inputs, time and label together (ROW_ID names the original)
    pd.testing.assert_frame_equal(
        shifted.drop(columns="ROW_ID"),
        frame.set_index("ROW_ID").loc[shifted["ROW_ID"]].reset_index(drop=True),
    )
    pd.testing.assert_frame_equal(shifted[~week(shifted)], frame[~week(frame)])  # weeks 1-2
    assert set(frame["ROW_ID"]) <= set(shifted["ROW_ID"])  # no row dropped
    copies = shifted[shifted["ROW_ID"].duplicated()]
    assert len(copies) > 0 and week(copies).all()
    assert in_segment(copies, SMALL_RISKY_TERMINALS).all()
    assert shifted["TX_DATETIME"].is_monotonic_increasing


def test_the_segment_grows_to_the_share_asked_and_its_fraud_rate_stays(
    frame: pd.DataFrame,
) -> None:
    before = frame[week(frame)]
    shifted, _ = shift_mix(frame, MixDrift(0.4, 0, start=START, end=END))
    after = shifted[week(shifted)]
    was = in_segment(before, SMALL_RISKY_TERMINALS)
    now = in_segment(after, SMALL_RISKY_TERMINALS)
    assert was.mean() < 0.2
    assert now.mean() == pytest.approx(0.4, abs=1 / len(after))
    # copies drawn at random from the segment's rows: its fraud rate moves by sampling only
    rate, n = before["TX_FRAUD"][was].mean(), int(now.sum())
    assert after["TX_FRAUD"][now].mean() == pytest.approx(rate, abs=4 * np.sqrt(rate / n))


def test_the_copies_are_seeded(frame: pd.DataFrame) -> None:
    _, first = shift_mix(frame, MixDrift(0.3, 7, start=START, end=END))
    _, again = shift_mix(frame, MixDrift(0.3, 7, start=START, end=END))
    _, other = shift_mix(frame, MixDrift(0.3, 8, start=START, end=END))
    np.testing.assert_array_equal(first, again)
    assert len(first) == len(other) and not np.array_equal(first, other)


@pytest.mark.parametrize(
    ("drift", "field"),
    [
        (MixDrift(share=0.0), "share"),
        (MixDrift(share=1.0), "share"),
        (MixDrift(seed=1.5), "seed"),  # type: ignore[arg-type]
        (MixDrift(segment=()), "segment"),
        (MixDrift(segment=(("TX_AMOUNT", "=>", 1.0),)), "segment"),
        (MixDrift(start=END, end=START), "end"),
        (MixDrift(share=0.01, start=START, end=END), "share"),  # under the segment's own share
    ],
)
def test_a_bad_drift_is_refused_naming_the_field(
    frame: pd.DataFrame, drift: MixDrift, field: str
) -> None:
    with pytest.raises(ParameterError, match=f"'{field}' parameter of MixDrift"):
        shift_mix(frame, drift)


def test_a_segment_on_a_missing_column_is_refused_naming_it(frame: pd.DataFrame) -> None:
    drift = MixDrift(segment=(("TERMINAL_RISK", ">", 0.0),), start=START, end=END)
    with pytest.raises(DataValidationError, match="TERMINAL_RISK"):
        shift_mix(frame, drift)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--factor", "2"], "--factor applies to --drift amounts only"),
        (["--share", "1.5"], "'share' parameter of MixDrift"),
    ],
)
def test_the_command_refuses_a_bad_mix_before_touching_the_workspace(
    tmp_path: Path, options: list[str], message: str
) -> None:
    from shipyard.cli.main import cli

    folder = tmp_path / "ws"
    answer = CliRunner().invoke(
        cli, ["-w", str(folder), "scenario", "drift", "--drift", "mix", *options]
    )
    assert answer.exit_code != 0
    assert message in answer.output + str(answer.exception)
    assert not folder.exists()
