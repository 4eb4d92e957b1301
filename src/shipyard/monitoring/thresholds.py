"""The decision threshold of each model version: what serving's scores are cut at.

A score at or above the threshold is the adverse decision (an alert, a refusal). The
threshold is configuration, not part of the model: it moves when the alert budget or the
cost of a false positive moves, without retraining. Each setting is an entry of the audit
trail (``action="threshold"``, who, when, why, before and after, how it was chosen), and the
current threshold of a version is the latest such entry for it, else the latest for the
model as a whole, else :data:`DEFAULT_THRESHOLD`. Monitoring's alert rate, the guardrails
and the threshold recalibration all read it from here.

Example::

    set_decision_threshold(ws, "fraud", 3, 0.42, reason="alert budget 0.5 %")
    decision_threshold(ws, "fraud", 3)   # 0.42
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    from shipyard.governance.audit import AuditEntry
    from shipyard.workspace import Workspace

DEFAULT_THRESHOLD = 0.5
"""The threshold of a version nobody set one for."""


@dataclass(frozen=True)
class ThresholdSetting:
    """One recorded threshold: of ``model`` version ``version`` (``None``: every version)."""

    model: str
    version: int | None
    threshold: float
    previous: float | None
    reason: str
    actor: str
    at: datetime
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The setting as JSON-ready data."""
        return {
            "model": self.model,
            "version": self.version,
            "threshold": self.threshold,
            "previous": self.previous,
            "reason": self.reason,
            "actor": self.actor,
            "at": self.at.isoformat(),
            "details": self.details,
        }


def threshold_history(
    workspace: Workspace, model: str, version: int | None = None
) -> list[ThresholdSetting]:
    """Every threshold recorded for ``model`` (only ``version``'s and the model-wide ones when
    ``version`` is given), oldest first."""
    from shipyard.governance.audit import entries

    found = [
        _setting(entry)
        for entry in entries(workspace, kind="model", name=model, action="threshold")
    ]
    if version is None:
        return found
    return [s for s in found if s.version in (version, None)]


def decision_threshold(workspace: Workspace, model: str, version: int) -> float:
    """The threshold ``model`` version ``version`` is served at (see the module doc)."""
    history = threshold_history(workspace, model, version)
    own = [s for s in history if s.version == version]
    if own:
        return own[-1].threshold
    return history[-1].threshold if history else DEFAULT_THRESHOLD


def set_decision_threshold(
    workspace: Workspace,
    model: str,
    version: int | None,
    threshold: float,
    *,
    reason: str,
    actor: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> ThresholdSetting:
    """Record ``threshold`` as ``model`` version ``version``'s (``None``: every version's
    without one of its own) in the audit trail, with ``details`` on how it was chosen."""
    from shipyard.governance.audit import record_threshold_change

    owner = "set_decision_threshold"
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise invalid_parameter("threshold", owner, "a number in [0, 1]", threshold)
    if not math.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
        raise invalid_parameter("threshold", owner, "a number in [0, 1]", threshold)
    if not reason or not reason.strip():
        raise invalid_parameter("reason", owner, "why the threshold moves", reason)
    if version is not None:
        before: float | None = decision_threshold(workspace, model, version)
    else:
        wide = [s for s in threshold_history(workspace, model) if s.version is None]
        before = wide[-1].threshold if wide else None
    entry = record_threshold_change(
        workspace,
        model,
        before=before,
        after=float(threshold),
        reason=reason,
        version=version,
        actor=actor,
        details=details,
    )
    return _setting(entry)


def _setting(entry: AuditEntry) -> ThresholdSetting:
    before = entry.before if isinstance(entry.before, dict) else {}
    after = entry.after if isinstance(entry.after, dict) else {}
    previous = before.get("threshold")
    return ThresholdSetting(
        model=entry.name,
        version=entry.version,
        threshold=float(after["threshold"]),
        previous=None if previous is None else float(previous),
        reason=entry.reason,
        actor=entry.actor,
        at=entry.at,
        details=dict(entry.details or {}),
    )
