"""Benchmark: raw-event requests beside precomputed-feature requests on one Shipyard server.

The 500-tree LightGBM fraud model of the serving benchmark, served by `shipyard serve` with 2
workers; load from `wrk` on 127.0.0.1 (it shares the machine's 2 cores with the server).
In the same run and on the same server: one-row requests carrying the model's 15 features
(a constant body), and one-row requests carrying a raw transaction (TRANSACTION_ID,
TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT), generated per request by a Lua script: a
card drawn among 5,000 cards never seen before, a terminal drawn among the data set's, a
time advancing 1 ms per request from a day after the data set ends (every read of the
delayed terminal view is exact: it was fed up to the end of the data). Each raw event
updates its card's state in the online store and is read back; terminal risk is read.

Reported per online store (SQLite, and Redis with ``--redis``): requests/s, p50, p99,
non-2xx and the server's CPU, and the raw/precomputed ratio of requests/s.

Run from the repository root (needs `wrk`; `redis-server` for ``--redis``)::

    .venv/bin/python benchmarks/features/bench_raw_serving.py [--duration 10] [--redis]

The first run of the serving benchmark (or this one) simulates the data set and trains the
model into benchmarks/_work; this one feeds the online store from the data set first
(``materialize_online``), which takes a minute or two.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import WORK, markdown_table  # noqa: E402
from benchmarks.serving.bench_serving import (  # noqa: E402
    _ms,
    free_port,
    prepare_model,
    process_tree_cpu,
    stop,
    wait_ready,
)

RESULTS = Path(__file__).with_name("raw_serving_results.md")
CONNECTIONS = 64
CARDS = 5_000
EVENT = ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT"]

RAW_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local counter = 0
function init(args)
  math.randomseed(1000 + 7919 * tid)
end
request = function()
  counter = counter + 1
  -- both threads advance 1 ms per request from the same start: their clocks stay close
  local ms = counter
  local t = BASE + math.floor(ms / 1000)
  local stamp = os.date("!%Y-%m-%dT%H:%M:%S", t) .. string.format(".%03d", ms % 1000)
  local card = 10000000 + math.random(1, CARDS)
  local terminal = math.random(0, TERMINALS - 1)
  local amount = math.random(100, 20000) / 100
  local body = string.format(
    '{"dataframe_split": {"columns": COLUMNS, "data": [[%d, "%s", %d, %d, %.2f]]}}',
    tid * 1000000000 + counter, stamp, card, terminal, amount)
  return wrk.format(nil, nil, nil, body)
end
"""


def run_wrk(url: str, script: Path, duration: int, pgid: int) -> dict[str, Any]:
    """One wrk run of ``script`` at 64 connections; its requests/s, latency and CPU."""
    cpu_before = process_tree_cpu(pgid)
    done = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration}s", "--timeout", "10s", "--latency",
         "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    cpu = (process_tree_cpu(pgid) - cpu_before) / duration
    out = done.stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    assert found and p50 and p99, out
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "req_s": float(found.group(1)),
        "p50_ms": _ms(p50.group(1)),
        "p99_ms": _ms(p99.group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "server_cpu_cores": round(cpu, 2),
    }


def scripts(ws: Any, features: list[str], row: list[float], end: Any) -> dict[str, Path]:
    """The wrk scripts: a constant feature row, and generated raw events."""
    import pandas as pd

    from shipyard.data.catalog import get_dataset

    terminals = int(get_dataset(ws, "fraud").read(columns=["TERMINAL_ID"])["TERMINAL_ID"].max())
    precomputed = WORK / "wrk-raw-bench-features.lua"
    body = json.dumps({"dataframe_split": {"columns": features, "data": [row]}})
    precomputed.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    raw = WORK / "wrk-raw-bench-events.lua"
    base = int((pd.Timestamp(end).normalize() + pd.Timedelta(days=1)).timestamp())
    raw.write_text(
        RAW_LUA.replace("BASE", str(base))
        .replace("CARDS", str(CARDS))
        .replace("TERMINALS", str(terminals + 1))
        .replace("COLUMNS", json.dumps(EVENT).replace('"', '\\"'))
    )
    return {"precomputed features": precomputed, "raw event": raw}


def feed(ws: Any, redis_url: str | None) -> Any:
    """A fresh online state fed from the data set (as before going live); the data's end."""
    from shipyard.features.fraud import BASELINE_VIEWS
    from shipyard.features.materialize_online import fed_until, materialize_online
    from shipyard.features.online import RedisOnlineStore, SQLiteOnlineStore, online_store_path

    store = RedisOnlineStore(redis_url) if redis_url else SQLiteOnlineStore(online_store_path(ws))
    try:
        for view in BASELINE_VIEWS:
            store.drop_view(view.name)
        started = time.perf_counter()
        materialize_online(ws, BASELINE_VIEWS, store=store)
        print(f"online store fed in {time.perf_counter() - started:.0f} s", flush=True)
        return fed_until(store, BASELINE_VIEWS[-1])
    finally:
        store.close()


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--redis needs redis-server (apt-get install redis-server)")
    port = free_port()
    folder = tempfile.mkdtemp(prefix="bench-redis-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", folder],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    return process, f"redis://127.0.0.1:{port}/0"


