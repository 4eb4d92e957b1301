"""Monitoring: profiles, drift tests with stated error rates, realized and estimated
performance, and the prediction log at scale (compacted into Parquet); guardrails that
roll a bad deploy back, the root-cause report of an incident, and each version's decision
threshold with its recalibration (docs/guardrails.md, docs/incidents.md).

``import shipyard.monitoring`` loads NumPy and pandas but not SciPy (imported when a test
runs); ``import shipyard`` loads none of them. See ``docs/monitoring.md``.

Example::

    >>> import numpy as np
    >>> from shipyard.monitoring import DatasetDriftTest, DatasetProfile
    >>> rng = np.random.default_rng(0)
    >>> reference = DatasetProfile.from_reference({"amount": rng.lognormal(size=5000)})
    >>> current = reference.empty().update({"amount": rng.lognormal(size=5000)})
    >>> DatasetDriftTest().compare(reference, current).verdict.value
    'no drift'
"""

from shipyard.monitoring.alerts import (
    Alert,
    AlertRule,
    AlertStatus,
    acknowledge,
    add_rule,
    evaluate_rules,
    list_alerts,
    list_rules,
    remove_rule,
)
from shipyard.monitoring.drift import (
    ChiSquareTest,
    DriftResult,
    JensenShannonDistance,
    KolmogorovSmirnovTest,
    PopulationStabilityIndex,
    Verdict,
    WassersteinDistance,
)
from shipyard.monitoring.estimation import (
    ConfidenceBasedEstimator,
    EstimationReport,
    compare,
)
from shipyard.monitoring.guardrails import (
    Guardrail,
    GuardrailResult,
    add_guardrail,
    default_guardrails,
    evaluate_guardrails,
    list_guardrails,
    remove_guardrail,
)
from shipyard.monitoring.html import render_report, write_report
from shipyard.monitoring.labels import (
    LabelIngestion,
    LabelledPerformance,
    ingest_labels,
    labelled_predictions,
    realized_performance,
)
from shipyard.monitoring.logstore import CompactionResult, compact, predictions, query
from shipyard.monitoring.multiple import Correction, adjust_p_values
from shipyard.monitoring.performance import PerformanceReport, RealizedPerformance
from shipyard.monitoring.points import Point, load_points, store_points
from shipyard.monitoring.profiles import (
    CategoricalProfile,
    ColumnKind,
    DatasetProfile,
    Histogram,
    NumericProfile,
)
from shipyard.monitoring.rca import RootCauseReport, root_cause, write_rca
from shipyard.monitoring.reference import (
    current_profile,
    drift_report,
    load_reference_profile,
    reference_profile,
)
from shipyard.monitoring.report import ColumnDrift, DatasetDriftTest, DriftReport
from shipyard.monitoring.run import GroupWindow, MonitorRun, run_monitor
from shipyard.monitoring.thresholds import (
    Recalibration,
    ThresholdSetting,
    decision_threshold,
    endpoint_model,
    recalibrate_threshold,
    set_decision_threshold,
    threshold_history,
)
from shipyard.monitoring.trips import Trip, act_on_trip

__all__ = [
    "Alert",
    "AlertRule",
    "AlertStatus",
    "CategoricalProfile",
    "ChiSquareTest",
    "ColumnDrift",
    "ColumnKind",
    "CompactionResult",
    "ConfidenceBasedEstimator",
    "Correction",
    "DatasetDriftTest",
    "DatasetProfile",
    "DriftReport",
    "DriftResult",
    "EstimationReport",
    "GroupWindow",
    "Guardrail",
    "GuardrailResult",
    "Histogram",
    "JensenShannonDistance",
    "KolmogorovSmirnovTest",
    "LabelIngestion",
    "LabelledPerformance",
    "MonitorRun",
    "NumericProfile",
    "PerformanceReport",
    "Point",
    "PopulationStabilityIndex",
    "RealizedPerformance",
    "Recalibration",
    "RootCauseReport",
    "ThresholdSetting",
    "Trip",
    "Verdict",
    "WassersteinDistance",
    "acknowledge",
    "act_on_trip",
    "add_guardrail",
    "add_rule",
    "adjust_p_values",
    "compact",
    "compare",
    "current_profile",
    "decision_threshold",
    "default_guardrails",
    "drift_report",
    "endpoint_model",
    "evaluate_guardrails",
    "evaluate_rules",
    "ingest_labels",
    "labelled_predictions",
    "list_alerts",
    "list_guardrails",
    "list_rules",
    "load_points",
    "load_reference_profile",
    "predictions",
    "query",
    "realized_performance",
    "recalibrate_threshold",
    "reference_profile",
    "remove_guardrail",
    "remove_rule",
    "render_report",
    "root_cause",
    "run_monitor",
    "set_decision_threshold",
    "store_points",
    "threshold_history",
    "write_rca",
    "write_report",
]
