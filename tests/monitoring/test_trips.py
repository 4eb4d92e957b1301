"""Acting on a trip on a real workspace: one rollback however many workers trip, one alert,
one audit entry; alert-only rules roll nothing back."""

from __future__ import annotations

import pytest

from shipyard.errors import ParameterError
from shipyard.governance.audit import entries
from shipyard.monitoring.alerts import list_alerts
from shipyard.monitoring.guardrails import Guardrail, GuardrailResult
from shipyard.monitoring.trips import act_on_trip
from shipyard.serving.policy import Arm, TrafficPolicy, policy_history, set_policy
from shipyard.workspace import Workspace
from tests.experiments import test_lifecycle
from tests.experiments.test_lifecycle import CONTROL, TREATMENT, new_endpoint
from tests.registry.credit import DATASET

registered = test_lifecycle.registered  # two registered versions (shared, session-wide)


def _deploy(ws: Workspace) -> tuple[str, int]:
    endpoint = new_endpoint(ws)  # serves CONTROL
    deploy = set_policy(
        ws, TrafficPolicy(endpoint, DATASET, (Arm(TREATMENT, 1),)), reason="deploy", actor="t"
    )
    return endpoint, deploy.revision


def _tripped(rollback: bool = True) -> list[GuardrailResult]:
    rule = Guardrail("alert-rate", "alert_rate", "<=", 0.5, rollback=rollback)
    return [GuardrailResult(rule, TREATMENT, 0.9, 400, "tripped", "alert rate 0.90 > 0.5")]


def test_two_workers_tripping_together_roll_back_once(registered: Workspace) -> None:
    endpoint, revision = _deploy(registered)
    first = act_on_trip(
        registered, endpoint, revision=revision, version=TREATMENT, results=_tripped()
    )
    second = act_on_trip(
        registered, endpoint, revision=revision, version=TREATMENT, results=_tripped()
    )
    assert first.rolled_back_to == CONTROL and first.alert_id is not None
    assert second.rolled_back_to is None and second.alert_id is None  # nothing written twice
    history = policy_history(registered, endpoint)
    assert len(history) == 3 and history[-1].arms == (Arm(CONTROL, 1.0),)
    assert history[-1].actor == "guardrail"
    trips = entries(registered, kind="endpoint", name=endpoint, action="guardrail.trip")
    assert len(trips) == 1 and trips[0].version == TREATMENT
    (alert,) = list_alerts(registered, endpoint)
    assert alert.rule == "guardrail:alert-rate" and alert.group == f"v{TREATMENT}"


def test_an_alert_only_rule_alerts_once_and_rolls_nothing_back(registered: Workspace) -> None:
    endpoint, revision = _deploy(registered)
    results = _tripped(rollback=False)
    first = act_on_trip(registered, endpoint, revision=revision, version=TREATMENT, results=results)
    again = act_on_trip(registered, endpoint, revision=revision, version=TREATMENT, results=results)
    assert first.rolled_back_to is None and first.alert_id is not None
    assert again.alert_id is None
    assert len(policy_history(registered, endpoint)) == 2  # still on the deploy
    assert len(list_alerts(registered, endpoint)) == 1


def test_results_without_a_trip_are_refused(registered: Workspace) -> None:
    ok = [GuardrailResult(Guardrail("r", "alert_rate", "<=", 0.5), 2, 0.1, 400, "ok", "fine")]
    with pytest.raises(ParameterError, match="'results' parameter of act_on_trip"):
        act_on_trip(registered, "nowhere", revision=1, version=2, results=ok)
