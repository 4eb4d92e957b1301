"""A client thread sending one-row requests to a test server until stopped."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pandas as pd


class Traffic:
    """One client thread sending one-row requests until stopped: statuses, versions, errors.

    A connection error counts in ``errors`` (and is no status); use it as a context manager,
    and ``wait_for(n)`` to let ``n`` answers arrive.
    """

    def __init__(self, port: int, rows: pd.DataFrame) -> None:
        self.port = port
        self.bodies = [json.dumps({"inputs": [row]}).encode() for row in rows.to_numpy().tolist()]
        self.statuses: list[int] = []
        self.versions: list[int] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        i = 0
        while not self._stop.is_set():
            body = self.bodies[i % len(self.bodies)]
            i += 1
            try:
                connection.request(
                    "POST", "/invocations", body, {"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                self.errors += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                continue
            self.statuses.append(response.status)
            self.versions.append(int(response.getheader("x-model-version") or 0))
        connection.close()

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def wait_for(self, n: int, deadline_s: float = 120) -> None:
        """Wait until ``n`` answers have arrived (fails the test after ``deadline_s``)."""
        deadline = time.monotonic() + deadline_s
        while len(self.statuses) < n:
            assert time.monotonic() < deadline, f"only {len(self.statuses)} answers"
            time.sleep(0.1)
