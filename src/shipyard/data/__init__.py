"""Data sets: simulators, storage as daily Parquet, the workspace's data set catalog."""

from shipyard.data.catalog import Dataset, get_dataset, list_datasets, write_dataset
from shipyard.data.fraud_simulator import FraudSimulator, SimulatedData, simulate_fraud_dataset

__all__ = [
    "Dataset",
    "FraudSimulator",
    "SimulatedData",
    "get_dataset",
    "list_datasets",
    "simulate_fraud_dataset",
    "write_dataset",
]
