"""An in-process micro-batcher: many small requests, one model call.

A batch takes every request queued when the model is free, up to ``max_batch_size`` rows;
requests that arrive while a batch runs form the next one (continuous batching). With
``max_wait_ms`` > 0 a batch also waits that long for others to join. The batch runs in a
worker thread so the event loop keeps accepting requests. A failed
batch answers every request in it with the error; a request that waited longer than
``timeout_ms`` gets :class:`BatchTimeoutError`, never silence.

Example::

    batcher = MicroBatcher(predictor.predict, max_batch_size=64, max_wait_ms=2)
    scores = await batcher.submit(rows)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Batch = NDArray[np.float64]


class BatchTimeoutError(Exception):
    """A request waited longer than the batcher's timeout for its result."""


@dataclass(frozen=True)
class BatchRun:
    """One model call as a request saw it (traced batchers only): when it ran, how big."""

    started_ns: int
    """Wall-clock start of the model call (ns since the epoch, OpenTelemetry's clock)."""
    ended_ns: int
    rows: int
    requests: int


@dataclass
class _Pending:
    rows: Batch
    future: asyncio.Future[Any]
    run: BatchRun | None = None


class MicroBatcher:
    """Collects rows from concurrent requests and scores them together."""

    def __init__(
        self,
        predict: Callable[[Batch], Batch],
        max_batch_size: int = 64,
        max_wait_ms: float = 0.0,
        timeout_ms: float = 1000.0,
        on_batch: Callable[[int, float], None] | None = None,
        timed: bool = False,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise invalid_parameter("max_batch_size", owner, "an int >= 1", max_batch_size)
        if not 0 <= max_wait_ms <= 1000:
            raise invalid_parameter("max_wait_ms", owner, "a float in [0, 1000]", max_wait_ms)
        if not 0 < timeout_ms <= 600_000:
            raise invalid_parameter("timeout_ms", owner, "a float in (0, 600000]", timeout_ms)
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.timeout_ms = timeout_ms
        self.on_batch = on_batch
        self.timed = timed
        """Record each request's :class:`BatchRun` (for tracing; see :meth:`submit_timed`)."""
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="shipyard-model")

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch."""
        return 0 if self._queue is None else self._queue.qsize()

    async def submit(self, rows: Batch) -> Batch:
        """Score ``rows`` (2-D) together with whatever else arrives; return their scores."""
        loop = asyncio.get_running_loop()
        pending = self._enqueue(loop, rows)
        # one timer handle per request: cheaper than wait_for's extra task on the hot path
        timer = loop.call_later(self.timeout_ms / 1000, self._expire, pending.future)
        try:
            result: Batch = await pending.future
        finally:
            timer.cancel()
        return result

    async def submit_timed(self, rows: Batch) -> tuple[Batch, BatchRun]:
        """:meth:`submit`, and the model call that scored ``rows`` (needs ``timed=True``)."""
        loop = asyncio.get_running_loop()
        pending = self._enqueue(loop, rows)
        timer = loop.call_later(self.timeout_ms / 1000, self._expire, pending.future)
        try:
            result: Batch = await pending.future
        finally:
            timer.cancel()
        assert pending.run is not None, "submit_timed needs a MicroBatcher(timed=True)"
        return result, pending.run

    def _enqueue(self, loop: asyncio.AbstractEventLoop, rows: Batch) -> _Pending:
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run())
        assert self._queue is not None
        pending = _Pending(rows, loop.create_future())
        self._queue.put_nowait(pending)
        return pending

    def _expire(self, future: asyncio.Future[Any]) -> None:
        if not future.done():
            future.set_exception(
                BatchTimeoutError(
                    f"the request waited more than {self.timeout_ms:g} ms for the model "
                    f"(queue depth {self.queue_depth}); retry or add capacity"
                )
            )

    async def _run(self) -> None:
        import numpy as np

        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            first = await queue.get()
            batch = [first]
            size = len(first.rows)
            deadline = loop.time() + self.max_wait_ms / 1000
            while size < self.max_batch_size:
                if queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    item = queue.get_nowait()
                batch.append(item)
                size += len(item.rows)
            live = [p for p in batch if not p.future.done()]
            if not live:
                continue
            rows = live[0].rows if len(live) == 1 else np.concatenate([p.rows for p in live])
            started = loop.time()
            started_ns = time.time_ns() if self.timed else 0
            try:
                scores = await loop.run_in_executor(self._executor, self.predict, rows)
            except Exception as exc:  # a failed batch answers every request in it
                for pending in live:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            if self.on_batch is not None:
                self.on_batch(len(rows), loop.time() - started)
            if self.timed:
                run = BatchRun(started_ns, time.time_ns(), len(rows), len(live))
                for pending in live:
                    pending.run = run
            offset = 0
            for pending in live:
                n = len(pending.rows)
                if not pending.future.done():
                    pending.future.set_result(scores[offset : offset + n])
                offset += n

    async def close(self) -> None:
        """Stop the batching task and its thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=False)
