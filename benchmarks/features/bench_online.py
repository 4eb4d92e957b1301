"""Benchmark: the online (streaming) feature path, per event and in bulk, SQLite and Redis.

What it measures, on the small simulated fraud data set (300 customers, 600 terminals, 70
days, fast mode, seed 7: about 40,000 transactions; simulated into a temporary workspace):

- **per-event latency**, in this process, of what a serving request with one raw event does:
  ``process`` of a one-event batch through ``transaction`` (row features, nothing stored)
  and through ``customer_spending`` (read-modify-write of the customer's state in one
  ``update_many``), plus a ``read_at`` of ``terminal_risk`` (a delayed view, read only) at
  the event's time. Before timing, the first half of the events is replayed into
  ``customer_spending`` and every event (labels included) into ``terminal_risk``, so that the
  timed calls meet states of realistic size; the timed events are the next ``--events``
  (default 20,000) in time order, one call each, after 200 untimed warm-up events. p50, p90,
  p99 and max over the events, of the three calls together and of each alone;
- **replay throughput**: ``replay`` (batches of 10,000 events) of the whole data set into a
  fresh state of ``customer_spending``, ``transaction`` and ``terminal_risk``, events/s;
- **Redis memory per customer** after that replay of ``customer_spending``: the sum of
  ``MEMORY USAGE`` over its keys (one per customer) divided by the number of customers, beside
  what the same states take in the layout of earlier versions (one hash per view).

Redis: a ``redis-server`` (from PATH) is started on a free loopback port without
persistence and stopped at the end. SQLite: a WAL file in a temporary folder.

Run from the repository root::

    .venv/bin/python benchmarks/features/bench_online.py            # about 5 minutes
    .venv/bin/python benchmarks/features/bench_online.py --events 2000   # a quick look

It writes ``benchmarks/features/online_results.md`` (``--out`` to change) with the machine.
Timings on a shared machine vary with its load; the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import markdown_table  # noqa: E402

RESULTS = Path(__file__).with_name("online_results.md")
SMALL = {"n_customers": 300, "n_terminals": 600, "n_days": 70, "mode": "fast", "seed": 7}
WARM_UP = 200
TERMINAL_RISK_LATENESS = timedelta(days=1)  # its labelled history is fed in time order
COLUMNS = ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"]


def simulate(folder: Path) -> Any:
    """The small fraud data set, simulated into a workspace under ``folder``, in time order."""
    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
    from shipyard.workspace import Workspace

    ws = Workspace.init(folder / "ws")
    try:
        dataset = simulate_fraud_dataset(ws, FraudSimulator(**SMALL))  # type: ignore[arg-type]
        events = dataset.read()[COLUMNS]
    finally:
        ws.close()
    return events.sort_values("TX_DATETIME", kind="stable").reset_index(drop=True)


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A redis-server on a free loopback port, no persistence; its URL."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH (Debian: apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    process = subprocess.Popen(
        [*args, "no", "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def quantiles(values_us: list[float]) -> dict[str, float]:
    ordered = sorted(values_us)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {
        "p50_us": round(statistics.median(ordered), 1),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "max_us": round(ordered[-1], 1),
    }


def per_event(
    name: str, open_store: Callable[[], Any], events: Any, n: int
) -> list[dict[str, Any]]:
    """Latency of one event: process through two views and read_at of the delayed one."""
    from shipyard.features.fraud import CUSTOMER_SPENDING, TERMINAL_RISK, TRANSACTION
    from shipyard.features.streaming import StreamingView, replay

    store = open_store()
    half = len(events) // 2
    spending = StreamingView(CUSTOMER_SPENDING, store)
    for _ in replay(spending, events.iloc[:half]):
        pass
    risk = StreamingView(TERMINAL_RISK, store, lateness=TERMINAL_RISK_LATENESS)
    for _ in replay(risk, events):
        pass
    transaction = StreamingView(TRANSACTION, store)
    timed = events.iloc[half : half + WARM_UP + n]
    batches = [timed.iloc[i : i + 1].drop(columns="TX_FRAUD") for i in range(len(timed))]
    terminals = timed["TERMINAL_ID"].tolist()
    times = timed["TX_DATETIME"].tolist()
    parts: dict[str, list[float]] = {"all three": [], "transaction": [], "spending": [], "risk": []}
    clock = time.perf_counter_ns
    for i, batch in enumerate(batches):
        t0 = clock()
        transaction.process(batch)
        t1 = clock()
        spending.process(batch)
        t2 = clock()
        risk.read_at([terminals[i]], [times[i]])
        t3 = clock()
        if i >= WARM_UP:
            parts["all three"].append((t3 - t0) / 1e3)
            parts["transaction"].append((t1 - t0) / 1e3)
            parts["spending"].append((t2 - t1) / 1e3)
            parts["risk"].append((t3 - t2) / 1e3)
    store.close()
    labels = {
        "all three": "transaction.process + customer_spending.process + terminal_risk.read_at",
        "transaction": "transaction.process (1 event)",
        "spending": "customer_spending.process (1 event)",
        "risk": "terminal_risk.read_at (1 entity)",
    }
    return [
        {"store": name, "call": labels[k], "events": len(v), **quantiles(v)}
        for k, v in parts.items()
    ]


def throughput(name: str, open_store: Callable[[], Any], events: Any) -> list[dict[str, Any]]:
    """Events/s of replay (batches of 10,000) of every event into a fresh state of each view."""
    from shipyard.features.fraud import BASELINE_VIEWS, TERMINAL_RISK
    from shipyard.features.streaming import StreamingView, replay

    rows = []
    for view in BASELINE_VIEWS:
        store = open_store()
        store.drop_view(view.name)
        lateness = TERMINAL_RISK_LATENESS if view is TERMINAL_RISK else timedelta(minutes=5)
        stream = StreamingView(view, store, lateness=lateness)
        frame = events if view is TERMINAL_RISK else events.drop(columns="TX_FRAUD")
        started = time.perf_counter()
        for _ in replay(stream, frame, batch_rows=10_000):
            pass
        seconds = time.perf_counter() - started
        rows.append(
            {
                "store": name,
                "view": view.name,
                "events": len(frame),
                "seconds": round(seconds, 2),
                "events_per_s": round(len(frame) / seconds),
            }
        )
        store.close()
    return rows


def redis_memory(url: str) -> dict[str, Any]:
    """Bytes per customer of customer_spending's state (replayed by ``throughput``)."""
    import redis

    from shipyard.features.fraud import CUSTOMER_SPENDING

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match="shipyard:online:state:customer_spending:*", count=1000))
    used = sum(int(client.memory_usage(k, samples=0) or 0) for k in keys)
    blobs = [b for b in client.mget(keys) if isinstance(b, bytes)]
    # the same states in the layout of earlier versions: one hash, one field per customer
    legacy = f"bench:legacy:{CUSTOMER_SPENDING.name}"
    prefix_len = len(
        f"shipyard:online:state:customer_spending:{CUSTOMER_SPENDING.definition_hash}:"
    )
    client.hset(legacy, mapping={k[prefix_len:]: b for k, b in zip(keys, blobs, strict=True)})
    legacy_used = int(client.memory_usage(legacy, samples=0) or 0)
    client.delete(legacy)
    client.close()
    customers = len(keys)
    return {
        "customers": customers,
        "bytes_per_customer": round(used / customers),
        "state_blob_bytes_mean": round(sum(map(len, blobs)) / customers),
        "legacy_hash_bytes_per_customer": round(legacy_used / customers),
    }


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    redis_version = subprocess.run(
        [shutil.which("redis-server") or "redis-server", "--version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()[2]
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Redis {redis_version.removeprefix('v=')}, SQLite {sqlite3.sqlite_version} "
        f"(WAL, synchronous=NORMAL); load average at the start {load} (a shared machine)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="timed one-event calls")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from shipyard.features.online import RedisOnlineStore, SQLiteOnlineStore

    about = machine()
    with tempfile.TemporaryDirectory(prefix="bench-online-") as tmp:
        folder = Path(tmp)
        print("simulating the small data set ...", flush=True)
        events = simulate(folder)
        n = min(args.events, len(events) - len(events) // 2 - WARM_UP)
        latency: list[dict[str, Any]] = []
        replays: list[dict[str, Any]] = []
        with redis_server(folder) as url:
            stores: dict[str, Callable[[], Any]] = {
                "SQLite": lambda: SQLiteOnlineStore(folder / "online.db"),
                "Redis": lambda: RedisOnlineStore(url),
            }
            for name, open_store in stores.items():
                print(f"{name}: per-event latency over {n} events ...", flush=True)
                latency += per_event(name, open_store, events, n)
                print(f"{name}: replay throughput ...", flush=True)
                replays += throughput(name, open_store, events)
            memory = redis_memory(url)
    text = report(about, len(events), latency, replays, memory)
    args.out.write_text(text)
    print(text)


def report(
    about: str,
    n_events: int,
    latency: list[dict[str, Any]],
    replays: list[dict[str, Any]],
    memory: dict[str, Any],
) -> str:
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "\n\n".join(
            [
                "# Online features: last results",
                f"Run {date} by `benchmarks/features/bench_online.py`. Machine: {about}. "
                f"Data: the small simulated fraud data set ({n_events:,} transactions, "
                "300 customers, 600 terminals, 70 days).",
                "## Per-event latency, in process",
                "One event per call, in time order, after the first half of the events was "
                "replayed into customer_spending and every event into terminal_risk. Microseconds.",
                markdown_table(
                    latency, ["store", "call", "events", "p50_us", "p90_us", "p99_us", "max_us"]
                ),
                "## Replay throughput",
                "`replay(stream, events, batch_rows=10_000)` of every event into a fresh state.",
                markdown_table(replays, ["store", "view", "events", "seconds", "events_per_s"]),
                "## Redis memory per customer (customer_spending, one key per customer)",
                markdown_table(
                    [memory],
                    [
                        "customers",
                        "bytes_per_customer",
                        "state_blob_bytes_mean",
                        "legacy_hash_bytes_per_customer",
                    ],
                ),
                "`bytes_per_customer`: the sum of `MEMORY USAGE` over the view's keys divided by "
                "the customers; `legacy_hash_bytes_per_customer`: the same states as fields of one "
                "hash (the layout before one key per entity), for comparison.",
            ]
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
