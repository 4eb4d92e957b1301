from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import UniqueConstraint

from shipyard.config import Settings
from shipyard.errors import (
    ConfigError,
    WorkspaceExistsError,
    WorkspaceNotFoundError,
    WorkspaceOutdatedError,
)
from shipyard.tables import metadata
from shipyard.workspace import Workspace


def test_init_creates_settings_database_and_roots(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "proj")
    assert (ws.root / "shipyard.toml").is_file()
    assert ws.artifact_root.is_dir()
    assert ws.data_root.is_dir()
    db = Path(ws.database_url.removeprefix("sqlite:///"))
    assert db.is_file()
    assert db.is_relative_to(ws.root)
    con = sqlite3.connect(db)
    names = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
    assert names == {
        "shipyard_alert_rules",
        "shipyard_alerts",
        "shipyard_datasets",
        "shipyard_experiments",
        "shipyard_feature_materializations",
        "shipyard_guardrails",
        "shipyard_llm_adapters",
        "shipyard_llm_evaluations",
        "shipyard_llm_prompt_aliases",
        "shipyard_llm_prompts",
        "shipyard_model_versions",
        "shipyard_monitor_points",
        "shipyard_online_freshness",
        "shipyard_pipeline_runs",
        "shipyard_registry_events",
        "shipyard_step_cache",
        "shipyard_traffic_policies",
    }
    assert names == set(metadata.tables)
    for name, table in metadata.tables.items():
        rows = con.execute(f"pragma table_info({name})").fetchall()
        assert [r[1] for r in rows] == [c.name for c in table.columns], name
        assert {r[1] for r in rows if r[3]} == {c.name for c in table.columns if not c.nullable}
        unique = [
            [r[2] for r in con.execute(f"pragma index_info({index[1]})")]
            for index in con.execute(f"pragma index_list({name})")
            if index[2]
        ]
        declared = [
            [c.name for c in constraint.columns]
            for constraint in table.constraints
            if isinstance(constraint, UniqueConstraint)
        ]
        assert sorted(unique) == sorted(declared), name
    con.close()


def test_init_refuses_an_existing_workspace_and_leaves_it_alone(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path)
    before = (ws.root / "shipyard.toml").read_text()
    with pytest.raises(WorkspaceExistsError):
        Workspace.init(tmp_path, Settings(artifact_root="other"))
    assert (ws.root / "shipyard.toml").read_text() == before


def test_open_missing_workspace_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="shipyard init"):
        Workspace.open(tmp_path / "nowhere")


def test_open_finds_the_workspace_from_a_subfolder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Workspace.init(tmp_path)
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    assert Workspace.open().root == tmp_path.resolve()


def test_open_without_any_workspace_above(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WorkspaceNotFoundError, match="SHIPYARD_WORKSPACE"):
        Workspace.open()


def test_environment_overrides_the_database_and_artifact_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Workspace.init(tmp_path / "ws")
    monkeypatch.setenv("SHIPYARD_DATABASE_URL", f"sqlite:///{tmp_path}/other.db")
    monkeypatch.setenv("SHIPYARD_ARTIFACT_ROOT", str(tmp_path / "art"))
    ws = Workspace.open(tmp_path / "ws")
    assert ws.database_url == f"sqlite:///{tmp_path}/other.db"
    assert (tmp_path / "other.db").is_file()
    assert ws.artifact_root == tmp_path / "art"


def test_a_postgres_url_is_passed_through_unchanged(tmp_path: Path) -> None:
    url = "postgresql+psycopg://user@db.internal:5432/shipyard"
    ws = Workspace(tmp_path, Settings(database_url=url))
    assert ws.database_url == url


def test_unknown_key_in_the_workspace_file_fails_on_open(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path)
    with (ws.root / "shipyard.toml").open("a") as fh:
        fh.write('colour = "blue"\n')
    with pytest.raises(ConfigError, match="colour"):
        Workspace.open(tmp_path)


def test_a_workspace_from_an_earlier_version_is_refused_with_what_is_missing(
    tmp_path: Path,
) -> None:
    """An existing table lacking a column (create_all never alters tables) is named on open."""
    ws = Workspace.init(tmp_path / "ws")
    database = ws.database_url[len("sqlite:///") :]
    ws.close()
    with sqlite3.connect(database) as conn:  # what a workspace made before lineage looks like
        conn.execute("ALTER TABLE shipyard_model_versions DROP COLUMN lineage")
    with pytest.raises(WorkspaceOutdatedError, match="shipyard_model_versions lacks column"):
        Workspace.open(tmp_path / "ws")
    with sqlite3.connect(database) as conn:  # refused, not altered
        columns = [row[1] for row in conn.execute("PRAGMA table_info(shipyard_model_versions)")]
    assert "lineage" not in columns
