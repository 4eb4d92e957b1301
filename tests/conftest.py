"""Shared fixtures: real workspaces on disk with a real SQLite (or PostgreSQL) database.

``pytest --database postgresql`` runs every test's workspaces on PostgreSQL: a throwaway
cluster (:mod:`tests.postgres`) is started for the session, and each workspace that
``Workspace.init`` makes gets two fresh databases (Shipyard's tables, MLflow's), written
into its ``shipyard.toml`` like the SQLite files that live in its folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shipyard.config import Settings
from shipyard.data.catalog import Dataset
from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
from shipyard.engines.ray import RayEngine
from shipyard.features.fraud import BASELINE_VIEWS, BASELINE_VIEWS_REF
from shipyard.features.offline import OfflineStore
from shipyard.workspace import Workspace
from tests.postgres import PostgresCluster, find_bin_dir


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


def small_fraud_models(
    root: Path,
    model_types: tuple[str, ...] = ("lightgbm",),
    *,
    n_folds: int = 2,
    settings: Settings | None = None,
) -> tuple[Workspace, Dataset]:
    """A workspace at ``root`` with the small fraud data set, its baseline features and one
    registered version per model type (v1, the first, promoted to champion)."""
    from shipyard.solutions.fraud import Protocol, train_suite

    ws = Workspace.init(root, settings)
    dataset = simulate_fraud_dataset(ws, FraudSimulator(**SMALL))  # type: ignore[arg-type]
    OfflineStore(ws).materialize(BASELINE_VIEWS)
    protocol = Protocol(start_date_training="2018-05-06", n_folds=n_folds)
    for i, model_type in enumerate(model_types):
        train_suite(
            ws, dataset, model_types=[model_type], protocol=protocol, n_boot=0, promote=i == 0
        )
    return ws, dataset


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
    """A local Ray with 2 CPUs on the loopback, started once for the tests that use it, the
    way Shipyard starts one (its own cluster, 127.0.0.1 only, no dashboard)."""
    import ray

    engine = RayEngine.connect(num_cpus=2, object_store_bytes=512 * 1024 * 1024)
    try:
        yield engine
    finally:
        ray.shutdown()


# -- PostgreSQL ------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="where the tests' workspaces keep their metadata and MLflow tables: 'sqlite' "
        "(files in each workspace) or 'postgresql' (fresh databases on a throwaway cluster; "
        "needs Debian's postgresql package)",
    )


class FreshDatabases:
    """While on, every ``Workspace.init`` that names no database of its own gets two fresh
    databases; each scope (session, module, test) drops the ones made in it when it ends."""

    def __init__(self) -> None:
        self.cluster: PostgresCluster | None = None
        self.scopes: list[list[str]] = []
        self.on: list[bool] = []
        self.pinned: list[int] = []
        """While a session or module fixture is set up: the depth of its scope."""

    def settings(self, settings: Settings | None) -> Settings | None:
        """``settings`` pointed at fresh databases when on and they name none."""
        at = self.pinned[-1] - 1 if self.pinned else len(self.on) - 1
        if self.cluster is None or at < 0 or not self.on[at]:
            return settings
        base = settings if settings is not None else Settings()
        if base.database_url != Settings().database_url or base.mlflow_tracking_uri:
            return base
        names = self.cluster.fresh()
        self.scopes[at].extend(names)
        urls = {"database_url": self.cluster.url(names[0])}
        urls["mlflow_tracking_uri"] = self.cluster.url(names[1])
        return base.model_copy(update=urls)

    def enter(self, on: bool, cluster: PostgresCluster | None) -> None:
        if cluster is not None:
            self.cluster = cluster
        self.on.append(on)
        self.scopes.append([])

    def leave(self) -> None:
        self.on.pop()
        names = self.scopes.pop()
        if names and self.cluster is not None:
            self.cluster.drop(*names)


FRESH = FreshDatabases()


class _ScopePins:
    """A session (or package) fixture's workspaces live as long as the session; a module
    fixture's as long as its module: not just the test that first asked for them.

    A plugin of its own (registered by pytest_configure) rather than a conftest hook: pytest
    asks only the rootdir's conftests about session fixtures, and this file is in tests/.
    """

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef[Any]) -> Any:
        depth = {"session": 1, "package": 1, "module": 2}.get(fixturedef.scope, 0)
        if not depth or len(FRESH.scopes) < depth:
            return (yield)
        FRESH.pinned.append(depth)
        try:
            return (yield)
        finally:
            FRESH.pinned.pop()


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_ScopePins(), "shipyard-fresh-database-scopes")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL on a free 127.0.0.1 port, with the template databases built;
    the tests that need it fail (never skip) when the server binaries are missing."""
    import tempfile

    try:
        find_bin_dir()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    cluster = PostgresCluster.start(Path(tempfile.mkdtemp(prefix="shipyard-pg-")))
    try:
        cluster.template()
        yield cluster
    finally:
        cluster.stop()


def _fresh_init(original: Callable[..., Workspace]) -> Callable[..., Workspace]:
    def init(cls: type[Workspace], path: Any = ".", settings: Settings | None = None) -> Workspace:
        return original(cls, path, FRESH.settings(settings))

    return init


@pytest.fixture(scope="session", autouse=True)
def _session_databases(request: pytest.FixtureRequest) -> Iterator[None]:
    """With --database postgresql, Workspace.init gives each new workspace fresh databases."""
    postgres = request.config.getoption("--database") == "postgresql"
    cluster = request.getfixturevalue("postgres_cluster") if postgres else None
    with pytest.MonkeyPatch.context() as patch:
        original = Workspace.__dict__["init"].__func__
        patch.setattr(Workspace, "init", classmethod(_fresh_init(original)))
        FRESH.enter(postgres, cluster)
        try:
            yield
        finally:
            FRESH.leave()


@pytest.fixture(scope="module")
def database(request: pytest.FixtureRequest) -> str:
    """The backend of this module's workspaces: the --database option (default sqlite).
    Packages tested on both override it with a fixture parametrized over both."""
    return str(request.config.getoption("--database"))


@pytest.fixture(scope="module", autouse=True)
def _module_databases(request: pytest.FixtureRequest, database: str) -> Iterator[None]:
    """Module-scoped workspaces (made by module fixtures) on ``database``."""
    postgres = database == "postgresql"
    FRESH.enter(postgres, request.getfixturevalue("postgres_cluster") if postgres else None)
    try:
        yield
    finally:
        FRESH.leave()


@pytest.fixture(autouse=True)
def _test_databases(_clean_env: None, _module_databases: None) -> Iterator[None]:
    """A test's own workspaces on fresh databases of the module's backend, dropped after it."""
    FRESH.enter(FRESH.on[-1], None)
    try:
        yield
    finally:
        FRESH.leave()


@pytest.fixture(scope="session")
def postgres_serving_workspace(
    postgres_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Workspace, Dataset]]:
    """tests/serving's ``serving_workspace`` on PostgreSQL, whatever --database says: fraud
    v1 = LightGBM (champion), v2 = a decision tree, on small data."""
    names = postgres_cluster.fresh()
    settings = Settings(
        database_url=postgres_cluster.url(names[0]),
        mlflow_tracking_uri=postgres_cluster.url(names[1]),
    )
    root = tmp_path_factory.mktemp("pg-serving") / "ws"
    ws, dataset = small_fraud_models(root, ("lightgbm", "decision_tree"), settings=settings)
    yield ws, dataset
    ws.close()
    postgres_cluster.drop(*names)
