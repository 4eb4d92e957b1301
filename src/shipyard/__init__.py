"""Shipyard: a production machine-learning platform in one package.

The public names below are imported lazily, so ``import shipyard`` stays fast::

    from shipyard import Workspace
    ws = Workspace.init("my-project")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Workspace": "shipyard.workspace",
    "Settings": "shipyard.config",
    "ShipyardError": "shipyard.errors",
}

if TYPE_CHECKING:
    from shipyard.config import Settings
    from shipyard.errors import ShipyardError
    from shipyard.workspace import Workspace

__all__ = ["Settings", "ShipyardError", "Workspace", "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shipyard' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
