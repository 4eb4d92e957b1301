"""Processes changing one endpoint's traffic at once: revisions 1..N with no gap or
duplicate, each change audited once, a stale ``expected_revision`` refused; and two serving
"machines" (two ``shipyard serve`` on separate folders sharing one PostgreSQL and one
artifact root) read the same revisions. On SQLite and on PostgreSQL (the test id says which).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.config import Settings
from shipyard.data.catalog import Dataset
from shipyard.errors import ConcurrentChangeError
from shipyard.governance.audit import entries, verify
from shipyard.serving.policy import (
    Arm,
    TrafficPolicy,
    current_revision,
    get_policy,
    policy_history,
    set_policy,
)
from shipyard.workspace import Workspace
from tests.governance.german_views import DATASET
from tests.registry.test_concurrency import registered_versions
from tests.serving.conftest import ADMIN, ADMIN_TOKEN, Server, start_server, wait_for_revision

ENDPOINT = "credit-api"
ROUNDS = 8


@pytest.fixture(scope="module")
def database(request: pytest.FixtureRequest) -> str:
    """The backend a test is parametrized with (BOTH), else the --database option."""
    return str(getattr(request, "param", request.config.getoption("--database")))


BOTH = pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True, scope="module")
"""Run a test on SQLite and on PostgreSQL (the test id says which)."""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[Workspace]:
    """Two versions of german_credit (same inputs), on ``database``."""
    ws = registered_versions(tmp_path_factory.mktemp("policies") / "ws", 2)
    yield ws
    ws.close()


def _policy(i: int) -> TrafficPolicy:
    return TrafficPolicy(ENDPOINT, DATASET, (Arm(1, 100 - i), Arm(2, i + 1)))


def _set_many(args: tuple[str, int, bool]) -> tuple[int, int]:
    """Change the endpoint's traffic ROUNDS times: (changes made, refused as stale). With
    ``expect``, each change expects the revision read just before it."""
    root, worker, expect = args
    ws = Workspace.open(root)
    made = stale = 0
    for i in range(ROUNDS):
        expected = current_revision(ws, ENDPOINT) if expect else None
        try:
            set_policy(
                ws,
                _policy(i),
                reason=f"w{worker} {i}",
                actor=f"w{worker}",
                expected_revision=expected,
            )
            made += 1
        except ConcurrentChangeError:
            stale += 1
    ws.close()
    return made, stale


def _run(ws: Workspace, expect: bool) -> list[tuple[int, int]]:
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        return pool.map(_set_many, [(str(ws.root), w, expect) for w in range(2)])


def _check_revisions(ws: Workspace, first: int) -> list[TrafficPolicy]:
    """Revisions since ``first`` run on without a gap; each is audited once, in order, with
    the revision before it as its "before"; the chain verifies. The new revisions."""
    history = [p for p in policy_history(ws, ENDPOINT) if p.revision >= first]
    assert [p.revision for p in history] == list(range(first, first + len(history)))
    audited = [
        e for e in entries(ws, kind="endpoint", name=ENDPOINT) if e.details["revision"] >= first
    ]
    assert [e.details["revision"] for e in audited] == [p.revision for p in history]
    for entry in audited:
        revision = entry.details["revision"]
        assert entry.after["revision"] == revision
        assert (entry.before or {}).get("revision", 0) == revision - 1
    assert verify(ws).ok
    return history


@pytest.mark.slow
@BOTH
def test_two_processes_changing_traffic_get_consecutive_revisions(models: Workspace) -> None:
    first = current_revision(models, ENDPOINT) + 1
    results = _run(models, expect=False)
    history = _check_revisions(models, first)
    assert len(history) == 2 * ROUNDS and all(made == ROUNDS for made, _ in results)
    for w in range(2):  # each process's changes in its own order
        mine = [p.reason for p in history if p.actor == f"w{w}"]
        assert mine == [f"w{w} {i}" for i in range(ROUNDS)]


@pytest.mark.slow
@BOTH
def test_a_stale_expected_revision_is_refused_while_another_process_writes(
    models: Workspace,
) -> None:
    first = current_revision(models, ENDPOINT) + 1
    results = _run(models, expect=True)
    history = _check_revisions(models, first)
    assert len(history) == sum(made for made, _ in results)  # a refusal writes nothing
    assert sum(made + stale for made, stale in results) == 2 * ROUNDS
    latest = get_policy(models, ENDPOINT).revision
    with pytest.raises(ConcurrentChangeError, match=f"at revision {latest}, not {latest - 1}"):
        set_policy(models, _policy(0), reason="late", expected_revision=latest - 1)


@pytest.mark.slow
def test_two_serving_machines_on_one_postgresql_serve_the_same_revision(
    postgres_serving_workspace: tuple[Workspace, Dataset], tmp_path: Path
) -> None:
    """Two ``shipyard serve`` (own folders and ports, one database, one artifact root): a
    change through one's admin API is what both serve."""
    shared, _ = postgres_serving_workspace
    settings = Settings(
        database_url=shared.database_url,
        mlflow_tracking_uri=shared.mlflow_tracking_uri,
        artifact_root=str(shared.artifact_root),
        data_root=str(shared.data_root),
    )
    machines = [Workspace.init(tmp_path / name, settings) for name in ("a", "b")]
    env = {"SHIPYARD_SERVING_ADMIN_TOKEN": ADMIN_TOKEN}
    servers: list[Server] = []
    try:
        servers.extend(  # one by one: a server that fails to start leaves the others listed
            start_server(ws, "fraud@champion", tmp_path, "--endpoint", "machines", env=env)
            for ws in machines
        )
        before = get_policy(shared, "machines").revision
        status, _, body = servers[0].post_json(
            "/admin/traffic",
            {"arms": [{"version": 1, "weight": 1}], "shadows": [2], "reason": "shadow v2"},
            ADMIN,
        )
        assert status == 200, body
        assert body["revision"] == before + 1
        for server in servers:
            wait_for_revision(server, before + 1)
        assert get_policy(machines[1], "machines").shadows == (2,)
    finally:
        for server in servers:
            server.stop()
        for ws in machines:
            ws.close()
