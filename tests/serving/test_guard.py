"""The in-server guardrail watcher: windows, judging a version on probation, rolling back once,
and a real server that rolls a bad deploy back by itself with every request answered."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.governance.audit import entries
from shipyard.monitoring.alerts import list_alerts
from shipyard.monitoring.guardrails import Guardrail, add_guardrail, evaluate_guardrails
from shipyard.monitoring.reference import load_reference_scores
from shipyard.serving.guard import Guard, VersionWindow
from shipyard.serving.policy import Arm, TrafficPolicy, get_policy, policy_history, set_policy
from shipyard.workspace import Workspace
from tests.serving.conftest import start_server
from tests.serving.traffic import Traffic


def test_a_window_keeps_the_last_observations_and_counts_failures() -> None:
    guard = Guard(None, "e", window=100)  # type: ignore[arg-type]  # the hot path reads none
    for i in range(250):
        guard.observe(3, np.array([i / 250]), 0.002)
    guard.observe(3, np.array([0.1, 0.2, 0.3]), 0.004)
    guard.failed(3)
    window = guard.window(3)
    assert isinstance(window, VersionWindow)
    observed = window.observations()
    assert observed.scores.size == 100 and observed.scores[-1] == pytest.approx(0.3)
    assert observed.latency_ms.size == 100 and observed.latency_ms[-1] == pytest.approx(4.0)
    assert observed.errors is not None and observed.errors[-1] and observed.errors.sum() == 1
    assert window.seen == 252
    assert guard.window(4) is None


def test_5xx_answers_count_against_the_version_and_client_errors_do_not(
    workspace: Workspace,
) -> None:
    from types import SimpleNamespace

    from shipyard.errors import RequestError
    from shipyard.serving.metrics import ServingMetrics
    from shipyard.serving.runtime import EndpointRuntime, ServeConfig

    config = ServeConfig(workspace=str(workspace.root), endpoint="e")
    metrics = ServingMetrics("e")
    runtime = EndpointRuntime(workspace, config, metrics)
    runtime.guard = Guard(workspace, "e")
    request: Any = SimpleNamespace(version=2)
    runtime.failed(request, RequestError(422, "bad input"))  # the client's fault
    runtime.failed(request, RequestError(503, "the log cannot be written"))
    runtime.failed(request, RuntimeError("the model failed"))
    window = runtime.guard.window(2)
    assert window is not None and list(window.errors) == [True, True]
    metrics.close()


def test_observe_costs_about_a_microsecond_per_request() -> None:
    """Not a threshold (machines differ): the measured cost is printed for docs/guardrails.md."""
    guard = Guard(None, "e")  # type: ignore[arg-type]
    score = np.array([0.02])
    n = 200_000
    started = time.perf_counter_ns()
    for _ in range(n):
        guard.observe(1, score, 0.003)
    per_call = (time.perf_counter_ns() - started) / n
    print(f"Guard.observe: {per_call:.0f} ns per one-row request")
    window = guard.window(1)
    assert window is not None and len(window.scores) == 2000  # bounded however long it runs


def _feed(guard: Guard, version: int, score: float, n: int) -> None:
    for _ in range(n):
        guard.observe(version, np.array([score]), 0.003)


def test_the_watcher_rolls_a_tripped_version_back_once_however_many_workers_trip(
    serving_workspace: Any,
) -> None:
    ws, _ = serving_workspace
    endpoint = "guard-unit"
    first = set_policy(ws, TrafficPolicy(endpoint, "fraud", (Arm(1, 1.0),)), reason="serve v1")
    workers = [Guard(ws, endpoint), Guard(ws, endpoint)]
    for guard in workers:
        _feed(guard, 1, 0.01, 500)
    deploy = set_policy(ws, TrafficPolicy(endpoint, "fraud", (Arm(2, 1.0),)), reason="deploy v2")
    for guard in workers:
        guard.switched(first, deploy)
        _feed(guard, 2, 0.01, 100)  # too few to judge yet
        assert asyncio.run(guard.check(deploy)) == []
        assert guard.probation is not None and guard.probation.versions == {2: 1}
        _feed(guard, 2, 0.97, 300)
    trips = [asyncio.run(guard.check(deploy)) for guard in workers]
    assert [len(t) for t in trips] == [1, 1]
    acted, late = trips[0][0], trips[1][0]
    assert acted.rolled_back_to == 1 and acted.rollback_revision == deploy.revision + 1
    assert acted.alert_id is not None
    assert late.rollback_revision is None and late.alert_id is None  # the first one did it
    tripped = {r.guardrail.name for r in acted.results if r.status == "tripped"}
    assert "alert-rate-lift" in tripped and "alert-rate" in tripped
    history = policy_history(ws, endpoint)
    assert [p.arms[0].version for p in history] == [1, 2, 1]
    assert history[-1].reason.startswith("rollback to revision")
    trips_audited = entries(ws, kind="endpoint", name=endpoint, action="guardrail.trip")
    assert len(trips_audited) == 1 and trips_audited[0].version == 2
    assert [a.rule for a in list_alerts(ws, endpoint)] == ["guardrail:alert-rate-lift"]
    # the rollback revision puts no version on probation: nothing more happens
    assert asyncio.run(workers[0].check(get_policy(ws, endpoint))) == []


def test_an_alert_only_guardrail_alerts_once_and_rolls_nothing_back(serving_workspace: Any) -> None:
    ws, _ = serving_workspace
    endpoint = "guard-alert-only"
    add_guardrail(ws, endpoint, Guardrail("slow", "latency_p99_ms", "<=", 50.0, rollback=False))
    first = set_policy(ws, TrafficPolicy(endpoint, "fraud", (Arm(1, 1.0),)), reason="serve v1")
    deploy = set_policy(ws, TrafficPolicy(endpoint, "fraud", (Arm(2, 1.0),)), reason="deploy v2")
    workers = [Guard(ws, endpoint), Guard(ws, endpoint)]
    for guard in workers:
        guard.switched(first, deploy)
        for _ in range(300):
            guard.observe(2, np.array([0.01]), 0.2)  # every request took 200 ms
    (raised,), (again,) = (asyncio.run(guard.check(deploy)) for guard in workers)
    assert raised.alert_id is not None and raised.rollback_revision is None
    assert again.alert_id is None  # the other worker's alert is the one on record
    assert asyncio.run(workers[0].check(deploy)) == []  # raised once per revision
    assert [p.revision for p in policy_history(ws, endpoint)] == [1, 2]
    assert [a.rule for a in list_alerts(ws, endpoint)] == ["guardrail:slow"]
    assert len(entries(ws, kind="endpoint", name=endpoint, action="guardrail.trip")) == 1


def test_an_honest_deploy_is_judged_and_left_alone(serving_workspace: Any) -> None:
    ws, _ = serving_workspace
    endpoint = "guard-honest"
    first = set_policy(ws, TrafficPolicy(endpoint, "fraud", (Arm(1, 1.0),)), reason="serve v1")
    guard = Guard(ws, endpoint)
    rng = np.random.default_rng(0)
    # each version scores like it did on its evaluation window (honest traffic, resampled)
    for score in rng.choice(load_reference_scores(ws, "fraud", 1)[0], 1000):
        guard.observe(1, np.array([score]), 0.003)
    deploy = set_policy(ws, TrafficPolicy(endpoint, "fraud", (Arm(2, 1.0),)), reason="deploy v2")
    guard.switched(first, deploy)
    for score in rng.choice(load_reference_scores(ws, "fraud", 2)[0], 1000):
        guard.observe(2, np.array([score]), 0.003)

    async def judged() -> list[Any]:
        trips = await guard.check(deploy)
        await guard.settled()  # the reference scores, loaded in the background
        for _ in range(5):
            trips += await guard.check(deploy)
        return trips

    assert asyncio.run(judged()) == []
    assert {r.guardrail.name: r.status for r in guard.results[2]} == {
        "alert-rate-lift": "ok",
        "alert-rate": "ok",
        "score-shift": "ok",
        "error-rate": "ok",
        "latency-p99": "ok",
        "realized-fpr": "insufficient",  # no labels in memory
    }
    assert [p.revision for p in policy_history(ws, endpoint)] == [1, 2]


@pytest.mark.slow
def test_a_real_server_rolls_a_bad_deploy_back_by_itself_answering_every_request(
    serving_workspace: Any, rows: pd.DataFrame, tmp_path: Path
) -> None:
    from shipyard.scenarios.faults import CENTS, register_unit_fault
    from shipyard.serving.policy import apply_policy

    ws, _ = serving_workspace
    endpoint = "guarded"
    broken = register_unit_fault(ws, "fraud", 1, scale=CENTS, reason="amounts in cents")
    server = start_server(
        ws, "fraud@1", tmp_path, "--endpoint", endpoint, "--reset", guardrails=True
    )
    try:
        with Traffic(server.port, rows) as traffic:
            traffic.wait_for(600)  # the champion's traffic: the baseline each worker keeps
            deploy = apply_policy(
                ws,
                TrafficPolicy(endpoint, "fraud", (Arm(broken.version, 1.0),)),
                reason=f"deploy v{broken.version}",
            )
            deadline = time.monotonic() + 120
            while len(policy_history(ws, endpoint)) < 3:
                assert time.monotonic() < deadline, "the guardrail never rolled back"
                time.sleep(0.2)
            rolled_back = policy_history(ws, endpoint)[-1]
            sent = len(traffic.statuses)
            traffic.wait_for(sent + 300)  # keep serving after the rollback
            # workers poll the policy every second: wait until they all answer with v1 again
            deadline = time.monotonic() + 60
            while set(traffic.versions[-100:]) != {1}:
                assert time.monotonic() < deadline, "the workers never switched back to v1"
                time.sleep(0.2)
        assert traffic.errors == 0
        assert set(traffic.statuses) == {200}
        assert broken.version in traffic.versions and traffic.versions[-1] == 1
        history = policy_history(ws, endpoint)
        assert len(history) == 3, [p.reason for p in history]
        assert rolled_back.arms == (Arm(1, 1.0),)
        assert rolled_back.reason.startswith(f"rollback to revision {deploy.revision - 1}")
        audited = entries(ws, kind="endpoint", name=endpoint, action="policy.rollback")
        assert len(audited) == 1 and audited[0].actor == "guardrail"
        trips = entries(ws, kind="endpoint", name=endpoint, action="guardrail.trip")
        assert len(trips) == 1 and trips[0].version == broken.version
        details = trips[0].details or {}
        print(
            f"requests to detection (one worker's count): {details.get('requests')}; "
            f"answers of v{broken.version}: {traffic.versions.count(broken.version)}"
        )
        alerts = list_alerts(ws, endpoint)
        assert len(alerts) == 1 and alerts[0].group == f"v{broken.version}"
        # the prediction log tells the same story afterwards (since the deploy, against v1)
        judged = {r.guardrail.name: r for r in evaluate_guardrails(ws, endpoint, broken.version)}
        assert judged["alert-rate-lift"].status == "tripped"
        assert "v1's live traffic" in judged["alert-rate-lift"].detail
        assert judged["error-rate"].status == "insufficient"  # failures are not logged
    finally:
        server.stop()
