"""``shipyard pipeline``: the example pipeline of docs/pipelines.md, run from the shell."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from shipyard.errors import PipelineBusyError, PipelineError
from shipyard.workspace import Workspace

DOCS = Path(__file__).resolve().parents[2] / "docs" / "pipelines.md"


def shipyard(workspace: Workspace, *args: str) -> Result:
    from shipyard.cli.main import cli

    runner = CliRunner()
    return runner.invoke(cli, ["--workspace", str(workspace.root), *args], env={"COLUMNS": "250"})


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The docs' demo_pipeline.py, written out and importable."""
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert code is not None and "demo_pipeline.py" in code.group(1)
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "demo_pipeline.py").write_text(code.group(1))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "demo_pipeline", raising=False)
    return "demo_pipeline:build"


def test_the_docs_example_runs_waits_resumes_and_caches(workspace: Workspace, demo: str) -> None:
    shown = shipyard(workspace, "pipeline", "graph", demo, "--param", "rows=500")
    assert shown.exit_code == 0, shown.output
    assert "pipeline 'demo': 3 steps, graph valid" in shown.output
    described = json.loads(shipyard(workspace, "pipeline", "graph", demo, "--json").stdout)
    assert [s["name"] for s in described["steps"]] == ["window", "train", "canary"]
    assert described["steps"][0]["params"] == {"rows": 1000, "seed": 0}

    first = shipyard(workspace, "pipeline", "run", demo, "--param", "rows=500")
    assert first.exit_code == 0, first.output
    assert "waiting at step 'canary': no approval yet" in first.output
    assert "500 rows written to window-0.json" in first.output

    busy = shipyard(workspace, "pipeline", "run", demo, "--param", "rows=500")
    assert isinstance(busy.exception, PipelineBusyError)

    (run,) = json.loads(shipyard(workspace, "pipeline", "list", "--json").stdout)
    assert run["status"] == "waiting" and run["trigger"]["kind"] == "command"
    (workspace.root / "demo-approved").touch()
    resumed = shipyard(workspace, "pipeline", "resume", run["run_id"])
    assert resumed.exit_code == 0, resumed.output
    assert f"run {run['run_id']}: succeeded" in resumed.output

    again = shipyard(workspace, "pipeline", "run", demo, "--param", "rows=500", "--json")
    assert again.exit_code == 0, again.output
    steps = {s["name"]: s["status"] for s in json.loads(again.stdout)["steps"]}
    assert steps == {"window": "cached", "train": "cached", "canary": "succeeded"}

    status = shipyard(workspace, "pipeline", "status")
    assert status.exit_code == 0, status.output
    assert "cached: outputs of run " + run["run_id"] in status.output
    listed = shipyard(workspace, "pipeline", "list")
    assert listed.output.count("succeeded") >= 2

    nothing = shipyard(
        workspace, "pipeline", "watch", demo, "--param", "rows=500", "--every", "7D",
        "--on-alert", "fraud", "--once",
    )  # fmt: skip
    assert nothing.exit_code == 0, nothing.output
    assert "demo: nothing due" in nothing.output


def test_bad_input_is_refused_with_clear_errors(workspace: Workspace, demo: str) -> None:
    bad_param = shipyard(workspace, "pipeline", "run", demo, "--param", "rows")
    assert bad_param.exit_code == 2 and "expected KEY=VALUE" in bad_param.output
    unknown = shipyard(workspace, "pipeline", "run", demo, "--param", "depth=3")
    assert isinstance(unknown.exception, PipelineError)
    assert "unexpected keyword argument 'depth'" in str(unknown.exception)
    no_trigger = shipyard(workspace, "pipeline", "watch", demo, "--once")
    assert no_trigger.exit_code == 2 and "--every, --on-alert" in no_trigger.output
    bad_every = shipyard(workspace, "pipeline", "watch", demo, "--every", "soon", "--once")
    assert "'every' parameter of Schedule" in str(bad_every.exception)
    missing = shipyard(workspace, "pipeline", "status", "nope")
    assert "No pipeline run 'nope'" in str(missing.exception)


def test_a_failed_run_exits_1_and_shows_its_error(
    workspace: Workspace, demo: str, tmp_path: Path
) -> None:
    failed = shipyard(workspace, "pipeline", "run", demo, "--param", "rows=0")
    assert failed.exit_code == 1
    assert "ZeroDivisionError: division by zero" in failed.output
    assert "step 'train' failed" in failed.output
    shown = json.loads(shipyard(workspace, "pipeline", "status", "--json").stdout)
    assert [s["status"] for s in shown["steps"]] == ["succeeded", "failed", "skipped"]
