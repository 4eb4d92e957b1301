"""Delayed features online: the offline store's latest row per entity, incremental."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.errors import FeatureDefinitionError
from shipyard.features.fraud import TERMINAL_RISK
from shipyard.features.materialize_online import (
    has_delay,
    materialize_online,
    online_status,
    read_online,
)
from shipyard.features.offline import OfflineStore
from shipyard.features.online import SQLiteOnlineStore
from shipyard.workspace import Workspace
from tests.cli.test_cli import shipyard

VIEW = TERMINAL_RISK


@pytest.fixture(scope="module")
def offline_rows(small_workspace: tuple[Workspace, Dataset]) -> pd.DataFrame:
    ws, _ = small_workspace
    path = OfflineStore(ws).materialization(VIEW).path
    return pd.read_parquet(path)


def expected_latest(rows: pd.DataFrame, as_of: datetime | None = None) -> pd.DataFrame:
    """The latest row per terminal at or before ``as_of`` (last in file order on ties)."""
    if as_of is not None:
        rows = rows[rows[VIEW.timestamp] <= as_of]
    ordered = rows.sort_values(VIEW.timestamp, kind="stable")
    return ordered.groupby(VIEW.entity, sort=True).tail(1).set_index(VIEW.entity)


def assert_online_equals(store: SQLiteOnlineStore, expected: pd.DataFrame) -> None:
    stored = read_online(store, VIEW, list(expected.index))
    for entity, row in zip(expected.index, stored, strict=True):
        assert row[VIEW.entity] == str(entity)
        assert row[VIEW.timestamp] == expected.at[entity, VIEW.timestamp].to_pydatetime()
        for name in VIEW.feature_names:
            want: Any = expected.at[entity, name]
            want = want.item() if hasattr(want, "item") else want
            assert row[name] == want, (entity, name)  # exactly, no tolerance
            assert type(row[name]) is type(want), (entity, name)


def test_terminal_risk_online_equals_latest_offline_row_and_reruns_write_nothing(
    small_workspace: tuple[Workspace, Dataset], offline_rows: pd.DataFrame, tmp_path: Path
) -> None:
    ws, dataset = small_workspace
    assert has_delay(VIEW)
    store = SQLiteOnlineStore(tmp_path / "online.db")
    try:
        (first,) = materialize_online(ws, [VIEW], store=store)
        expected = expected_latest(offline_rows)
        assert not first.incremental
        assert first.rows_written == first.entities == len(expected)
        assert first.dataset_hash == dataset.content_hash
        assert first.newest_row_at == offline_rows[VIEW.timestamp].max().to_pydatetime()
        assert_online_equals(store, expected)

        (again,) = materialize_online(ws, [VIEW], store=store)
        assert again.incremental
        assert again.rows_written == 0
        assert again.entities == len(expected)
        assert_online_equals(store, expected)

        status = {(r.view, r.definition_hash): r for r in online_status(ws)}
        last = status[(VIEW.name, VIEW.definition_hash)]
        assert last.run_at >= first.run_at
        assert last.newest_row_at == first.newest_row_at
        assert last.rows_written == 0
    finally:
        store.close()


def test_a_later_as_of_writes_only_the_terminals_that_changed(
    small_workspace: tuple[Workspace, Dataset], offline_rows: pd.DataFrame, tmp_path: Path
) -> None:
    ws, _ = small_workspace
    end = offline_rows[VIEW.timestamp].max().to_pydatetime()
    early, later = end - timedelta(days=3), end - timedelta(days=3) + timedelta(hours=2)
    store = SQLiteOnlineStore(tmp_path / "online.db")
    try:
        (first,) = materialize_online(ws, [VIEW], store=store, as_of=early)
        before = expected_latest(offline_rows, early)
        assert first.rows_written == len(before)
        assert first.newest_row_at == before[VIEW.timestamp].max().to_pydatetime()
        assert_online_equals(store, before)

        (second,) = materialize_online(ws, [VIEW], store=store, as_of=later.isoformat())
        after = expected_latest(offline_rows, later)
        times = offline_rows[VIEW.timestamp]
        moved = offline_rows[(times > first.newest_row_at) & (times <= later)]
        changed = set(moved[VIEW.entity])
        assert second.incremental
        assert 0 < second.rows_written == len(changed) < len(after)
        assert second.entities == len(after)
        assert_online_equals(store, after)
    finally:
        store.close()


def test_unseen_terminal_gets_zero_history_and_streaming_state_is_refused(
    small_workspace: tuple[Workspace, Dataset], offline_rows: pd.DataFrame, tmp_path: Path
) -> None:
    ws, _ = small_workspace
    store = SQLiteOnlineStore(tmp_path / "online.db")
    try:
        materialize_online(ws, [VIEW], store=store)
        (row,) = read_online(store, VIEW, [-1])
        assert row[VIEW.entity] == "-1"
        assert row[VIEW.timestamp] is None
        for name in VIEW.feature_names:
            assert row[name] == (0.0 if "RISK" in name else 0)
    finally:
        store.close()
    terminal = int(offline_rows[VIEW.entity].iloc[0])
    streamed = SQLiteOnlineStore(tmp_path / "streamed.db")
    try:
        streamed.put(VIEW, str(terminal), b"\x01\x00\x00\x00\x00")  # a streaming state blob
        with pytest.raises(FeatureDefinitionError, match="streamed or materialized"):
            read_online(streamed, VIEW, [terminal])
        with pytest.raises(FeatureDefinitionError, match="streamed or materialized"):
            materialize_online(ws, [VIEW], store=streamed)
        assert streamed.get(VIEW, str(terminal)) == b"\x01\x00\x00\x00\x00"
    finally:
        streamed.close()


def test_cli_materialize_online_and_status(tmp_path: Path) -> None:
    assert shipyard("init", "proj", cwd=tmp_path).returncode == 0
    project = tmp_path / "proj"
    done = shipyard(
        "data", "simulate", "--mode", "fast", "--customers", "60", "--terminals", "100",
        "--days", "15", cwd=project,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = shipyard("features", "status", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "No features written online yet" in done.stdout
    done = shipyard("features", "materialize", "--online", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "Online features" in done.stdout
    assert "terminal_risk" in done.stdout
    done = shipyard("features", "materialize", "--online", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "0 (incremental)" in done.stdout
    done = shipyard("features", "status", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "Online feature freshness" in done.stdout
    assert "terminal_risk" in done.stdout
    assert VIEW.definition_hash[:12] in done.stdout
    assert "fraud v1" in done.stdout
    assert "(0 written)" in done.stdout
