"""Benchmark: serving the 500-tree LightGBM fraud model, Shipyard beside `mlflow models serve`.

Same registered model for every server, 2 workers each, load from `wrk` on 127.0.0.1 (the
load generator shares the machine's 2 cores with the server: compare rows of one run).
Cases: 1-row requests at 16 and 64 connections, 100-row requests at 16 connections.
Reported: requests/s, rows/s, p50, p99, non-2xx, and the server's CPU (cores busy).
The model's in-process speed (native LightGBM and ONNX Runtime, one thread) is measured
too, so the server's numbers can be read against what the model itself allows.

Run from the repository root (needs `wrk`: apt-get install wrk)::

    .venv/bin/python benchmarks/serving/bench_serving.py [--duration 10]

The first run simulates the data set and trains the model into benchmarks/_work.
BentoML is compared when ``--bentoml PATH`` names a `bentoml` executable from an environment
where it is installed (it is not one of Shipyard's dependencies; a separate virtual
environment keeps its pins away from ours)::

    python3 -m venv /tmp/bento && /tmp/bento/bin/pip install bentoml lightgbm
    .venv/bin/python benchmarks/serving/bench_serving.py --bentoml /tmp/bento/bin/bentoml

``--tracing`` runs the Shipyard cases once more with OpenTelemetry tracing on
(``SHIPYARD_SERVING_TRACING=otlp``), the spans posted over OTLP/HTTP to a sink in this
process that accepts and discards them: the cost of tracing on, beside the same server with
tracing off in the same run. ``--no-guardrails`` likewise runs them once more with the
guardrail watcher off (``serve --no-guardrails``): the per-request cost of watching. Without
the flags the output is unchanged.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import WORK, markdown_table  # noqa: E402

RESULTS = Path(__file__).with_name("results.md")
WS = WORK / "features-ws"  # shared with the feature benchmark: same data set
BIN = Path(sys.executable).parent
CASES = [("1 row", 1, 16), ("1 row", 1, 64), ("100 rows", 100, 16)]


def prepare_model() -> tuple[Any, int]:
    """The workspace and the version number of the 500-tree LightGBM model (trained once)."""
    from shipyard.registry.models import ModelRegistry
    from shipyard.solutions.fraud import prepare_data, train_suite
    from shipyard.workspace import Workspace

    ws = Workspace.open(WS) if (WS / "shipyard.toml").exists() else Workspace.init(WS)
    dataset = prepare_data(ws)
    for version in ModelRegistry(ws).versions("fraud"):
        if version.model_type == "lightgbm" and version.params.get("n_estimators") == 500:
            return ws, version.version
    report = train_suite(
        ws,
        dataset,
        model_types=["lightgbm"],
        model_params={"lightgbm": {"n_estimators": 500, "num_leaves": 31}},
        n_boot=0,
    )
    assert report.registered is not None
    return ws, report.registered.version


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server's whole process group."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {seconds} s")


def process_tree_cpu(root: int) -> float:
    """CPU seconds used so far by a process and all its descendants (alive ones)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    used: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parent[pid] = int(fields[1])  # fields after the name: state, ppid, pgrp, ...
        used[pid] = int(fields[11]) + int(fields[12])
    tree, frontier = {root}, [root]
    while frontier:
        current = frontier.pop()
        children = [pid for pid, ppid in parent.items() if ppid == current and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(used.get(pid, 0) for pid in tree) / ticks


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:  # wrk prints nan when no request completed
        return float("nan")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


class _DiscardSpans(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that reads each export and answers 200 (the spans are dropped)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def span_sink() -> str:
    """Start an OTLP/HTTP sink on 127.0.0.1 in a daemon thread; its traces URL."""
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DiscardSpans)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"


def run_wrk(url: str, body: bytes, connections: int, duration: int, pgid: int) -> dict[str, Any]:
    script = WORK / f"wrk-{len(body)}.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(body.decode())}\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    cpu_before = process_tree_cpu(pgid)
    done = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = (process_tree_cpu(pgid) - cpu_before) / duration
    out = done.stdout
    requests = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "req_s": requests,
        "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
        "server_cpu_cores": round(cpu, 2),
    }


