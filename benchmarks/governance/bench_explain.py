"""The cost of explanations: served requests/s with and without ``explain=true``, in one run,
and the per-row cost of :func:`shipyard.governance.explain.explain` against
``shap.TreeExplainer`` in process.

The serving benchmark's model shape (fraud, LightGBM 500 trees, 31 leaves, 15 features),
trained on the first run on a fast-mode simulation of 1,000 customers over 100 days in
``benchmarks/_work/explain-ws`` (the model's size, not the data's, sets the cost). One
``shipyard serve`` with 2 workers; ``wrk`` sends one-row requests from 64 connections on
127.0.0.1 (it shares the machine's 2 cores with the server: compare rows of one run),
without and then with ``explain=true`` (KServe V2 ``parameters.explain``, MLflow
``/invocations?explain=true``).
In process, one thread: Shipyard's explainer (the booster's own ``pred_contrib``) and
``shap.TreeExplainer`` on the same booster, one row at a time and 1,000 rows at once, with
the largest difference between their attributions; and the time the model card's global
explanation (500 rows, 4 plots) adds to a registration.

Run from the repository root (needs ``wrk``)::

    .venv/bin/python benchmarks/governance/bench_explain.py [--duration 10]

Results: ``benchmarks/governance/explain_results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import WORK, markdown_table  # noqa: E402
from benchmarks.serving.bench_serving import (  # noqa: E402
    BIN,
    bodies,
    free_port,
    run_wrk,
    stop,
    wait_ready,
)

RESULTS = Path(__file__).with_name("explain_results.md")
CONNECTIONS = 64
WS = WORK / "explain-ws"
SIMULATION = {"n_customers": 1000, "n_terminals": 2000, "n_days": 100, "mode": "fast", "seed": 7}
ROWS_WINDOW = ("2018-06-01", "2018-06-03")


def prepare_model() -> tuple[Any, int]:
    """The workspace and version of the 500-tree LightGBM fraud model (built once)."""
    import shutil

    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
    from shipyard.features.fraud import BASELINE_VIEWS
    from shipyard.features.offline import OfflineStore
    from shipyard.registry.models import ModelRegistry
    from shipyard.solutions.fraud import Protocol, train_suite
    from shipyard.workspace import Workspace

    if (WS / "shipyard.toml").exists():
        ws = Workspace.open(WS)
        for version in ModelRegistry(ws).versions("fraud"):
            if version.params.get("n_estimators") == 500:
                return ws, version.version
        ws.close()
    shutil.rmtree(WS, ignore_errors=True)
    ws = Workspace.init(WS)
    dataset = simulate_fraud_dataset(ws, FraudSimulator(**SIMULATION))  # type: ignore[arg-type]
    OfflineStore(ws).materialize(BASELINE_VIEWS)
    report = train_suite(
        ws,
        dataset,
        model_types=["lightgbm"],
        model_params={"lightgbm": {"n_estimators": 500, "num_leaves": 31}},
        protocol=Protocol(start_date_training="2018-05-20", n_folds=2),
        n_boot=0,
    )
    assert report.registered is not None
    return ws, report.registered.version


def _per_call_us(call: Any, repeats: int) -> float:
    """Median wall time of ``call()`` in microseconds over ``repeats`` calls (after 20 warm)."""
    for _ in range(20):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def in_process(ws: Any, version: int, rows: list[list[float]]) -> list[dict[str, Any]]:
    """Shipyard's explainer vs shap.TreeExplainer on the loaded native booster, one thread."""
    import numpy as np

    from shipyard.governance.explain import Explainer
    from shipyard.registry.models import ModelRegistry

    native = ModelRegistry(ws).load("fraud", version)
    ours = Explainer.of(native)
    batch = np.asarray(rows[:1000], dtype=np.float64)
    one = batch[:1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import shap

        theirs = shap.TreeExplainer(native.model)

        def shap_values(x: Any) -> Any:
            return theirs.shap_values(x, check_additivity=False)

        difference = float(np.abs(np.asarray(shap_values(batch)) - ours(batch).values).max())
        cases = [
            ("Shipyard explain (pred_contrib, 1 thread)", ours),
            ("shap.TreeExplainer", shap_values),
            ("prediction alone (native LightGBM)", native.predict),
        ]
        out = []
        for name, call in cases:
            one_us = _per_call_us(lambda call=call: call(one), 300)
            batch_us = _per_call_us(lambda call=call: call(batch), 5)
            out.append(
                {
                    "method": name,
                    "one_row_us": round(one_us, 1),
                    "per_row_us_in_1000": round(batch_us / len(batch), 2),
                }
            )
    out[1]["max_abs_diff_vs_shipyard"] = f"{difference:.1e}"
    return out


def card_cost(ws: Any, version: int, frame: Any) -> float:
    """Seconds the card's global explanation (500 of the rows given, 4 plots) takes."""
    from shipyard.governance.explain import global_explanation
    from shipyard.registry.models import ModelRegistry

    native = ModelRegistry(ws).load("fraud", version)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        global_explanation(native, frame, Path(folder), title="fraud")
        return time.perf_counter() - started


def explained_bodies(rows: list[list[float]], columns: list[str]) -> dict[str, bytes]:
    """One-row request bodies that ask for explanations (V2: parameters.explain)."""
    plain = bodies(rows, columns, 1)
    v2 = json.loads(plain["v2"])
    v2["parameters"] = {"explain": True}
    return {"v2": json.dumps(v2).encode(), "mlflow": plain["mlflow"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per case")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    ws, version = prepare_model()
    from shipyard.features.fraud import BASELINE_FEATURES, BASELINE_VIEWS_REF
    from shipyard.training.frames import Window, load_frame

    frame = load_frame(ws, Window("fraud", 1, *ROWS_WINDOW, BASELINE_VIEWS_REF))
    columns = list(BASELINE_FEATURES)
    rows = frame[columns].head(20_000).to_numpy().tolist()
    model_rows = in_process(ws, version, rows)
    for row in model_rows:
        print(row, flush=True)
    card_s = card_cost(ws, version, frame[columns])
    print(f"card's global explanation: {card_s:.2f} s", flush=True)

    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    port = free_port()
    command = [
        str(BIN / "shipyard"),
        "-w",
        str(ws.root),
        "serve",
        f"fraud@{version}",
        "--endpoint",
        "bench-explain",
        "--reset",
        "--workers",
        "2",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    plain = bodies(rows, columns, 1)
    explained = explained_bodies(rows, columns)
    base = f"http://127.0.0.1:{port}"
    cases = [
        ("KServe V2", "plain", f"{base}/v2/models/bench-explain/infer", plain["v2"]),
        ("KServe V2", "explain=true", f"{base}/v2/models/bench-explain/infer", explained["v2"]),
        ("MLflow /invocations", "plain", f"{base}/invocations", plain["mlflow"]),
        (
            "MLflow /invocations",
            "explain=true",
            f"{base}/invocations?explain=true",
            explained["mlflow"],
        ),
    ]
    results = []
    try:
        wait_ready(f"{base}/v2/health/ready", process)
        for protocol, mode, url, body in cases:
            run_wrk(url, body, CONNECTIONS, 2, process.pid)  # warm-up (builds the explainer)
            measured = run_wrk(url, body, CONNECTIONS, args.duration, process.pid)
            row = {"protocol": protocol, "request": mode, **measured}
            results.append(row)
            print(row, flush=True)
    finally:
        stop(process)
    for protocol in ("KServe V2", "MLflow /invocations"):
        pair = [r for r in results if r["protocol"] == protocol]
        pair[1]["vs_plain"] = f"{pair[1]['req_s'] / pair[0]['req_s']:.0%}"
    for row in results:
        row["req_s"] = f"{row['req_s']:,.0f}"
    RESULTS.write_text(
        "# Explanations: last results\n\n"
        f"Machine: {platform.machine()}, 2 cores shared by the server and `wrk`; Python "
        f"{platform.python_version()}; model: fraud v{version}, LightGBM 500 trees, 31 leaves, "
        f"15 features.\n\n"
        "## Served: one-row requests, 64 connections, one server (2 workers)\n\n"
        f"{args.duration} s per case after a 2 s warm-up, plain and explained alternating.\n\n"
        + markdown_table(
            results,
            [
                "protocol",
                "request",
                "req_s",
                "vs_plain",
                "p50_ms",
                "p99_ms",
                "non_2xx",
                "server_cpu_cores",
            ],
        )
        + "\n\n## In process (one thread)\n\n"
        + markdown_table(
            model_rows,
            ["method", "one_row_us", "per_row_us_in_1000", "max_abs_diff_vs_shipyard"],
        )
        + f"\n\nThe model card's global explanation (500 rows, 4 plots): {card_s:.2f} s "
        "added to a registration.\n"
    )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
