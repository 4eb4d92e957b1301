"""Readiness that means ready: versions loaded and parity-checked, the prediction log writable.

The log folder is made read-only for real, not by a mock: tests run as root, which ignores
permission bits, so they set the file system's immutable attribute (``chattr +i``) on the
folder and its segments. Writes through already open descriptors then fail with EPERM, for
root too, as on a file system remounted read-only. Where ``chattr`` is unavailable or the
file system lacks the attribute (tmpfs, overlayfs), these tests are skipped and say why.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shipyard.errors import IntegrityError
from shipyard.monitoring.logstore import query
from shipyard.serving.backends import BackendReport, Candidate
from shipyard.serving.predlog import PredictionLog, log_folder
from shipyard.serving.runtime import _require_parity
from tests.serving.conftest import Server, start_server
from tests.serving.test_reliability import Load


def _immutable_unsupported(folder: Path) -> str | None:
    """Why ``chattr +i`` cannot make ``folder`` unwritable here, or None when it can."""
    if shutil.which("chattr") is None:
        return "no chattr on this machine"
    probe = folder / "chattr-probe"
    probe.write_text("x")
    try:
        done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, text=True)
        if done.returncode != 0:
            return f"chattr +i fails here: {done.stderr.strip()}"
        try:
            with probe.open("a") as f:
                f.write("y")
        except OSError:
            return None
        return "the immutable attribute does not stop writes here"
    finally:
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
        probe.unlink()


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """The folder and every file in it immutable (no write, create or delete) for the block."""
    paths = [str(folder), *(str(p) for p in folder.glob("*.jsonl"))]
    subprocess.run(["chattr", "+i", *paths], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *paths], check=True)


@pytest.fixture
def immutable_ok(tmp_path: Path) -> None:
    reason = _immutable_unsupported(tmp_path)
    if reason:
        pytest.skip(reason)


def _record(i: int) -> dict[str, Any]:
    return {"request_id": f"r-{i}", "version": 1, "inputs": [[1.0]], "outputs": [0.5]}


def test_a_read_only_folder_makes_the_log_unwritable_until_a_probe_succeeds(
    tmp_path: Path, immutable_ok: None
) -> None:
    folder = tmp_path / "log"
    log = PredictionLog(folder, "w1")

    async def run() -> tuple[bool, str | None, BaseException | None, bool, bool]:
        assert await log.probe() and log.writable
        await log.commit(_record(1))
        with read_only(folder):
            failed = (await asyncio.gather(log.commit(_record(2)), return_exceptions=True))[0]
            after_write = log.writable
            probed = await log.probe()
            reason = log.error
        recovered = await log.probe()
        await log.commit(_record(3))
        return after_write, reason, failed, probed, recovered

    after_write, reason, failed, probed, recovered = asyncio.run(run())
    log.close()
    assert isinstance(failed, PermissionError)  # EPERM, for root too
    assert not after_write and not probed
    assert reason is not None and str(folder) in reason
    assert recovered and log.writable
    segments = sorted(folder.glob("*.jsonl"))
    assert len(segments) == 2  # the probe that recovered opened a fresh segment
    logged = [json.loads(line)["request_id"] for p in segments for line in p.read_text().split()]
    assert logged == ["r-1", "r-3"]
    assert not list(folder.glob(".probe-*"))


def test_a_log_that_cannot_open_starts_unwritable_instead_of_failing(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # the log folder's path is a file: mkdir fails, for root too
    log = PredictionLog(blocked / "fraud", "w1")
    assert not log.writable and "fraud" in (log.error or "")

    async def commit() -> BaseException | None:
        return (await asyncio.gather(log.commit(_record(1)), return_exceptions=True))[0]

    assert isinstance(asyncio.run(commit()), OSError)
    assert not asyncio.run(log.probe())
    blocked.unlink()
    assert asyncio.run(log.probe()) and log.writable
    asyncio.run(log.commit(_record(2)))
    log.close()
    assert len(list((blocked / "fraud").glob("*.jsonl"))) == 1


def test_a_backend_that_failed_its_parity_check_is_refused() -> None:
    good = BackendReport("onnx", {"onnx": Candidate(1e5, 2e-7, "sha")})
    _require_parity("fraud", 1, good)
    _require_parity("fraud", 1, BackendReport("native", {"native": Candidate(5e4, 0.0)}))
    failed = BackendReport("onnx", {"onnx": Candidate(1e5, 3e-3, "sha", "parity failed")})
    unchecked = BackendReport("onnx", {})
    for report in (failed, unchecked):
        with pytest.raises(IntegrityError, match="has not passed its parity check"):
            _require_parity("fraud", 1, report)


def _ready(server: Server) -> tuple[int, dict[str, Any]]:
    status, _, body = server.request("GET", "/v2/health/ready")
    return status, json.loads(body)


def _wait_ready(server: Server, status: int, deadline_s: float = 60) -> dict[str, Any]:
    """Wait until 20 readiness answers in a row (both workers) have ``status``; the last body."""
    deadline = time.monotonic() + deadline_s
    in_a_row = 0
    body: dict[str, Any] = {}
    while in_a_row < 20:
        if time.monotonic() > deadline:
            raise AssertionError(f"readiness did not settle on {status}: {body}")
        got, body = _ready(server)
        in_a_row = in_a_row + 1 if got == status else 0
        if not in_a_row:
            time.sleep(0.1)
    return body


def test_a_read_only_log_folder_under_load_refuses_predictions_until_it_is_writable(
    serving_workspace: Any, rows: pd.DataFrame, tmp_path: Path, immutable_ok: None
) -> None:
    ws, _ = serving_workspace
    folder = log_folder(ws, "readonly")
    if folder.exists() and _immutable_unsupported(folder):
        pytest.skip(f"the workspace's file system: {_immutable_unsupported(folder)}")
    server = start_server(ws, "fraud@champion", tmp_path, "--endpoint", "readonly", "--reset")
    body = json.dumps({"inputs": rows.head(2).to_numpy().tolist()}).encode()
    try:
        assert _ready(server) == (200, {"ready": True})
        with Load(server, body) as load:
            time.sleep(1.0)
            before = len(load.statuses)
            with read_only(folder):
                reason = _wait_ready(server, 503)["reason"]
                settled = len(load.statuses)
                time.sleep(1.5)
                during = load.statuses[settled:]
                status, _, answer = server.post_json("/invocations", json.loads(body))
            _wait_ready(server, 200)
            recovered = len(load.statuses)
            time.sleep(1.5)
            after = load.statuses[recovered:]
        assert set(load.statuses) <= {200, 503}, sorted(set(load.statuses))
        assert load.connection_errors == 0
        assert set(load.statuses[:before]) == {200}
        assert during and set(during) == {503}  # both workers refuse: no unlogged answer
        assert "prediction log cannot be written" in reason and str(folder) in reason
        assert status == 503 and "refused rather than served unlogged" in answer["error"]
        assert after and set(after) == {200}
        logged = query(ws, "readonly", "SELECT request_id FROM predictions")["request_id"]
        missing = set(load.answered) - set(logged)
        assert not missing, f"{len(missing)} answered but not logged, e.g. {sorted(missing)[:3]}"
    finally:
        server.stop()
