"""``shipyard endpoint guardrails`` and ``shipyard endpoint canary`` from the shell."""

from __future__ import annotations

import json

from click.testing import CliRunner, Result

from shipyard.workspace import Workspace


def shipyard(workspace: Workspace, *args: str) -> Result:
    from shipyard.cli.main import cli

    root = ["--workspace", str(workspace.root), "endpoint"]
    return CliRunner().invoke(cli, [*root, *args], env={"COLUMNS": "250"})


def test_guardrails_are_added_listed_and_removed(workspace: Workspace) -> None:
    listed = shipyard(workspace, "guardrails", "list", "fraud")
    assert listed.exit_code == 0, listed.output
    assert "defaults: none stored" in listed.output and "alert-rate-lift" in listed.output

    added = shipyard(
        workspace, "guardrails", "add", "fraud", "alerts", "--metric", "alert_rate",
        "--op", "<=", "--threshold", "0.05", "--min-count", "300", "--alert-only",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "alert_rate <= 0.05 (min 300 rows, last 2000; alert only)" in added.output
    (stored,) = json.loads(shipyard(workspace, "guardrails", "list", "fraud", "--json").stdout)
    assert stored == {
        "name": "alerts",
        "metric": "alert_rate",
        "op": "<=",
        "threshold": 0.05,
        "min_count": 300,
        "window": 2000,
        "rollback": False,
    }
    removed = shipyard(workspace, "guardrails", "remove", "fraud", "alerts")
    assert removed.exit_code == 0, removed.output
    assert "removed" in removed.output


def test_bad_guardrails_and_canaries_are_refused_with_the_field_named(workspace: Workspace) -> None:
    from shipyard.errors import ParameterError

    bad = shipyard(
        workspace, "guardrails", "add", "fraud", "x", "--metric", "fpr", "--op", "<=",
        "--threshold", "0.1",
    )  # fmt: skip
    assert isinstance(bad.exception, ParameterError)
    assert "'metric' parameter of Guardrail" in str(bad.exception)
    missing = shipyard(workspace, "guardrails", "remove", "fraud", "nope")
    assert isinstance(missing.exception, ParameterError)
    assert "none stored" in str(missing.exception)
    steps = shipyard(workspace, "canary", "fraud", "2", "--steps", "5,x")
    assert steps.exit_code == 2 and "expected percentages" in steps.output
