from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.config import Settings
from shipyard.errors import ConfigError


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = Settings.load(tmp_path, environ={})
    assert settings.database_url == "sqlite:///.shipyard/metadata.db"
    assert settings.engine == "local"


def test_file_then_environment_precedence(tmp_path: Path) -> None:
    (tmp_path / "shipyard.toml").write_text('artifact_root = "art"\nengine = "local"\n')
    settings = Settings.load(tmp_path, environ={"SHIPYARD_ARTIFACT_ROOT": "/elsewhere"})
    assert settings.artifact_root == "/elsewhere"
    assert Settings.load(tmp_path, environ={}).artifact_root == "art"


def test_environment_values_are_parsed_to_their_type(tmp_path: Path) -> None:
    settings = Settings.load(tmp_path, environ={"SHIPYARD_DUCKDB_THREADS": "3"})
    assert settings.duckdb_threads == 3


def test_unknown_key_in_file_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / "shipyard.toml").write_text('artifact_rot = "x"\n')
    with pytest.raises(
        ConfigError, match=r"Unknown setting 'artifact_rot'.*Did you mean 'artifact_root'"
    ):
        Settings.load(tmp_path, environ={})


def test_unknown_environment_variable_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"SHIPYARD_DATABASE_ULR.*database_url"):
        Settings.load(tmp_path, environ={"SHIPYARD_DATABASE_ULR": "sqlite://"})


def test_workspace_variable_is_not_a_setting(tmp_path: Path) -> None:
    assert Settings.load(tmp_path, environ={"SHIPYARD_WORKSPACE": "/x"}).engine == "local"


def test_wrong_type_names_the_setting_and_the_value(tmp_path: Path) -> None:
    (tmp_path / "shipyard.toml").write_text('engine = "spark"\n')
    with pytest.raises(ConfigError, match=r"setting 'engine'.*'spark'"):
        Settings.load(tmp_path, environ={})


@pytest.mark.parametrize("setting", ["artifact_root", "data_root"])
def test_an_object_store_url_for_a_folder_setting_is_refused(tmp_path: Path, setting: str) -> None:
    """``s3://...`` would otherwise become a local folder named ``s3:`` in the workspace."""
    environ = {f"SHIPYARD_{setting.upper()}": "s3://bucket/shipyard"}
    with pytest.raises(ConfigError, match=rf"setting '{setting}'.*object-store URLs.*s3://"):
        Settings.load(tmp_path, environ=environ)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "shipyard.toml").write_text("engine = \n")
    with pytest.raises(ConfigError, match=r"shipyard\.toml: not valid TOML"):
        Settings.load(tmp_path, environ={})


def test_rendered_file_reads_back_to_the_same_settings(tmp_path: Path) -> None:
    original = Settings(artifact_root='we"ird\\path', duckdb_threads=2)
    (tmp_path / "shipyard.toml").write_text(original.to_toml())
    assert Settings.load(tmp_path, environ={}) == original
