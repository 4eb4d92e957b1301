"""Shared fixtures: real workspaces on disk with a real SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
from shipyard.engines.ray import RayEngine
from shipyard.features.fraud import BASELINE_VIEWS, BASELINE_VIEWS_REF
from shipyard.features.offline import OfflineStore
from shipyard.workspace import Workspace


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own SHIPYARD_* variables."""
    import os

    for key in list(os.environ):
        if key.startswith("SHIPYARD_"):
            monkeypatch.delenv(key)


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """A fresh, empty workspace."""
    ws = Workspace.init(tmp_path / "ws")
    yield ws
    ws.close()


SMALL = {"n_customers": 300, "n_terminals": 600, "n_days": 70, "mode": "fast", "seed": 7}


@pytest.fixture(scope="session")
def small_workspace(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Workspace, Dataset]]:
    """A workspace with a small fast-mode fraud data set and its baseline features materialized."""
    ws = Workspace.init(tmp_path_factory.mktemp("small") / "ws")
    dataset = simulate_fraud_dataset(ws, FraudSimulator(**SMALL))  # type: ignore[arg-type]
    OfflineStore(ws).materialize(BASELINE_VIEWS)
    yield ws, dataset
    ws.close()


@pytest.fixture(scope="session")
def reference_workspace(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Workspace, Dataset]]:
    """The full published data set (reference mode), simulated once for the whole session."""
    ws = Workspace.init(tmp_path_factory.mktemp("reference") / "ws")
    dataset = simulate_fraud_dataset(ws)
    OfflineStore(ws).materialize(BASELINE_VIEWS)
    yield ws, dataset
    ws.close()


@pytest.fixture(scope="session")
def small_frame(small_workspace: tuple[Workspace, Dataset]) -> pd.DataFrame:
    """Every row of the small data set with its 15 baseline features."""
    from shipyard.training.frames import Window, load_frame

    ws, dataset = small_workspace
    window = Window(
        dataset.name,
        dataset.version,
        "2018-04-01",
        "2018-12-31",
        BASELINE_VIEWS_REF,
    )
    return load_frame(ws, window)


@pytest.fixture(scope="session")
def ray_engine() -> Iterator[RayEngine]:
    """A local Ray with 2 CPUs on the loopback, started once for the tests that use it."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        object_store_memory=512 * 1024 * 1024,
        _node_ip_address="127.0.0.1",
    )
    try:
        yield RayEngine()
    finally:
        ray.shutdown()
