"""The gated canary on a real server: promoted when the candidate is fine, rolled back when a
guardrail trips, "insufficient data" without traffic; the baseline policy restored each time."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shipyard.errors import ModelNotFoundError, ParameterError
from shipyard.governance.audit import entries
from shipyard.pipelines.canary import CanaryStep, run_canary
from shipyard.registry.models import ModelRegistry
from shipyard.serving.policy import Arm, TrafficPolicy, get_policy, set_policy
from tests.serving.conftest import (  # noqa: F401  (fixtures: a workspace with fraud v1, v2)
    Server,
    rows,
    serving_workspace,
    start_server,
)
from tests.serving.traffic import Traffic

ENDPOINT = "canary"


@pytest.fixture(scope="module")
def canary_server(
    serving_workspace: Any,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    ws, _ = serving_workspace
    server = start_server(
        ws,
        "fraud@1",
        tmp_path_factory.mktemp("canary"),
        "--endpoint",
        ENDPOINT,
        "--reset",
        guardrails=True,  # the watcher and the canary judge the same rules: both on, as served
    )
    yield server
    server.stop()


def _serve_v1(ws: Any, endpoint: str = ENDPOINT) -> TrafficPolicy:
    return set_policy(ws, TrafficPolicy(endpoint, "fraud", (Arm(1, 1.0),)), reason="serve v1")


def test_bad_canary_requests_are_refused_before_anything_changes(serving_workspace: Any) -> None:  # noqa: F811
    ws, _ = serving_workspace
    before = _serve_v1(ws, "canary-input")
    for steps in ((5, 25), (25, 5, 100), (0, 100), (50, 150)):
        with pytest.raises(ParameterError, match="'steps' parameter of run_canary"):
            run_canary(ws, "canary-input", 2, steps=steps)
    with pytest.raises(ParameterError, match="'min_requests' parameter"):
        run_canary(ws, "canary-input", 2, min_requests=0)
    with pytest.raises(ParameterError, match="'version' parameter"):
        run_canary(ws, "canary-input", 1)
    with pytest.raises(ModelNotFoundError):
        run_canary(ws, "canary-input", 99)
    assert get_policy(ws, "canary-input").revision == before.revision


def test_a_canary_without_traffic_stops_with_insufficient_data_and_restores_the_baseline(
    serving_workspace: Any,  # noqa: F811
) -> None:
    ws, _ = serving_workspace
    _serve_v1(ws, "canary-idle")
    champion = ModelRegistry(ws).aliases("fraud").get("champion")
    seen: list[CanaryStep] = []
    result = run_canary(
        ws, "canary-idle", 2, steps=(50, 100), step_timeout_s=1.5, poll_s=0.3, on_step=seen.append
    )
    assert result.outcome == "insufficient data"
    assert [s.decision for s in result.steps] == ["insufficient data"] == [s.decision for s in seen]
    assert "0 of 200 requests" in result.reason
    assert get_policy(ws, "canary-idle").arms == (Arm(1, 1.0),)
    assert ModelRegistry(ws).aliases("fraud").get("champion") == champion


@pytest.mark.slow
def test_a_canary_that_trips_is_rolled_back_to_the_baseline(
    serving_workspace: Any,  # noqa: F811
    rows: pd.DataFrame,  # noqa: F811
    canary_server: Server,
) -> None:
    from shipyard.scenarios.faults import CENTS, register_unit_fault

    ws, _ = serving_workspace
    _serve_v1(ws)
    broken = register_unit_fault(ws, "fraud", 1, scale=CENTS, reason="amounts in cents")
    with Traffic(canary_server.port, rows) as traffic:
        traffic.wait_for(300)  # the baseline's traffic before the canary
        result = run_canary(
            ws, ENDPOINT, broken.version, steps=(20, 100), step_timeout_s=120, poll_s=0.5
        )
        time.sleep(1.5)  # the workers switch back
    assert result.outcome == "rolled back", result.reason
    assert result.steps[0].percent == 20 and len(result.steps) == 1
    assert get_policy(ws, ENDPOINT).arms == (Arm(1, 1.0),)
    assert set(traffic.statuses) == {200} and traffic.errors == 0
    assert ModelRegistry(ws).aliases("fraud").get("stable") is None
    assert entries(ws, kind="endpoint", name=ENDPOINT, action="guardrail.trip")


@pytest.mark.slow
def test_a_fine_candidate_advances_through_every_step_and_is_promoted(
    serving_workspace: Any,  # noqa: F811
    rows: pd.DataFrame,  # noqa: F811
    canary_server: Server,
) -> None:
    from shipyard.scenarios.faults import register_unit_fault

    ws, _ = serving_workspace
    _serve_v1(ws)
    fixed = register_unit_fault(ws, "fraud", 1, scale={"TX_AMOUNT": 1.0}, reason="fixed")
    with Traffic(canary_server.port, rows) as traffic:
        traffic.wait_for(300)  # the baseline's traffic before the canary
        result = run_canary(
            ws,
            ENDPOINT,
            fixed.version,
            steps=(20, 100),
            step_timeout_s=120,
            poll_s=0.5,
            promote_alias="stable",
            reason="unit conversion removed",
        )
    assert result.outcome == "promoted", result.reason
    assert [s.decision for s in result.steps] == ["advanced", "promoted"]
    assert all(s.requests >= 200 for s in result.steps)
    assert all(r.status == "ok" for s in result.steps for r in s.results)
    assert get_policy(ws, ENDPOINT).arms == (Arm(fixed.version, 1.0),)
    assert ModelRegistry(ws).aliases("fraud")["stable"] == fixed.version
    assert set(traffic.statuses) == {200} and traffic.errors == 0
    audited = entries(ws, kind="endpoint", name=ENDPOINT, action="canary")
    assert audited[-1].version == fixed.version and "promoted" in audited[-1].reason


def test_the_steps_can_be_followed_as_they_happen(tmp_path: Path) -> None:
    """CanaryStep is plain data: what on_step receives can be stored as JSON."""
    from datetime import datetime

    step = CanaryStep(5.0, 3, (), "advanced", datetime(2026, 1, 1), datetime(2026, 1, 1), 250)
    (tmp_path / "step.json").write_text(json.dumps(step.to_dict()))
    assert json.loads((tmp_path / "step.json").read_text())["requests"] == 250
