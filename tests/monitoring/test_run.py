"""``run_monitor``: every monitored quantity per window, stored, on a real workspace.

The small simulated fraud data set, fraud v1 (LightGBM) registered by ``train_suite``;
records written by the real PredictionLog over five days: three days of the version's own
evaluation rows, then two days with amounts in cents (a broken transformation).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import ParameterError
from shipyard.monitoring.labels import ingest_labels
from shipyard.monitoring.points import load_points
from shipyard.monitoring.run import parse_window, run_monitor
from shipyard.registry.models import ModelRegistry
from shipyard.serving.predlog import PredictionLog, log_folder
from shipyard.workspace import Workspace
from tests.conftest import small_fraud_models

DAY0 = datetime(2026, 11, 20)
ROWS = 50


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    ws, _ = small_fraud_models(tmp_path_factory.mktemp("run") / "ws")
    yield ws
    ws.close()


def _eval_frame(ws: Workspace) -> pd.DataFrame:
    from shipyard.training.frames import Window, load_frame

    registered = ModelRegistry(ws).get("fraud", 1)
    return load_frame(ws, Window.from_dict(registered.eval_window))


def _epoch(moment: datetime) -> float:
    return moment.replace(tzinfo=UTC).timestamp()


def _log(ws: Workspace, endpoint: str, days: list[pd.DataFrame], *, event_time: bool) -> list:
    """Log each day's rows (v1 scores) in requests of ROWS; return (request_id, row, label)."""
    registry = ModelRegistry(ws)
    names = registry.get("fraud", 1).input_schema.names
    model = registry.load("fraud", 1)
    log = PredictionLog(log_folder(ws, endpoint), "w1", segment_bytes=256_000)
    records: list[dict[str, Any]] = []
    labels: list[tuple[str, int, int]] = []
    for day, rows in enumerate(days):
        matrix = rows[names].to_numpy(dtype=np.float64)
        scores = model.predict(matrix)
        base = _epoch(DAY0 + timedelta(days=day))
        for start in range(0, len(matrix), ROWS):
            stop = min(start + ROWS, len(matrix))
            moment = base + 60.0 * (start // ROWS)
            request_id = f"d{day}-{start}"
            record = {
                "request_id": request_id,
                "time": 1e9 + len(records) if event_time else moment,
                "endpoint": endpoint,
                "model": "fraud",
                "version": 1,
                "arm": "champion",
                "routing_key": None,
                "protocol": "v2",
                "inputs": matrix[start:stop].tolist(),
                "outputs": scores[start:stop].tolist(),
                "latency_ms": 1.0,
            }
            if event_time:
                record["event_time"] = moment
            records.append(record)
            truth = rows["TX_FRAUD"].to_numpy()[start:stop]
            labels += [(request_id, i, int(v)) for i, v in enumerate(truth)]

    async def run() -> None:
        for record in records:
            await log.commit(record)

    asyncio.run(run())
    log.close()
    return labels


def _days(ws: Workspace) -> list[pd.DataFrame]:
    """Three days of the evaluation rows as they are, then two with amounts in cents."""
    frame = _eval_frame(ws).sample(frac=1.0, random_state=0).reset_index(drop=True)
    parts = np.array_split(np.arange(len(frame)), 5)
    days = [frame.iloc[p].reset_index(drop=True) for p in parts]
    for day in days[3:]:
        day["TX_AMOUNT"] = day["TX_AMOUNT"] * 100
    return days


@pytest.fixture(scope="module")
def logged(trained: Workspace) -> tuple[Workspace, list]:
    labels = _log(trained, "daily", _days(trained), event_time=False)
    return trained, labels


def _values(run: Any, metric: str) -> list[float | None]:
    return [p.value for p in run.series(metric, "fraud v1")]


def test_one_window_per_day_with_the_broken_days_drifting(logged: tuple[Workspace, list]) -> None:
    ws, _ = logged
    run = run_monitor(ws, "daily", time="log", threshold=0.3, evaluate_alerts=False)
    assert run.groups == ("fraud v1",)
    assert run.start == DAY0 and run.end == DAY0 + timedelta(days=5)
    assert [p.window_start for p in run.series("records", "fraud v1")] == [
        DAY0 + timedelta(days=d) for d in range(5)
    ]
    assert _values(run, "drift.verdict") == [0.0, 0.0, 0.0, 1.0, 1.0]
    amount = _values(run, "drift.distance.TX_AMOUNT")
    assert 3 * max(amount[:3]) < min(amount[3:]), amount  # type: ignore[operator,type-var]
    latest = run.latest("fraud v1")
    assert latest is not None and "TX_AMOUNT" in latest.drift.drifted
    # the amount in cents pushes scores up: more alerts at the threshold
    rates = _values(run, "alert_rate")
    assert max(rates[:3]) < min(rates[3:])  # type: ignore[type-var]


def test_without_a_threshold_each_version_is_measured_at_its_own(
    logged: tuple[Workspace, list],
) -> None:
    from shipyard.monitoring.thresholds import set_decision_threshold

    ws, _ = logged
    default = run_monitor(ws, "daily", time="log", store=False, evaluate_alerts=False)
    assert default.threshold is None and default.thresholds == {"fraud v1": 0.5}
    set_decision_threshold(ws, "fraud", 1, 0.3, reason="alert budget")
    own = run_monitor(ws, "daily", time="log", store=False, evaluate_alerts=False)
    given = run_monitor(ws, "daily", time="log", threshold=0.3, store=False, evaluate_alerts=False)
    assert own.thresholds == {"fraud v1": 0.3} == given.thresholds
    assert _values(own, "alert_rate") == _values(given, "alert_rate")
    assert _values(own, "alert_rate") != _values(default, "alert_rate")


def test_estimated_performance_without_labels(logged: tuple[Workspace, list]) -> None:
    ws, _ = logged
    run = run_monitor(ws, "daily", time="log", threshold=0.3, evaluate_alerts=False)
    auc = run.series("estimated.roc_auc", "fraud v1")
    assert len(auc) == 5
    for point in auc:
        assert point.value is None or point.low <= point.value <= point.high  # type: ignore[operator]
    assert not run.series("realized.roc_auc", "fraud v1")  # no labels yet


def test_points_are_stored_and_a_rerun_replaces_them(logged: tuple[Workspace, list]) -> None:
    ws, _ = logged
    first = run_monitor(ws, "daily", time="log", evaluate_alerts=False)
    second = run_monitor(ws, "daily", time="log", evaluate_alerts=False)
    stored = load_points(ws, "daily", metric="records")
    assert len(stored) == 5
    assert {p.run_id for p in stored} == {second.run_id} != {first.run_id}
    assert [p.value for p in stored] == _values(second, "records")


def test_realized_performance_once_labels_arrive(logged: tuple[Workspace, list]) -> None:
    ws, labels = logged
    frame = pd.DataFrame(labels, columns=["request_id", "row", "label"])
    first_days = frame[frame["request_id"].str[:2].isin(["d0", "d1"])]
    ingest_labels(ws, "daily", first_days)
    run = run_monitor(ws, "daily", time="log", threshold=0.3, evaluate_alerts=False)
    labelled = _values(run, "labelled")
    assert labelled[:2] == [1.0, 1.0] and labelled[2:] == [0.0, 0.0, 0.0]
    realized = run.series("realized.roc_auc", "fraud v1")
    assert [p.window_start for p in realized] == [DAY0, DAY0 + timedelta(days=1)]
    stored = load_points(ws, "daily", metric="realized.*")
    assert {p.window_start for p in stored} == {DAY0, DAY0 + timedelta(days=1)}


def test_a_span_selects_windows_and_empty_windows_are_insufficient(
    logged: tuple[Workspace, list],
) -> None:
    ws, _ = logged
    run = run_monitor(
        ws,
        "daily",
        time="log",
        start=DAY0 + timedelta(days=4),
        end=DAY0 + timedelta(days=7),
        store=False,
        evaluate_alerts=False,
    )
    assert _values(run, "records") == [pytest.approx(_values(run, "records")[0]), 0.0, 0.0]
    assert _values(run, "drift.verdict")[1:] == [None, None]  # insufficient, never "no drift"
    assert _values(run, "prediction.mean")[1:] == [None, None]


def test_an_endpoint_without_traffic_gives_an_empty_run(trained: Workspace) -> None:
    run = run_monitor(trained, "nothing-here", evaluate_alerts=False)
    assert run.groups == () and run.points == ()


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("window", "0D"),
        ("window", "day"),
        ("by", "model"),
        ("time", "wall"),
        ("threshold", float("nan")),
    ],
)
def test_bad_arguments_name_the_field(trained: Workspace, argument: str, value: object) -> None:
    with pytest.raises(ParameterError, match=argument):
        run_monitor(trained, "daily", **{argument: value}, evaluate_alerts=False)  # type: ignore[arg-type]


