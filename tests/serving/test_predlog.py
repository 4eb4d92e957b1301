"""The prediction log on a real folder: rotation, short and failing writes, close, the fault.

Short and failing writes cannot be provoked on a local file system, so those tests replace
``os.write`` inside the log's module (and only there) with one that writes less or fails.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shipyard.serving import predlog
from shipyard.serving.predlog import DROP_RECORD_ENV, PredictionLog, PredictionLogClosedError


def _record(i: int) -> dict[str, Any]:
    return {"request_id": f"r-{i}", "version": 1, "inputs": [[float(i)] * 4], "outputs": [0.5]}


def _lines(folder: Path) -> list[dict[str, Any]]:
    """Every record on disk, oldest segment first; a line that does not parse fails the test."""
    records = []
    for path in sorted(folder.glob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    return records


async def _commit_all(log: PredictionLog, ids: range) -> list[BaseException | None]:
    """Commit records concurrently (one group per loop turn); each commit's outcome."""
    results = await asyncio.gather(*(log.commit(_record(i)) for i in ids), return_exceptions=True)
    return list(results)


def test_segments_rotate_and_every_record_lands_once(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "w1", segment_bytes=300)

    async def run() -> None:
        for i in range(12):  # one group per record: the log rotates between groups
            await log.commit(_record(i))

    asyncio.run(run())
    log.close()
    assert len(list(tmp_path.glob("*.jsonl"))) >= 4
    assert [r["request_id"] for r in _lines(tmp_path)] == [f"r-{i}" for i in range(12)]


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls = []

    def short_write(fd: int, data: Any) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data[:7]))  # the kernel may write less than asked

    monkeypatch.setattr(predlog.os, "write", short_write)
    log = PredictionLog(tmp_path, "w1")
    outcomes = asyncio.run(_commit_all(log, range(5)))
    log.close()
    assert outcomes == [None] * 5 and len(calls) > 5
    assert [r["request_id"] for r in _lines(tmp_path)] == [f"r-{i}" for i in range(5)]


def _failing(after: int) -> Callable[[int, Any], int]:
    """An os.write that writes ``after`` bytes of its first call, then fails with ENOSPC."""
    real_write = os.write
    state = {"calls": 0}

    def write(fd: int, data: Any) -> int:
        state["calls"] += 1
        if state["calls"] == 1 and after:
            return real_write(fd, bytes(data[:after]))
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


@pytest.mark.parametrize("torn_bytes", [0, 30])
def test_a_failed_write_fails_its_requests_and_loses_nothing_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torn_bytes: int
) -> None:
    log = PredictionLog(tmp_path, "w1")

    async def run() -> tuple[list[BaseException | None], list[BaseException | None]]:
        await log.commit(_record(0))
        monkeypatch.setattr(predlog.os, "write", _failing(torn_bytes))
        failed = await _commit_all(log, range(1, 4))
        monkeypatch.undo()  # the disk has room again
        recovered = await _commit_all(log, range(4, 6))
        return failed, recovered

    failed, recovered = asyncio.run(run())
    log.close()
    assert all(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in failed)
    assert recovered == [None, None]
    folder = tmp_path
    # every acknowledged record parses, even after a line torn by the failure
    parsed = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                parsed.append(json.loads(line)["request_id"])
            except json.JSONDecodeError:
                assert torn_bytes, f"unparseable line without a torn write: {line!r}"
    assert {"r-0", "r-4", "r-5"} <= set(parsed)
    assert not {"r-1", "r-2", "r-3"} & set(parsed)  # failed requests were never acknowledged


def test_close_resolves_every_waiting_request(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "w1")

    async def run() -> None:
        tasks = [asyncio.ensure_future(log.commit(_record(i))) for i in range(3)]
        await asyncio.sleep(0)  # the commits are queued; their group is not written yet
        waiting = list(log._waiters)  # what a shutdown must not leave hanging
        assert len(waiting) == 3 and not any(w.done() for w in waiting)
        log.close()
        assert all(w.done() for w in waiting)  # at once, without another loop turn
        assert await asyncio.gather(*tasks) == [None, None, None]
        with pytest.raises(PredictionLogClosedError):
            await log.commit(_record(9))

    asyncio.run(run())
    assert [r["request_id"] for r in _lines(tmp_path)] == ["r-0", "r-1", "r-2"]


def test_close_fails_waiting_requests_when_their_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = PredictionLog(tmp_path, "w1")

    async def run() -> list[BaseException | None]:
        tasks = [asyncio.ensure_future(log.commit(_record(i))) for i in range(2)]
        await asyncio.sleep(0)
        monkeypatch.setattr(predlog.os, "write", _failing(0))
        log.close()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    outcomes = asyncio.run(run())
    assert all(isinstance(e, OSError) for e in outcomes)


def test_the_test_only_fault_drops_exactly_the_named_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DROP_RECORD_ENV, "2")
    log = PredictionLog(tmp_path, "w1")
    monkeypatch.delenv(DROP_RECORD_ENV)  # read once, when the log is created

    async def run() -> None:
        for i in range(4):
            await log.commit(_record(i))  # every commit returns: the loss is silent

    asyncio.run(run())
    log.close()
    assert [r["request_id"] for r in _lines(tmp_path)] == ["r-0", "r-2", "r-3"]
    assert PredictionLog(tmp_path / "other", "w2")._drop_at == 0
