"""Compaction of the prediction log into Parquet, on real segments written by PredictionLog.

The crash tests run :func:`compact` in a child process that stops at a named step
(``TEST_ONLY_COMPACT_PAUSE_AT``), kill it there with SIGKILL, and check that every record is
read exactly once: while it is stopped, after the kill, and after the next compaction.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shipyard.errors import SchemaError
from shipyard.monitoring.logstore import (
    PAUSE_ENV,
    STEPS,
    closed_segments,
    compact,
    parquet_folder,
    predictions,
    query,
)
from shipyard.serving.predlog import PredictionLog, log_folder
from shipyard.workspace import Workspace

DAY = 86_400.0
T0 = datetime(2026, 11, 20, tzinfo=UTC).timestamp()


def _record(i: int, endpoint: str = "fraud") -> dict[str, Any]:
    return {
        "request_id": f"{endpoint}-{i}",
        "time": T0 + i * DAY / 10,  # ten records a day
        "endpoint": endpoint,
        "model": "fraud-model",
        "version": 1 + i % 2,
        "arm": "champion",
        "routing_key": None,
        "protocol": "v2",
        "inputs": [[float(i), 2.5]],
        "outputs": [0.25],
        "latency_ms": 1.5,
        **({"out_of_range": ["amount"]} if i % 7 == 0 else {}),
    }


def _write(folder: Path, worker: str, ids: range, endpoint: str = "fraud") -> None:
    """Commit records through a real PredictionLog; small segments make it rotate often."""
    log = PredictionLog(folder, worker, segment_bytes=2_000)

    async def run() -> None:
        for i in ids:  # one group per record: the log may rotate after each
            await log.commit(_record(i, endpoint))

    asyncio.run(run())
    log.close()


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace.init(tmp_path / "ws")


@pytest.fixture
def logged(workspace: Workspace) -> list[str]:
    """60 records of 'fraud' over six days from two workers; each keeps an open segment."""
    folder = log_folder(workspace, "fraud")
    _write(folder, "w101", range(0, 30))
    _write(folder, "w102", range(30, 60))
    return [f"fraud-{i}" for i in range(60)]


def _ids(workspace: Workspace, endpoint: str = "fraud") -> Counter[str]:
    return Counter(predictions(workspace, endpoint).column("request_id").to_pylist())


def _assert_exactly_once(workspace: Workspace, expected: list[str]) -> None:
    ids = _ids(workspace)
    doubled = sorted(i for i, n in ids.items() if n > 1)
    missing = sorted(set(expected) - set(ids))
    assert not doubled and not missing, f"doubled {doubled[:5]}, missing {missing[:5]}"
    assert ids == Counter(expected)


class TestClosedSegments:
    def test_every_segment_but_each_workers_newest_is_closed(
        self, logged: list[str], workspace: Workspace
    ) -> None:
        folder = log_folder(workspace, "fraud")
        segments = sorted(folder.glob("*.jsonl"))
        closed = closed_segments(folder)
        newest = {w: max(p.name for p in segments if f"-{w}-" in p.name) for w in ("w101", "w102")}
        assert len(segments) > 6
        assert set(closed) == {p for p in segments if p.name not in newest.values()}

    def test_a_restarted_worker_name_leaves_its_newest_open(self, tmp_path: Path) -> None:
        # pid reuse: a new log named w7 starts again at sequence 1, with a later stamp
        for name in (
            "20261120T100000-w7-0001",
            "20261120T100000-w7-0002",
            "20261120T110000-w7-0001",
        ):
            (tmp_path / f"{name}.jsonl").write_text("")
        (tmp_path / "notes.jsonl").write_text("")
        closed = [p.name for p in closed_segments(tmp_path)]
        assert closed == ["20261120T100000-w7-0001.jsonl"]

    def test_workers_with_one_pid_on_two_hosts_keep_their_own_newest_open(
        self, tmp_path: Path
    ) -> None:
        """Replicas on two machines share one log folder (a shared filesystem): the same pid
        on both must not make one host's open segment look closed to compaction."""
        from shipyard.serving.predlog import worker_name

        here = worker_name()
        assert here.startswith("w") and here.endswith(f"-{os.getpid()}")
        other = f"wother-host.lan-{os.getpid()}"
        names = [f"20261120T100000-{here}-0001", f"20261120T100000-{here}-0002"]
        names += [f"20261120T100500-{other}-{seq:04d}" for seq in (1, 2, 3)]
        for name in names:
            (tmp_path / f"{name}.jsonl").write_text("")
        closed = [p.name for p in closed_segments(tmp_path)]
        # this host's 0002 is still open though the other host has rotated past it
        assert closed == [f"{n}.jsonl" for n in (names[0], names[2], names[3])]


