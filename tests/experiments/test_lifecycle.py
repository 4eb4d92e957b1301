"""Experiments end to end on real components: two registered credit versions, a traffic
policy per endpoint, records committed through a real PredictionLog the way the server
writes them, labels ingested with ingest_labels.

Each test uses its own endpoint in one shared workspace (registering two versions takes
about 40 s), so experiments, policies, logs and labels of one test never meet another's.
"""

from __future__ import annotations

import itertools
import math
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from shipyard.data.catalog import write_dataset
from shipyard.errors import (
    ConcurrentChangeError,
    ExperimentConflictError,
    ExperimentNotFoundError,
    ModelNotFoundError,
    ParameterError,
)
from shipyard.experiments.fixed import sample_size
from shipyard.experiments.lifecycle import (
    Experiment,
    experiment_status,
    get_experiment,
    list_experiments,
    start_experiment,
    stop_experiment,
)
from shipyard.experiments.metrics import experiment_data
from shipyard.features.offline import OfflineStore
from shipyard.governance.audit import entries
from shipyard.monitoring.labels import ingest_labels
from shipyard.serving.policy import Arm, Router, TrafficPolicy, get_policy, policy_history
from shipyard.serving.predlog import log_folder
from shipyard.tables import experiments as experiments_table
from shipyard.workspace import Workspace
from tests.monitoring.test_labels import _write
from tests.registry.credit import DATASET, VIEWS, applications
from tests.registry.test_second_solution import _register

CONTROL, TREATMENT = 1, 2
_SHARED: dict[str, Workspace] = {}
_endpoints = itertools.count()


