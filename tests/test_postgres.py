"""Shipyard on PostgreSQL: a workspace on a real server, and a clear error at open for a
database it cannot use (wrong port, password, database, driver; a server that never answers)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.config import Settings
from shipyard.errors import ConfigError
from shipyard.registry.tracking import Tracker
from shipyard.workspace import Workspace, check_database, hide_password, lock_key
from tests.postgres import PASSWORD, PASSWORD_ROLE, PostgresCluster


@pytest.fixture
def databases(postgres_cluster: PostgresCluster) -> Iterator[tuple[str, str]]:
    """Fresh (Shipyard, MLflow) database URLs on the test cluster, dropped afterwards."""
    names = postgres_cluster.fresh()
    yield postgres_cluster.url(names[0]), postgres_cluster.url(names[1])
    postgres_cluster.drop(*names)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_workspace_keeps_its_tables_and_mlflow_runs_on_postgresql(
    tmp_path: Path, databases: tuple[str, str]
) -> None:
    from sqlalchemy import inspect

    from shipyard.tables import metadata

    shipyard_url, mlflow_url = databases
    settings = Settings(database_url=shipyard_url, mlflow_tracking_uri=mlflow_url)
    ws = Workspace.init(tmp_path / "ws", settings)
    assert ws.engine.dialect.name == "postgresql"
    assert set(metadata.tables) <= set(inspect(ws.engine).get_table_names())
    experiment = Tracker(ws).experiment_id("runs")
    assert Tracker(Workspace.open(tmp_path / "ws")).client.get_experiment(experiment).name == "runs"
    assert not list((tmp_path / "ws").rglob("*.db"))  # nothing went to a SQLite file
    ws.close()


def test_the_lock_is_held_until_the_transaction_ends(
    tmp_path: Path, databases: tuple[str, str]
) -> None:
    from sqlalchemy import text

    ws = Workspace.init(tmp_path / "ws", Settings(database_url=databases[0]))
    other = Workspace(ws.root)
    probe = text("SELECT pg_try_advisory_xact_lock(:key)")
    with ws.lock("model:fraud"), other.engine.connect() as conn:
        assert conn.execute(probe, {"key": lock_key("model:fraud")}).scalar() is False
        assert conn.execute(probe, {"key": lock_key("model:other")}).scalar() is True
        conn.rollback()
    with other.engine.connect() as conn:
        assert conn.execute(probe, {"key": lock_key("model:fraud")}).scalar() is True
    other.close()
    ws.close()


def _open_error(tmp_path: Path, url: str) -> str:
    """The message of the ConfigError that opening a workspace on ``url`` raises."""
    with pytest.raises(ConfigError) as caught:
        Workspace.init(tmp_path / "ws", Settings(database_url=url))
    assert not (tmp_path / "ws" / "shipyard.toml").exists()  # nothing half-made
    return str(caught.value)


def test_a_port_where_no_server_listens_is_named_at_open(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://shipyard@127.0.0.1:{_free_port()}/shipyard"
    message = _open_error(tmp_path, url)
    assert "database_url" in message and url in message
    assert "refused" in message.lower()


def test_a_wrong_password_is_named_and_never_shown(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    url = postgres_cluster.url("postgres", password="not-the-password").replace(
        "postgres:", f"{PASSWORD_ROLE}:", 1
    )
    message = _open_error(tmp_path, url)
    assert "database_url" in message and "password authentication failed" in message
    assert "not-the-password" not in message and hide_password(url) in message
    assert "***" in message
    check_database("database_url", url.replace("not-the-password", PASSWORD))  # the right one


def test_a_database_that_does_not_exist_is_named(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    message = _open_error(tmp_path, postgres_cluster.url("no_such_database"))
    assert "database_url" in message and 'database "no_such_database" does not exist' in message


def test_a_driver_that_is_not_installed_is_named(tmp_path: Path) -> None:
    message = _open_error(tmp_path, "postgresql+pg8000://shipyard@127.0.0.1:5432/shipyard")
    assert "database_url" in message and "pg8000" in message and "driver" in message


def test_a_server_that_never_answers_is_an_error_after_the_connect_timeout(
    tmp_path: Path,
) -> None:
    """A socket that accepts connections but never speaks: without a connect timeout the
    open would wait forever."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        message = _open_error(tmp_path, f"postgresql+psycopg://shipyard@127.0.0.1:{port}/x")
    assert "database_url" in message and "timeout" in message.lower()


def test_a_wrong_mlflow_tracking_uri_is_named_when_the_tracker_is_made(
    tmp_path: Path, postgres_cluster: PostgresCluster, databases: tuple[str, str]
) -> None:
    bad = postgres_cluster.url("no_such_mlflow", password="hidden-pw")
    ws = Workspace.init(
        tmp_path / "ws", Settings(database_url=databases[0], mlflow_tracking_uri=bad)
    )
    with pytest.raises(ConfigError, match="mlflow_tracking_uri") as caught:
        _ = Tracker(ws).client
    assert "no_such_mlflow" in str(caught.value) and "hidden-pw" not in str(caught.value)
    ws.close()


def test_the_test_option_runs_workspaces_on_fresh_databases(tmp_path: Path, database: str) -> None:
    """What ``pytest --database postgresql`` promises: each new workspace gets databases of
    its own (as each SQLite workspace has its own files)."""
    first = Workspace.init(tmp_path / "a")
    second = Workspace.init(tmp_path / "b")
    if database == "postgresql":
        assert first.database_url.startswith("postgresql+psycopg://")
        assert first.database_url != second.database_url
        assert first.mlflow_tracking_uri != second.mlflow_tracking_uri
    else:
        assert first.database_url.startswith("sqlite:///")
    first.close()
    second.close()
