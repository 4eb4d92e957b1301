"""The bad-deploy scenario: bad options, the live traffic, and the whole scenario end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from shipyard.errors import ParameterError
from shipyard.governance.audit import entries
from shipyard.monitoring.alerts import list_alerts
from shipyard.registry.models import ModelRegistry
from shipyard.scenarios.bad_deploy import (
    DETECTION_BUDGET,
    BadDeployResult,
    run_bad_deploy_scenario,
)
from shipyard.scenarios.replay import ContinuousReplay, LocalServer
from shipyard.serving.policy import get_policy, policy_history
from shipyard.workspace import Workspace


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("min_requests", 0, "an int >= 1"),
        ("workers", 0, "an int >= 1"),
        ("rate", -5.0, "None or a number of requests per second > 0"),
        ("detection_timeout_s", 0, "a number of seconds > 0"),
    ],
)
def test_a_bad_option_is_refused_before_anything_is_touched(
    workspace: Workspace, tmp_path: Path, option: str, value: object, expected: str
) -> None:
    with pytest.raises(ParameterError, match=f"'{option}' parameter of run_bad_deploy_scenario"):
        run_bad_deploy_scenario(workspace, out=tmp_path / "out", **{option: value})  # type: ignore[arg-type]
    assert ModelRegistry(workspace).versions() == []  # no champion was trained
    assert not (tmp_path / "out").exists()


def test_continuous_replay_refuses_bad_rows_and_rates(workspace: Workspace, tmp_path: Path) -> None:
    server = LocalServer(workspace, "fraud@1", endpoint="e", log=tmp_path / "serve.log")
    with pytest.raises(ParameterError, match="'rows' parameter of ContinuousReplay"):
        ContinuousReplay(server, np.empty((0, 3)), prefix="x")
    with pytest.raises(ParameterError, match="'rate' parameter of ContinuousReplay"):
        ContinuousReplay(server, np.ones((2, 3)), prefix="x", rate=0)


# -- the whole scenario --------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenario(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Workspace, BadDeployResult]]:
    """One run in a fresh workspace: it trains its own champion (about a minute)."""
    root = tmp_path_factory.mktemp("bad-deploy")
    ws = Workspace.init(root / "ws")
    result = run_bad_deploy_scenario(ws, out=root / "out")
    yield ws, result
    ws.close()


@pytest.mark.slow
def test_the_broken_version_is_rolled_back_by_itself_with_no_failed_request(
    scenario: tuple[Workspace, BadDeployResult],
) -> None:
    ws, result = scenario
    assert (result.champion, result.broken, result.fixed) == (1, 2, 3)
    assert result.detected
    assert 0 < result.requests_to_detection <= DETECTION_BUDGET
    assert result.broken_requests >= result.requests_to_detection
    assert result.failed_requests == 0 and set(result.statuses) == {"200"}
    assert result.answers_by_version[result.broken] == result.broken_requests
    # exactly one automatic rollback revision, restoring the champion
    history = policy_history(ws, result.endpoint)
    rollbacks = [p for p in history if p.reason.startswith("rollback to revision")]
    assert len(rollbacks) == 1 == result.automatic_rollbacks
    (rollback,) = rollbacks
    assert rollback.revision == result.deploy_revision + 1 == result.rollback_revision
    assert [a.version for a in rollback.arms] == [result.champion]
    assert rollback.actor == "guardrail"
    # the cents package alerts on nearly everything; the champion before and after does not
    rates = result.alert_rates
    assert rates["during"] is not None and rates["during"] > 0.5
    assert rates["before"] is not None and rates["before"] < 0.1
    assert rates["after"] is not None and rates["after"] < 0.1


@pytest.mark.slow
def test_the_trip_is_audited_and_alerted(scenario: tuple[Workspace, BadDeployResult]) -> None:
    ws, result = scenario
    trips = entries(ws, kind="endpoint", name=result.endpoint, action="guardrail.trip")
    assert [t.version for t in trips] == [result.broken]
    assert trips[0].details["rollback_revision"] == result.rollback_revision
    actions = [e.action for e in entries(ws, kind="endpoint", name=result.endpoint)]
    assert actions.count("policy.rollback") == 1
    assert any("guardrail.trip by guardrail" in line for line in result.audit)
    alerts = list_alerts(ws, result.endpoint, status=None)
    assert any(a.rule.startswith("guardrail:") and a.group == f"v{result.broken}" for a in alerts)
    assert result.alerts


@pytest.mark.slow
def test_the_root_cause_names_the_broken_column_first(
    scenario: tuple[Workspace, BadDeployResult],
) -> None:
    _, result = scenario
    assert result.rca_top_feature == "TX_AMOUNT"
    assert result.rca_features[0] == "TX_AMOUNT"
    assert result.rca_text.read_text().startswith("Top feature: TX_AMOUNT")
    assert "TX_AMOUNT" in result.rca_html.read_text()


@pytest.mark.slow
def test_the_fix_is_promoted_by_canary_and_the_policy_ends_on_it(
    scenario: tuple[Workspace, BadDeployResult],
) -> None:
    ws, result = scenario
    assert result.canary_outcome == "promoted"
    assert len(result.canary_steps) == 3
    final = get_policy(ws, result.endpoint)
    assert [(a.version, a.weight > 0) for a in final.arms if a.weight > 0] == [(result.fixed, True)]
    assert result.final_version == result.fixed
    assert result.alert_rates["canary"] is not None and result.alert_rates["canary"] < 0.1
    assert result.ok


@pytest.mark.slow
def test_the_summary_and_json_say_what_happened(
    scenario: tuple[Workspace, BadDeployResult],
) -> None:
    from shipyard.cli.scenario import print_bad_deploy

    _, result = scenario
    screen = Console(record=True, width=200)
    print_bad_deploy(screen, result)
    text = screen.export_text()
    assert f"{result.requests_to_detection:,} requests answered by v{result.broken}" in text
    assert "Failed requests: 0 of" in text
    assert "Root cause: TX_AMOUNT first" in text
    assert f"Canary of v{result.fixed}: promoted" in text
    data = json.loads(json.dumps(result.to_dict()))
    assert data["ok"] is True and data["failed_requests"] == 0
