"""Metrics per arm from a real prediction log and real label batches: which records count,
per-unit sums, labels, thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import ParameterError
from shipyard.experiments.lifecycle import experiment_status
from shipyard.experiments.metrics import (
    METRICS,
    MetricSpec,
    arm_stats,
    experiment_data,
    metric_spec,
    unit_sums,
)
from shipyard.monitoring.labels import ingest_labels
from shipyard.monitoring.thresholds import set_decision_threshold
from shipyard.serving.policy import Router
from shipyard.serving.predlog import log_folder
from shipyard.workspace import Workspace
from tests.experiments import test_lifecycle
from tests.experiments.test_lifecycle import (
    CONTROL,
    TREATMENT,
    new_endpoint,
    server_record,
    simulate,
    start,
)
from tests.monitoring.test_labels import _write

registered = test_lifecycle.registered  # the shared workspace with two versions


def _expected(frame: pd.DataFrame, numerator: str, denominator: str) -> dict[str, float]:
    """Sum of numerator over sum of denominator per arm, straight from the simulation."""
    frame = frame.assign(
        alerts=frame["score"] >= 0.5,
        caught=(frame["score"] >= 0.5) & (frame["label"] == 1),
        predictions=1,
    )
    return {
        arm: float(part[numerator].sum() / part[denominator].sum())
        for arm, part in frame.groupby("arm")
    }


class TestWhatCounts:
    def test_ratio_metrics_are_sums_over_the_arms_customers(self, registered: Workspace) -> None:
        endpoint = new_endpoint(registered)
        experiment = start(registered, endpoint)
        frame = simulate(
            registered,
            experiment,
            customers=200,
            per_customer=3,
            alert_rate={"control": 0.3, "treatment": 0.5},
            precision={"control": 0.3, "treatment": 0.5},
            seed=11,
            label_share=0.5,
        )
        data = experiment_data(registered, experiment)
        assert data.records == 600 and data.unkeyed == data.misrouted == 0
        assert sum(data.units.values()) == 200

        labelled = frame[frame["labelled"]]
        precision = arm_stats(data, metric_spec("precision"))
        alert_rate = arm_stats(data, metric_spec("alert_rate"))
        expected_precision = _expected(labelled, "caught", "alerts")
        expected_alerts = _expected(frame, "alerts", "predictions")  # needs no label
        for arm in ("control", "treatment"):
            assert precision[arm].mean == pytest.approx(expected_precision[arm])
            assert alert_rate[arm].mean == pytest.approx(expected_alerts[arm])
            # units without a label yet are not counted by a label metric
            assert precision[arm].n == labelled[labelled["arm"] == arm]["unit"].nunique()
            assert alert_rate[arm].n == frame[frame["arm"] == arm]["unit"].nunique()
        unlabelled = data.unlabelled_units()
        assert sum(unlabelled.values()) == 100
        assert all(unlabelled[arm] + precision[arm].n == data.units[arm] for arm in unlabelled)

        # per unit: one row per customer, the customer's own sums
        sums = unit_sums(data, metric_spec("alert_rate"))
        assert len(sums) == 200 and set(sums["denominator"]) == {3.0}

    def test_shadows_explicit_answers_unkeyed_misrouted_and_earlier_records_are_left_out(
        self, registered: Workspace
    ) -> None:
        endpoint = new_endpoint(registered)
        experiment = start(registered, endpoint)
        router = Router(experiment.policy())
        t0 = experiment.started_at.timestamp()
        units = [f"u{i}" for i in range(20)]
        records = [
            server_record(experiment, f"ok-{u}", router.choose(u), u, 0.9, t0 + 1, i, 20, 10.0)
            for i, u in enumerate(units)
        ]
        other = {CONTROL: TREATMENT, TREATMENT: CONTROL}
        odd = [
            # before the experiment started
            {**records[0], "request_id": "early", "time": t0 - 60},
            # a shadow score and an explicitly asked version
            {**records[1], "request_id": "shadow", "arm": "shadow"},
            {**records[2], "request_id": "explicit", "arm": "explicit"},
            # no routing key: assigned at random, not by customer
            {**records[3], "request_id": "unkeyed", "routing_key": None},
            # the other arm's version for this key: a worker still on the old policy
            {**records[4], "request_id": "misrouted", "version": other[records[4]["version"]]},
        ]
        _write(log_folder(registered, endpoint), "w1", records + odd)
        data = experiment_data(registered, experiment)
        assert (data.records, data.unkeyed, data.misrouted) == (20, 1, 1)
        assert sum(data.units.values()) == 20

    def test_alerts_use_each_versions_decision_threshold(self, registered: Workspace) -> None:
        endpoint = new_endpoint(registered)
        experiment = start(registered, endpoint)
        simulate(
            registered,
            experiment,
            customers=100,
            per_customer=2,
            alert_rate={"control": 0.5, "treatment": 0.5},
            precision={"control": 0.5, "treatment": 0.5},
            seed=12,
        )
        before = arm_stats(experiment_data(registered, experiment), metric_spec("alert_rate"))
        assert before["treatment"].mean > 0.3
        set_decision_threshold(registered, "credit", TREATMENT, 0.95, reason="test budget")
        try:
            after = arm_stats(experiment_data(registered, experiment), metric_spec("alert_rate"))
        finally:
            set_decision_threshold(registered, "credit", TREATMENT, 0.5, reason="back")
        assert after["treatment"].mean == 0.0  # scores of 0.9 are under 0.95
        assert after["control"].mean == before["control"].mean

    def test_a_later_label_batch_supersedes_an_earlier_one(self, registered: Workspace) -> None:
        endpoint = new_endpoint(registered)
        experiment = start(registered, endpoint)
        frame = simulate(
            registered,
            experiment,
            customers=100,
            per_customer=2,
            alert_rate={"control": 1.0, "treatment": 1.0},
            precision={"control": 0.5, "treatment": 0.5},
            seed=13,
        )
        ingest_labels(registered, endpoint, frame[["request_id"]].assign(label=1))
        precision = arm_stats(experiment_data(registered, experiment), metric_spec("precision"))
        assert precision["control"].mean == precision["treatment"].mean == 1.0


class TestSpecs:
    def test_every_named_metric_is_a_valid_spec_and_says_whether_it_needs_labels(self) -> None:
        assert {n for n, s in METRICS.items() if not s.needs_labels} == {
            "alert_rate",
            "mean_score",
            "alerted_units",
        }
        assert metric_spec("precision") is METRICS["precision"]
        custom = MetricSpec("frauds per alert", "ratio", "frauds", "alerts")
        assert metric_spec(custom) is custom
        assert MetricSpec.from_dict(custom.to_dict()) == custom

    @pytest.mark.parametrize(
        ("arguments", "field"),
        [
            ({"name": "", "kind": "ratio", "numerator": "alerts"}, "'name'"),
            ({"name": "x", "kind": "median", "numerator": "alerts"}, "'kind'"),
            ({"name": "x", "kind": "ratio", "numerator": "revenue"}, "'numerator'"),
            (
                {"name": "x", "kind": "ratio", "numerator": "alerts", "denominator": "a"},
                "'denominator'",
            ),
        ],
    )
    def test_a_bad_spec_names_its_field(self, arguments: dict[str, str], field: str) -> None:
        with pytest.raises(ParameterError, match=field):
            MetricSpec(**arguments)  # type: ignore[arg-type]

    def test_an_unknown_metric_name_lists_the_known_ones(self) -> None:
        with pytest.raises(ParameterError, match="'precision'"):
            metric_spec("revenue")


class TestListOutputs:
    def test_ctr_of_json_answers_counts_clicked_lists_over_labelled_lists(
        self, registered: Workspace
    ) -> None:
        """A recommender logs its lists in outputs_json (no score): the labels join them by
        request id and ctr is clicked lists over labelled lists, per customer."""
        endpoint = new_endpoint(registered)
        # ~75 labelled users per arm (which ones depends on the experiment's fresh salt): the
        # mSPRT's interval tuned to that size decides, whichever users land where
        experiment = start(registered, endpoint, metric="ctr", planned_units=75)
        router = Router(experiment.policy())
        arm_of = {CONTROL: "control", TREATMENT: "treatment"}
        click = {"control": 0.2, "treatment": 0.6}
        rng = np.random.default_rng(5)
        t0 = experiment.started_at.timestamp() + 1.0
        records, labels = [], []
        for i in range(600):
            unit = f"user-{i % 200}"
            version = router.choose(unit)
            record = server_record(experiment, f"r{i}", version, unit, 0.0, t0, i, 600, 60.0)
            del record["outputs"]
            record["outputs_json"] = [{"items": [{"item": i % 7, "score": 1.0}], "k": 1}]
            records.append(record)
            if i % 4:  # a quarter of the lists have no outcome yet
                clicked = int(rng.random() < click[arm_of[version]])
                labels.append({"request_id": f"r{i}", "label": clicked, "arm": arm_of[version]})
        _write(log_folder(registered, endpoint), "w1", records)
        frame = pd.DataFrame(labels)
        ingested = ingest_labels(registered, endpoint, frame[["request_id", "label"]])
        assert ingested.unknown == 0

        data = experiment_data(registered, experiment)
        assert data.records == 600 and data.rows["score"].isna().all()
        assert not data.rows["alert"].any()
        ctr = arm_stats(data, metric_spec("ctr"))
        for arm, part in frame.groupby("arm"):
            assert ctr[str(arm)].mean == pytest.approx(part["label"].mean())
        assert metric_spec("ctr").needs_labels and metric_spec("ctr").higher_is_better
        status = experiment_status(registered, experiment.name)
        assert status.primary.decision == "treatment better"
        assert status.primary.test is not None and status.primary.test.effect > 0.2
