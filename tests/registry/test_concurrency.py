"""Processes promoting and rolling back one model at once end in one consistent state: the
alias in MLflow is the one the last audit entry names, every entry's "before" is the holder
the previous entry left (no lost update), and the trail's chain verifies. On SQLite and on
PostgreSQL (the test id says which)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shipyard.errors import ConcurrentChangeError
from shipyard.governance.audit import entries, verify
from shipyard.registry.models import CHAMPION, ModelRegistry
from shipyard.training.trainers import make_config
from shipyard.workspace import Workspace
from tests.governance.german_views import DATASET, FEATURES, german_workspace, register, train

ROUNDS = 6


def registered_versions(path: Path, n: int) -> Workspace:
    """A German credit workspace with ``n`` versions of one logistic regression, v1 champion."""
    ws, dataset = german_workspace(path)
    trained = train(ws, dataset, make_config("logistic_regression"), FEATURES)
    for _ in range(n):
        register(ws, trained)
    ModelRegistry(ws).promote(DATASET, 1, reason="first", actor="setup")
    return ws


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[Workspace]:
    """Three versions of german_credit, v1 the champion, on ``database``."""
    ws = registered_versions(tmp_path_factory.mktemp("concurrency") / "ws", 3)
    yield ws
    ws.close()


def _promote_in_turn(args: tuple[str, tuple[int, ...], int]) -> tuple[int, int]:
    """Promote the versions in turn ``rounds`` times: (promotions made, refused as stale)."""
    root, versions, rounds = args
    registry = ModelRegistry(Workspace.open(root))
    made = stale = 0
    for i in range(rounds):
        try:
            registry.promote(DATASET, versions[i % len(versions)], reason=f"round {i}")
            made += 1
        except ConcurrentChangeError:
            stale += 1
    registry.workspace.close()
    return made, stale


def _roll_back(args: tuple[str, tuple[int, ...], int]) -> tuple[int, int]:
    """Roll the champion back ``rounds`` times: (rollbacks made, none to make)."""
    from shipyard.errors import ModelNotFoundError

    root, _, rounds = args
    registry = ModelRegistry(Workspace.open(root))
    made = nothing = 0
    for i in range(rounds):
        try:
            registry.rollback(DATASET, reason=f"rollback {i}")
            made += 1
        except ModelNotFoundError:  # the first champion on record: nothing before it
            nothing += 1
    registry.workspace.close()
    return made, nothing


def _check_one_story(ws: Workspace) -> list[str]:
    """Assert that the trail tells one story that ends where MLflow's alias is; its actions."""
    holder: int | None = None
    actions = []
    for entry in entries(ws, kind="model", name=DATASET):
        if entry.alias != CHAMPION or entry.action not in ("promote", "rollback"):
            continue
        assert entry.previous_version == holder, f"entry {entry.sequence} lost an update"
        assert entry.before == {"alias": CHAMPION, "version": holder}
        holder = entry.version
        actions.append(entry.action)
    assert ModelRegistry(ws).aliases(DATASET)[CHAMPION] == holder
    assert verify(ws).ok
    return actions


Job = Callable[[tuple[str, tuple[int, ...], int]], tuple[int, int]]


def _run(ws: Workspace, *jobs: tuple[Job, tuple[int, ...]]) -> list[tuple[int, int]]:
    context = multiprocessing.get_context("spawn")
    with context.Pool(len(jobs)) as pool:
        waiting = [
            pool.apply_async(fn, ((str(ws.root), versions, ROUNDS),)) for fn, versions in jobs
        ]
        return [w.get(timeout=300) for w in waiting]


@pytest.mark.slow
def test_two_processes_promoting_different_versions_end_in_one_state(models: Workspace) -> None:
    before = len(_check_one_story(models))
    results = _run(models, (_promote_in_turn, (2, 3)), (_promote_in_turn, (3, 2)))
    actions = _check_one_story(models)
    made = sum(r[0] for r in results)
    assert len(actions) - before == made  # each promotion made is recorded once, no more
    assert made + sum(r[1] for r in results) == 2 * ROUNDS and made >= ROUNDS


@pytest.mark.slow
def test_a_promotion_and_a_rollback_at_once_end_in_one_state(models: Workspace) -> None:
    before = _check_one_story(models)
    promoted, rolled = _run(models, (_promote_in_turn, (2, 3)), (_roll_back, ()))
    actions = _check_one_story(models)[len(before) :]
    assert actions.count("promote") == promoted[0] and actions.count("rollback") == rolled[0]
