"""Boundaries read from the source: the registry and training know no solution's columns
and never import serving (serving wraps a Predictor; the registry hands one out)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import shipyard

PACKAGE = Path(shipyard.__file__).parent
GENERIC = ("registry", "training")
FRAUD_COLUMNS = ("TX_FRAUD", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TRANSACTION_ID")


@pytest.fixture(scope="module")
def database() -> str:
    """These tests read source files, no database: once is enough (not once per backend)."""
    return "sqlite"


def _sources(*packages: str) -> list[Path]:
    files = sorted(p for package in packages for p in (PACKAGE / package).rglob("*.py"))
    assert files, packages
    return files


def imported_modules(source: str, module: str) -> set[str]:
    """Every module ``source`` imports anywhere (top level, functions, TYPE_CHECKING blocks).

    ``module`` is the dotted name of the file itself, to resolve relative imports.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_import_reader_sees_local_relative_and_type_checking_imports() -> None:
    source = """
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from shipyard.serving.app import App
def f():
    import shipyard.serving.batcher
    from ..serving import codec
"""
    found = imported_modules(source, "shipyard.registry.models")
    assert {"shipyard.serving.app", "shipyard.serving.batcher", "shipyard.serving.codec"} <= found


@pytest.mark.parametrize("path", _sources(*GENERIC), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_registry_and_training_never_import_serving(path: Path) -> None:
    imports = imported_modules(path.read_text(encoding="utf-8"), _module_name(path))
    serving = sorted(
        m for m in imports if m == "shipyard.serving" or m.startswith("shipyard.serving.")
    )
    assert not serving, f"{path.relative_to(PACKAGE)} imports {serving}"


@pytest.mark.parametrize("path", _sources(*GENERIC), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_registry_and_training_name_no_fraud_column(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    named = [name for name in FRAUD_COLUMNS if name in text]
    assert not named, f"{path.relative_to(PACKAGE)} names {named}; read them from the Lineage"


@pytest.mark.parametrize("package", ["shipyard", "shipyard.registry"])
def test_every_public_name_resolves_lazily(package: str) -> None:
    """Each name in ``__all__`` resolves, and importing the package loads no MLflow."""
    import subprocess
    import sys

    code = (
        f"import sys, {package} as p\n"
        "assert 'mlflow' not in sys.modules and 'sqlalchemy' not in sys.modules\n"
        "missing = [n for n in p.__all__ if getattr(p, n, None) is None]\n"
        "print(missing)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
