"""The main job end to end, as the README runs it: ``shipyard quickstart`` twice.

The first run builds everything; the second reuses the data and features, retrains with the
same seeds (identical metrics) and registers v2, which the promotion gate must refuse: an
identical model is not significantly better. Then MLflow's own server, pointed at the
workspace, must show the runs and the champion. About 4-5 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from shipyard.registry.models import ModelRegistry
from shipyard.workspace import Workspace


def _quickstart(workspace: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "shipyard.cli.main",
            "quickstart",
            str(workspace),
            "--bootstrap",
            "200",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


@pytest.mark.slow
def test_quickstart_runs_to_the_end_and_reproduces(tmp_path: Path) -> None:
    target = tmp_path / "qs"
    first = _quickstart(target)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    assert "1,754,155 transactions, 14,681 frauds" in out
    for model in ("logistic_regression", "decision_tree", "random_forest", "xgboost", "lightgbm"):
        assert model in out
    assert "balanced_bagging/extended/28d" in out
    assert "promoted to champion" in out
    ws = Workspace.open(target)
    registry = ModelRegistry(ws)
    champion = registry.get("fraud", "champion")
    assert champion.version == 1
    # the extended features and the 28-day window win on validation, as the full search found
    assert champion.lineage.views == "shipyard.features.fraud:EXTENDED_VIEWS"
    assert "28 days" in champion.lineage.protocol
    assert champion.card_path.is_file() and champion.card_html.is_file()

    second = _quickstart(target)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "kept as challenger" in second.stdout
    assert "Promotion of fraud v2 to champion refused" in second.stdout
    v2 = registry.get("fraud", 2)
    assert v2.metrics == champion.metrics  # same data, same seeds: the same numbers
    assert registry.aliases("fraud") == {"champion": 1, "challenger": 2}

    # MLflow's own server on the workspace's store shows the runs and the registered model
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            ws.mlflow_tracking_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        deadline = time.monotonic() + 90
        while True:
            try:
                experiment = _get(f"{base}/experiments/get-by-name?experiment_name=fraud-baseline")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        experiment_id = experiment["experiment"]["experiment_id"]
        request = urllib.request.Request(
            f"{base}/runs/search",
            data=json.dumps({"experiment_ids": [experiment_id], "max_results": 100}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            runs = json.loads(response.read())["runs"]
        assert len(runs) == 12  # five baselines and the extended champion, two quickstart runs
        model = _get(f"{base}/registered-models/get?name=fraud")["registered_model"]
        assert {a["alias"]: a["version"] for a in model["aliases"]} == {
            "champion": "1",
            "challenger": "2",
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
