"""Online experiments: deterministic assignment through the traffic policy, metrics per arm
from the prediction log joined with outcomes, and tests that stay valid when you look at
the results every day (always-valid confidence sequences), beside a fixed-horizon test,
group-sequential boundaries and a sample-size calculator. Names load lazily.

Example::

    from shipyard.experiments import experiment_status, start_experiment
    start_experiment(ws, "new-model", "fraud", control=3, treatment=4, metric="precision",
                     sticky_key="customer", reason="v4 retrained on May")
    print(experiment_status(ws, "new-model").describe())

See ``docs/experiments.md`` and ``docs/experiments-statistics.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ArmStats": "shipyard.experiments.sequential",
    "TestResult": "shipyard.experiments.sequential",
    "msprt": "shipyard.experiments.sequential",
    "fixed_horizon": "shipyard.experiments.fixed",
    "group_sequential": "shipyard.experiments.fixed",
    "group_sequential_bounds": "shipyard.experiments.fixed",
    "sample_size": "shipyard.experiments.fixed",
    "power": "shipyard.experiments.fixed",
    "ratio_stats": "shipyard.experiments.ratio",
    "simulate_aa": "shipyard.experiments.simulation",
    "simulate_power": "shipyard.experiments.simulation",
    "Experiment": "shipyard.experiments.lifecycle",
    "ExperimentStatus": "shipyard.experiments.lifecycle",
    "start_experiment": "shipyard.experiments.lifecycle",
    "experiment_status": "shipyard.experiments.lifecycle",
    "stop_experiment": "shipyard.experiments.lifecycle",
    "get_experiment": "shipyard.experiments.lifecycle",
    "list_experiments": "shipyard.experiments.lifecycle",
    "MetricSpec": "shipyard.experiments.metrics",
    "METRICS": "shipyard.experiments.metrics",
    "plot_experiment": "shipyard.experiments.plots",
}

if TYPE_CHECKING:
    from shipyard.experiments.fixed import (
        fixed_horizon,
        group_sequential,
        group_sequential_bounds,
        power,
        sample_size,
    )
    from shipyard.experiments.lifecycle import (
        Experiment,
        ExperimentStatus,
        experiment_status,
        get_experiment,
        list_experiments,
        start_experiment,
        stop_experiment,
    )
    from shipyard.experiments.metrics import (
        METRICS,
        MetricSpec,
    )
    from shipyard.experiments.plots import (
        plot_experiment,
    )
    from shipyard.experiments.ratio import (
        ratio_stats,
    )
    from shipyard.experiments.sequential import (
        ArmStats,
        TestResult,
        msprt,
    )
    from shipyard.experiments.simulation import (
        simulate_aa,
        simulate_power,
    )

__all__ = [
    "METRICS",
    "ArmStats",
    "Experiment",
    "ExperimentStatus",
    "MetricSpec",
    "TestResult",
    "experiment_status",
    "fixed_horizon",
    "get_experiment",
    "group_sequential",
    "group_sequential_bounds",
    "list_experiments",
    "msprt",
    "plot_experiment",
    "power",
    "ratio_stats",
    "sample_size",
    "simulate_aa",
    "simulate_power",
    "start_experiment",
    "stop_experiment",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shipyard.experiments' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
