"""Serve a registered model for real and replay recorded traffic through it, by its own clock.

:class:`LocalServer` runs ``shipyard serve`` as a subprocess on a free 127.0.0.1 port (its
own process group, stopped with SIGTERM, killed if it hangs) and waits until it is ready.
:func:`replay` sends a frame's rows in time order, one V2 request per simulated hour (split
into requests of at most ``rows_per_request`` rows), each with ``X-Event-Time`` set to its
hour so that monitoring windows follow the traffic's time, not the replay's. It returns the
request id and row of every replayed row: what late labels are keyed by.

Example::

    with LocalServer(ws, "fraud@champion", endpoint="fraud-replay", log=out / "serve.log") as srv:
        keys = replay(srv, frame[features], frame["TX_DATETIME"], prefix="replay-1")

:class:`ContinuousReplay` sends one row per request from a thread until stopped and keeps
every answer (status, version, score) instead of raising: the live traffic of a deploy that
goes wrong, while the endpoint's policy changes under it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

from shipyard.errors import ShipyardError, invalid_parameter

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.workspace import Workspace

ProgressCallback = Callable[[str, int, int], None]


class ServerError(ShipyardError, RuntimeError):
    """The replay server did not start, or answered a replayed request with an error."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """``shipyard serve TARGET`` in a subprocess on 127.0.0.1, ready on ``__enter__``.

    The endpoint's traffic policy is reset to ``target`` alone. ``log`` receives the
    server's output (its tail is quoted when it fails to start).
    """

    def __init__(
        self,
        workspace: Workspace,
        target: str,
        *,
        endpoint: str,
        log: Path,
        workers: int = 1,
        ready_timeout_s: float = 300.0,
    ) -> None:
        self.workspace = workspace
        self.target = target
        self.endpoint = endpoint
        self.log = log
        self.workers = workers
        self.ready_timeout_s = ready_timeout_s
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait until ``/v2/health/ready`` answers 200."""
        self.port = free_port()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log.open("wb")
        command = [
            sys.executable,
            "-m",
            "shipyard.cli.main",
            "-w",
            str(self.workspace.root),
            "serve",
            self.target,
            "--endpoint",
            self.endpoint,
            "--reset",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        self._process = subprocess.Popen(
            command,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped whole
        )
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.stop()
                raise ServerError(f"shipyard serve exited at start: {self._tail()}")
            with contextlib.suppress(OSError):
                if self.get("/v2/health/ready")[0] == 200:
                    return
            time.sleep(0.3)
        self.stop()
        raise ServerError(
            f"shipyard serve was not ready after {self.ready_timeout_s:.0f} s: {self._tail()}"
        )

    def stop(self) -> None:
        """SIGTERM the server's process group (SIGKILL after 30 s); idempotent."""
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def get(self, path: str) -> tuple[int, bytes]:
        """One GET on a fresh connection: (status, body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no server log)"


def replay(
    server: LocalServer,
    features: pd.DataFrame,
    times: pd.Series[pd.Timestamp] | Sequence[pd.Timestamp],
    *,
    prefix: str,
    rows_per_request: int = 200,
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Send ``features`` (the model's input columns, rows in time order) to ``server``.

    One V2 request per hour of ``times`` (naive = UTC), split into requests of at most
    ``rows_per_request`` rows; each carries ``X-Event-Time`` (its hour) and the request id
    ``<prefix>-<n>``. Returns a frame aligned with ``features``: ``request_id``, ``row``
    (the row within its request) and ``score``. Raises ServerError on any refused request.
    """
    import numpy as np
    import pandas as pd

    if not isinstance(rows_per_request, int) or rows_per_request < 1:
        raise invalid_parameter("rows_per_request", "replay", "an int >= 1", rows_per_request)
    moments = pd.DatetimeIndex(pd.to_datetime(np.asarray(times)))
    if len(moments) != len(features):
        raise invalid_parameter(
            "times", "replay", f"one time per feature row ({len(features)})", len(moments)
        )
    if len(moments) and not moments.is_monotonic_increasing:
        raise invalid_parameter("times", "replay", "times in increasing order", "unsorted times")
    hours = moments.floor("h")
    matrix = features.to_numpy(dtype=np.float64)
    starts = _request_starts(hours.asi8, rows_per_request)
    request_ids = np.empty(len(features), dtype=object)
    rows = np.empty(len(features), dtype=np.int64)
    scores = np.empty(len(features), dtype=np.float64)
    path = f"/v2/models/{server.endpoint}/infer"
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        for n, (a, b) in enumerate(starts):
            request_id = f"{prefix}-{n:06d}"
            headers = {"Content-Type": "application/json", "X-Event-Time": hours[a].isoformat()}
            connection.request("POST", path, _v2_body(request_id, matrix[a:b]), headers)
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                raise ServerError(
                    f"request {request_id} ({b - a} rows at {hours[a]}) was answered "
                    f"{response.status}: {answer[:500].decode(errors='replace')}"
                )
            scores[a:b] = json.loads(answer)["outputs"][0]["data"]
            request_ids[a:b] = request_id
            rows[a:b] = np.arange(b - a)
            if progress is not None:
                progress("Replaying traffic (requests)", n + 1, len(starts))
    finally:
        connection.close()
    return pd.DataFrame(
        {"request_id": request_ids, "row": rows, "score": scores}, index=features.index
    )


def _v2_body(request_id: str, rows: NDArray[np.float64]) -> bytes:
    """A V2 inference request: one [n, k] FP64 tensor."""
    tensor = {"name": "input", "shape": list(rows.shape), "datatype": "FP64"}
    return json.dumps(
        {"id": request_id, "inputs": [{**tensor, "data": rows.ravel().tolist()}]}
    ).encode()


def _request_starts(hours: Sequence[int], size: int) -> list[tuple[int, int]]:
    """[start, end) positions of the requests: one per hour, split into ``size`` rows."""
    spans: list[tuple[int, int]] = []
    first = 0
    for i in range(1, len(hours) + 1):
        if i == len(hours) or hours[i] != hours[first]:
            spans += [(a, min(a + size, i)) for a in range(first, i, size)]
            first = i
    return spans


@dataclass(frozen=True)
class Answer:
    """One request of a :class:`ContinuousReplay`: when it was answered, how, by which version.

    ``status`` 0: no HTTP answer at all (the connection failed); ``version`` and ``score``
    are None unless the answer was a 200.
    """

    request_id: str
    at: float
    """Epoch seconds when the answer (or the failure) arrived."""
    status: int
    version: int | None
    score: float | None


class ContinuousReplay:
    """Send ``rows`` to ``server`` one row per request, as a scorer does, from a thread.

    The rows are sent in order and again from the first when they run out, until
    :meth:`stop`; ``rate`` caps the requests per second (None: as fast as answers come; a
    slow answer is not made up for by a burst).
    Nothing raises on a refused request: every answer is kept (:meth:`answers`) with its
    status and the version that gave it, so a caller can change the endpoint's policy
    meanwhile and count what each version answered and what failed.

    Example::

        with ContinuousReplay(server, matrix, prefix="live") as traffic:
            traffic.wait_for(3000)
            ...  # deploy, roll back
        failed = [a for a in traffic.answers() if a.status != 200]
    """

    def __init__(
        self,
        server: LocalServer,
        rows: NDArray[np.float64],
        *,
        prefix: str,
        rate: float | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        import numpy as np

        matrix = np.asarray(rows, dtype=np.float64)
        if matrix.ndim != 2 or len(matrix) == 0:
            raise invalid_parameter(
                "rows", "ContinuousReplay", "a non-empty 2-D array", list(matrix.shape)
            )
        if rate is not None and (isinstance(rate, bool) or not rate > 0):
            raise invalid_parameter("rate", "ContinuousReplay", "None or a number > 0", rate)
        self.server = server
        self.rows = matrix
        self.prefix = prefix
        self.rate = rate
        self.timeout_s = timeout_s
        self._answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> ContinuousReplay:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start sending (in a daemon thread)."""
        self._thread = threading.Thread(target=self._run, name="continuous-replay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sending and wait for the request in flight; idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def count(self) -> int:
        """Requests answered (or failed) so far."""
        with self._lock:
            return len(self._answers)

    def answers(self) -> list[Answer]:
        """A copy of every answer so far, in the order they came."""
        with self._lock:
            return list(self._answers)

    def wait_for(self, n: int, *, timeout_s: float = 300.0) -> None:
        """Block until ``n`` requests were answered; ServerError if the sender died or
        ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        while self.count < n:
            if self._error is not None:
                raise ServerError(f"the replay stopped: {self._error}") from self._error
            if self._thread is None or not self._thread.is_alive():
                raise ServerError(f"the replay is not running ({self.count} of {n} requests)")
            if time.monotonic() > deadline:
                raise ServerError(
                    f"only {self.count} of {n} requests were answered in {timeout_s:.0f} s"
                )
            time.sleep(0.05)

    def _run(self) -> None:
        try:
            self._send_until_stopped()
        except BaseException as exc:  # kept for wait_for: a thread's error is otherwise lost
            self._error = exc

    def _send_until_stopped(self) -> None:
        path = f"/v2/models/{self.server.endpoint}/infer"
        headers = {"Content-Type": "application/json"}
        connection: http.client.HTTPConnection | None = None
        gap = 0.0 if self.rate is None else 1.0 / self.rate
        n = 0
        due = time.monotonic()
        while not self._stop.is_set():
            if gap:
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                # a slow answer delays the next request, it never causes a burst to catch up
                due = max(due + gap, time.monotonic())
            request_id = f"{self.prefix}-{n:07d}"
            body = _v2_body(request_id, self.rows[n % len(self.rows)][None, :])
            if connection is None:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", self.server.port, timeout=self.timeout_s
                )
            try:
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
                status, answer = response.status, response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = None
                status, answer = 0, b""
            self._keep(request_id, status, answer)
            n += 1
        if connection is not None:
            connection.close()

    def _keep(self, request_id: str, status: int, answer: bytes) -> None:
        version = score = None
        if status == 200:
            decoded = json.loads(answer)
            version = int(decoded["model_version"])
            score = float(decoded["outputs"][0]["data"][0])
        with self._lock:
            self._answers.append(Answer(request_id, time.time(), status, version, score))
