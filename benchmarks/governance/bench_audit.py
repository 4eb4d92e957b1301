"""The audit trail's cost: chained appends against plain inserts, concurrent appenders, verify.

On a fresh SQLite workspace (WAL, the default):

- ``plain insert``: the row the registry wrote before the trail was chained (one committed
  INSERT of the same columns, no head read, no hash): the baseline;
- ``chained append, 1 process``: :func:`shipyard.governance.audit.append` (``BEGIN
  IMMEDIATE``, read the head, hash, insert, commit);
- ``chained append, 4 processes``: four processes appending at once (the chain stays
  contiguous; the table says whether it verified);
- ``verify``: recomputing every hash of the trail;
- ``segment hashing``: SHA-256 of the prediction-log bytes that compaction now hashes.

Run: ``.venv/bin/python benchmarks/governance/bench_audit.py [--entries N]``. Results:
``benchmarks/governance/results.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks._common import markdown_table

from shipyard.governance.audit import GENESIS, append, verify
from shipyard.workspace import Workspace

DETAILS = {"passed": True, "champion": 0.61, "challenger": 0.64, "n_days": 7, "n_boot": 200}


def _plain(root: str, n: int) -> float:
    from sqlalchemy import insert

    from shipyard.tables import registry_events as table

    ws = Workspace.open(root)
    started = time.perf_counter()
    for i in range(n):
        with ws.engine.begin() as conn:
            conn.execute(
                insert(table).values(
                    sequence=-(i + 1),  # out of the chain's range; the table is dropped after
                    kind="model",
                    name="credit",
                    version=1,
                    action="promote",
                    alias="champion",
                    previous_version=None,
                    actor="bench",
                    reason="plain",
                    details=DETAILS,
                    before=None,
                    after=None,
                    at=datetime.now(UTC).replace(tzinfo=None),
                    previous_hash=GENESIS,
                    hash=GENESIS,
                )
            )
    return time.perf_counter() - started


def _chained(args: tuple[str, int, str]) -> float:
    root, n, who = args
    ws = Workspace.open(root)
    started = time.perf_counter()
    for i in range(n):
        append(
            ws,
            kind="model",
            name="credit",
            version=1,
            action="gate",
            reason=f"{who} {i}",
            actor=who,
            details=DETAILS,
            before={"alias": "champion", "version": 1},
            after={"alias": "champion", "version": 2},
        )
    ws.close()
    return time.perf_counter() - started


def main() -> None:
    """Run every case and write results.md next to this script."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=2_000)
    args = parser.parse_args()
    n = args.entries
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plain_root = str(Workspace.init(Path(tmp) / "plain").root)
        seconds = _plain(plain_root, n)
        rows.append(_row("plain insert (baseline)", n, seconds))

        root = str(Workspace.init(Path(tmp) / "chain").root)
        seconds = _chained((root, n, "one"))
        rows.append(_row("chained append, 1 process", n, seconds))

        per = n // 4
        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            pool.map(_chained, [(root, per, f"w{k}") for k in range(4)])
        wall = time.perf_counter() - started
        report = verify(Workspace.open(root))
        rows.append(
            _row("chained append, 4 processes at once", 4 * per, wall)
            | {"note": f"chain of {report.entries} verified: {report.ok}"}
        )

        started = time.perf_counter()
        report = verify(Workspace.open(root))
        rows.append(
            _row(
                "verify (read + recompute every hash)",
                report.entries,
                time.perf_counter() - started,
            )
        )

        blob = os.urandom(64 << 20)
        started = time.perf_counter()
        hashlib.sha256(blob).hexdigest()
        seconds = time.perf_counter() - started
        rows.append(
            {
                "case": "SHA-256 of 64 MiB of segment bytes",
                "n": "64 MiB",
                "seconds": f"{seconds:.3f}",
                "per second": f"{64 / seconds:,.0f} MiB",
                "ms each": "",
            }
        )
    table = markdown_table(rows, ["case", "n", "seconds", "per second", "ms each", "note"])
    header = (
        f"# Audit trail cost\n\n{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores (shared), Python {platform.python_version()}, SQLite WAL on a "
        f"local disk, {datetime.now(UTC):%Y-%m-%d}.\n\n"
    )
    out = Path(__file__).with_name("results.md")
    out.write_text(header + table + "\n")
    print(header + table)


def _row(case: str, n: int, seconds: float) -> dict[str, str]:
    return {
        "case": case,
        "n": f"{n:,}",
        "seconds": f"{seconds:.2f}",
        "per second": f"{n / seconds:,.0f}",
        "ms each": f"{1000 * seconds / n:.2f}",
    }


if __name__ == "__main__":
    main()
