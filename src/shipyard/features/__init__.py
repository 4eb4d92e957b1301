"""Feature store: definitions as code, offline store (DuckDB over Parquet), retrieval."""

from shipyard.features.definitions import (
    Aggregation,
    Derived,
    FeatureView,
    RowFeature,
    definitions_hash,
)
from shipyard.features.offline import HistoricalFeatures, Materialization, OfflineStore

__all__ = [
    "Aggregation",
    "Derived",
    "FeatureView",
    "HistoricalFeatures",
    "Materialization",
    "OfflineStore",
    "RowFeature",
    "definitions_hash",
]