@pytest.fixture(scope="session")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace with credit v1 (logistic regression) and v2 (a stump), same inputs.

    Cached for the session, so that every experiments test module shares one registration.
    """
    if "ws" not in _SHARED:
        ws = Workspace.init(tmp_path_factory.mktemp("experiments") / "ws")
        dataset = write_dataset(
            ws, DATASET, applications(), time_column="application_date", label_column="default"
        )
        OfflineStore(ws).materialize(VIEWS)
        _register(ws, dataset, "logistic_regression")
        _register(ws, dataset, "decision_tree", max_depth=1)
        _SHARED["ws"] = ws
    return _SHARED["ws"]


def new_endpoint(ws: Workspace, *, shadows: tuple[int, ...] = ()) -> str:
    """A fresh endpoint serving credit v1 alone."""
    endpoint = f"credit-{next(_endpoints)}-{uuid.uuid4().hex[:6]}"
    policy = TrafficPolicy(endpoint, DATASET, arms=(Arm(CONTROL, 1),), shadows=shadows)
    from shipyard.serving.policy import set_policy

    set_policy(ws, policy, reason="launch", actor="tester")
    return endpoint


def start(ws: Workspace, endpoint: str, name: str | None = None, **kwargs: Any) -> Experiment:
    """Start an experiment of v1 against v2 on ``endpoint`` (precision unless told)."""
    arguments: dict[str, Any] = {
        "control": CONTROL,
        "treatment": TREATMENT,
        "metric": "precision",
        "sticky_key": "customer",
        "reason": "v2 retrained",
        "actor": "tester",
    }
    arguments.update(kwargs)
    return start_experiment(ws, name or f"exp-{endpoint}", endpoint, **arguments)


def simulate(
    ws: Workspace,
    experiment: Experiment,
    *,
    customers: int,
    per_customer: int,
    alert_rate: dict[str, float],
    precision: dict[str, float],
    seed: int,
    label_share: float = 1.0,
    span_s: float = 4 * 86_400.0,
) -> pd.DataFrame:
    """Traffic of ``customers`` routed as the experiment's policy routes them, committed to the
    endpoint's prediction log; labels for ``label_share`` of the customers ingested.

    An alerted prediction (score 0.9, over the default threshold 0.5) is a fraud with
    probability ``precision[arm]``; an unalerted one (score 0.1) with probability 0.01.
    Returns one row per prediction (unit, arm, version, request_id, score, label, labelled).
    """
    rng = np.random.default_rng(seed)
    router = Router(experiment.policy())
    arm_of = {experiment.control: "control", experiment.treatment: "treatment"}
    start = experiment.started_at.timestamp() + 1.0
    rows, records = [], []
    total = customers * per_customer
    for i in range(total):
        unit = f"cust-{i % customers}"
        version = router.choose(unit)
        arm = arm_of[version]
        alert = rng.random() < alert_rate[arm]
        fraud = rng.random() < (precision[arm] if alert else 0.01)
        request_id = f"{experiment.name}-{i}"
        score = 0.9 if alert else 0.1
        records.append(
            server_record(experiment, request_id, version, unit, score, start, i, total, span_s)
        )
        rows.append(
            {
                "unit": unit,
                "arm": arm,
                "version": version,
                "request_id": request_id,
                "score": score,
                "label": int(fraud),
                "labelled": (i % customers) < label_share * customers,
            }
        )
    _write(log_folder(ws, experiment.endpoint), f"w{seed}", records)
    frame = pd.DataFrame(rows)
    labelled = frame[frame["labelled"]]
    if len(labelled):
        ingest_labels(ws, experiment.endpoint, labelled[["request_id", "label"]])
    return frame


def server_record(
    experiment: Experiment,
    request_id: str,
    version: int,
    unit: str | None,
    score: float,
    start: float,
    i: int,
    total: int,
    span_s: float,
) -> dict[str, Any]:
    """A prediction-log record as ``EndpointRuntime._record`` writes it."""
    return {
        "request_id": request_id,
        "time": start + span_s * i / total,
        "endpoint": experiment.endpoint,
        "model": experiment.model,
        "version": version,
        "arm": "primary",
        "routing_key": unit,
        "protocol": "v2",
        "inputs": [[0.0, 1.0, 2.0]],
        "outputs": [score],
        "latency_ms": 1.2,
    }


def state(ws: Workspace, endpoint: str) -> tuple[Any, ...]:
    """What a refused action must leave unchanged: the policy history, the experiments, the
    audit trail's length."""
    with ws.engine.connect() as conn:
        rows = conn.execute(select(experiments_table)).mappings().all()
        count = conn.execute(select(func.count()).select_from(experiments_table)).scalar()
    return (
        [p.describe() for p in policy_history(ws, endpoint)],
        sorted((r["name"], r["status"], r["active_key"]) for r in rows),
        count,
        len(entries(ws)),
    )


# ------------------------------------------------------------------------------------ tests


