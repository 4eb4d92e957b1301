"""The audit trail: appends chain, verify names each kind of tampering, processes never fork it."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shipyard.errors import ParameterError, WorkspaceOutdatedError
from shipyard.governance.audit import (
    GENESIS,
    AuditEntry,
    Tampering,
    append,
    entries,
    entry_hash,
    record_compaction,
    record_threshold_change,
    transaction,
    verify,
    verify_prediction_logs,
)
from shipyard.integrity import file_sha256
from shipyard.monitoring.logstore import closed_segments, compact, parquet_folder
from shipyard.serving.predlog import log_folder
from shipyard.workspace import Workspace
from tests.monitoring.test_logstore import _start_compaction as start_compaction
from tests.monitoring.test_logstore import _write as write_segments

TABLE = "shipyard_registry_events"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str:
    """Every test here runs on SQLite and on PostgreSQL (the test id says which)."""
    return str(request.param)


def _trail(ws: Workspace, n: int = 6) -> list[AuditEntry]:
    """``n`` entries about two subjects, the way the registry and serving write them."""
    return [
        append(
            ws,
            kind="model" if i % 2 == 0 else "endpoint",
            name="credit",
            version=i + 1,
            action="promote" if i % 2 == 0 else "policy.set",
            reason=f"step {i + 1}",
            actor="alice",
            before={"version": i},
            after={"version": i + 1},
            details={"auc": 0.5 + i / 100, "notes": ["a", "b"]},
        )
        for i in range(n)
    ]


def _sql(ws: Workspace, *statements: str) -> None:
    """Tamper with the trail by hand, as someone with write access to the database would."""
    with ws.engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    ws.close()


def test_appends_are_numbered_and_chained(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path)
    written = _trail(ws, 4)
    stored = entries(ws)
    assert [e.sequence for e in stored] == [1, 2, 3, 4]
    assert stored[0].previous_hash == GENESIS
    for before, entry in itertools.pairwise(stored):
        assert entry.previous_hash == before.hash
    assert [e.hash for e in stored] == [e.hash for e in written]
    assert all(entry_hash(e.to_dict()) == e.hash for e in stored)  # what is read is what hashed
    assert stored[1].before == {"version": 1} and stored[1].after == {"version": 2}
    report = verify(ws)
    assert report.ok and report.entries == 4 and report.head == stored[-1].hash
    assert "intact: 4 entries" in report.describe()


def test_entries_filter_by_subject_kind_and_action(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path)
    _trail(ws, 4)
    append(ws, kind="model", name="other", action="register", reason="new")
    assert [e.sequence for e in entries(ws, name="credit", kind="endpoint")] == [2, 4]
    assert [e.sequence for e in entries(ws, action="register")] == [5]
    assert entries(ws, name="nobody") == []


def test_an_empty_trail_verifies(tmp_path: Path) -> None:
    report = verify(Workspace.init(tmp_path))
    assert report.ok and report.entries == 0 and report.head == GENESIS


def test_an_edited_entry_is_named(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path)
    _trail(ws)
    _sql(ws, f"UPDATE {TABLE} SET reason = 'nothing to see' WHERE sequence = 3")
    report = verify(ws)
    assert not report.ok and report.problem is not None
    assert report.problem.sequence == 3
    assert report.problem.tampering is Tampering.EDITED
    assert "entry 3" in report.describe() and "edited" in report.describe()


@pytest.mark.parametrize(
    ("column", "value"),
    [("actor", "'mallory'"), ("details", "'{\"auc\": 0.99}'"), ("at", "'2020-01-01 00:00:00'")],
)
def test_editing_any_column_is_detected(tmp_path: Path, column: str, value: str) -> None:
    ws = Workspace.init(tmp_path)
    _trail(ws)
    _sql(ws, f"UPDATE {TABLE} SET {column} = {value} WHERE sequence = 5")
    problem = verify(ws).problem
    assert problem is not None and (problem.sequence, problem.tampering) == (5, Tampering.EDITED)


def test_an_edit_with_a_recomputed_hash_is_named_by_the_next_entrys_link(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path)
    _trail(ws)
    forged = entries(ws)[1].to_dict() | {"reason": "forged"}
    _sql(
        ws,
        f"UPDATE {TABLE} SET reason = 'forged', hash = '{entry_hash(forged)}' WHERE sequence = 2",
    )
    problem = verify(ws).problem
    assert problem is not None and (problem.sequence, problem.tampering) == (2, Tampering.EDITED)
    assert "hash recomputed" in problem.message


def test_a_removed_entry_is_named(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path)
    _trail(ws)
    _sql(ws, f"DELETE FROM {TABLE} WHERE sequence = 4")
    problem = verify(ws).problem
    assert problem is not None and problem.tampering is Tampering.REMOVED
    assert problem.sequence == 5
    assert "entry 4 was removed" in problem.message


def test_removing_the_first_entry_is_detected(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path)
    _trail(ws)
    _sql(ws, f"DELETE FROM {TABLE} WHERE sequence = 1")
    problem = verify(ws).problem
    assert problem is not None and (problem.sequence, problem.tampering) == (2, Tampering.REMOVED)


def test_removing_the_last_entries_is_detected_against_a_kept_head(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path)
    _trail(ws)
    head = verify(ws).head
    append(ws, kind="model", name="credit", action="rollback", reason="later, honest")
    assert verify(ws, expected_head=head).ok  # entries appended since are fine
    _sql(ws, f"DELETE FROM {TABLE} WHERE sequence >= 6")
    assert verify(ws).ok  # a cut at the end leaves a valid chain: only the kept head shows it
    problem = verify(ws, expected_head=head).problem
    assert problem is not None and problem.tampering is Tampering.REMOVED


@pytest.mark.parametrize("forge_hash", [False, True])
def test_an_inserted_entry_is_named(tmp_path: Path, forge_hash: bool) -> None:
    """The unique sequence forces an inserter to renumber the entries after; even with a
    correctly computed hash for the new entry, the chain skips over it."""
    ws = Workspace.init(tmp_path)
    entries_ = _trail(ws)
    fake = {
        "sequence": 3,
        "kind": "model",
        "name": "credit",
        "version": 9,
        "action": "promote",
        "alias": "champion",
        "previous_version": None,
        "actor": "mallory",
        "reason": "approved",
        "details": {},
        "before": None,
        "after": None,
        "at": "2026-01-01T00:00:00",
        "previous_hash": entries_[1].hash if forge_hash else "f" * 64,
    }
    fake_hash = entry_hash(fake) if forge_hash else "e" * 64
    _sql(
        ws,
        f"UPDATE {TABLE} SET sequence = sequence + 100 WHERE sequence >= 3",
        f"UPDATE {TABLE} SET sequence = sequence - 99 WHERE sequence >= 100",
        f"INSERT INTO {TABLE} (sequence, kind, name, version, action, alias, actor, reason, "
        "details, at, previous_hash, hash) VALUES (3, 'model', 'credit', 9, 'promote', "
        f"'champion', 'mallory', 'approved', '{{}}', '2026-01-01 00:00:00', "
        f"'{fake['previous_hash']}', '{fake_hash}')",
    )
    problem = verify(ws).problem
    assert problem is not None and (problem.sequence, problem.tampering) == (3, Tampering.INSERTED)
    assert "mallory" not in problem.message and "promote model credit" in problem.message


def test_reordered_entries_are_named(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path)
    _trail(ws)
    _sql(
        ws,
        f"UPDATE {TABLE} SET sequence = -3 WHERE sequence = 3",
        f"UPDATE {TABLE} SET sequence = 3 WHERE sequence = 4",
        f"UPDATE {TABLE} SET sequence = 4 WHERE sequence = -3",
    )
    problem = verify(ws).problem
    assert problem is not None and (problem.sequence, problem.tampering) == (
        3,
        Tampering.REORDERED,
    )


def test_bad_input_names_the_field(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path)
    with pytest.raises(ParameterError, match=r"'kind' parameter of audit\.append"):
        append(ws, kind="", name="credit", action="gate", reason="x")
    with pytest.raises(ParameterError, match="'after' parameter of record_threshold_change"):
        record_threshold_change(ws, "credit", before=0.5, after="high", reason="x")  # type: ignore[arg-type]
    assert entries(ws) == []


def test_a_threshold_change_records_before_and_after(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path)
    entry = record_threshold_change(ws, "credit", before=0.5, after=0.42, reason="cost review")
    assert (entry.action, entry.before, entry.after) == (
        "threshold",
        {"threshold": 0.5},
        {"threshold": 0.42},
    )
    assert entries(ws, action="threshold")[0].actor == entry.actor != ""


def test_an_append_inside_a_failed_transaction_is_not_kept(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path)

    def change_that_fails() -> None:
        with transaction(ws) as conn:
            append(ws, kind="model", name="credit", action="gate", reason="x", connection=conn)
            raise RuntimeError("change failed")

    with pytest.raises(RuntimeError, match="change failed"):
        change_that_fails()
    assert entries(ws) == []
    append(ws, kind="model", name="credit", action="gate", reason="x")
    assert [e.sequence for e in entries(ws)] == [1] and verify(ws).ok


def _append_many(args: tuple[str, int, int]) -> int:
    root, worker, n = args
    ws = Workspace.open(root)
    for i in range(n):
        append(
            ws,
            kind="model",
            name=f"w{worker}",
            action="gate",
            reason=f"{i}",
            actor="test",
            details={"value": 0.1 + i / 7, "gate": "écart ≤ 0.1", "passed": i % 2 == 0},
        )
    ws.close()
    return n


def test_processes_appending_at_once_never_fork_the_chain(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path)
    ws.close()
    workers, per_worker = 4, 25
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        done = pool.map(_append_many, [(str(tmp_path), w, per_worker) for w in range(workers)])
    assert sum(done) == workers * per_worker
    stored = entries(ws)
    assert [e.sequence for e in stored] == list(range(1, workers * per_worker + 1))
    for w in range(workers):  # each process's entries in its own order
        assert [e.reason for e in stored if e.name == f"w{w}"] == [str(i) for i in range(25)]
    assert verify(ws).ok


def test_an_old_workspace_without_the_chain_columns_is_refused(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws")
    _sql(ws, *(f"ALTER TABLE {TABLE} DROP COLUMN {c}" for c in ("hash", "previous_hash")))
    with pytest.raises(WorkspaceOutdatedError, match=f"{TABLE} lacks column"):
        Workspace.open(tmp_path / "ws")


# -- prediction-log segments referenced by their hashes -----------------------------------


@pytest.fixture
def logged(tmp_path: Path) -> Workspace:
    """A workspace whose 'fraud' prediction log has many closed segments over six days."""
    ws = Workspace.init(tmp_path / "ws")
    folder = log_folder(ws, "fraud")
    write_segments(folder, "w101", range(0, 30))
    write_segments(folder, "w102", range(30, 60))
    return ws


def test_compaction_records_each_segments_and_parts_sha256(logged: Workspace) -> None:
    segments = {p.name: file_sha256(p) for p in closed_segments(log_folder(logged, "fraud"))}
    result = compact(logged, "fraud", batch_bytes=4_000)
    recorded = entries(logged, kind="predictions", action="logs.compact")
    assert len(recorded) > 1  # one entry per batch
    assert {e.name for e in recorded} == {"fraud"}
    assert sum(e.details["records"] for e in recorded) == result.records
    assert {k: v for e in recorded for k, v in e.details["segments"].items()} == segments
    folder = parquet_folder(logged, "fraud")
    parts = {k: v for e in recorded for k, v in e.details["parts"].items()}
    assert parts == {str(p.relative_to(folder)): file_sha256(p) for p in result.parts}
    assert verify(logged).ok
    report = verify_prediction_logs(logged)
    assert report.ok and report.parts_checked == len(result.parts)


def test_an_altered_removed_or_added_part_is_named(logged: Workspace) -> None:
    result = compact(logged, "fraud", batch_bytes=4_000)
    altered, removed = result.parts[0], result.parts[-1]
    table = pq.read_table(altered)
    outputs = pa.array([[0.0]] * table.num_rows, type=table.schema.field("outputs").type)
    pq.write_table(
        table.set_column(table.schema.get_field_index("outputs"), "outputs", outputs), altered
    )
    removed.unlink()
    added = altered.with_name("part-9999999999999-extra.parquet")
    pq.write_table(table, added)
    problems = verify_prediction_logs(logged, "fraud").problems
    folder = parquet_folder(logged, "fraud")
    assert sorted(problems) == sorted(
        [
            f"fraud: part {altered.relative_to(folder)} was altered (its SHA-256 is not the "
            "recorded one)",
            f"fraud: part {removed.relative_to(folder)} is on record but missing (removed)",
            f"fraud: part {added.relative_to(folder)} is not on record (added afterwards)",
        ]
    )
    assert verify(logged).ok  # the chain itself is intact: the parts are what changed


def test_a_batch_finished_after_a_crash_is_recorded_once(logged: Workspace) -> None:
    """Killed after its first batch was recorded but before its journal was deleted, the
    compaction's batch is finished by the next run without a second entry."""
    with start_compaction(logged, "segment-removed") as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "paused at segment-removed"
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
    assert len(entries(logged, kind="predictions")) == 1
    result = compact(logged, "fraud", batch_bytes=4_000)
    assert result.recovered == 1
    batches = [e.details["batch"] for e in entries(logged, kind="predictions")]
    assert len(batches) == len(set(batches)) > 1
    assert verify(logged).ok and verify_prediction_logs(logged).ok


