"""The prediction log: every response and every shadow score, append-only and durable.

Each worker appends JSON lines to its own segment files under
``<artifact_root>/predictions/<endpoint>/``. Writes are group-committed: the records of all
requests answered in one turn of the event loop are written with one ``write`` call, and a
response is sent only after its record was written. A ``kill -9`` of the server therefore
loses no record of a response a client received (the data is in the operating system's page
cache); the segments are also ``fsync``-ed every ``fsync_interval_s`` (1 s by default), the
window for a power loss or kernel crash. Shadow scores are written with the next group.

A failed write fails the requests of its group (they are answered with an error, never
acknowledged) and the next write starts on a fresh line, so a line torn by the failure
never swallows a later record. ``close()`` writes what is pending and resolves (or fails)
every request still waiting; nothing waits forever.

A failed write, or a failed :meth:`PredictionLog.probe` (a write and an ``fsync`` of a
probe file in the folder), marks the log unwritable (``error`` says why); the server then
reports not ready and refuses predictions rather than serve them unlogged. The next
successful probe opens a fresh segment and marks it writable again.

DuckDB reads the segments directly, beside their compacted Parquet partitions
(:mod:`shipyard.monitoring.logstore`): ``shipyard logs query "SELECT ..."``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable

    from shipyard.workspace import Workspace

_encode = msgspec.json.Encoder().encode
logger = logging.getLogger(__name__)

DROP_RECORD_ENV = "TEST_ONLY_PREDLOG_DROP_RECORD"
"""Test-only fault injection, never for production: if set to N when a log is created, the
N-th committed record of that log is silently not written (its request is still answered).
The reliability tests use it to prove that their loss check can fail."""


class PredictionLogClosedError(RuntimeError):
    """A record was committed to a prediction log that is closed (the worker is stopping)."""


def worker_name() -> str:
    """This process's name in segment file names: ``w<host>-<pid>``.

    Unique across the machines whose replicas share one log folder (a shared filesystem):
    a bare pid is not, and compaction would take another host's open segment for closed.
    """
    import os
    import re
    import socket

    host = re.sub(r"[^A-Za-z0-9.-]", "", socket.gethostname()) or "host"
    return f"w{host}-{os.getpid()}"


class PredictionLog:
    """Append-only, group-committed JSON-lines segments of one worker.

    Test-only: the environment variable ``TEST_ONLY_PREDLOG_DROP_RECORD=N``, read once
    here, makes this log drop its N-th committed record (see :data:`DROP_RECORD_ENV`).
    """

    def __init__(
        self,
        folder: Path,
        worker: str,
        segment_bytes: int = 64 << 20,
        fsync_interval_s: float = 1.0,
        on_write: Callable[[float, bool], None] | None = None,
    ) -> None:
        self.folder = folder
        self.worker = worker
        self.segment_bytes = segment_bytes
        self.fsync_interval_s = fsync_interval_s
        self.on_write = on_write
        """Called after each group write with its seconds and whether it succeeded (metrics)."""
        self.error: str | None = None
        """Why the log cannot be written now (``None`` while it can)."""
        self._fd = -1
        self._size = 0
        self._sequence = 0
        self._pending: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled = False
        self._last_sync = time.monotonic()
        self._torn = False  # a failed write may have left half a line at the end
        self._closed = False
        self._committed = 0
        self._drop_at = int(os.environ.get(DROP_RECORD_ENV) or 0)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._open_segment()
        except OSError as exc:  # start unwritable: a later probe may succeed
            self._unwritable(exc)

    @property
    def writable(self) -> bool:
        """Whether the last write and the last probe succeeded."""
        return self.error is None

    def _unwritable(self, exc: OSError) -> None:
        if self.error is None:
            logger.error(
                "prediction log %s: %s cannot be written (%s); predictions are refused "
                "until it can",
                self.worker,
                self.folder,
                exc,
                extra={"worker": self.worker, "folder": str(self.folder)},
            )
        self.error = f"{self.folder}: {exc.strerror or exc}"

    async def probe(self) -> bool:
        """Check that the folder takes a write and an fsync; update and return ``writable``.

        The check runs in a thread (an fsync may take a while). After a failure, a success
        opens a fresh segment, so nothing is appended to a file that failed.
        """
        try:
            await asyncio.to_thread(self._probe_folder)
            if self.error is not None and not self._closed:
                self._reopen()
        except OSError as exc:
            self._unwritable(exc)
            return False
        if self.error is not None:
            logger.warning(
                "prediction log %s: %s can be written again; predictions resume",
                self.worker,
                self.folder,
                extra={"worker": self.worker, "folder": str(self.folder)},
            )
            self.error = None
        return True

    def _probe_folder(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f".probe-{self.worker}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if os.write(fd, b"probe\n") != 6:
                raise OSError(errno.ENOSPC, "short write to the probe file")
            os.fsync(fd)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)

    def _reopen(self) -> None:
        """Leave the current segment (it failed) for a new one."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):  # it failed already; a new one replaces it
                os.close(self._fd)
            self._fd = -1
        self._open_segment()
        self._torn = False

    def _open_segment(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
        self._sequence += 1
        stamp = time.strftime("%Y%m%dT%H%M%S")
        path = self.folder / f"{stamp}-{self.worker}-{self._sequence:04d}.jsonl"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = 0

    async def commit(self, record: dict[str, Any]) -> None:
        """Append ``record``; return once it is written (with the rest of its group).

        Raises the write's OSError if its group could not be written, and
        PredictionLogClosedError after :meth:`close`.
        """
        if self._drop_at and self._drop_fault(record):
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        self.append(record)
        await waiter

    def _drop_fault(self, record: dict[str, Any]) -> bool:
        self._committed += 1
        if self._committed != self._drop_at:
            return False
        logger.warning(
            "%s=%d: dropped the prediction record of request %s (test-only fault)",
            DROP_RECORD_ENV,
            self._drop_at,
            record.get("request_id"),
        )
        return True

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record`` to the next group without waiting for it (shadow scores)."""
        if self._closed:
            raise PredictionLogClosedError(f"the prediction log of {self.worker} is closed")
        self._pending.append(_encode(record) + b"\n")
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        data = b"".join(self._pending)
        records = len(self._pending)
        self._pending.clear()
        waiters, self._waiters = self._waiters, []
        started = time.perf_counter()
        try:
            if data:
                if self._fd < 0 and self._closed:
                    raise PredictionLogClosedError(f"the prediction log of {self.worker} is closed")
                if self._fd < 0:
                    raise OSError(errno.EBADF, f"no open segment ({self.error})")
                self._write(b"\n" + data if self._torn else data)
                if self.on_write is not None:
                    self.on_write(time.perf_counter() - started, True)
        except (OSError, PredictionLogClosedError) as exc:
            if self.on_write is not None:
                self.on_write(time.perf_counter() - started, False)
            if isinstance(exc, OSError):
                self._unwritable(exc)
            logger.error(
                "prediction log %s: could not write %d record(s): %s; their requests are "
                "answered with an error",
                self.worker,
                records,
                exc,
            )
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self._fd < 0:
            return
        try:
            now = time.monotonic()
            if now - self._last_sync >= self.fsync_interval_s:
                os.fsync(self._fd)
                self._last_sync = now
            if self._size >= self.segment_bytes:
                self._open_segment()
        except OSError as exc:  # the records are written (page cache); say why no fsync
            logger.error("prediction log %s: fsync or rotation failed: %s", self.worker, exc)

    def _write(self, data: bytes) -> None:
        """Write all of ``data`` (os.write may write less than asked)."""
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            # os.write writes all it reports or raises having written nothing: the line is
            # torn if an earlier call of this group wrote part of it
            self._torn = self._torn or len(view) < len(data)
            raise
        self._torn = False
        self._size += len(data)

    def close(self) -> None:
        """Write what is pending, resolve or fail every waiting request, fsync and close."""
        if self._closed:
            return
        self._flush()  # resolves every waiter: written, or failed with the write's error
        self._closed = True
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1


def log_folder(workspace: Workspace, endpoint: str) -> Path:
    """Where the prediction log segments of ``endpoint`` live."""
    return workspace.artifact_root / "predictions" / endpoint
