"""The retraining pipeline's steps on a small simulated fraud data set with a real champion."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest

from shipyard.errors import DataValidationError, ParameterError
from shipyard.pipelines.retrain import retraining_pipeline
from shipyard.pipelines.windows import RetrainWindow, labelled_window, plan_window
from shipyard.workspace import Workspace

SIMULATOR = {"n_customers": 300, "n_terminals": 600, "n_days": 70, "mode": "fast", "seed": 7}
NOW = "2018-06-03"
"""Labels known up to 2018-05-26: the challenger trains on the champion's own days
(05-06..05-12) and both are compared on the champion's evaluation days (05-20..05-26): the
same configuration on the same rows, so the challenger cannot be significantly better."""


@pytest.fixture(scope="module")
def champion_workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A fresh workspace whose fraud champion is one LightGBM trained on 05-06..05-12."""
    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
    from shipyard.features.fraud import BASELINE_VIEWS
    from shipyard.features.offline import OfflineStore
    from shipyard.solutions.fraud import Protocol, train_suite

    ws = Workspace.init(tmp_path_factory.mktemp("retrain") / "ws")
    dataset = simulate_fraud_dataset(ws, FraudSimulator(**SIMULATOR))  # type: ignore[arg-type]
    OfflineStore(ws).materialize(BASELINE_VIEWS)
    report = train_suite(
        ws,
        dataset,
        model_types=["lightgbm"],
        protocol=Protocol(start_date_training="2018-05-06", n_folds=1),
        n_boot=0,
        gate_boot=200,
        promote=True,
    )
    assert report.promoted
    yield ws
    ws.close()


def test_the_window_keeps_the_label_delay_between_training_and_evaluation() -> None:
    start, end, eval_start, eval_end = plan_window(date(2018, 6, 10), train_days=7)
    assert eval_end == date(2018, 6, 2)  # now - 7 delay days - 1
    assert (eval_start, eval_end) == (date(2018, 5, 27), date(2018, 6, 2))
    assert (start, end) == (date(2018, 5, 13), date(2018, 5, 19))  # 7 delay days between


def test_a_bad_window_length_is_refused_naming_it() -> None:
    with pytest.raises(ParameterError, match="'eval_days' parameter of retraining window"):
        plan_window(date(2018, 6, 10), train_days=7, eval_days=0)


def test_the_labelled_window_reads_the_champions_training_length(
    champion_workspace: Workspace,
) -> None:
    window = labelled_window(
        champion_workspace, model="fraud", dataset="fraud", now=date(2018, 6, 10)
    )
    assert window.train_days == 7  # the champion's
    assert window.last_labelled == date(2018, 6, 2)
    assert RetrainWindow.from_dict(window.to_dict()) == window


def test_a_window_with_no_labels_is_refused_with_its_days(champion_workspace: Workspace) -> None:
    # the data end on 2018-06-09: as of 2018-09-01 the newest labelled days hold no rows
    with pytest.raises(
        DataValidationError, match=r"training window 2018-08-04\.\.2018-08-10 .* no rows"
    ):
        labelled_window(champion_workspace, model="fraud", dataset="fraud", now=date(2018, 9, 1))


def test_a_challenger_not_significantly_better_is_not_registered_and_the_champion_is_kept(
    champion_workspace: Workspace,
) -> None:
    from shipyard.pipelines.runs import StepStatus, run_pipeline
    from shipyard.registry.models import ModelRegistry

    registry = ModelRegistry(champion_workspace)
    before = [v.version for v in registry.versions("fraud")]
    run = run_pipeline(champion_workspace, retraining_pipeline(now=NOW, n_boot=200))
    assert str(run.status) == "succeeded", run.error
    evaluation = run.outputs("evaluate")
    assert evaluation["delta"] == 0.0 and evaluation["delta_low"] <= 0
    assert run.outputs("gates")["passed"] is False
    assert run.outputs("register")["registered"] is False
    assert run.outputs("canary")["outcome"] == "skipped"
    decision = run.outputs("decision")
    assert decision["decision"] == "kept"
    assert any("not significantly better" in r for r in decision["reasons"])
    assert [v.version for v in registry.versions("fraud")] == before
    assert registry.get("fraud", "champion").version == before[0]
    assert run.steps["window"].status == StepStatus.SUCCEEDED


def test_a_rerun_on_the_same_data_reuses_the_cached_steps(champion_workspace: Workspace) -> None:
    from shipyard.pipelines.runs import StepStatus, run_pipeline

    first = run_pipeline(champion_workspace, retraining_pipeline(now=NOW, n_boot=200))
    again = run_pipeline(champion_workspace, retraining_pipeline(now=NOW, n_boot=200))
    for step in ("features", "challenger", "evaluate", "gates"):
        assert again.steps[step].status == StepStatus.CACHED, step
        assert again.outputs(step) == first.outputs(step)
    assert again.steps["window"].status == StepStatus.SUCCEEDED  # the clock is always read
    later = run_pipeline(champion_workspace, retraining_pipeline(now="2018-06-04", n_boot=200))
    assert later.steps["challenger"].status == StepStatus.SUCCEEDED  # a new window: retrained


def test_the_pipeline_refuses_a_bad_clock_or_metric() -> None:
    with pytest.raises(ParameterError, match="'now' parameter of retraining_pipeline"):
        retraining_pipeline(now="next tuesday")
    with pytest.raises(ParameterError, match="'metric' parameter of retraining_pipeline"):
        retraining_pipeline(metric="accuracy")


def test_a_canary_without_traffic_waits_and_never_promotes(champion_workspace: Workspace) -> None:
    """(Last in the file: the waiting run holds the pipeline.)"""
    from shipyard.pipelines.runs import StepStatus, run_pipeline
    from shipyard.registry.models import ModelRegistry
    from shipyard.serving.policy import Arm, TrafficPolicy, get_policy, set_policy

    registry = ModelRegistry(champion_workspace)
    champion = registry.get("fraud", "champion").version
    policy = TrafficPolicy("fraud-quiet", "fraud", (Arm(champion, 1.0),))
    set_policy(champion_workspace, policy, reason="serve the champion")
    canary = {"step_timeout_s": 1.0, "poll_s": 0.2, "retry_after_s": 5.0}
    pipeline = retraining_pipeline("fraud-quiet", now="2018-06-04", n_boot=200, canary=canary)
    run = run_pipeline(champion_workspace, pipeline)
    assert run.outputs("gates")["passed"] is True, run.outputs("gates")["reason"]
    assert run.outputs("register")["registered"] is True
    assert str(run.status) == "waiting"
    assert run.steps["canary"].status == StepStatus.WAITING
    assert run.wait is not None and "insufficient data" in run.wait["reason"]
    assert run.steps["decision"].status == StepStatus.PENDING
    assert registry.get("fraud", "champion").version == champion  # never promoted blindly
    served = get_policy(champion_workspace, "fraud-quiet")
    assert [(a.version, a.weight) for a in served.arms] == [(champion, 1.0)]  # restored