def bench_store(
    ws: Any, version: int, store: str, redis_url: str | None, duration: int, features: list[str]
) -> list[dict[str, Any]]:
    from shipyard.features.fraud import BASELINE_VIEWS_REF
    from shipyard.training.frames import Window, load_frame

    end = feed(ws, redis_url)
    frame = load_frame(ws, Window("fraud", 1, "2018-09-01", "2018-09-03", BASELINE_VIEWS_REF))
    row = [float(v) for v in frame[features].iloc[0]]
    cases = scripts(ws, features, row, end)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    if redis_url:
        env.update(SHIPYARD_ONLINE_STORE="redis", SHIPYARD_REDIS_URL=redis_url)
    rows = serve_and_measure(ws, version, env, cases, duration, store)
    ratio = rows[1]["req_s"] / rows[0]["req_s"]
    rows[1]["raw / precomputed"] = f"{ratio:.0%}"
    return rows


def serve_and_measure(
    ws: Any,
    version: int,
    env: dict[str, str],
    cases: dict[str, Path],
    duration: int,
    label: str,
    endpoint: str = "bench-raw",
) -> list[dict[str, Any]]:
    """Start `shipyard serve` (from the source tree ``env`` puts first, if any), run each
    wrk script against it, stop it."""
    port = free_port()
    command = [
        sys.executable, "-m", "shipyard.cli.main", "-w", str(ws.root), "serve",
        f"fraud@{version}", "--endpoint", endpoint, "--reset", "--workers", "2",
        "--port", str(port),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    rows = []
    try:
        wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", process)
        url = f"http://127.0.0.1:{port}/invocations"
        for case, script in cases.items():
            run_wrk(url, script, 2, process.pid)  # warm-up
            measured = run_wrk(url, script, duration, process.pid)
            rows.append({"server (online store)": label, "request": case, **measured})
            print(
                f"{label:<24} {case:<22} {measured['req_s']:>9,.0f} req/s  p50 "
                f"{measured['p50_ms']:6.2f} ms  p99 {measured['p99_ms']:6.2f} ms  non-2xx "
                f"{measured['non_2xx']}  CPU {measured['server_cpu_cores']}",
                flush=True,
            )
    finally:
        stop(process)
    return rows


def baseline(
    ws: Any, version: int, source: Path, duration: int, rounds: int = 3
) -> list[dict[str, Any]]:
    """Precomputed-feature requests on a server run from ``source`` (e.g. a worktree of the
    commit before raw-event serving) and on this tree's, both up at once, measured in turns
    (``rounds`` each, the median kept): the hot path's cost, on a machine shared with others."""
    script = WORK / "wrk-raw-bench-features.lua"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    servers = []
    try:
        for label, path in (
            (f"{source.name} (baseline)", source / "src"),
            ("this tree", ROOT / "src"),
        ):
            port = free_port()
            command = [
                sys.executable, "-m", "shipyard.cli.main", "-w", str(ws.root), "serve",
                f"fraud@{version}", "--endpoint", f"bench-{len(servers)}", "--reset",
                "--workers", "2", "--port", str(port),
            ]  # fmt: skip
            process = subprocess.Popen(
                command, env={**env, "PYTHONPATH": str(path)}, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            servers.append((label, port, process))
            wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", process)
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in servers}
        for turn in range(rounds):  # alternate who goes first: the machine's load drifts
            for label, port, process in servers if turn % 2 == 0 else servers[::-1]:
                url = f"http://127.0.0.1:{port}/invocations"
                run_wrk(url, script, 2, process.pid)  # warm-up
                runs[label].append(run_wrk(url, script, duration, process.pid))
                print(
                    f"{label:<24} precomputed {runs[label][-1]['req_s']:>9,.0f} req/s", flush=True
                )
    finally:
        for _, _, process in servers:
            stop(process)
    rows = []
    for label, measured in runs.items():
        middle = sorted(measured, key=lambda m: m["req_s"])[len(measured) // 2]
        each = ", ".join(f"{m['req_s']:,.0f}" for m in measured)
        rows.append(
            {
                "server (online store)": label,
                "request": f"precomputed features (median of {each} req/s)",
                **middle,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per case")
    parser.add_argument("--redis", action="store_true", help="also measure on Redis")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a source tree (a git worktree) whose server's precomputed requests are measured "
        "beside this tree's",
    )
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    ws, version = prepare_model()
    from shipyard.registry.models import ModelRegistry

    features = ModelRegistry(ws).get("fraud", version).input_schema.names
    results = bench_store(ws, version, "SQLite", None, args.duration, features)
    if args.redis:
        redis, url = start_redis()
        try:
            results += bench_store(ws, version, "Redis", url, args.duration, features)
        finally:
            redis.terminate()
            redis.wait()
    if args.baseline is not None:
        results += baseline(ws, version, args.baseline.resolve(), args.duration)
    for row in results:
        row["req_s"] = f"{row['req_s']:,.0f}"
        row.setdefault("raw / precomputed", "")
    columns = ["server (online store)", "request", "req_s", "p50_ms", "p99_ms", "non_2xx",
               "server_cpu_cores", "raw / precomputed"]  # fmt: skip
    RESULTS.write_text(
        "# Raw-event serving: last results\n\n"
        f"Machine: {platform.machine()}, 2 cores shared by the server and `wrk`; Python "
        f"{platform.python_version()}; model: fraud v{version}, LightGBM 500 trees, 15 "
        f"features; `shipyard serve` with 2 workers; one-row MLflow `dataframe_split` requests "
        f"at {CONNECTIONS} connections, {args.duration} s per case after a 2 s warm-up, both "
        "cases on the same server in the same run. Raw events: new cards among "
        f"{CARDS:,}, each event applied to the online store and read back; terminal risk read "
        "exact (fed to the end of the data). Load average (1 min) of the machine, which "
        f"other work shares: {load_before:.1f} before, {os.getloadavg()[0]:.1f} after.\n\n"
        + markdown_table(results, columns)
        + "\n"
    )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
