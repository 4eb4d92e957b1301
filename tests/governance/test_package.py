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


def test_explain_and_reasons_are_the_functions_even_after_their_modules_load() -> None:
    """The package binds the functions, not the same-named submodules."""
    code = (
        "import shipyard.governance.explain, shipyard.governance.reasons\n"
        "from shipyard.governance import explain, reasons\n"
        "import shipyard.governance as g\n"
        "print(callable(explain), callable(reasons), callable(g.explain), callable(g.reasons))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True"] * 4
