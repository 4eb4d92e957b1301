"""Governance: explanations per decision, fairness assessment and mitigation, the audit trail.

See ``docs/governance.md``. Heavy dependencies (shap, fairlearn: the ``governance`` extra)
are imported when used, never by ``import shipyard.governance``.
"""
