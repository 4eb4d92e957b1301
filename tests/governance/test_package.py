"""``shipyard.governance``: every public name resolves, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys


def test_every_public_name_resolves() -> None:
    import shipyard.governance as governance

    for name in governance.__all__:
        assert getattr(governance, name) is not None, name


def test_import_loads_neither_shap_nor_fairlearn() -> None:
    code = (
        "import sys, shipyard.governance; "
        "print(sorted(m for m in ('shap', 'fairlearn', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
