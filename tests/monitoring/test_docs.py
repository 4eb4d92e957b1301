"""The Python example of docs/monitoring.md runs and says what the page says it says."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"


class TestMonitoringDocs:
    def test_the_example_runs(self) -> None:
        blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
        assert blocks, "docs/monitoring.md has no Python example"
        for code in blocks:
            exec(compile(code, str(DOC), "exec"), {})  # the example asserts its own outcome
