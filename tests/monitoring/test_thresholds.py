from __future__ import annotations

import asyncio
import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import DataValidationError, ModelNotFoundError, ParameterError
from shipyard.governance.audit import entries, verify
from shipyard.monitoring.labels import ingest_labels
from shipyard.monitoring.thresholds import (
    DEFAULT_THRESHOLD,
    decision_threshold,
    recalibrate_threshold,
    set_decision_threshold,
    threshold_history,
)
from shipyard.serving.predlog import PredictionLog, log_folder
from shipyard.workspace import Workspace


def test_a_version_without_a_setting_uses_the_model_wide_one_then_the_default(
    workspace: Workspace,
) -> None:
    assert decision_threshold(workspace, "fraud", 1) == DEFAULT_THRESHOLD
    set_decision_threshold(workspace, "fraud", None, 0.3, reason="model-wide", actor="ana")
    assert decision_threshold(workspace, "fraud", 1) == 0.3
    own = set_decision_threshold(
        workspace, "fraud", 2, 0.42, reason="alert budget", details={"target_fpr": 0.01}
    )
    assert own.previous == 0.3 and own.details == {"target_fpr": 0.01}
    assert decision_threshold(workspace, "fraud", 2) == 0.42
    assert decision_threshold(workspace, "fraud", 1) == 0.3  # other versions keep theirs
    assert decision_threshold(workspace, "other", 2) == DEFAULT_THRESHOLD
    assert [s.threshold for s in threshold_history(workspace, "fraud", 2)] == [0.3, 0.42]
    trail = entries(workspace, kind="model", name="fraud", action="threshold")
    assert trail[0].actor == "ana" and trail[-1].reason == "alert budget"
    assert verify(workspace).ok


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, "0.4", True])
def test_a_threshold_outside_0_1_is_refused_and_nothing_is_recorded(
    workspace: Workspace, value: object
) -> None:
    with pytest.raises(ParameterError, match="threshold"):
        set_decision_threshold(workspace, "fraud", 1, value, reason="x")  # type: ignore[arg-type]
    assert threshold_history(workspace, "fraud") == []


def test_a_threshold_needs_a_reason(workspace: Workspace) -> None:
    with pytest.raises(ParameterError, match="reason"):
        set_decision_threshold(workspace, "fraud", 1, 0.2, reason=" ")


# -- recalibration on a labelled window of a real prediction log ----------------------------

T0 = 1_795_000_000.0  # 2026-11-19 UTC
N = 2_000  # one row a request, over four days


def _truth_and_scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    fraud = rng.random(N) < 0.1
    scores = np.where(fraud, rng.beta(5, 2, N), rng.beta(2, 5, N)).round(4)
    return fraud.astype(int), scores


@pytest.fixture
def labelled(workspace: Workspace) -> Workspace:
    """fraud v1 served N requests on endpoint 'fraud'; 80% of them labelled."""
    fraud, scores = _truth_and_scores()
    records = [
        {
            "request_id": f"r{i}", "time": T0 + i * 4 * 86_400 / N, "endpoint": "fraud",
            "model": "fraud", "version": 1, "arm": "champion", "protocol": "v2",
            "inputs": [[float(i)]], "outputs": [float(scores[i])], "latency_ms": 1.0,
        }
        for i in range(N)
    ]  # fmt: skip
    log = PredictionLog(log_folder(workspace, "fraud"), "w1")

    async def run() -> None:
        for record in records:
            await log.commit(record)

    asyncio.run(run())
    log.close()
    known = [i for i in range(N) if i % 5]
    ingest_labels(
        workspace, "fraud",
        pd.DataFrame({"request_id": [f"r{i}" for i in known], "label": fraud[known]}),
    )  # fmt: skip
    return workspace


