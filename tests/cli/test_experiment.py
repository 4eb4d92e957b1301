"""``shipyard experiment start | status | stop | list`` on the shared experiments workspace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from shipyard.experiments.lifecycle import get_experiment
from shipyard.serving.policy import get_policy, policy_history
from shipyard.workspace import Workspace
from tests.experiments import test_lifecycle
from tests.experiments.test_lifecycle import new_endpoint, simulate

registered = test_lifecycle.registered  # the shared workspace with two versions


def shipyard(ws: Workspace, *args: str) -> Result:
    """Run ``shipyard ARGS`` on the workspace, in-process."""
    from shipyard.cli.main import cli

    return CliRunner().invoke(cli, ["--workspace", str(ws.root), *args], env={"COLUMNS": "250"})


def shipyard_process(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``shipyard ARGS`` as a user does (errors print one line and exit 2 in ``main``)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    return subprocess.run(
        [sys.executable, "-m", "shipyard.cli.main", "-w", str(ws.root), *args],
        env={**environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _start(ws: Workspace, name: str, endpoint: str, *extra: str) -> Result:
    return shipyard(
        ws, "experiment", "start", name, "--endpoint", endpoint, "--control", "1",
        "--treatment", "2", "--metric", "precision", "--sticky-key", "customer",
        "--reason", "v2 retrained", "--no-prepare", *extra,
    )  # fmt: skip


def test_start_status_stop_and_list(registered: Workspace, tmp_path: Path) -> None:
    endpoint = new_endpoint(registered)
    name = f"cli-{endpoint}"
    started = _start(
        registered, name, endpoint, "--split", "40,60", "--guardrail", "alert_rate", "--mde", "0.2"
    )
    assert started.exit_code == 0, started.output
    assert f"experiment {name} started" in started.output
    assert "v1 40% · v2 60% · sticky on customer" in started.output
    simulate(
        registered,
        get_experiment(registered, name),
        customers=600,
        per_customer=4,
        alert_rate={"control": 0.3, "treatment": 0.3},
        precision={"control": 0.3, "treatment": 0.6},
        seed=41,
    )

    shown = shipyard(registered, "experiment", "status", name, "--plot", str(tmp_path / "e.png"))
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    for words in (
        "precision (95% interval)",
        "always-valid CI",
        "decision: treatment better",
        "guardrail",
        "alert_rate",
        "units per arm still needed for the MDE of 20%",
    ):
        assert words in text, words
    assert (tmp_path / "e.png").is_file() and (tmp_path / "e.txt").is_file()

    as_json = json.loads(shipyard(registered, "experiment", "status", name, "--json").stdout)
    assert as_json["decision"] == "treatment better"
    assert as_json["primary"]["test"]["low"] > 0
    assert sum(as_json["units"].values()) == 600

    listed = shipyard(registered, "experiment", "list", "--endpoint", endpoint)
    assert listed.exit_code == 0 and name in listed.output and "running" in listed.output

    stopped = shipyard(
        registered, "experiment", "stop", name, "--reason", "v2 wins", "--winner", "2"
    )
    assert stopped.exit_code == 0, stopped.output
    assert "treatment better; all traffic to v2" in stopped.output
    assert [a.version for a in get_policy(registered, endpoint).arms] == [2]
    (row,) = json.loads(
        shipyard(registered, "experiment", "list", "--endpoint", endpoint, "--json").stdout
    )
    assert (row["status"], row["result"]["winner"], row["stop_reason"]) == ("stopped", 2, "v2 wins")


def test_bad_input_is_one_line_exit_2_and_changes_nothing(registered: Workspace) -> None:
    endpoint = new_endpoint(registered)
    before = policy_history(registered, endpoint)

    split = _start(registered, "bad-split", endpoint, "--split", "50")
    assert split.exit_code == 2 and "expected two positive numbers" in split.output

    unknown = shipyard_process(
        registered, "experiment", "start", "bad-metric", "--endpoint", endpoint, "--control",
        "1", "--treatment", "2", "--metric", "revenue", "--sticky-key", "customer",
        "--reason", "x", "--no-prepare",
    )  # fmt: skip
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("Error: The 'metric' parameter")
    assert len(unknown.stderr.strip().splitlines()) == 1

    missing = shipyard_process(
        registered, "experiment", "start", "bad-version", "--endpoint", endpoint, "--control",
        "1", "--treatment", "9", "--metric", "precision", "--sticky-key", "customer",
        "--reason", "x",
    )  # fmt: skip
    assert missing.returncode == 2 and "9" in missing.stderr, missing.stderr

    ghost = shipyard_process(registered, "experiment", "status", "ghost")
    assert ghost.returncode == 2
    assert "No experiment named 'ghost'" in ghost.stderr
    assert policy_history(registered, endpoint) == before
    assert shipyard(registered, "experiment", "list", "--endpoint", endpoint).output.strip() == (
        "no experiment"
    )


def test_size_gives_units_per_arm_or_the_power_of_a_size() -> None:
    from shipyard.cli.main import cli

    runner = CliRunner()
    needed = runner.invoke(cli, ["experiment", "size", "--baseline", "0.10", "--mde", "0.02"])
    assert needed.exit_code == 0, needed.output
    assert needed.output.startswith("3,835 units per arm")
    relative = ["--baseline", "0.02", "--mde", "0.1", "--relative", "--units", "80638"]
    reached = runner.invoke(cli, ["experiment", "size", *relative])
    assert reached.exit_code == 0 and reached.output.startswith("power 0.80")
    refused = runner.invoke(cli, ["experiment", "size", "--baseline", "0.1", "--mde", "0.02",
                                  "--power", "1.5"])  # fmt: skip
    assert refused.exit_code != 0 and "power" in str(refused.exception or refused.output)
