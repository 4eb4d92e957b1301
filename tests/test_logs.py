"""The one logging setup: JSON lines, text lines, the scoped drop, and no setup by library code."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.config import Settings
from shipyard.logs import _stop, configure_logging, dropping

SRC = Path(__file__).resolve().parents[1] / "src" / "shipyard"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes the root logger: put pytest's setup back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    _stop()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    _stop()  # the writer thread writes everything queued before it stops
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_records_are_json_lines_with_time_level_logger_message_and_extras(
    restore_logging: None,
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    log = logging.getLogger("shipyard.serving.runtime")
    log.info("shadow v%d failed", 2, extra={"request_id": "r-1", "endpoint": "fraud"})
    log.debug("below the level")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("reload failed", extra={"version": 3})
    first, second = _records(stream)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(first["time"]))
    assert first["level"] == "INFO"
    assert first["logger"] == "shipyard.serving.runtime"
    assert first["message"] == "shadow v2 failed"
    assert (first["request_id"], first["endpoint"]) == ("r-1", "fraud")
    assert second["level"] == "ERROR" and second["version"] == 3
    assert "ValueError: boom" in str(second["exception"])


def test_settings_choose_level_and_text_format(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(Settings(log_level="WARNING", log_format="text"), stream=stream)
    logging.getLogger("shipyard.x").info("hidden")
    logging.getLogger("shipyard.x").warning("shown")
    _stop()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("WARNING shipyard.x: shown")


def test_the_setup_quiets_routine_third_party_records(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    logging.getLogger("alembic.runtime.migration").info("Running upgrade ...")
    assert _records(stream) == []


def test_dropping_drops_only_the_named_message_and_only_inside_the_block(
    restore_logging: None,
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    # not under "mlflow": once MLflow is imported, its logger keeps its records to itself
    log = logging.getLogger("thirdparty.sklearn_flavor")
    with dropping("thirdparty.sklearn_flavor", "Saving scikit-learn models"):
        log.warning("Saving scikit-learn models in the pickle format ...")
        log.warning("another warning")
    log.warning("Saving scikit-learn models again, after the block")
    assert [r["message"] for r in _records(stream)] == [
        "another warning",
        "Saving scikit-learn models again, after the block",
    ]


def test_importing_the_library_changes_no_logger() -> None:
    """Library modules never configure logging: only entry points call configure_logging."""
    code = (
        "import logging, shipyard, shipyard.registry.models, shipyard.registry.tracking, "
        "shipyard.serving.app, shipyard.serving.server\n"
        "loggers = [logging.getLogger()] + [l for l in logging.root.manager.loggerDict.values() "
        "if isinstance(l, logging.Logger) and l.name.startswith(('shipyard', 'alembic'))]\n"
        "print([(l.name, l.level, len(l.handlers)) for l in loggers "
        "if l.handlers or (l.level and l is not logging.root)])\n"
        "print(logging.root.level, logging.root.handlers)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["[]", "30 []"]


def test_no_process_wide_logging_changes_or_prints_in_library_code() -> None:
    """Only shipyard/logs.py sets levels or handlers; diagnostics never go through print."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "logs.py" and path.parent == SRC:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"\.setLevel\(|basicConfig\(|\.addHandler\(", code):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
            # print( outside docstring examples (indented ``print(...)`` lines in docstrings
            # follow ``Example::`` and are not code)
            if re.match(r"\s*print\(", code) and not _in_docstring(path, number):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert offenders == []


def _in_docstring(path: Path, number: int) -> bool:
    """Whether line ``number`` of ``path`` lies inside a triple-quoted string."""
    before = "\n".join(path.read_text().splitlines()[: number - 1])
    return before.count('"""') % 2 == 1
