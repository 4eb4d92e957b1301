"""``shipyard monitor threshold``: recalibration and history from the shell, on a real log.

(``shipyard monitor rca`` is run in tests/monitoring/test_rca.py, on that module's
registered versions: training them again here would double the cost.)
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner, Result

from shipyard.monitoring.labels import ingest_labels
from shipyard.monitoring.thresholds import decision_threshold
from shipyard.serving.predlog import PredictionLog, log_folder
from shipyard.workspace import Workspace

T0 = 1_795_000_000.0
N = 1_000


def shipyard(workspace: Workspace, *args: str) -> Result:
    from shipyard.cli.main import cli

    root = ["--workspace", str(workspace.root), "monitor"]
    return CliRunner().invoke(cli, [*root, *args], env={"COLUMNS": "200"})


def _labelled(ws: Workspace) -> None:
    """fraud v1 served N labelled requests on endpoint 'fraud' over two days."""
    rng = np.random.default_rng(5)
    fraud = rng.random(N) < 0.1
    scores = np.where(fraud, rng.beta(5, 2, N), rng.beta(2, 5, N)).round(4)
    log = PredictionLog(log_folder(ws, "fraud"), "w1")

    async def run() -> None:
        for i in range(N):
            await log.commit(
                {
                    "request_id": f"r{i}", "time": T0 + i * 172.8, "endpoint": "fraud",
                    "model": "fraud", "version": 1, "arm": "champion", "protocol": "v2",
                    "inputs": [[float(i)]], "outputs": [float(scores[i])],
                }
            )  # fmt: skip

    asyncio.run(run())
    log.close()
    labels = pd.DataFrame({"request_id": [f"r{i}" for i in range(N)], "label": fraud.astype(int)})
    ingest_labels(ws, "fraud", labels)


def test_recalibrate_dry_run_then_record_and_list(workspace: Workspace, tmp_path: Path) -> None:
    _labelled(workspace)
    page = tmp_path / "threshold.html"
    dry = shipyard(
        workspace, "threshold", "fraud", "--version", "1", "--target-fpr", "0.02", "--dry-run",
        "--out", str(page),
    )  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert "dry run: not recorded" in dry.output and "alerts/day" in dry.output
    assert decision_threshold(workspace, "fraud", 1) == 0.5
    text = page.read_text()
    assert "default-src 'none'" in text and "<svg" in text and "<script" not in text

    done = shipyard(
        workspace, "threshold", "fraud", "--version", "1", "--alert-budget", "0.05",
        "--reason", "analysts handle 5% of traffic", "--json",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["registered"] and result["alert_budget"] == 0.05
    assert result["after"]["alert_rate"]["value"] <= 0.05
    assert decision_threshold(workspace, "fraud", 1) == result["threshold"]

    listed = shipyard(workspace, "threshold", "fraud", "--history")
    assert listed.exit_code == 0, listed.output
    assert "analysts handle 5% of traffic" in listed.output
    (entry,) = json.loads(shipyard(workspace, "threshold", "fraud", "--history", "--json").stdout)
    assert entry["threshold"] == result["threshold"] and entry["previous"] == 0.5


def test_usage_errors_name_what_is_missing(workspace: Workspace) -> None:
    _labelled(workspace)
    both = shipyard(
        workspace, "threshold", "fraud", "--version", "1", "--target-fpr", "0.1",
        "--alert-budget", "0.1", "--reason", "x",
    )  # fmt: skip
    assert both.exit_code == 2 and "exactly one" in both.output
    unexplained = shipyard(workspace, "threshold", "fraud", "--version", "1", "--target-fpr", "0.1")
    assert unexplained.exit_code == 2 and "--reason" in unexplained.output
    assert "--version" in shipyard(workspace, "threshold", "fraud", "--target-fpr", "0.1").output
    assert decision_threshold(workspace, "fraud", 1) == 0.5