class TestCompaction:
    def test_closed_segments_move_into_day_partitions(
        self, logged: list[str], workspace: Workspace
    ) -> None:
        folder = log_folder(workspace, "fraud")
        closed = closed_segments(folder)
        _assert_exactly_once(workspace, logged)

        result = compact(workspace, "fraud")

        assert result.segments == len(closed) and result.skipped_lines == 0
        assert not any(p.exists() for p in closed)
        assert len(list(folder.glob("*.jsonl"))) == 2  # the open segments stay
        target = parquet_folder(workspace, "fraud")
        days = sorted(p.name for p in target.glob("day=*"))
        assert days == [f"day=2026-11-{d}" for d in range(20, 26)]
        in_parquet = pa.concat_tables(pq.read_table(p) for p in result.parts)
        assert in_parquet.num_rows == result.records > 40
        for part in result.parts:  # each part holds only its own day
            times = pq.read_table(part).column("time").to_pylist()
            expected = part.parent.name.removeprefix("day=")
            assert {datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d") for t in times} == {
                expected
            }
        _assert_exactly_once(workspace, logged)

    def test_the_parquet_schema_is_typed_and_values_survive(
        self, logged: list[str], workspace: Workspace
    ) -> None:
        before = predictions(workspace, "fraud").sort_by("request_id")
        result = compact(workspace, "fraud")
        schema = pq.read_schema(result.parts[0])
        assert schema.field("time").type == pa.float64()
        assert schema.field("version").type == pa.int32()
        assert schema.field("inputs").type == pa.list_(pa.list_(pa.float64()))
        assert schema.field("outputs").type == pa.list_(pa.float64())
        assert schema.field("out_of_range").type == pa.list_(pa.string())
        after = predictions(workspace, "fraud").sort_by("request_id")
        assert after.to_pylist() == before.to_pylist()
        row = next(r for r in after.to_pylist() if r["request_id"] == "fraud-7")
        assert row["inputs"] == [[7.0, 2.5]] and row["out_of_range"] == ["amount"]
        assert row["stale_features"] is None and row["events"] is None

    def test_a_rerun_moves_nothing_and_new_segments_join(
        self, logged: list[str], workspace: Workspace
    ) -> None:
        compact(workspace, "fraud")
        assert compact(workspace, "fraud").segments == 0
        _write(log_folder(workspace, "fraud"), "w103", range(60, 90))  # a later worker
        second = compact(workspace, "fraud")
        assert second.segments > 0
        _assert_exactly_once(workspace, [f"fraud-{i}" for i in range(90)])

    def test_every_endpoint_when_none_is_named(self, workspace: Workspace) -> None:
        for endpoint in ("fraud", "credit"):
            _write(log_folder(workspace, endpoint), "w1", range(20), endpoint)
        closed = sum(len(closed_segments(log_folder(workspace, e))) for e in ("fraud", "credit"))
        result = compact(workspace)
        assert result.segments == closed > 2
        for endpoint in ("fraud", "credit"):
            assert closed_segments(log_folder(workspace, endpoint)) == []
            assert parquet_folder(workspace, endpoint).is_dir()
            assert _ids(workspace, endpoint) == Counter(f"{endpoint}-{i}" for i in range(20))

    def test_a_torn_line_is_skipped_and_counted(
        self, logged: list[str], workspace: Workspace
    ) -> None:
        first = closed_segments(log_folder(workspace, "fraud"))[0]
        with open(first, "ab") as segment:  # what a write cut short leaves, then a fresh line
            segment.write(b'{"request_id": "torn", "time": 1.0, "inp\n')
        assert "torn" not in _ids(workspace)
        result = compact(workspace, "fraud")
        assert result.skipped_lines == 1
        _assert_exactly_once(workspace, logged)

    def test_a_value_that_does_not_fit_the_schema_stops_compaction(
        self, logged: list[str], workspace: Workspace
    ) -> None:
        first = closed_segments(log_folder(workspace, "fraud"))[0]
        original = first.read_bytes()
        with open(first, "ab") as segment:  # valid JSON, but a categorical input
            segment.write(b'{"request_id": "odd", "time": 1.0, "inputs": [["web", 2.0]]}\n')
        with pytest.raises(
            SchemaError,
            match=r"line 11: Expected `float \| null`, got `str` - at `\$\.inputs\[0\]\[0\]`",
        ):
            compact(workspace, "fraud")
        assert first.exists() and not list(parquet_folder(workspace, "fraud").rglob("*.parquet*"))
        _assert_exactly_once(workspace, [*logged, "odd"])
        first.write_bytes(original + b'{"time": 1.0}\n')  # a record without its request id
        with pytest.raises(SchemaError, match="missing required field `request_id`"):
            compact(workspace, "fraud")

    def test_an_empty_log_compacts_and_reads_as_nothing(self, workspace: Workspace) -> None:
        assert compact(workspace, "nothing").segments == 0
        assert compact(workspace).segments == 0
        log_folder(workspace, "idle").mkdir(parents=True)
        (log_folder(workspace, "idle") / "20261120T100000-w1-0001.jsonl").write_text("")
        (log_folder(workspace, "idle") / "20261120T100000-w1-0002.jsonl").write_text("")
        assert compact(workspace, "idle").segments == 1
        table = predictions(workspace, "idle")
        assert table.num_rows == 0 and "request_id" in table.column_names


