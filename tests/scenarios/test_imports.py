"""The scenarios stay off the import path: importing them loads no heavy library."""

from __future__ import annotations

import subprocess
import sys


def test_import_scenarios_and_their_command_loads_no_heavy_library() -> None:
    code = (
        "import sys, shipyard.scenarios, shipyard.cli.scenario; "
        "print(sorted(m for m in ('numpy', 'pandas', 'scipy', 'duckdb', 'pyarrow', 'sklearn') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