def bodies(rows: list[list[float]], columns: list[str], n: int) -> dict[str, bytes]:
    chosen = rows[:n]
    return {
        "v2": json.dumps(
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": [n, len(columns)],
                        "datatype": "FP64",
                        "data": chosen,
                    }
                ]
            }
        ).encode(),
        "mlflow": json.dumps({"dataframe_split": {"columns": columns, "data": chosen}}).encode(),
        "bentoml": json.dumps({"inputs": chosen}).encode(),
    }


def in_process(ws: Any, version: int, rows: Any) -> list[dict[str, Any]]:
    """The model alone: native LightGBM, ONNX Runtime, lleaves; one thread, batch and one row."""
    import numpy as np

    from shipyard.registry.models import ModelRegistry
    from shipyard.serving.backends import (
        FILES,
        CompiledLightGBMPredictor,
        OnnxPredictor,
        prepare_backends,
    )

    registry = ModelRegistry(ws)
    prepare_backends(registry, "fraud", version)
    native = registry.load("fraud", version)
    mv = registry.get("fraud", version)
    onnx = OnnxPredictor(mv.native_path.parent / FILES["onnx"], mv.input_schema)
    compiled = CompiledLightGBMPredictor(
        mv.native_path, mv.native_path.parent / FILES["lleaves"], mv.input_schema
    )
    batch = np.asarray(rows, dtype=np.float64)
    out = []
    for name, predict in (
        ("LightGBM native (num_threads=1)", lambda x: native.model.predict(x, num_threads=1)),
        ("ONNX Runtime (1 thread)", onnx.predict),
        ("lleaves, compiled LightGBM (1 thread)", compiled.predict),
    ):
        started = time.perf_counter()
        predict(batch)
        rows_s = len(batch) / (time.perf_counter() - started)
        one = batch[:1]
        started = time.perf_counter()
        for _ in range(2000):
            predict(one)
        out.append(
            {
                "backend": name,
                "batch_rows_s": round(rows_s),
                "one_row_us": round((time.perf_counter() - started) / 2000 * 1e6, 1),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per case")
    parser.add_argument("--bentoml", default=None, help="a bentoml executable to compare with")
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="also run the Shipyard cases with tracing on (OTLP to an in-process sink)",
    )
    parser.add_argument(
        "--no-guardrails",
        action="store_true",
        help="also run the Shipyard cases with the guardrail watcher off (serve --no-guardrails)",
    )
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    ws, version = prepare_model()
    from shipyard.features.fraud import BASELINE_FEATURES, BASELINE_VIEWS_REF
    from shipyard.training.frames import Window, load_frame

    frame = load_frame(ws, Window("fraud", 1, "2018-09-01", "2018-09-03", BASELINE_VIEWS_REF))
    columns = list(BASELINE_FEATURES)
    rows = frame[columns].head(20_000).to_numpy().tolist()
    model_rows = in_process(ws, version, rows)
    for row in model_rows:
        print(
            f"{row['backend']:<34} {row['batch_rows_s']:>10,} rows/s in batches, "
            f"{row['one_row_us']:>6} µs for one row"
        )

    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"  # mlflow starts `uvicorn` from PATH
    servers = {
        "mlflow models serve (2 workers)": (
            [
                str(BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                f"models:/fraud/{version}",
                "--env-manager",
                "local",
                "-w",
                "2",
                "-h",
                "127.0.0.1",
                "-p",
                "{port}",
            ],
            {**env, "MLFLOW_TRACKING_URI": ws.mlflow_tracking_uri},
            "/ping",
            [("mlflow", "/invocations")],
        ),
        "Shipyard (2 workers)": (
            [
                str(BIN / "shipyard"),
                "-w",
                str(ws.root),
                "serve",
                f"fraud@{version}",
                "--endpoint",
                "bench",
                "--reset",
                "--workers",
                "2",
                "--port",
                "{port}",
            ],
            env,
            "/v2/health/ready",
            [("v2", "/v2/models/bench/infer"), ("mlflow", "/invocations")],
        ),
    }
    if args.tracing:
        command, environ, health, routes = servers["Shipyard (2 workers)"]
        traced = {
            **environ,
            "SHIPYARD_SERVING_TRACING": "otlp",
            "SHIPYARD_SERVING_OTLP_ENDPOINT": span_sink(),
        }
        servers["Shipyard (2 workers, tracing on)"] = (command, traced, health, routes)
    if args.no_guardrails:
        command, environ, health, routes = servers["Shipyard (2 workers)"]
        unguarded = [*command[:-2], "--no-guardrails", *command[-2:]]
        servers["Shipyard (2 workers, guardrails off)"] = (unguarded, environ, health, routes)
    if args.bentoml:
        from shipyard.registry.models import ModelRegistry

        model_file = ModelRegistry(ws).get("fraud", version).native_path
        servers["BentoML (2 workers, adaptive batching)"] = (
            [args.bentoml, "serve", "bento_service:FraudModel", "--port", "{port}"],
            {**env, "SHIPYARD_BENCH_MODEL": str(model_file)},
            "/readyz",
            [("bentoml", "/predict")],
        )
    results = []
    for server_name, (command, environ, health, routes) in servers.items():
        port = free_port()
        process = subprocess.Popen(
            [c.replace("{port}", str(port)) for c in command],
            env=environ,
            cwd=Path(__file__).parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}{health}", process)
            for protocol, route in routes:
                for label, n, connections in CASES:
                    body = bodies(rows, columns, n)[protocol]
                    url = f"http://127.0.0.1:{port}{route}"
                    run_wrk(url, body, connections, 2, process.pid)  # warm-up
                    measured = run_wrk(url, body, connections, args.duration, process.pid)
                    row = {
                        "server": server_name,
                        "protocol": {"v2": "KServe V2", "mlflow": "MLflow /invocations"}.get(
                            protocol, "BentoML /predict"
                        ),
                        "case": f"{label}, {connections} conn.",
                        **measured,
                        "rows_s": round(measured["req_s"] * n),
                    }
                    results.append(row)
                    print(
                        f"{server_name:<32} {row['protocol']:<20} {row['case']:<18} "
                        f"{row['req_s']:>9,.0f} req/s "
                        f"{row['rows_s']:>9,} rows/s  p50 {row['p50_ms']:6.2f} ms  p99 "
                        f"{row['p99_ms']:6.2f} ms  "
                        f"non-2xx {row['non_2xx']}  CPU {row['server_cpu_cores']}",
                        flush=True,
                    )
        finally:
            stop(process)
    columns_out = [
        "server",
        "protocol",
        "case",
        "req_s",
        "rows_s",
        "p50_ms",
        "p99_ms",
        "non_2xx",
        "server_cpu_cores",
    ]
    for row in results:
        row["req_s"] = f"{row['req_s']:,.0f}"
        row["rows_s"] = f"{row['rows_s']:,}"
    RESULTS.write_text(
        "# Serving: last results\n\n"
        f"Machine: {platform.machine()}, 2 cores shared by the server and `wrk`; Python "
        f"{platform.python_version()}; model: fraud v{version}, LightGBM 500 trees, 31 leaves, "
        f"15 features; {args.duration} s per case after a 2 s warm-up.\n\n"
        "## The model alone (in process)\n\n"
        + markdown_table(model_rows, ["backend", "batch_rows_s", "one_row_us"])
        + "\n\n## Servers\n\n"
        + markdown_table(results, columns_out)
        + "\n"
    )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
