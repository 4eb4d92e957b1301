"""Reliability under load: policy changes, hot swaps, killed workers, a killed server.

The load comes from client threads on 127.0.0.1 with keep-alive connections, bounded in time.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from shipyard.serving.policy import Arm, TrafficPolicy, rollback_policy, set_policy
from shipyard.serving.predlog import query
from tests.serving.conftest import Server, start_server


@dataclass
class Load:
    """Client threads sending requests until stopped; what they saw."""

    server: Server
    body: bytes
    threads: int = 4
    statuses: list[int] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    connection_errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, index: int) -> None:
        connection: http.client.HTTPConnection | None = None
        sent = 0
        while not self._stop.is_set():
            request_id = f"load-{index}-{sent}"
            sent += 1
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(
                        "127.0.0.1", self.server.port, timeout=10
                    )
                connection.request(
                    "POST",
                    "/invocations",
                    self.body,
                    {"Content-Type": "application/json", "X-Request-Id": request_id},
                )
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                with self._lock:
                    self.connection_errors += 1
                if connection is not None:
                    connection.close()
                connection = None
                time.sleep(0.05)
                continue
            with self._lock:
                self.statuses.append(response.status)
                if response.status == 200:
                    self.answered.append(request_id)
        if connection is not None:
            connection.close()

    def __enter__(self) -> Load:
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, args=(i,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=15)

    def count(self) -> int:
        with self._lock:
            return len(self.statuses)


def _body(rows: pd.DataFrame) -> bytes:
    return json.dumps({"inputs": rows.head(2).to_numpy().tolist()}).encode()


def test_policy_changes_rollback_and_hot_swap_under_load_answer_everything(
    serving_workspace: Any, rows: pd.DataFrame, tmp_path: Path
) -> None:
    ws, _ = serving_workspace
    server = start_server(ws, "fraud@champion", tmp_path, "--reset")
    try:
        with Load(server, _body(rows)) as load:
            time.sleep(1.5)
            set_policy(
                ws, TrafficPolicy("fraud", "fraud", (Arm(1, 80), Arm(2, 20))), reason="canary"
            )
            time.sleep(2.5)
            set_policy(
                ws, TrafficPolicy("fraud", "fraud", (Arm(2, 1),), shadows=(1,)), reason="swap to v2"
            )
            time.sleep(2.5)
            rollback_policy(ws, "fraud", reason="back")
            time.sleep(1.0)
            assert server.request("POST", "/admin/reload", b"")[0] == 200
            time.sleep(2.0)
        assert load.count() > 200
        assert set(load.statuses) == {200}, f"non-2xx answers: {sorted(set(load.statuses))}"
        assert load.connection_errors == 0
        versions = query(
            ws, "fraud", "SELECT DISTINCT version FROM predictions WHERE arm = 'primary'"
        )
        assert set(versions["version"]) == {1, 2}  # both served during the run
    finally:
        set_policy(ws, TrafficPolicy("fraud", "fraud", (Arm(1, 1),)), reason="reset")
        server.stop()


def test_a_killed_worker_is_replaced_and_the_other_keeps_serving(
    serving_workspace: Any, rows: pd.DataFrame, tmp_path: Path
) -> None:
    ws, _ = serving_workspace
    server = start_server(ws, "fraud@champion", tmp_path)
    try:
        before = server.workers()
        with Load(server, _body(rows)) as load:
            time.sleep(1.0)
            os.kill(before[0], signal.SIGKILL)
            killed_at = load.count()
            time.sleep(8.0)  # the supervisor checks its workers every few seconds
            after_kill = load.count() - killed_at
        assert after_kill > 100  # the surviving worker kept answering
        assert set(load.statuses) == {200}  # no error status, only dropped connections
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            current = server.workers()
            if len(current) == 2 and before[0] not in current:
                break
            time.sleep(0.5)
        assert len(server.workers()) == 2 and before[0] not in server.workers()
        assert server.request("GET", "/v2/health/ready")[0] == 200
    finally:
        server.stop()


def test_kill_9_of_the_whole_server_loses_no_answered_prediction(
    serving_workspace: Any, rows: pd.DataFrame, tmp_path: Path
) -> None:
    ws, _ = serving_workspace
    server = start_server(ws, "fraud@champion", tmp_path)
    with Load(server, _body(rows), threads=6) as load:
        time.sleep(3.0)
        os.killpg(server.process.pid, signal.SIGKILL)  # supervisor and workers, mid-load
        server.process.wait()
        time.sleep(0.5)
    server.stop()
    answered = set(load.answered)
    assert len(answered) > 200
    logged = set(
        query(ws, "fraud", "SELECT request_id FROM predictions WHERE request_id LIKE 'load-%'")[
            "request_id"
        ]
    )
    missing = answered - logged
    assert not missing, (
        f"{len(missing)} answered request(s) missing from the log, e.g. {sorted(missing)[:3]}"
    )
