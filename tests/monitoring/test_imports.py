"""Monitoring stays off the import path of ``shipyard`` and loads SciPy only to test."""

from __future__ import annotations

import ast
import subprocess
import sys


def loaded(statement: str) -> list[str]:
    code = (
        f"import sys; {statement}; "
        "print(sorted(m for m in ('numpy', 'pandas', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(ast.literal_eval(out.stdout))


class TestImports:
    def test_import_shipyard_loads_no_heavy_library(self) -> None:
        assert loaded("import shipyard") == []

    def test_import_monitoring_loads_no_scipy(self) -> None:
        assert "scipy" not in loaded("import shipyard.monitoring")
