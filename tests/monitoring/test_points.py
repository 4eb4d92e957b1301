"""Monitored points: stored per (endpoint, group, metric, window), replaced, read back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shipyard.errors import ParameterError
from shipyard.monitoring.points import Point, load_points, store_points
from shipyard.workspace import Workspace

DAY = datetime(2026, 11, 20)


def _point(metric: str, day: int, value: float | None, group: str = "fraud v1") -> Point:
    start = DAY + timedelta(days=day)
    return Point("fraud", group, metric, start, start + timedelta(days=1), value)


def test_a_window_stored_again_replaces_its_points_and_keeps_the_others(
    workspace: Workspace,
) -> None:
    store_points(workspace, [_point("records", 0, 10.0), _point("records", 1, 20.0)], "run1")
    store_points(workspace, [_point("records", 1, 25.0), _point("labelled", 1, 0.5)], "run2")
    stored = load_points(workspace, "fraud")
    assert [(p.metric, p.window_start.day, p.value, p.run_id) for p in stored] == [
        ("records", 20, 10.0, "run1"),
        ("labelled", 21, 0.5, "run2"),
        ("records", 21, 25.0, "run2"),
    ]


def test_selection_by_metric_prefix_group_and_time(workspace: Workspace) -> None:
    store_points(
        workspace,
        [
            _point("drift.p_value.A", 0, 0.01),
            _point("drift.pXvalue.A", 0, 0.02),  # "_" in the prefix is not a wildcard
            _point("drift.p_value.B", 1, 0.03, group="fraud v2"),
        ],
    )
    found = load_points(workspace, "fraud", metric="drift.p_value.*")
    assert sorted(p.metric for p in found) == ["drift.p_value.A", "drift.p_value.B"]
    assert [p.group for p in load_points(workspace, "fraud", group="fraud v2")] == ["fraud v2"]
    later = load_points(workspace, "fraud", since=DAY + timedelta(days=1))
    assert [p.metric for p in later] == ["drift.p_value.B"]
    assert load_points(workspace, "other") == []


def test_non_finite_values_are_insufficient_data_and_aware_times_are_utc(
    workspace: Workspace,
) -> None:
    start = datetime(2026, 11, 20, 1, tzinfo=UTC)
    store_points(
        workspace,
        [Point("fraud", "g", "estimated.roc_auc", start, start + timedelta(hours=1), float("nan"))],
    )
    (point,) = load_points(workspace, "fraud")
    assert point.value is None
    assert point.window_start == datetime(2026, 11, 20, 1)


def test_a_window_that_ends_before_it_starts_is_refused(workspace: Workspace) -> None:
    bad = Point("fraud", "g", "records", DAY, DAY - timedelta(hours=1), 1.0)
    with pytest.raises(ParameterError, match="window_end"):
        store_points(workspace, [bad])
    assert load_points(workspace, "fraud") == []