class TestReading:
    def test_a_time_window_reads_compacted_and_open_records(
        self, logged: list[str], workspace: Workspace
    ) -> None:
        compact(workspace, "fraud")
        start = datetime(2026, 11, 21, tzinfo=UTC)
        window = predictions(workspace, "fraud", start=start, end=start.timestamp() + 2 * DAY)
        assert sorted(window.column("request_id").to_pylist()) == sorted(
            f"fraud-{i}" for i in range(10, 30)
        )
        naive = predictions(workspace, "fraud", start=datetime(2026, 11, 25))
        assert naive.num_rows == 10

    def test_sql_over_the_view(self, logged: list[str], workspace: Workspace) -> None:
        compact(workspace, "fraud")
        frame = query(
            workspace,
            "fraud",
            "SELECT version, count(*) AS n FROM predictions GROUP BY 1 ORDER BY 1",
        )
        assert frame["n"].tolist() == [30, 30]

    def test_the_check_sees_a_record_read_twice(
        self, logged: list[str], workspace: Workspace
    ) -> None:
        # the exactly-once check can fail: put a compacted segment's records back
        folder = log_folder(workspace, "fraud")
        first = closed_segments(folder)[0]
        saved = first.read_bytes()
        compact(workspace, "fraud")
        (folder / "20000101T000000-w9-0001.jsonl").write_bytes(saved)
        with pytest.raises(AssertionError, match="doubled"):
            _assert_exactly_once(workspace, logged)


class TestConcurrency:
    def test_a_live_worker_keeps_appending_while_compaction_runs(
        self, workspace: Workspace
    ) -> None:
        log = PredictionLog(log_folder(workspace, "fraud"), "w5", segment_bytes=2_000)

        moved = 0

        async def run() -> None:
            nonlocal moved
            for start in range(0, 200, 20):
                compaction = asyncio.ensure_future(asyncio.to_thread(compact, workspace, "fraud"))
                for i in range(start, start + 20):
                    await log.commit(_record(i))
                moved += (await compaction).segments
                _assert_exactly_once(workspace, [f"fraud-{i}" for i in range(start + 20)])

        asyncio.run(run())
        log.close()
        compact(workspace, "fraud")
        assert moved > 5
        assert len(list(log_folder(workspace, "fraud").glob("*.jsonl"))) == 1  # the last one
        _assert_exactly_once(workspace, [f"fraud-{i}" for i in range(200)])

    def test_reads_while_another_process_compacts_see_each_record_once(
        self, workspace: Workspace
    ) -> None:
        for worker in range(4):
            ids = range(worker * 100, worker * 100 + 100)
            _write(log_folder(workspace, "fraud"), f"w{worker}", ids)
        expected = [f"fraud-{i}" for i in range(400)]
        reads = 0
        # one segment per batch: dozens of commits, renames and deletions to read across
        with _start_compaction(workspace, None, batch_bytes=1) as child:
            while child.poll() is None or reads == 0:
                _assert_exactly_once(workspace, expected)
                reads += 1
        assert child.returncode == 0 and reads > 1
        assert closed_segments(log_folder(workspace, "fraud")) == []


