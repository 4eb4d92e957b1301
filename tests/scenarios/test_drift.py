"""The fraud drift scenario: the drifted data step, and the whole scenario end to end."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from shipyard.errors import ParameterError
from shipyard.scenarios import (
    AmountDrift,
    DriftScenarioResult,
    MixDrift,
    drift_amounts,
    run_drift_scenario,
)
from shipyard.workspace import Workspace

START, END = date(2018, 6, 24), date(2018, 7, 1)


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    """Four weeks of a small simulated fraud table."""
    from shipyard.data.fraud_simulator import FraudSimulator

    simulator = FraudSimulator(
        n_customers=200, n_terminals=400, n_days=28, start_date="2018-06-10", mode="fast", seed=3
    )
    return simulator.simulate().transactions


def test_only_the_segments_amounts_in_the_drifted_week_change_by_the_factor(
    transactions: pd.DataFrame,
) -> None:
    drifted, segment = drift_amounts(transactions, AmountDrift(0.25, 3.0, 0, START, END))
    assert len(segment) == round(0.25 * transactions["CUSTOMER_ID"].nunique())
    times = transactions["TX_DATETIME"]
    hit = (
        transactions["CUSTOMER_ID"].isin(segment) & (times >= "2018-06-24") & (times < "2018-07-01")
    )
    assert hit.sum() > 100
    before, after = transactions["TX_AMOUNT"], drifted["TX_AMOUNT"]
    np.testing.assert_allclose(after[hit], before[hit] * 3.0)
    pd.testing.assert_series_equal(after[~hit], before[~hit])
    others = [c for c in transactions.columns if c != "TX_AMOUNT"]
    pd.testing.assert_frame_equal(drifted[others], transactions[others])  # labels untouched
    pd.testing.assert_series_equal(transactions["TX_AMOUNT"], before)  # the input is not mutated


def test_the_segment_is_seeded(transactions: pd.DataFrame) -> None:
    drift = AmountDrift(0.3, 2.0, 11, START, END)
    _, first = drift_amounts(transactions, drift)
    _, again = drift_amounts(transactions, drift)
    _, other = drift_amounts(transactions, AmountDrift(0.3, 2.0, 12, START, END))
    np.testing.assert_array_equal(first, again)
    assert set(first) != set(other)


@pytest.mark.parametrize(
    ("drift", "field"),
    [
        (AmountDrift(share=0.0), "share"),
        (AmountDrift(share=1.5), "share"),
        (AmountDrift(factor=-1.0), "factor"),
        (AmountDrift(start=END, end=START), "end"),
    ],
)
def test_a_bad_drift_is_refused_naming_the_field(
    transactions: pd.DataFrame, drift: AmountDrift, field: str
) -> None:
    with pytest.raises(ParameterError, match=f"'{field}' parameter of AmountDrift"):
        drift_amounts(transactions, drift)


# -- end to end ------------------------------------------------------------------------------

SMALL = {"n_customers": 500, "n_terminals": 1_000}


@pytest.fixture(scope="module")
def scenario(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Workspace, DriftScenarioResult]]:
    ws = Workspace.init(tmp_path_factory.mktemp("scenario") / "ws")
    result = run_drift_scenario(ws, out=ws.root / "out", simulator=SMALL)
    yield ws, result
    ws.close()


@pytest.mark.slow
def test_the_drift_is_found_in_the_drifted_week_and_not_before(
    scenario: tuple[Workspace, DriftScenarioResult],
) -> None:
    _, result = scenario
    assert result.drift_start == result.replay_start + timedelta(weeks=2)
    assert [w.start for w in result.windows] == [
        result.replay_start + timedelta(weeks=k) for k in range(3)
    ]
    assert result.false_alarm_windows == ()
    assert "TX_AMOUNT" in result.drifted_columns and "prediction" in result.drifted_columns
    assert result.first_drift_day is not None
    assert result.drift_start <= result.first_drift_day <= result.replay_end
    assert "TX_AMOUNT" in result.onset_columns
    assert result.rows == sum(w.rows for w in result.windows)
    assert result.labels_before + result.labels_after == result.rows


@pytest.mark.slow
def test_realized_metrics_arrive_with_the_labels_and_confirm_the_drop(
    scenario: tuple[Workspace, DriftScenarioResult],
) -> None:
    _, result = scenario
    before, during = result.before(), result.during()
    assert before.realized_before_labels["precision"] is not None  # weeks 1-2: labels on time
    assert during.realized_before_labels["precision"] is None  # week 3: not yet
    assert during.realized["precision"] is not None
    assert during.realized["precision"] < before.realized["precision"] / 2
    assert during.alert_rate is not None and before.alert_rate is not None
    assert during.alert_rate > 2 * before.alert_rate
    assert during.estimated["roc_auc"] is not None  # estimated without any label


@pytest.mark.slow
def test_alerts_are_raised_and_the_report_names_the_drifted_column(
    scenario: tuple[Workspace, DriftScenarioResult],
) -> None:
    _, result = scenario
    rules_before = {line.split(":")[0] for line in result.alerts_before_labels}
    rules_after = {line.split(":")[0] for line in result.alerts}
    assert {"data-drift", "alert-rate-up"} <= rules_before
    assert "realized-precision-drop" not in rules_before
    assert "realized-precision-drop" in rules_after
    assert result.report.is_file()
    assert "TX_AMOUNT" in result.report.read_text()


@pytest.mark.slow
def test_the_command_reruns_the_scenario_from_a_clean_endpoint(
    scenario: tuple[Workspace, DriftScenarioResult], tmp_path: Path
) -> None:
    from shipyard.cli.main import cli
    from shipyard.monitoring.alerts import list_alerts
    from shipyard.monitoring.logstore import query

    ws, first = scenario
    out = tmp_path / "again"
    answer = CliRunner().invoke(
        cli,
        ["-w", str(ws.root), "scenario", "drift", "--out", str(out)],
        env={"COLUMNS": "200"},
    )
    assert answer.exit_code == 0, answer.output
    assert f"Drift found from {first.first_drift_day}" in answer.output
    assert "TX_AMOUNT" in answer.output and str(out / "report.html") in answer.output
    logged = query(
        ws, first.endpoint, "SELECT count(*) AS n, min(event_time) AS t FROM predictions"
    )
    assert int(logged["n"][0]) == first.requests  # the first run's log was replaced
    assert pd.Timestamp(logged["t"][0], unit="s").date() == first.replay_start
    open_alerts = list_alerts(ws, first.endpoint, status="open")
    assert sorted(a.rule for a in open_alerts) == sorted(
        line.split(":")[0] for line in first.alerts
    )


@pytest.mark.slow
def test_the_result_reads_as_json(scenario: tuple[Workspace, DriftScenarioResult]) -> None:
    import json

    _, result = scenario
    data = json.loads(json.dumps(result.to_dict()))
    assert data["caught"] is True and result.caught
    assert result.first_drift_day is not None
    assert data["first_drift_day"] == result.first_drift_day.isoformat()
    assert (
        data["drift"]["factor"] == 3.0 and data["drift"]["start"] == result.drift_start.isoformat()
    )
    assert data["windows"][2]["drifted_columns"] == list(result.windows[2].drifted_columns)
    assert data["report"] == str(result.report)


# -- the traffic-mix drift, end to end ------------------------------------------------------


@pytest.fixture(scope="module")
def mix_scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriftScenarioResult]:
    """The command's own champion (the default simulation): how much the segment costs in
    precision depends on the champion, and the one shown in docs/scenarios.md is this one.
    The smaller simulation's champion is over-confident on the segment: its estimate falls
    by less than its realized precision does."""
    ws = Workspace.init(tmp_path_factory.mktemp("mix") / "ws")
    yield run_drift_scenario(ws, out=ws.root / "out", drift=MixDrift())
    ws.close()


@pytest.mark.slow
def test_a_growing_segment_is_found_in_the_drifted_week_and_not_before(
    mix_scenario: DriftScenarioResult,
) -> None:
    result = mix_scenario
    assert isinstance(result.drift, MixDrift) and result.drift.start == result.drift_start
    assert result.drifted_version == result.reference_version  # no row changed
    assert result.false_alarm_windows == ()
    assert "TERMINAL_ID_RISK_7DAY_WINDOW" in result.drifted_columns
    assert "TX_AMOUNT" not in result.drifted_columns  # no amount moved
    assert result.first_drift_day is not None
    assert result.drift_start <= result.first_drift_day <= result.replay_end
    during = result.during()
    assert result.segment_size == pytest.approx(0.3 * during.rows, abs=1)


@pytest.mark.slow
def test_the_estimated_precision_falls_before_the_labels_and_the_labels_confirm_it(
    mix_scenario: DriftScenarioResult,
) -> None:
    result = mix_scenario
    weeks = [w for w in result.windows if w.end < result.drift_start]
    during = result.during()
    estimated = during.estimated["precision"]
    lows = [w.estimated_interval["precision"][0] for w in weeks]
    assert estimated is not None and None not in lows
    # below where weeks 1-2's precision should fall by their sampling error alone
    assert all(estimated < low for low in lows if low is not None)
    assert during.realized_before_labels["precision"] is None  # estimated without a label
    realized = during.realized["precision"]
    assert realized is not None
    assert all(realized < low for low in lows if low is not None)
    assert all(realized < w.realized["precision"] for w in weeks if w.realized["precision"])


@pytest.mark.slow
def test_the_estimated_drop_alert_fires_before_the_drifted_weeks_labels(
    mix_scenario: DriftScenarioResult,
) -> None:
    rules_before = {line.split(":")[0] for line in mix_scenario.alerts_before_labels}
    assert {"estimated-precision-drop", "data-drift"} <= rules_before
    assert mix_scenario.report.is_file()
    assert "TERMINAL_ID_RISK_7DAY_WINDOW" in mix_scenario.report.read_text()