def test_a_target_fpr_gets_the_lowest_threshold_meeting_it(labelled: Workspace) -> None:
    fraud, scores = _truth_and_scores()
    known = np.arange(N) % 5 != 0
    negatives = scores[known & (fraud == 0)]
    rec = recalibrate_threshold(
        labelled, "fraud", 1, target_fpr=0.05, reason="FPR over budget", actor="ana"
    )
    assert rec.n_labelled == known.sum() and rec.n_negatives == negatives.size
    fpr = (negatives >= rec.threshold).mean()
    assert fpr <= 0.05 and rec.after.fpr.value == pytest.approx(fpr)
    lower = negatives[negatives < rec.threshold].max()  # any lower threshold breaks the target
    assert (negatives >= lower).mean() > 0.05
    assert rec.before.threshold == DEFAULT_THRESHOLD and rec.previous == DEFAULT_THRESHOLD
    assert rec.after.recall.low is not None and rec.after.recall.low < rec.after.recall.value
    assert rec.days == pytest.approx(4 * (N - 1) / N)
    assert rec.after.alerts_per_day == pytest.approx((scores >= rec.threshold).sum() / rec.days)
    assert rec.after.alert_rate.value == pytest.approx((scores >= rec.threshold).mean())
    # recorded: monitoring and the guardrails read it back, with how it was chosen
    assert decision_threshold(labelled, "fraud", 1) == rec.threshold
    (setting,) = threshold_history(labelled, "fraud", 1)
    assert setting.actor == "ana" and setting.details["target_fpr"] == 0.05
    assert setting.details["after"]["fpr"]["value"] == pytest.approx(fpr)
    assert rec.setting == setting
    thresholds = [c[0] for c in rec.curve]
    assert rec.threshold in thresholds and thresholds == sorted(thresholds)
    fprs = [c[1] for c in rec.curve]
    assert all(a >= b for a, b in itertools.pairwise(fprs))
    assert "threshold 0.5 -> " in rec.text()


def test_an_alert_budget_dry_run_changes_nothing(labelled: Workspace) -> None:
    _, scores = _truth_and_scores()
    rec = recalibrate_threshold(
        labelled, "fraud", 1, alert_budget=0.02, register=False, reason="analyst capacity"
    )
    assert (scores >= rec.threshold).mean() <= 0.02
    assert (scores >= scores[scores < rec.threshold].max()).mean() > 0.02
    assert rec.setting is None and "dry run" in rec.text()
    assert threshold_history(labelled, "fraud") == []
    assert decision_threshold(labelled, "fraud", 1) == DEFAULT_THRESHOLD


def test_recalibration_refuses_what_it_cannot_measure(labelled: Workspace) -> None:
    ws = labelled

    def recal(**kwargs: Any) -> Any:
        return recalibrate_threshold(ws, "fraud", 1, **{"reason": "x", **kwargs})

    with pytest.raises(ParameterError, match="exactly one goal"):
        recal(target_fpr=0.01, alert_budget=0.01)
    with pytest.raises(ParameterError, match="exactly one goal"):
        recal()
    with pytest.raises(ParameterError, match=r"'target_fpr' .* a share in \(0, 1\)"):
        recal(target_fpr=1.5)
    with pytest.raises(ParameterError, match="reason"):
        recal(target_fpr=0.1, reason=" ")
    with pytest.raises(DataValidationError, match="needs at least 10,000 labelled negatives"):
        recal(target_fpr=0.0001)
    with pytest.raises(DataValidationError, match="No logged prediction of v1"):
        recal(target_fpr=0.1, start="2100-01-01")
    with pytest.raises(ModelNotFoundError, match="'elsewhere' has no traffic policy"):
        recalibrate_threshold(ws, "elsewhere", 1, target_fpr=0.1, reason="x")
    assert threshold_history(ws, "fraud") == []


def test_a_window_without_labels_is_refused(workspace: Workspace) -> None:
    log = PredictionLog(log_folder(workspace, "fraud"), "w1")
    record = {
        "request_id": "r0", "time": T0, "endpoint": "fraud", "model": "fraud", "version": 1,
        "arm": "champion", "protocol": "v2", "inputs": [[1.0]], "outputs": [0.3],
    }  # fmt: skip

    async def run() -> None:
        await log.commit(record)

    asyncio.run(run())
    log.close()
    with pytest.raises(DataValidationError, match=r"is labelled: .* Ingest labels first"):
        recalibrate_threshold(workspace, "fraud", 1, target_fpr=0.1, reason="x")
