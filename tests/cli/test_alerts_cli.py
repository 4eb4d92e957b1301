"""``shipyard monitor alerts``: rules added, alerts listed and acknowledged from the shell."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from click.testing import CliRunner, Result

from shipyard.errors import ParameterError
from shipyard.monitoring.points import Point, store_points
from shipyard.workspace import Workspace

DAY0 = datetime(2026, 11, 15)


def shipyard_alerts(workspace: Workspace, *args: str) -> Result:
    """Run ``shipyard monitor alerts ARGS`` on the workspace (the group itself until the
    lead attaches it under ``monitor``)."""
    from shipyard.cli.alerts import alerts
    from shipyard.cli.main import cli
    from shipyard.cli.monitor import monitor

    runner = CliRunner()
    env = {"COLUMNS": "250"}
    if "alerts" in monitor.commands:
        root = ["--workspace", str(workspace.root), "monitor", "alerts"]
        return runner.invoke(cli, [*root, *args], env=env)
    return runner.invoke(alerts, list(args), obj={"workspace": str(workspace.root)}, env=env)


def store(ws: Workspace, metric: str, values: list[float]) -> None:
    store_points(
        ws,
        [
            Point("fraud", "fraud v3", metric, DAY0 + timedelta(i), DAY0 + timedelta(i + 1), v)
            for i, v in enumerate(values)
        ],
    )


def test_rules_alerts_and_acknowledgement(workspace: Workspace) -> None:
    added = shipyard_alerts(
        workspace, "add", "fraud", "column-drift", "--metric", "drift.distance.*",
        "--op", ">", "--threshold", "0.1", "--windows", "2",
        "--webhook", "https://hooks.example.com/T000/secret-path",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "rule 'column-drift' stored: drift.distance.* > 0.1 for 2 consecutive" in added.output

    shown = shipyard_alerts(workspace, "rules", "fraud")
    assert shown.exit_code == 0, shown.output
    assert "hooks.example.com" in shown.output and "secret-path" not in shown.output
    (rule,) = json.loads(shipyard_alerts(workspace, "rules", "--json").stdout)
    assert (rule["name"], rule["threshold"], rule["windows"]) == ("column-drift", 0.1, 2)

    store(workspace, "drift.distance.TX_AMOUNT", [0.2, 0.3])
    store(workspace, "drift.distance.TX_HOUR", [0.01, 0.3])
    evaluated = shipyard_alerts(workspace, "evaluate", "fraud", "--no-post", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    (alert,) = json.loads(evaluated.stdout)
    assert alert["metric"] == "drift.distance.TX_AMOUNT"

    listed = shipyard_alerts(workspace, "list")
    assert listed.exit_code == 0, listed.output
    assert "fraud v3: drift.distance.TX_AMOUNT > 0.1 for 2 consecutive windows" in listed.output

    acked = shipyard_alerts(workspace, "ack", str(alert["id"]), "--note", "known", "--actor", "bob")
    assert acked.exit_code == 0, acked.output
    assert f"alert {alert['id']} acknowledged by bob" in acked.output
    (seen,) = json.loads(shipyard_alerts(workspace, "list", "fraud", "--json").stdout)
    assert seen["status"] == "acknowledged"
    assert (seen["acknowledged_by"], seen["note"]) == ("bob", "known")
    assert json.loads(shipyard_alerts(workspace, "list", "--status", "open", "--json").stdout) == []

    removed = shipyard_alerts(workspace, "remove", "fraud", "column-drift")
    assert removed.exit_code == 0, removed.output
    assert json.loads(shipyard_alerts(workspace, "list", "--json").stdout) == []
    (closed,) = json.loads(shipyard_alerts(workspace, "list", "--status", "all", "--json").stdout)
    assert closed["status"] == "resolved"
    assert "none" in shipyard_alerts(workspace, "list").output


def test_bad_input_is_refused(workspace: Workspace) -> None:
    bad_op = shipyard_alerts(
        workspace, "add", "fraud", "r", "--metric", "estimated.auc", "--op", "=<",
        "--threshold", "0.8",
    )  # fmt: skip
    assert bad_op.exit_code == 2 and "'=<' is not one of" in bad_op.output

    bad_hook = shipyard_alerts(
        workspace, "add", "fraud", "r", "--metric", "estimated.auc", "--op", "<",
        "--threshold", "0.8", "--webhook", "file:///etc/passwd",
    )  # fmt: skip
    assert isinstance(bad_hook.exception, ParameterError)
    assert "'webhook' parameter of AlertRule" in str(bad_hook.exception)

    unknown = shipyard_alerts(workspace, "ack", "42")
    assert isinstance(unknown.exception, ParameterError)
    assert "'alert_id'" in str(unknown.exception) and "Got 42" in str(unknown.exception)
    assert json.loads(shipyard_alerts(workspace, "rules", "--json").stdout) == []
