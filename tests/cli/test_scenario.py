"""``shipyard scenario``: the commands' options, refused before any work is done."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from shipyard.cli.main import cli


def test_the_group_lists_both_scenarios() -> None:
    result = CliRunner().invoke(cli, ["scenario", "--help"])
    assert result.exit_code == 0
    assert "bad-deploy" in result.output and "drift" in result.output


def test_bad_deploy_help_says_what_it_does_and_when_it_fails() -> None:
    result = CliRunner().invoke(cli, ["scenario", "bad-deploy", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Deploy a broken version under live traffic" in result.output
    assert "Exits with 1 unless the rollback was" in result.output
    assert "--scale COLUMN=FACTOR" in result.output


@pytest.mark.parametrize(
    "given", ["TX_AMOUNT=0", "TX_AMOUNT", "=100", "TX_AMOUNT=cents", "TX_AMOUNT=inf"]
)
def test_a_bad_scale_is_refused_before_the_workspace_is_created(tmp_path: Path, given: str) -> None:
    folder = tmp_path / "demo"
    result = CliRunner().invoke(
        cli, ["-w", str(folder), "scenario", "bad-deploy", "--scale", given]
    )
    assert result.exit_code == 2
    expected = "--scale must be COLUMN=FACTOR with a finite factor > 0 (e.g. TX_AMOUNT=100)"
    assert f"{expected}; got {given!r}" in " ".join(result.output.split())
    assert not folder.exists()


def test_a_bad_rate_is_refused_by_the_option(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["-w", str(folder), "scenario", "bad-deploy", "--rate", "0"])
    assert result.exit_code == 2
    assert "--rate" in result.output
    assert not folder.exists()