class TestStart:
    def test_start_splits_traffic_by_a_salted_key_and_records_the_experiment(
        self, registered: Workspace
    ) -> None:
        endpoint = new_endpoint(registered)
        base = get_policy(registered, endpoint)
        experiment = start(registered, endpoint, split=(30, 70))

        policy = get_policy(registered, endpoint)
        assert policy.revision == base.revision + 1 == experiment.revision
        assert experiment.base_revision == base.revision
        assert [(a.version, a.weight) for a in policy.arms] == [(1, 30.0), (2, 70.0)]
        assert policy.sticky_key == "customer"
        assert policy.salt == experiment.salt and policy.salt.startswith(experiment.name)
        assert get_experiment(registered, experiment.name).status == "running"
        actions = [e.action for e in entries(registered, kind="experiment", name=experiment.name)]
        assert actions == ["experiment.start"]

        # assignment is the salted hash: stable, about the split, different from another salt
        keys = [f"cust-{i}" for i in range(2_000)]
        router = Router(policy)
        chosen = [router.choose(k) for k in keys]
        assert chosen == [Router(experiment.policy()).choose(k) for k in keys]
        assert 0.66 < chosen.count(2) / len(keys) < 0.74
        other = Router(
            TrafficPolicy(endpoint, DATASET, policy.arms, sticky_key="customer", salt="x")
        )
        assert chosen != [other.choose(k) for k in keys]

    def test_concurrent_starts_on_one_endpoint_let_exactly_one_run(
        self, registered: Workspace
    ) -> None:
        endpoint = new_endpoint(registered)
        outcomes: list[object] = []

        def attempt(name: str) -> None:
            try:
                outcomes.append(start(registered, endpoint, name))
            except Exception as exc:  # the test inspects what each got
                outcomes.append(exc)

        threads = [
            threading.Thread(target=attempt, args=(f"race-{endpoint}-{i}",)) for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        started = [o for o in outcomes if isinstance(o, Experiment)]
        refused = [o for o in outcomes if not isinstance(o, Experiment)]
        assert len(started) == 1 and len(refused) == 1
        assert isinstance(refused[0], ExperimentConflictError)
        assert f"already runs experiment '{started[0].name}'" in str(refused[0])
        running = list_experiments(registered, endpoint, status="running")
        assert [e.name for e in running] == [started[0].name]
        assert len(list_experiments(registered, endpoint)) == 1  # the loser left no row
        assert get_policy(registered, endpoint).salt == started[0].salt


class TestBadInput:
    @pytest.mark.parametrize(
        ("change", "error", "words"),
        [
            ({"treatment": 9}, ModelNotFoundError, "9"),
            ({"metric": "revenue"}, ParameterError, "'metric'"),
            ({"guardrails": ["latency"]}, ParameterError, "'metric'"),
            ({"split": (50,)}, ParameterError, "'split'"),
            ({"split": (50, 0)}, ParameterError, "'split'"),
            ({"split": (50, -5)}, ParameterError, "'split'"),
            ({"split": "50,50"}, ParameterError, "'split'"),
            ({"treatment": CONTROL}, ParameterError, "'treatment'"),
            ({"alpha": 1.5}, ParameterError, "'alpha'"),
            ({"method": "bayes"}, ParameterError, "'method'"),
            ({"method": "fixed"}, ParameterError, "'planned_units'"),
            ({"reason": " "}, ParameterError, "'reason'"),
        ],
    )
    def test_a_bad_argument_is_refused_naming_it_and_nothing_changes(
        self, registered: Workspace, change: dict[str, Any], error: type, words: str
    ) -> None:
        endpoint = new_endpoint(registered)
        before = state(registered, endpoint)
        with pytest.raises(error, match=words):
            start(registered, endpoint, **change)
        assert state(registered, endpoint) == before

    def test_an_endpoint_without_a_policy_is_refused(self, registered: Workspace) -> None:
        before = state(registered, "nowhere")
        with pytest.raises(ModelNotFoundError, match="'nowhere' has no traffic policy"):
            start(registered, "nowhere")
        assert state(registered, "nowhere") == before

    def test_a_second_experiment_on_a_running_endpoint_is_refused_naming_the_first(
        self, registered: Workspace
    ) -> None:
        endpoint = new_endpoint(registered)
        first = start(registered, endpoint)
        before = state(registered, endpoint)
        with pytest.raises(
            ExperimentConflictError, match=f"already runs experiment '{first.name}'"
        ):
            start(registered, endpoint, f"second-{endpoint}")
        assert state(registered, endpoint) == before
        # a taken name is refused too, even on another endpoint
        other = new_endpoint(registered)
        with pytest.raises(ExperimentConflictError, match="already exists"):
            start(registered, other, first.name)

    def test_status_and_stop_of_an_unknown_experiment_name_it(self, registered: Workspace) -> None:
        with pytest.raises(ExperimentNotFoundError, match="No experiment named 'ghost'"):
            experiment_status(registered, "ghost")
        with pytest.raises(ExperimentNotFoundError, match="'ghost'"):
            stop_experiment(registered, "ghost", reason="no")

    def test_stop_refuses_a_winner_outside_the_arms_and_a_second_stop(
        self, registered: Workspace
    ) -> None:
        endpoint = new_endpoint(registered)
        experiment = start(registered, endpoint)
        before = state(registered, endpoint)
        with pytest.raises(ParameterError, match="'winner'"):
            stop_experiment(registered, experiment.name, reason="done", winner=7)
        assert state(registered, endpoint) == before
        stop_experiment(registered, experiment.name, reason="done")
        after = state(registered, endpoint)
        with pytest.raises(ExperimentConflictError, match="already stopped"):
            stop_experiment(registered, experiment.name, reason="again")
        assert state(registered, endpoint) == after


class TestStop:
    def test_concurrent_stops_change_the_policy_once(self, registered: Workspace) -> None:
        endpoint = new_endpoint(registered)
        experiment = start(registered, endpoint)
        revisions = len(policy_history(registered, endpoint))
        outcomes: list[object] = []

        def attempt(winner: int) -> None:
            try:
                outcomes.append(
                    stop_experiment(registered, experiment.name, reason="done", winner=winner)
                )
            except Exception as exc:  # the test inspects what each got
                outcomes.append(exc)

        threads = [threading.Thread(target=attempt, args=(v,)) for v in (CONTROL, TREATMENT)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stopped = [o for o in outcomes if isinstance(o, Experiment)]
        refused = [o for o in outcomes if not isinstance(o, Experiment)]
        assert len(stopped) == 1 and len(refused) == 1
        assert isinstance(refused[0], ExperimentConflictError | ConcurrentChangeError)
        assert len(policy_history(registered, endpoint)) == revisions + 1
        winner = stopped[0].result["winner"] if stopped[0].result else None
        assert [a.version for a in get_policy(registered, endpoint).arms] == [winner]
        stops = entries(
            registered, kind="experiment", name=experiment.name, action="experiment.stop"
        )
        assert len(stops) == 1


class TestDecisions:
    def test_a_truly_better_treatment_is_decided_treatment_better_and_stopped_for_it(
        self, registered: Workspace
    ) -> None:
        endpoint = new_endpoint(registered)
        experiment = start(registered, endpoint, guardrails=["alert_rate"], mde=0.2)
        simulate(
            registered,
            experiment,
            customers=600,
            per_customer=4,
            alert_rate={"control": 0.3, "treatment": 0.3},
            precision={"control": 0.3, "treatment": 0.6},
            seed=1,
        )
        status = experiment_status(registered, experiment.name)

        assert status.decision == "treatment better"
        test = status.primary.test
        assert test is not None and test.low > 0 and test.p_value <= 0.05
        assert 0.2 < test.effect < 0.4  # the simulated 0.3 difference in precision
        assert status.guardrails[0].decision == "no decision yet"  # same alert rate
        assert status.stopped_early is None
        # how many more units the stated MDE (+20 %) needs: the calculator's size, less what ran
        control, treatment = status.primary.arms["control"], status.primary.arms["treatment"]
        planned = sample_size(
            control.mean,
            0.2,
            relative=True,
            sd=math.sqrt(max(control.variance, treatment.variance)),
        )
        assert status.units_needed == max(0, planned - min(control.n, treatment.n)) > 0
        assert sum(status.units.values()) == 600

        stopped = stop_experiment(
            registered, experiment.name, reason="v2 catches more", winner=TREATMENT
        )
        assert stopped.status == "stopped" and stopped.result is not None
        assert stopped.result["decision"] == "treatment better"
        assert stopped.result["winner"] == TREATMENT
        policy = get_policy(registered, endpoint)
        assert [a.version for a in policy.arms] == [TREATMENT] and policy.salt is None
        assert stopped.result["revision"] == policy.revision
        actions = [e.action for e in entries(registered, kind="experiment", name=experiment.name)]
        assert actions == ["experiment.start", "experiment.stop"]
        # the endpoint is free again
        start(registered, endpoint, f"next-{endpoint}")

    def test_an_a_a_experiment_stays_undecided(self, registered: Workspace) -> None:
        endpoint = new_endpoint(registered)
        experiment = start(registered, endpoint, guardrails=["alert_rate", "mean_score"])
        simulate(
            registered,
            experiment,
            customers=600,
            per_customer=4,
            alert_rate={"control": 0.3, "treatment": 0.3},
            precision={"control": 0.4, "treatment": 0.4},
            seed=2,
        )
        status = experiment_status(registered, experiment.name)
        assert status.decision == "no decision yet"
        assert [g.decision for g in status.guardrails] == ["no decision yet"] * 2
        assert get_experiment(registered, experiment.name).status == "running"

    def test_a_guardrail_worse_treatment_stops_early_and_traffic_returns_to_control(
        self, registered: Workspace
    ) -> None:
        endpoint = new_endpoint(registered, shadows=(TREATMENT,))
        experiment = start(registered, endpoint, guardrails=["alert_rate"])
        assert get_policy(registered, endpoint).shadows == ()  # an arm is not also a shadow
        simulate(
            registered,
            experiment,
            customers=500,
            per_customer=4,
            alert_rate={"control": 0.1, "treatment": 0.4},
            precision={"control": 0.4, "treatment": 0.4},
            seed=3,
        )
        status = experiment_status(registered, experiment.name)

        assert status.stopped_early == "alert_rate"
        assert status.guardrails[0].decision == "treatment worse"
        assert status.experiment.status == "stopped"
        policy = get_policy(registered, endpoint)
        assert [a.version for a in policy.arms] == [CONTROL]
        assert "guardrail alert_rate" in policy.reason
        stored = get_experiment(registered, experiment.name)
        assert stored.result is not None and stored.result["stopped_early"] == "alert_rate"
        assert stored.result["winner"] == CONTROL
        assert "guardrail alert_rate" in (stored.stop_reason or "")

    def test_without_stop_on_guardrail_status_only_reports(self, registered: Workspace) -> None:
        endpoint = new_endpoint(registered)
        experiment = start(registered, endpoint, guardrails=["alert_rate"])
        simulate(
            registered,
            experiment,
            customers=500,
            per_customer=4,
            alert_rate={"control": 0.1, "treatment": 0.4},
            precision={"control": 0.4, "treatment": 0.4},
            seed=4,
        )
        before = state(registered, endpoint)
        status = experiment_status(registered, experiment.name, stop_on_guardrail=False)
        assert status.guardrails[0].treatment_worse and status.stopped_early is None
        assert state(registered, endpoint) == before

    @pytest.mark.parametrize(
        ("planned", "decision"),
        [(5_000, "waiting for 5000 units per arm"), (200, "treatment better")],
    )
    def test_the_fixed_horizon_test_decides_only_at_its_planned_size(
        self, registered: Workspace, planned: int, decision: str
    ) -> None:
        endpoint = new_endpoint(registered)
        experiment = start(registered, endpoint, method="fixed", planned_units=planned)
        simulate(
            registered,
            experiment,
            customers=600,
            per_customer=4,
            alert_rate={"control": 0.3, "treatment": 0.3},
            precision={"control": 0.3, "treatment": 0.6},
            seed=5,
        )
        status = experiment_status(registered, experiment.name)
        assert status.decision == decision
        assert status.primary.test is not None and status.primary.test.method == "fixed-horizon"

    def test_a_planned_size_narrows_the_msprt_interval_of_a_small_experiment(
        self, registered: Workspace
    ) -> None:
        widths = {}
        for planned in (None, 600):
            endpoint = new_endpoint(registered)
            experiment = start(registered, endpoint, planned_units=planned)
            assert experiment.planned_units == planned and experiment.method == "msprt"
            simulate(
                registered,
                experiment,
                customers=600,
                per_customer=4,
                alert_rate={"control": 0.3, "treatment": 0.3},
                precision={"control": 0.3, "treatment": 0.4},
                seed=5,
            )
            test = experiment_status(registered, experiment.name).primary.test
            assert test is not None
            widths[planned] = test.high - test.low
        # tuned to ~300 units per arm instead of 10,000: the same data, a narrower interval
        assert widths[600] < 0.8 * widths[None]

    def test_status_says_when_the_endpoint_no_longer_serves_the_split(
        self, registered: Workspace
    ) -> None:
        from shipyard.serving.policy import rollback_policy

        endpoint = new_endpoint(registered)
        experiment = start(registered, endpoint)
        assert not experiment_status(registered, experiment.name).notes
        rollback_policy(registered, endpoint, reason="endpoint guardrail tripped", actor="tester")
        (note,) = experiment_status(registered, experiment.name).notes
        assert "no longer the experiment's split" in note and "guardrail tripped" in note

    def test_a_guardrail_that_rolls_the_treatment_back_stops_the_experiment(
        self, registered: Workspace
    ) -> None:
        from shipyard.monitoring.guardrails import Guardrail, GuardrailResult
        from shipyard.monitoring.trips import act_on_trip

        endpoint = new_endpoint(registered)
        experiment = start(registered, endpoint)
        revision = get_policy(registered, endpoint).revision
        rule = Guardrail("alert-rate", "alert_rate", "<=", 0.5)
        tripped = GuardrailResult(rule, TREATMENT, 0.9, 400, "tripped", "alert rate 0.90 > 0.5")
        trip = act_on_trip(
            registered, endpoint, revision=revision, version=TREATMENT, results=[tripped]
        )
        assert trip.rolled_back_to == CONTROL
        stopped = get_experiment(registered, experiment.name)
        assert stopped.status == "stopped"
        assert stopped.stop_reason and "guardrail alert-rate tripped" in stopped.stop_reason
        assert [a.version for a in get_policy(registered, endpoint).arms] == [CONTROL]
        # an experiment on another endpoint is left alone
        other = start(registered, new_endpoint(registered))
        assert get_experiment(registered, other.name).status == "running"


@pytest.mark.slow
def test_a_real_server_routes_by_the_experiments_salted_key_and_logs_what_status_reads(
    registered: Workspace, tmp_path: Path
) -> None:
    """`shipyard serve` (two workers) switches to the experiment's policy; every keyed request
    is answered by the version the salted hash gives its customer, logged with its key, and
    read back by the experiment's metrics. The server's own probation guardrails are off:
    they judge a new version against fixed bounds and could roll the split back mid-test."""
    from shipyard.registry.models import ModelRegistry
    from shipyard.training.frames import Window, load_frame
    from tests.registry.credit import FEATURES
    from tests.serving.conftest import ADMIN_TOKEN, start_server, v2_body, wait_for_revision

    endpoint = new_endpoint(registered)
    server = start_server(
        registered, f"{DATASET}@{CONTROL}", tmp_path, "--endpoint", endpoint, "--no-guardrails",
        env={"SHIPYARD_SERVING_ADMIN_TOKEN": ADMIN_TOKEN},
    )  # fmt: skip
    try:
        experiment = start(registered, endpoint, guardrails=["alert_rate"])
        wait_for_revision(server, experiment.revision)
        version = ModelRegistry(registered).get(DATASET, CONTROL)
        rows = load_frame(registered, Window.from_dict(version.eval_window))[FEATURES]
        matrix = rows.to_numpy(dtype=float)[:1]
        router = Router(experiment.policy())
        answered = {}
        for i in range(120):
            key = f"cust-{i % 60}"
            status, _, body = server.post_json(
                f"/v2/models/{endpoint}/infer",
                v2_body(matrix, f"srv-{i}"),
                headers={"X-Routing-Key": key},
            )
            assert status == 200, body
            answered[f"srv-{i}"] = int(body["model_version"])
            assert answered[f"srv-{i}"] == router.choose(key)
    finally:
        server.stop()
    assert set(answered.values()) == {CONTROL, TREATMENT}

    data = experiment_data(registered, experiment)
    assert (data.records, data.unkeyed, data.misrouted) == (120, 0, 0)
    assert sum(data.units.values()) == 60
    status = experiment_status(registered, experiment.name)
    assert status.guardrails[0].arms["control"].n + status.guardrails[0].arms["treatment"].n == 60
