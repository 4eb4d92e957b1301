"""End-to-end scenarios that exercise the platform the way a team would, in one call.

``run_drift_scenario`` (``shipyard scenario drift``): serve the fraud champion, replay three
weeks of traffic with a drifted third week (``AmountDrift``: a share of customers' amounts
multiplied; ``MixDrift``: a segment of the traffic grows), and show monitoring catch it.

``run_bad_deploy_scenario`` (``shipyard scenario bad-deploy``): serve the fraud champion under
continuous traffic (``ContinuousReplay``), deploy a version whose packaged preprocessing reads
amounts in cents (``register_unit_fault``, ``UnitScaledClassifier``), let the server's
guardrails roll it back by themselves, write the root-cause report, and roll a fixed version
out by canary.

``run_retrain_scenario`` (``shipyard scenario retrain``): weeks of replayed traffic with the
retraining pipeline run weekly; a new fraud pattern (``NightBursts``) appears mid-way, the
champion is kept until a significantly better challenger passes its gates and canary.
"""

from __future__ import annotations

from shipyard.scenarios.bad_deploy import BadDeployResult, run_bad_deploy_scenario
from shipyard.scenarios.drift import (
    AmountDrift,
    DriftScenarioResult,
    ScenarioWindow,
    drift_amounts,
    run_drift_scenario,
)
from shipyard.scenarios.faults import UnitScaledClassifier, UnitScaledConfig, register_unit_fault
from shipyard.scenarios.mix import MixDrift, shift_mix
from shipyard.scenarios.replay import Answer, ContinuousReplay
from shipyard.scenarios.retrain import (
    NightBursts,
    RetrainScenarioResult,
    add_night_bursts,
    run_retrain_scenario,
)

__all__ = [
    "AmountDrift",
    "Answer",
    "BadDeployResult",
    "ContinuousReplay",
    "DriftScenarioResult",
    "MixDrift",
    "NightBursts",
    "RetrainScenarioResult",
    "ScenarioWindow",
    "UnitScaledClassifier",
    "UnitScaledConfig",
    "add_night_bursts",
    "drift_amounts",
    "register_unit_fault",
    "run_bad_deploy_scenario",
    "run_drift_scenario",
    "run_retrain_scenario",
    "shift_mix",
]
