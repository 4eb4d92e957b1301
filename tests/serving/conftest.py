"""A real server: `shipyard serve` in its own process group on a free 127.0.0.1 port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shipyard.data.catalog import Dataset
from shipyard.features.fraud import BASELINE_VIEWS_REF
from shipyard.workspace import Workspace
from tests.conftest import small_fraud_models

PROTOCOL_START = "2018-05-06"
ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
"""Admin routes are refused unless a token is configured: the package server has this one."""


@dataclass
class Server:
    """A running `shipyard serve` and how to reach it."""

    workspace: Workspace
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    log_file: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def post_json(
        self, path: str, payload: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        status, head, body = self.request(
            "POST",
            path,
            json.dumps(payload).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )
        return status, head, json.loads(body)

    def workers(self) -> list[int]:
        """Live worker processes (not the resource tracker, not zombies)."""
        done = subprocess.run(
            ["ps", "-ww", "-o", "pid=,stat=,args=", "--ppid", str(self.process.pid)],
            capture_output=True,
            text=True,
        )
        pids = []
        for line in done.stdout.splitlines():
            pid, stat, args = line.split(None, 2)
            if "spawn_main" in args and not stat.startswith("Z"):
                pids.append(int(pid))
        return pids

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.log_file is not None:
            self.log_file.close()


def wait_for_revision(
    server: Server, revision: int, deadline_s: float = 120, workers: int = 2
) -> None:
    """Wait until every worker serves policy ``revision`` (20 answers in a row say so, from
    at least ``workers`` different worker processes: on a busy machine 20 answers can all
    come from one worker while the other still serves the old policy).

    Workers poll the policy every second and load new versions before switching; on a busy
    machine that takes a variable time, so tests wait for it instead of sleeping a guess.
    """
    deadline = time.monotonic() + deadline_s
    in_a_row = 0
    pids: set[int] = set()
    while in_a_row < 20 or len(pids) < workers:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the workers did not switch to policy revision {revision} "
                f"({len(pids)} of {workers} seen serving it)"
            )
        status, _, body = server.request("GET", "/admin/traffic", headers=ADMIN)
        answer = json.loads(body) if status == 200 else {}
        if answer.get("revision") == revision:
            in_a_row += 1
            pids.add(int(answer["worker"]))
        else:
            in_a_row, pids = 0, set()
            time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    ws: Workspace,
    target: str,
    tmp: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    guardrails: bool = False,
) -> Server:
    """``shipyard serve TARGET`` with 2 workers on a free port, ready.

    The guardrail watcher is off unless ``guardrails``: these servers share endpoints whose
    versions tests switch back and forth on purpose (a switch puts a version on probation,
    and a watcher could roll a test's policy back under it); the guardrail tests turn it on.
    """
    port = free_port()
    log = tmp / f"serve-{port}.log"
    log_file = log.open("wb")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    environ.update(env or {})
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shipyard.cli.main",
            "-w",
            str(ws.root),
            "serve",
            target,
            "--port",
            str(port),
            "--workers",
            "2",
            *(() if guardrails else ("--no-guardrails",)),
            *extra,
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=environ,
        start_new_session=True,  # its own process group: the tests can kill it whole
    )
    server = Server(ws, port, process, log, log_file)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            if server.request("GET", "/v2/health/ready")[0] == 200 and len(server.workers()) >= 2:
                # both workers must be ready: ask until two different pids answered
                return server
        except OSError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"server did not become ready: {log.read_text()[-3000:]}")


@pytest.fixture(scope="package")
def serving_workspace(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Workspace, Dataset]]:
    """fraud v1 = LightGBM (champion), v2 = a decision tree, both registered on small data."""
    root = tmp_path_factory.mktemp("serving") / "ws"
    ws, dataset = small_fraud_models(root, ("lightgbm", "decision_tree"))
    yield ws, dataset
    ws.close()


@pytest.fixture(scope="package")
def server(
    serving_workspace: tuple[Workspace, Dataset], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    ws, _ = serving_workspace
    running = start_server(
        ws,
        "fraud@champion",
        tmp_path_factory.mktemp("server"),
        env={"SHIPYARD_SERVING_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    yield running
    running.stop()


@pytest.fixture(scope="package")
def rows(serving_workspace: tuple[Workspace, Dataset]) -> Any:
    """Real feature rows of the evaluation window, in the model's column order."""
    from shipyard.features.fraud import BASELINE_FEATURES
    from shipyard.training.frames import Window, load_frame

    ws, dataset = serving_workspace
    frame = load_frame(
        ws,
        Window(
            dataset.name,
            dataset.version,
            "2018-06-01",
            "2018-06-03",
            BASELINE_VIEWS_REF,
        ),
    )
    return frame[list(BASELINE_FEATURES)].head(300)


def v2_body(matrix: Any, request_id: str, **parameters: Any) -> dict[str, Any]:
    """A V2 inference request of ``matrix``'s rows (FP64), with ``parameters`` if any."""
    payload: dict[str, Any] = {
        "id": request_id,
        "inputs": [
            {
                "name": "input",
                "shape": list(matrix.shape),
                "datatype": "FP64",
                "data": matrix.ravel().tolist(),
            }
        ],
    }
    if parameters:
        payload["parameters"] = parameters
    return payload
