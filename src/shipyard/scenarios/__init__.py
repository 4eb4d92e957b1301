"""End-to-end scenarios that exercise the platform the way a team would, in one call.

``run_drift_scenario`` (``shipyard scenario drift``): serve the fraud champion, replay three
weeks of traffic with a drifted third week (``AmountDrift``: a share of customers' amounts
multiplied; ``MixDrift``: a segment of the traffic grows), and show monitoring catch it.
"""

from __future__ import annotations

from shipyard.scenarios.drift import (
    AmountDrift,
    DriftScenarioResult,
    ScenarioWindow,
    drift_amounts,
    run_drift_scenario,
)
from shipyard.scenarios.mix import MixDrift, shift_mix

__all__ = [
    "AmountDrift",
    "DriftScenarioResult",
    "MixDrift",
    "ScenarioWindow",
    "drift_amounts",
    "run_drift_scenario",
    "shift_mix",
]