def test_an_append_holds_the_write_lock_from_before_it_reads_the_head(tmp_path: Path) -> None:
    """While a transaction holds the head, no other writer can take it: SQLite's BEGIN
    IMMEDIATE write lock, PostgreSQL's advisory lock on the trail."""
    from sqlalchemy import create_engine, text

    from shipyard.governance.audit import _PG_LOCK_KEY

    ws = Workspace.init(tmp_path)
    with transaction(ws) as conn:
        append(ws, kind="model", name="credit", action="gate", reason="x", connection=conn)
        if conn.dialect.name == "sqlite":
            other = sqlite3.connect(ws.database_url[len("sqlite:///") :], timeout=0)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            other.close()
        else:
            engine = create_engine(ws.database_url)
            with engine.connect() as another:
                taken = text("SELECT pg_try_advisory_xact_lock(:key)")
                assert another.execute(taken, {"key": _PG_LOCK_KEY}).scalar() is False
            engine.dispose()
    assert [e.sequence for e in entries(ws)] == [1]


def test_recording_the_same_compaction_batch_twice_keeps_one_entry(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path)
    batch = {
        "batch": "0000000000001-abcd",
        "records": 3,
        "skipped_lines": 0,
        "sha256": {"segments": {"a.jsonl": "1" * 64}, "parts": {"day=x/part-1.parquet": "2" * 64}},
    }
    first = record_compaction(ws, "fraud", batch)
    assert record_compaction(ws, "fraud", batch) == first
    assert record_compaction(ws, "other", batch).sequence == 2  # another endpoint's batch
    assert len(entries(ws)) == 2


@pytest.mark.slow
def test_processes_appending_at_once_never_fork_the_chain_and_tampering_shows(
    tmp_path: Path,
) -> None:
    """The trail's lock (SQLite's write lock, PostgreSQL's advisory lock taken before the
    head is read) keeps four processes' 100 appends one unbroken chain; an edit shows."""
    from sqlalchemy import text

    ws = Workspace.init(tmp_path / "ws")
    workers, per_worker = 4, 25
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_append_many, [(str(ws.root), w, per_worker) for w in range(workers)])
    stored = entries(ws)
    assert [e.sequence for e in stored] == list(range(1, workers * per_worker + 1))
    assert verify(ws).ok
    with ws.engine.begin() as conn:
        conn.execute(text(f"UPDATE {TABLE} SET reason = 'x' WHERE sequence = 42"))
    problem = verify(ws).problem
    assert problem is not None and (problem.sequence, problem.tampering) == (42, Tampering.EDITED)
    ws.close()
