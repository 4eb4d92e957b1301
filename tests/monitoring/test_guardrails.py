"""Guardrails: the rule logic on arrays, the store, probation and acting on a trip."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from shipyard.errors import ParameterError
from shipyard.monitoring.guardrails import (
    Guardrail,
    Observations,
    add_guardrail,
    default_guardrails,
    evaluate_observations,
    judge,
    list_guardrails,
    on_probation,
    remove_guardrail,
    stored_guardrails,
    wilson,
)
from shipyard.serving.policy import Arm, TrafficPolicy
from shipyard.workspace import Workspace
from tests.experiments import test_lifecycle

registered = test_lifecycle.registered  # two registered versions (shared, session-wide)
LIFT = Guardrail("lift", "alert_rate_lift", "<=", 3.0)
RATE = Guardrail("rate", "alert_rate", "<=", 0.5)


def _scores(rng: np.random.Generator, n: int, alert_rate: float) -> np.ndarray:
    """Scores of which ``alert_rate`` are at or above 0.5 (the default threshold)."""
    high = rng.random(n) < alert_rate
    return np.where(high, rng.uniform(0.5, 1.0, n), rng.beta(0.3, 30, n))


def _observed(scores: np.ndarray) -> Observations:
    n = scores.size
    return Observations(scores, np.full(n, 5.0), np.zeros(n, dtype=bool))


# -- rule logic on arrays ------------------------------------------------------------------


def test_an_alert_rate_jump_from_a_tenth_of_a_percent_to_90_percent_trips_within_12_rows() -> None:
    rng = np.random.default_rng(1)
    baseline = _scores(rng, 2000, 0.001)
    rows_to_trip = {}
    for rule in (LIFT, RATE):
        quick = Guardrail(rule.name, rule.metric, rule.op, rule.threshold, min_count=1)
        for n in range(1, 200):
            current = _observed(np.full(n, 0.97) if n < 3 else _scores(rng, n, 0.9))
            result = judge(quick, 2, current, threshold=0.5, baseline=baseline)
            if result.status == "tripped":
                rows_to_trip[rule.name] = n
                break
    # the intervals exclude the bounds after a handful of rows; min_count (200) dominates
    assert rows_to_trip["lift"] <= 12
    assert rows_to_trip["rate"] <= 12
    # with the default min_count the same traffic trips at exactly 200 rows
    at_200 = judge(LIFT, 2, _observed(_scores(rng, 200, 0.9)), threshold=0.5, baseline=baseline)
    assert at_200.status == "tripped" and at_200.n == 200
    assert "bound <= 3" in at_200.detail and "v2" in at_200.detail


def test_an_honest_version_with_noise_never_trips_over_many_evaluations() -> None:
    rng = np.random.default_rng(7)
    reference = _scores(rng, 20_000, 0.01)
    baseline = _scores(rng, 2000, 0.01)
    rules = [g for g in default_guardrails() if g.metric != "realized_fpr"]
    trips = 0
    for _ in range(300):
        current = _observed(_scores(rng, 2000, 0.01))
        results = evaluate_observations(
            rules, 2, current, threshold=0.5, baseline=baseline, reference=reference
        )
        assert all(r.status != "insufficient" for r in results)
        trips += sum(r.status == "tripped" for r in results)
    assert trips == 0


def test_too_few_observations_are_insufficient_never_ok() -> None:
    current = _observed(np.full(50, 0.99))
    for rule in default_guardrails():
        result = judge(rule, 3, current, threshold=0.5, baseline=np.zeros(2000))
        assert result.status == "insufficient"
        assert result.value is None
        assert "needed" in result.detail


def test_error_rate_trips_on_failures_and_is_not_judged_from_answers_alone() -> None:
    rule = Guardrail("errors", "error_rate", "<=", 0.01)
    errors = np.zeros(400, dtype=bool)
    errors[::10] = True  # 10 % of requests failed
    failing = Observations(np.full(360, 0.01), np.full(360, 5.0), errors)
    assert judge(rule, 2, failing, threshold=0.5).status == "tripped"
    healthy = Observations(np.full(400, 0.01), np.full(400, 5.0), np.zeros(400, dtype=bool))
    assert judge(rule, 2, healthy, threshold=0.5).status == "ok"
    from_log = Observations(np.full(400, 0.01), np.full(400, 5.0), None)
    result = judge(rule, 2, from_log, threshold=0.5)
    assert result.status == "insufficient" and "not in the prediction log" in result.detail


def test_latency_p99_trips_only_when_its_interval_is_above_the_bound() -> None:
    rule = Guardrail("slow", "latency_p99_ms", "<=", 100.0, rollback=False)
    rng = np.random.default_rng(3)
    fast = rng.gamma(2.0, 5.0, 1000)  # p99 about 33 ms
    slow = fast.copy()
    slow[::20] = 400.0  # 5 % of requests take 400 ms: p99 is 400 ms
    n = fast.size
    assert judge(rule, 2, Observations(np.zeros(n), fast), threshold=0.5).status == "ok"
    result = judge(rule, 2, Observations(np.zeros(n), slow), threshold=0.5)
    assert result.status == "tripped"
    assert result.value == pytest.approx(400.0)


def test_score_shift_trips_on_moved_scores_and_not_on_the_same_distribution() -> None:
    rule = Guardrail("shift", "score_shift", "<=", 0.3)
    rng = np.random.default_rng(5)
    reference = rng.beta(0.5, 20, 20_000)
    same = _observed(rng.beta(0.5, 20, 2000))
    moved = _observed(np.clip(rng.beta(0.5, 20, 2000) * 40, 0, 1))
    assert judge(rule, 2, same, threshold=0.5, reference=reference).status == "ok"
    result = judge(rule, 2, moved, threshold=0.5, reference=reference)
    assert result.status == "tripped" and result.interval is not None
    assert result.interval[0] > 0.3
    absent = judge(rule, 2, moved, threshold=0.5, reference=None)
    assert absent.status == "insufficient" and "no reference" in absent.detail


def test_realized_fpr_is_judged_on_labelled_negatives_at_the_threshold() -> None:
    rule = Guardrail("fpr", "realized_fpr", "<=", 0.05)
    rng = np.random.default_rng(11)
    labels = (rng.random(1000) < 0.02).astype(np.int64)
    honest = np.where(labels == 1, 0.9, 0.01)
    broken = np.where(rng.random(1000) < 0.9, 0.9, 0.01)  # 90 % of negatives alerted
    for scores, expected in ((honest, "ok"), (broken, "tripped")):
        current = Observations(scores, labelled_scores=scores, labels=labels)
        result = judge(rule, 2, current, threshold=0.5)
        assert result.status == expected
        assert result.n == int((labels == 0).sum())
    unlabelled = judge(rule, 2, _observed(broken), threshold=0.5)
    assert unlabelled.status == "insufficient"


def test_a_guardrail_on_a_floor_trips_when_the_metric_falls_below_it() -> None:
    rule = Guardrail("alerts-at-all", "alert_rate", ">=", 0.005)
    silent = _observed(np.zeros(2000))
    assert judge(rule, 2, silent, threshold=0.5).status == "tripped"
    assert judge(rule, 2, _observed(np.full(2000, 0.9)), threshold=0.5).status == "ok"


def test_the_wilson_interval_covers_the_rate_and_stays_in_0_1() -> None:
    low, high = wilson(0, 200)
    assert low == 0.0 and 0 < high < 0.04
    low, high = wilson(180, 200)
    assert low < 0.9 < high and high <= 1.0


# -- specifications and the store ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"metric": "fpr"}, "metric"),
        ({"op": "<"}, "op"),
        ({"threshold": -1.0}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"min_count": -5}, "min_count"),
        ({"window": 0}, "window"),
        ({"min_count": 500, "window": 100}, "window"),
        ({"rollback": "yes"}, "rollback"),
        ({"name": ""}, "name"),
    ],
)
def test_a_bad_guardrail_is_refused_naming_the_field(fields: dict[str, object], named: str) -> None:
    spec: dict[str, object] = {"name": "g", "metric": "alert_rate", "op": "<=", "threshold": 0.1}
    spec.update(fields)
    with pytest.raises(ParameterError, match=f"'{named}' parameter of Guardrail"):
        Guardrail(**spec)  # type: ignore[arg-type]


def test_guardrails_are_added_listed_and_removed_with_defaults_when_none_are_stored(
    workspace: Workspace,
) -> None:
    from shipyard.governance.audit import entries

    assert list_guardrails(workspace, "fraud") == default_guardrails()
    assert stored_guardrails(workspace, "fraud") == []
    rule = Guardrail("alerts", "alert_rate", "<=", 0.05, min_count=300, window=3000)
    add_guardrail(workspace, "fraud", rule, actor="ops")
    assert list_guardrails(workspace, "fraud") == [rule]
    assert list_guardrails(workspace, "other") == default_guardrails()
    with pytest.raises(ParameterError, match="'name' parameter of add_guardrail"):
        add_guardrail(workspace, "fraud", rule)
    with pytest.raises(ParameterError, match="'name' parameter of remove_guardrail"):
        remove_guardrail(workspace, "fraud", "nope")
    assert remove_guardrail(workspace, "fraud", "alerts") == rule
    assert list_guardrails(workspace, "fraud") == default_guardrails()
    actions = [e.action for e in entries(workspace, kind="endpoint", name="fraud")]
    assert actions == ["guardrail.add", "guardrail.remove"]


# -- probation -------------------------------------------------------------------------------


def _policy(
    revision: int, arms: tuple[tuple[int, float], ...], reason: str, at: datetime
) -> TrafficPolicy:
    return TrafficPolicy(
        "fraud",
        "fraud",
        tuple(Arm(v, w) for v, w in arms),
        revision=revision,
        reason=reason,
        created_at=at,
    )


def test_a_version_is_on_probation_after_a_deploy_not_after_a_rollback_nor_once_it_expires() -> (
    None
):
    now = datetime(2026, 11, 27, 12)
    first = _policy(1, ((1, 1.0),), "serve", now - timedelta(days=1))
    deploy = _policy(2, ((2, 1.0),), "deploy v2", now - timedelta(minutes=5))
    assert on_probation([first, deploy], probation_s=3600, now=now) == {2: 1}
    assert on_probation([first, deploy], probation_s=60, now=now) == {}
    assert on_probation([first], probation_s=3600, now=now) == {}
    rollback = _policy(3, ((1, 1.0),), "rollback to revision 1: tripped", now)
    assert on_probation([first, deploy, rollback], probation_s=3600, now=now) == {}
    # a canary: the candidate stays on probation from the step that brought it in
    step1 = _policy(2, ((1, 95.0), (2, 5.0)), "canary 5%", now - timedelta(minutes=5))
    step2 = _policy(3, ((1, 75.0), (2, 25.0)), "canary 25%", now - timedelta(minutes=1))
    assert on_probation([first, step1, step2], probation_s=3600, now=now) == {2: 1}


def test_realized_fpr_is_judged_from_the_log_once_labels_are_ingested(
    registered: Workspace,
) -> None:
    """On the endpoint's real prediction log and ingested labels: the treatment alerts 40 % of
    requests at 10 % precision (most alerts are false positives), the control 2 %."""
    from shipyard.monitoring.guardrails import evaluate_guardrails
    from tests.experiments.test_lifecycle import CONTROL, TREATMENT, new_endpoint, simulate, start

    endpoint = new_endpoint(registered)
    experiment = start(registered, endpoint)
    rule = Guardrail("fpr", "realized_fpr", "<=", 0.05, min_count=100)
    unlabelled = evaluate_guardrails(registered, endpoint, TREATMENT, guardrails=[rule])
    assert unlabelled[0].status == "insufficient"  # nothing logged, nothing labelled yet
    simulate(
        registered,
        experiment,
        customers=300,
        per_customer=4,
        alert_rate={"control": 0.02, "treatment": 0.4},
        precision={"control": 0.5, "treatment": 0.1},
        seed=5,
    )
    (treatment,) = evaluate_guardrails(registered, endpoint, TREATMENT, guardrails=[rule])
    assert treatment.status == "tripped" and treatment.value is not None
    assert 0.25 < treatment.value < 0.5 and treatment.n > 100  # ~0.36 of negatives alerted
    (control,) = evaluate_guardrails(
        registered, endpoint, CONTROL, since=experiment.started_at, guardrails=[rule]
    )
    assert control.status == "ok" and control.value is not None and control.value < 0.05
