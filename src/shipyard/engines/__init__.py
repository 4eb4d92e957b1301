"""Where work runs. Work is written against :class:`Engine`, never against a backend directly.

``local`` (default) runs in this process, sequentially or on a thread pool; a ``ray``
engine running the same functions as Ray tasks plugs in behind the same two methods.

Example::

    engine = get_engine(ws)
    scores = engine.map(evaluate_fold, folds)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol, TypeVar

from shipyard.errors import ConfigError

if TYPE_CHECKING:
    from shipyard.workspace import Workspace

T = TypeVar("T")
R = TypeVar("R")


class Engine(Protocol):
    """Runs independent pieces of work and returns their results in order."""

    name: str

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(item) for item in items]``, possibly in parallel; order is kept."""
        ...


class LocalEngine:
    """In-process execution: sequential by default, or on ``max_workers`` threads.

    Threads suit model fitting (LightGBM, XGBoost, scikit-learn release the GIL); keep
    ``max_workers * model threads`` within the machine's cores.
    """

    name = "local"

    def __init__(self, max_workers: int = 1) -> None:
        self.max_workers = max_workers

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Apply ``fn`` to every item; results in the items' order."""
        if self.max_workers <= 1 or len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(self.max_workers) as pool:
            return list(pool.map(fn, items))


def get_engine(workspace: Workspace) -> Engine:
    """The engine named by the workspace's ``engine`` setting."""
    name = workspace.settings.engine
    if name == "local":
        return LocalEngine()
    raise ConfigError(
        f"engine = {name!r} is not available in this version of Shipyard; use 'local'."
    )
