"""The Ray engine: the same functions as Ray tasks, on a local Ray or a cluster by address.

``fn`` is put in Ray's object store once per :meth:`RayEngine.map` call (whatever it closes
over travels once, not once per item); each item is one task. A task whose worker process
dies is retried by Ray (``max_retries``); a task that raises is not retried, and its original
exception is re-raised in the caller with a note naming the item.

Needs the ``ray`` extra (``pip install 'shipyard[ray]'``).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from shipyard.engines import Describe, Progress, add_item_note, item_name

T = TypeVar("T")
R = TypeVar("R")

_REMOTE: Any = None


def _call(fn: Callable[[Any], Any], item: Any) -> tuple[bool, Any, str]:
    """Run one item in a worker; an exception comes back as a value, with its traceback."""
    try:
        return True, fn(item), ""
    except Exception as exc:
        text = traceback.format_exc()
        try:
            import pickle

            pickle.dumps(exc)
        except Exception:  # an exception Ray cannot carry back: keep its type name and text
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        return False, exc, text


class RayEngine:
    """Runs items as Ray tasks; connect with :meth:`connect` (or ``get_engine``)."""

    name = "ray"

    def __init__(self, max_retries: int = 3) -> None:
        self.max_retries = max_retries

    @classmethod
    def connect(cls, address: str | None = None, num_cpus: int | None = None) -> RayEngine:
        """Connect to the cluster at ``address``, or start a local Ray (``num_cpus`` CPUs)."""
        import ray

        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            else:
                ray.init(
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
        return cls()

    @property
    def parallelism(self) -> int:
        """CPUs of the cluster (one task per CPU)."""
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1)))  # type: ignore[no-untyped-call]

    def map(
        self,
        fn: Callable[[T], R],
        items: Sequence[T],
        *,
        label: str = "item",
        describe: Describe | None = None,
        progress: Progress | None = None,
    ) -> list[R]:
        """Run ``fn`` on every item as a Ray task; results in the items' order."""
        import ray

        global _REMOTE
        if _REMOTE is None:
            _REMOTE = ray.remote(_call)
        total = len(items)
        if total == 0:
            return []
        fn_ref = ray.put(fn)
        remote = _REMOTE.options(max_retries=self.max_retries, retry_exceptions=False)
        refs = [remote.remote(fn_ref, item) for item in items]
        index_of = {ref: i for i, ref in enumerate(refs)}
        outcomes: list[Any] = [None] * total
        pending = list(refs)
        done = 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                i = index_of[ref]
                ok, value, text = ray.get(ref)
                if not ok:
                    for other in pending:
                        ray.cancel(other)
                    add_item_note(value, self.name, item_name(label, describe, i, items[i]), total)
                    value.add_note(f"worker traceback:\n{text}")
                    raise value
                outcomes[i] = value
                done += 1
                if progress is not None:
                    progress(done, total)
        return outcomes
