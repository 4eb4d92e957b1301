"""Helpers shared by the benchmarks: one case per child process, peak memory, tables."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORK = Path(__file__).parent / "_work"


def run_case(script: str, case: str, *args: str) -> dict[str, Any]:
    """Run ``script --case CASE`` in a fresh interpreter; return the JSON it printed last."""
    done = subprocess.run(
        [sys.executable, script, "--case", case, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(work: Callable[[], dict[str, Any] | None]) -> None:
    """Time ``work`` in this process and print its result with seconds and peak RSS (MiB)."""
    started = time.perf_counter()
    extra = work() or {}
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": round(seconds, 3), "peak_rss_mib": round(peak_mib, 1), **extra}))


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Render rows as a GitHub markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
