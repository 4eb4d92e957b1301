"""The model registry: versions, aliases, lineage, model cards and promotion gates over MLflow.

The public names are imported lazily (MLflow and SQLAlchemy load only when used)::

    from shipyard.registry import ModelRegistry, PromotionGate
    registry = ModelRegistry(ws)
    registry.promote("fraud", 3, reason="better AP", gate=PromotionGate())
    predictor = registry.load("fraud", "champion")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ModelRegistry": "shipyard.registry.models",
    "ModelVersion": "shipyard.registry.models",
    "RegistryEvent": "shipyard.registry.models",
    "CHAMPION": "shipyard.registry.models",
    "CHALLENGER": "shipyard.registry.models",
    "PromotionGate": "shipyard.registry.gate",
    "GateResult": "shipyard.registry.gate",
    "ModelCard": "shipyard.registry.card",
    "CardNotes": "shipyard.registry.card",
    "CardSection": "shipyard.registry.card",
    "Tracker": "shipyard.registry.tracking",
    "Lineage": "shipyard.types",
    "ColumnRoles": "shipyard.types",
}

if TYPE_CHECKING:
    from shipyard.registry.card import CardNotes, CardSection, ModelCard
    from shipyard.registry.gate import GateResult, PromotionGate
    from shipyard.registry.models import (
        CHALLENGER,
        CHAMPION,
        ModelRegistry,
        ModelVersion,
        RegistryEvent,
    )
    from shipyard.registry.tracking import Tracker
    from shipyard.types import ColumnRoles, Lineage

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "CardNotes",
    "CardSection",
    "ColumnRoles",
    "GateResult",
    "Lineage",
    "ModelCard",
    "ModelRegistry",
    "ModelVersion",
    "PromotionGate",
    "RegistryEvent",
    "Tracker",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shipyard.registry' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
