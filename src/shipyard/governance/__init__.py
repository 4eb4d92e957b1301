"""Governance: explanations per decision, fairness assessment and mitigation, the audit trail.

The public names are imported lazily (shap and fairlearn, the ``governance`` extra, load only
when used)::

    from shipyard.governance import assess_fairness, explain, reasons, verify
    explanation = explain(ModelRegistry(ws).load("credit", "champion"), applications)
    print(reasons(explanation)[0])                 # the first row's top reasons
    print(verify(ws))                              # the audit trail is intact, or where not

See docs/governance.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Two functions share their module's name: bound here, eagerly (both modules are light), so
# that ``shipyard.governance.explain`` is the function even after its module is imported
# (an import sets the package attribute to the submodule on first load, which is this one).
from shipyard.governance.explain import explain
from shipyard.governance.reasons import reasons

_EXPORTS = {
    "Explainer": "shipyard.governance.explain",
    "Explanation": "shipyard.governance.explain",
    "UnexplainableModelError": "shipyard.governance.explain",
    "global_explanation": "shipyard.governance.explain",
    "Reason": "shipyard.governance.reasons",
    "feature_descriptions": "shipyard.governance.reasons",
    "explanation_records": "shipyard.governance.reasons",
    "assess_fairness": "shipyard.governance.fairness",
    "FairnessReport": "shipyard.governance.fairness",
    "AttributeFairness": "shipyard.governance.fairness",
    "GroupMetrics": "shipyard.governance.fairness",
    "MitigatedConfig": "shipyard.governance.mitigation",
    "MitigatedModel": "shipyard.governance.mitigation",
    "tradeoff": "shipyard.governance.mitigation",
    "TradeOff": "shipyard.governance.mitigation",
    "append": "shipyard.governance.audit",
    "entries": "shipyard.governance.audit",
    "verify": "shipyard.governance.audit",
    "verify_prediction_logs": "shipyard.governance.audit",
    "verify_state": "shipyard.governance.audit",
    "record_threshold_change": "shipyard.governance.audit",
    "AuditEntry": "shipyard.governance.audit",
    "AuditVerification": "shipyard.governance.audit",
    "AuditProblem": "shipyard.governance.audit",
    "Tampering": "shipyard.governance.audit",
    "FairnessGate": "shipyard.registry.gate",
}

if TYPE_CHECKING:
    from shipyard.governance.audit import (
        AuditEntry,
        AuditProblem,
        AuditVerification,
        Tampering,
        append,
        entries,
        record_threshold_change,
        verify,
        verify_prediction_logs,
        verify_state,
    )
    from shipyard.governance.explain import (
        Explainer,
        Explanation,
        UnexplainableModelError,
        global_explanation,
    )
    from shipyard.governance.fairness import (
        AttributeFairness,
        FairnessReport,
        GroupMetrics,
        assess_fairness,
    )
    from shipyard.governance.mitigation import (
        MitigatedConfig,
        MitigatedModel,
        TradeOff,
        tradeoff,
    )
    from shipyard.governance.reasons import (
        Reason,
        explanation_records,
        feature_descriptions,
    )
    from shipyard.registry.gate import (
        FairnessGate,
    )

__all__ = [
    "AttributeFairness",
    "AuditEntry",
    "AuditProblem",
    "AuditVerification",
    "Explainer",
    "Explanation",
    "FairnessGate",
    "FairnessReport",
    "GroupMetrics",
    "MitigatedConfig",
    "MitigatedModel",
    "Reason",
    "Tampering",
    "TradeOff",
    "UnexplainableModelError",
    "append",
    "assess_fairness",
    "entries",
    "explain",
    "explanation_records",
    "feature_descriptions",
    "global_explanation",
    "reasons",
    "record_threshold_change",
    "tradeoff",
    "verify",
    "verify_prediction_logs",
    "verify_state",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shipyard.governance' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
