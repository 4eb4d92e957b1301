"""End-to-end scenarios that exercise the platform the way a team would, in one call.

``run_drift_scenario`` (``shipyard scenario drift``): serve the fraud champion, replay three
weeks of traffic with a drifted third week, and show monitoring catch it.
"""

from __future__ import annotations

from shipyard.scenarios.drift import (
    AmountDrift,
    DriftScenarioResult,
    ScenarioWindow,
    drift_amounts,
    run_drift_scenario,
)

__all__ = [
    "AmountDrift",
    "DriftScenarioResult",
    "ScenarioWindow",
    "drift_amounts",
    "run_drift_scenario",
]