def _start_compaction(
    workspace: Workspace, step: str | None, batch_bytes: int = 4_000
) -> subprocess.Popen[str]:
    code = (
        "import sys; from shipyard.workspace import Workspace; "
        "from shipyard.monitoring.logstore import compact; "
        "compact(Workspace(sys.argv[1]), 'fraud', batch_bytes=int(sys.argv[2]))"
    )
    env = {**os.environ, PAUSE_ENV: step or ""}
    return subprocess.Popen(
        [sys.executable, "-c", code, str(workspace.root), str(batch_bytes)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


class TestCrash:
    @pytest.mark.parametrize("step", STEPS)
    def test_a_kill_at_any_step_loses_and_doubles_nothing(
        self, step: str, logged: list[str], workspace: Workspace
    ) -> None:
        closed = closed_segments(log_folder(workspace, "fraud"))
        with _start_compaction(workspace, step) as child:
            try:
                assert child.stdout is not None
                assert child.stdout.readline().strip() == f"paused at {step}"
                _assert_exactly_once(workspace, logged)  # during the compaction
                os.kill(child.pid, signal.SIGKILL)
            finally:
                child.kill()
        assert child.returncode == -signal.SIGKILL
        _assert_exactly_once(workspace, logged)  # after the crash

        result = compact(workspace, "fraud")

        _assert_exactly_once(workspace, logged)
        assert not any(p.exists() for p in closed)
        target = parquet_folder(workspace, "fraud")
        assert list(target.glob("day=*/.*.tmp")) == [] and list(target.glob("_journal/*")) == []
        assert result.recovered == (step not in ("part-written", "parts-written"))

    def test_the_crash_setup_spans_several_batches_and_days(
        self, logged: list[str], workspace: Workspace
    ) -> None:
        # batches of ~4 kB: several batches, several days, so every step happens mid-way
        result = compact(workspace, "fraud", batch_bytes=4_000)
        assert result.segments > 2 and len({p.parent for p in result.parts}) > 1


class TestEventTime:
    """The client's event time (a replay's own clock) is carried through compaction."""

    def test_event_time_survives_compaction_and_absent_stays_null(
        self, workspace: Workspace
    ) -> None:
        folder = log_folder(workspace, "fraud")
        log = PredictionLog(folder, "w1", segment_bytes=2_000)

        async def run() -> None:
            for i in range(30):
                extra = {"event_time": 1_525_132_800.0 + i * 3600} if i % 2 == 0 else {}
                await log.commit({**_record(i), **extra})

        asyncio.run(run())
        log.close()
        before = {
            r["request_id"]: r["event_time"] for r in predictions(workspace, "fraud").to_pylist()
        }
        result = compact(workspace, "fraud")
        assert result.records > 0
        assert pq.read_schema(result.parts[0]).field("event_time").type == pa.float64()
        after = {
            r["request_id"]: r["event_time"] for r in predictions(workspace, "fraud").to_pylist()
        }
        assert after == before
        assert after["fraud-4"] == 1_525_132_800.0 + 4 * 3600
        assert after["fraud-5"] is None

    def test_parts_written_before_event_time_existed_read_it_as_null(
        self, workspace: Workspace
    ) -> None:
        old = [_record(i) for i in range(3)]  # a part from a compaction without the column
        day = parquet_folder(workspace, "fraud") / "day=2026-11-20"
        day.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(old), day / "part-0000000000001-old.parquet")
        only_old = predictions(workspace, "fraud")
        assert "event_time" in only_old.column_names
        assert only_old.column("event_time").to_pylist() == [None] * 3
        log = PredictionLog(log_folder(workspace, "fraud"), "w1")

        async def run() -> None:
            await log.commit({**_record(3), "event_time": 12.5})

        asyncio.run(run())
        log.close()
        times = {
            r["request_id"]: r["event_time"] for r in predictions(workspace, "fraud").to_pylist()
        }
        assert times == {"fraud-0": None, "fraud-1": None, "fraud-2": None, "fraud-3": 12.5}
