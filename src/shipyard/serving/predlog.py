"""The prediction log: every response and every shadow score, append-only and durable.

Each worker appends JSON lines to its own segment files under
``<artifact_root>/predictions/<endpoint>/``. Writes are group-committed: the records of all
requests answered in one turn of the event loop are written with one ``write`` call, and a
response is sent only after its record was written. A ``kill -9`` of the server therefore
loses no record of a response a client received (the data is in the operating system's page
cache); the segments are also ``fsync``-ed every ``fsync_interval_s`` (1 s by default), the
window for a power loss or kernel crash. Shadow scores are written with the next group.

DuckDB reads the segments directly: ``shipyard logs query "SELECT ..."``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from shipyard.workspace import Workspace

_encode = msgspec.json.Encoder().encode


class PredictionLog:
    """Append-only, group-committed JSON-lines segments of one worker."""

    def __init__(
        self,
        folder: Path,
        worker: str,
        segment_bytes: int = 64 << 20,
        fsync_interval_s: float = 1.0,
    ) -> None:
        self.folder = folder
        self.worker = worker
        self.segment_bytes = segment_bytes
        self.fsync_interval_s = fsync_interval_s
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self._size = 0
        self._sequence = 0
        self._pending: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled = False
        self._last_sync = time.monotonic()
        self._open_segment()

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
        """Append ``record``; return once it is written (with the rest of its group)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        self.append(record)
        await waiter

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record`` to the next group without waiting for it (shadow scores)."""
        self._pending.append(_encode(record) + b"\n")
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        data = b"".join(self._pending)
        self._pending.clear()
        waiters, self._waiters = self._waiters, []
        try:
            if data:
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                self._size += len(data)
            now = time.monotonic()
            if now - self._last_sync >= self.fsync_interval_s:
                os.fsync(self._fd)
                self._last_sync = now
            if self._size >= self.segment_bytes:
                self._open_segment()
        except OSError as exc:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        """Write what is pending, fsync and close the segment."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            os.write(self._fd, data)
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


def log_folder(workspace: Workspace, endpoint: str) -> Path:
    """Where the prediction log segments of ``endpoint`` live."""
    return workspace.artifact_root / "predictions" / endpoint


def query(workspace: Workspace, endpoint: str, sql: str) -> Any:
    """Run ``sql`` in DuckDB over a ``predictions`` view of the endpoint's log; return a DataFrame.

    Example: ``query(ws, "fraud", "SELECT version, count(*) FROM predictions GROUP BY 1")``.
    """
    import duckdb

    folder = log_folder(workspace, endpoint)
    files = sorted(str(p) for p in folder.glob("*.jsonl") if p.stat().st_size > 0)
    con = duckdb.connect()
    try:
        if files:
            listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            # ignore_errors: a line cut short by a crash mid-write is skipped, not fatal
            con.execute(
                f"CREATE VIEW predictions AS SELECT * FROM read_json([{listed}], "
                "format = 'newline_delimited', ignore_errors = true, "
                "columns = {request_id: 'VARCHAR', time: 'DOUBLE', endpoint: 'VARCHAR', "
                "model: 'VARCHAR', version: 'INTEGER', arm: 'VARCHAR', routing_key: 'VARCHAR', "
                "protocol: 'VARCHAR', inputs: 'DOUBLE[][]', outputs: 'DOUBLE[]', latency_ms: "
                "'DOUBLE'})"
            )
        else:
            con.execute(
                "CREATE VIEW predictions AS SELECT NULL::VARCHAR AS request_id, NULL::DOUBLE "
                "AS time, "
                "NULL::VARCHAR AS endpoint, NULL::VARCHAR AS model, NULL::INTEGER AS version, "
                "NULL::VARCHAR AS arm, NULL::VARCHAR AS routing_key, NULL::VARCHAR AS protocol, "
                "NULL::DOUBLE[][] AS inputs, NULL::DOUBLE[] AS outputs, NULL::DOUBLE AS latency_ms "
                "WHERE false"
            )
        return con.execute(sql).df()
    finally:
        con.close()