def test_window_lengths() -> None:
    assert parse_window("1D") == timedelta(days=1)
    assert parse_window("6h") == timedelta(hours=6)
    assert parse_window("2w") == timedelta(weeks=2)


def test_windows_follow_the_event_time_when_requests_carry_one(trained: Workspace) -> None:
    """A replay logged within seconds is windowed by its requests' own (event) times."""
    _log(trained, "replayed", _days(trained), event_time=True)
    by_event = run_monitor(trained, "replayed", threshold=0.3, store=False, evaluate_alerts=False)
    assert by_event.start == DAY0 and by_event.end == DAY0 + timedelta(days=5)
    assert _values(by_event, "drift.verdict") == [0.0, 0.0, 0.0, 1.0, 1.0]
    by_log = run_monitor(
        trained, "replayed", time="log", window="1W", store=False, evaluate_alerts=False
    )
    assert len(by_log.series("records", "fraud v1")) == 1  # all logged within one window


def test_monitor_run_status_and_report_commands(
    logged: tuple[Workspace, list], tmp_path: Any
) -> None:
    from click.testing import CliRunner

    from shipyard.cli.main import cli
    from shipyard.monitoring.alerts import AlertRule, add_rule

    ws, _ = logged
    add_rule(
        ws,
        AlertRule(
            name="data-drift", endpoint="daily", metric="drift.verdict", op=">=",
            threshold=1.0, windows=2,
        ),
    )  # fmt: skip
    runner = CliRunner()
    root = ["--workspace", str(ws.root), "monitor"]
    report = tmp_path / "daily.html"
    ran = runner.invoke(
        cli, [*root, "run", "daily", "--time", "log", "--threshold", "0.3", "--report", str(report)]
    )
    assert ran.exit_code == 1, ran.output  # the rule fired: an open alert
    said = " ".join(ran.output.split())
    assert "drifted 2026-11-23: TX_AMOUNT" in said and "ALERT 1 (open)" in said, ran.output
    html = report.read_text()
    assert "TX_AMOUNT" in html and "<svg" in html
    status = runner.invoke(cli, [*root, "status", "daily", "--json"])
    assert status.exit_code == 1, status.output
    document = json.loads(status.output)
    (group,) = document["groups"].values()
    assert group["window_start"] == (DAY0 + timedelta(days=4)).isoformat()
    assert group["points"]["drift.verdict"]["value"] == 1.0
    assert [a["rule"] for a in document["alerts"]] == ["data-drift"]
    again = tmp_path / "again.html"
    written = runner.invoke(cli, [*root, "report", "daily", "--time", "log", "--out", str(again)])
    assert written.exit_code == 0, written.output
    assert "TX_AMOUNT" in again.read_text()
    nothing = runner.invoke(cli, [*root, "status", "unknown-endpoint"])
    assert nothing.exit_code == 0 and "nothing stored yet" in nothing.output
