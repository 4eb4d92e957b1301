"""Drift tests: each compares two profiles of one column and returns a :class:`DriftResult`.

Significance tests (a p-value): :class:`ChiSquareTest`, :class:`KolmogorovSmirnovTest`.
Distances (an effect size against a floor): :class:`PopulationStabilityIndex`,
:class:`JensenShannonDistance`, :class:`WassersteinDistance`. SciPy computes every
statistic and distribution; it is imported when a test runs, not on import.
"""

from shipyard.monitoring.drift._base import DriftResult, DriftTest, Verdict
from shipyard.monitoring.drift.chi_square import ChiSquareTest
from shipyard.monitoring.drift.jensen_shannon import JensenShannonDistance
from shipyard.monitoring.drift.kolmogorov_smirnov import KolmogorovSmirnovTest
from shipyard.monitoring.drift.psi import PopulationStabilityIndex
from shipyard.monitoring.drift.wasserstein import WassersteinDistance

__all__ = [
    "ChiSquareTest",
    "DriftResult",
    "DriftTest",
    "JensenShannonDistance",
    "KolmogorovSmirnovTest",
    "PopulationStabilityIndex",
    "Verdict",
    "WassersteinDistance",
]
