from __future__ import annotations

import math

import pytest

from shipyard.errors import ParameterError
from shipyard.governance.audit import entries, verify
from shipyard.monitoring.thresholds import (
    DEFAULT_THRESHOLD,
    decision_threshold,
    set_decision_threshold,
    threshold_history,
)
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
