"""The retraining replay: the new fraud pattern's frauds, and the weekly decisions end to end."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import ParameterError
from shipyard.scenarios.retrain import (
    NightBursts,
    RetrainScenarioResult,
    add_night_bursts,
    run_retrain_scenario,
)
from shipyard.workspace import Workspace

START = date(2018, 6, 17)


@pytest.fixture(scope="module")
def simulated() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Four weeks of a small simulated fraud table and its terminals."""
    from shipyard.data.fraud_simulator import FraudSimulator

    data = FraudSimulator(
        n_customers=200, n_terminals=400, n_days=28, start_date="2018-06-03", mode="fast", seed=3
    ).simulate()
    return data.transactions, data.terminals


def test_the_pattern_adds_night_frauds_from_its_start_and_changes_no_existing_row(
    simulated: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    transactions, terminals = simulated
    pattern = NightBursts(start=START, cards_per_day=2, nights=2, per_night=(3, 6))
    table = add_night_bursts(transactions, terminals, pattern)
    added = table[table["TX_FRAUD_SCENARIO"] == 4]
    days = (table["TX_DATETIME"].max().normalize() - pd.Timestamp(START)).days + 1
    assert 2 * 2 * 3 * (days - 1) <= len(added) <= 2 * 2 * 6 * days
    assert (added["TX_FRAUD"] == 1).all()
    assert (added["TX_DATETIME"] >= pd.Timestamp(START)).all()
    hours = added["TX_DATETIME"].dt.hour
    assert ((hours >= 1) & (hours < 5)).all()
    assert added["TX_AMOUNT"].between(20, 60).all()
    assert table["TX_DATETIME"].is_monotonic_increasing
    assert table["TRANSACTION_ID"].is_unique
    seconds = (table["TX_DATETIME"] - pd.Timestamp("2018-06-03")).dt.total_seconds()
    np.testing.assert_array_equal(table["TX_TIME_SECONDS"], seconds.astype(np.int64))
    kept = table[table["TX_FRAUD_SCENARIO"] != 4].set_index("TRANSACTION_ID").sort_index()
    pd.testing.assert_frame_equal(kept, transactions.set_index("TRANSACTION_ID").sort_index())
    before = transactions[transactions["TX_DATETIME"] < pd.Timestamp(START)]
    known = set(before.loc[before["TX_FRAUD"] == 1, "CUSTOMER_ID"])
    assert not known & set(added["CUSTOMER_ID"])  # cards never compromised before


def test_the_pattern_is_seeded(simulated: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    transactions, terminals = simulated
    first = add_night_bursts(transactions, terminals, NightBursts(start=START, seed=1))
    again = add_night_bursts(transactions, terminals, NightBursts(start=START, seed=1))
    other = add_night_bursts(transactions, terminals, NightBursts(start=START, seed=2))
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)


@pytest.mark.parametrize(
    ("pattern", "field"),
    [
        (NightBursts(start=START, cards_per_day=0), "cards_per_day"),
        (NightBursts(start=START, per_night=(5, 2)), "per_night"),
        (NightBursts(start=START, hours=(5.0, 30.0)), "hours"),
    ],
)
def test_a_bad_pattern_is_refused_naming_the_field(
    simulated: tuple[pd.DataFrame, pd.DataFrame], pattern: NightBursts, field: str
) -> None:
    transactions, terminals = simulated
    with pytest.raises(ParameterError, match=f"'{field}' parameter of NightBursts"):
        add_night_bursts(transactions, terminals, pattern)


def test_a_pattern_week_outside_the_replay_is_refused(workspace: Workspace) -> None:
    with pytest.raises(ParameterError, match="'pattern_week' parameter of run_retrain_scenario"):
        run_retrain_scenario(workspace, out=workspace.root / "out", weeks=4, pattern_week=5)


def test_the_command_refuses_a_pattern_week_outside_the_replay_before_any_work() -> None:
    from click.testing import CliRunner

    from shipyard.cli.scenario import retrain

    result = CliRunner().invoke(retrain, ["--weeks", "4", "--pattern-week", "5"])
    assert result.exit_code == 2
    assert "--pattern-week" in result.output and "[2, 4]" in result.output


def test_importing_the_scenario_and_its_command_loads_no_heavy_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys, shipyard.scenarios.retrain, shipyard.cli.scenario, "
        "shipyard.pipelines.retrain; "
        "print(sorted(m for m in ('numpy', 'pandas', 'scipy', 'duckdb', 'pyarrow', 'sklearn', "
        "'lightgbm', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RetrainScenarioResult]:
    ws = Workspace.init(tmp_path_factory.mktemp("retrain") / "ws")
    yield run_retrain_scenario(ws, out=ws.root / "out")
    ws.close()


@pytest.mark.slow
def test_the_champion_is_kept_until_the_pattern_can_be_learned_then_replaced(
    replayed: RetrainScenarioResult,
) -> None:
    result = replayed
    # weeks 1-5: the challenger trains on days without the pattern (its labels come a week
    # late, and a delay separates training from the evaluation days): not significantly
    # better, kept. Week 6: it trained on the pattern's first week: promoted by canary on
    # week 7's traffic (on a machine too busy for the canary to finish within that week's
    # traffic, the run waits and the canary resumes at the end of week 7: never blindly)
    assert result.decisions[:5] == ("kept",) * 5
    assert result.decisions[5:] in (("promoted", "kept"), ("waiting", "promoted"))
    assert result.shown
    kept = result.weeks[0]
    promoted = next(w for w in result.weeks if w.decision == "promoted")
    assert kept.delta_low is not None and kept.delta_low <= 0
    assert "not significantly better" in kept.why
    assert promoted.delta_low is not None and promoted.delta_low > 0
    assert promoted.canary is not None and promoted.canary.startswith("promoted")
    assert promoted.version is not None
    assert result.champion_after == promoted.version != result.champion_before
    assert all(w.champion == result.champion_before for w in result.weeks[:6])
    if result.decisions[6] == "kept":
        assert result.weeks[6].champion == promoted.version  # the next week judges the new one
    assert result.pattern_frauds > 0 and result.labels > 0
    assert "promoted" in result.table() and "kept" in result.table()
