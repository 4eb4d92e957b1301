"""Where work runs. Work is written against :class:`Engine`, never against a backend directly.

``local`` (default) runs in this process, sequentially or on a thread pool; ``ray`` runs the
same functions as Ray tasks, on a local Ray started for the process or on a cluster at the
``ray_address`` setting. Both keep the items' order and report a failing item the same way:
the original exception, with a note naming the item (``fold 2``, ``partition day=...``) and
the engine.

Example::

    engine = get_engine(ws)
    scores = engine.map(evaluate_fold, folds, label="fold")
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

Describe = Callable[[int, object], str]
"""How an item is named in an error note: ``(index, item) -> "fold 2 (2018-05-01..)"``."""

Progress = Callable[[int, int], None]
"""Called with ``(done, total)`` as items finish (in completion order on parallel engines)."""


class Engine(Protocol):
    """Runs independent pieces of work and returns their results in order."""

    name: str

    @property
    def parallelism(self) -> int:
        """How many items can run at once (for sizing batches of work)."""
        ...

    def map(
        self,
        fn: Callable[[T], R],
        items: Sequence[T],
        *,
        label: str = "item",
        describe: Describe | None = None,
        progress: Progress | None = None,
    ) -> list[R]:
        """``[fn(item) for item in items]``, possibly in parallel; order is kept.

        An item that raises re-raises its original exception here, with a note naming the
        item (``describe(index, item)``, else ``"{label} {index}"``) and the engine.
        """
        ...


def item_name(label: str, describe: Describe | None, index: int, item: object) -> str:
    """The name an error note gives an item: ``describe(index, item)`` or ``label index``."""
    if describe is not None:
        try:
            return describe(index, item)
        except Exception:  # a note must never hide the real error
            pass
    return f"{label} {index}"


def add_item_note(exc: BaseException, engine: str, name: str, total: int) -> None:
    """Note on ``exc`` which item of how many failed, on which engine (once per exception)."""
    note = f"(while running {name} of {total} on the {engine} engine)"
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)


class LocalEngine:
    """In-process execution: sequential by default, or on ``max_workers`` threads.

    Threads suit model fitting (LightGBM, XGBoost, scikit-learn release the GIL); keep
    ``max_workers * model threads`` within the machine's cores.
    """

    name = "local"

    def __init__(self, max_workers: int = 1) -> None:
        self.max_workers = max_workers

    @property
    def parallelism(self) -> int:
        """Threads the engine runs items on."""
        return max(1, self.max_workers)

    def map(
        self,
        fn: Callable[[T], R],
        items: Sequence[T],
        *,
        label: str = "item",
        describe: Describe | None = None,
        progress: Progress | None = None,
    ) -> list[R]:
        """Apply ``fn`` to every item; results in the items' order."""
        total = len(items)

        def run(index: int) -> R:
            try:
                return fn(items[index])
            except Exception as exc:
                add_item_note(
                    exc, self.name, item_name(label, describe, index, items[index]), total
                )
                raise

        if self.max_workers <= 1 or total <= 1:
            results = []
            for i in range(total):
                results.append(run(i))
                if progress is not None:
                    progress(i + 1, total)
            return results
        with ThreadPoolExecutor(self.max_workers) as pool:
            futures = [pool.submit(run, i) for i in range(total)]
            results = []
            for i, future in enumerate(futures):
                results.append(future.result())
                if progress is not None:
                    progress(i + 1, total)
            return results


def get_engine(workspace: Workspace) -> Engine:
    """The engine named by the workspace's ``engine`` setting (Ray connects here, not later).

    ``engine = "ray"`` connects to the cluster at ``ray_address`` (or starts a local Ray with
    ``ray_num_cpus`` CPUs when it is unset); an unreachable address is a ConfigError naming
    the setting, raised now rather than at the first task.
    """
    name = workspace.settings.engine
    if name == "local":
        return LocalEngine()
    if name == "ray":
        from shipyard.engines.ray import RayEngine

        return RayEngine.connect(
            address=workspace.settings.ray_address, num_cpus=workspace.settings.ray_num_cpus
        )
    raise ConfigError(f"engine = {name!r} is not a known engine; use 'local' or 'ray'.")
