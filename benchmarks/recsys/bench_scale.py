"""Benchmark: the recommender at 10M users x 1M items — generate, train, register, serve, load.

The issue's scale test: synthetic implicit feedback with realistic skew, training within
24 GiB on this machine (time stated), a user-embedding table served from memory-mapped
storage, and top-10 requests for random users at 64 connections (requests/s, p99, goal
p99 <= 10 ms), peak memory stated, compared in the same run with the exact-search path.

Stages, each in a fresh interpreter (time and peak RSS), each leaving its outputs and a
``STAGE.json`` under ``benchmarks/_work/recsys/scale-USERSxITEMS/``; a rerun skips the stages
whose JSON is there (``--redo STAGE`` reruns one and those after it):

1. ``generate``: :func:`shipyard.solutions.recsys.synthetic.generate` (10 interactions per
   user on average, 64 taste clusters, Zipf 1.1 item popularity), saved as .npy;
2. ``als``: implicit ALS (64 factors, regularization 0.05, alpha 10, ``--iterations``),
   implicit's own 2 threads, BLAS held to 1 thread; user and item factors saved as .npy;
3. ``build``: the HNSW index of the items (M 32, ef_construction 100); two
   :class:`~shipyard.training.recommend.Recommender` s over the same factors, one retrieving
   with HNSW and one with exact search (faiss ``IndexFlatIP``); their top-10 answers compared
   for 1,000 random users; both registered (``register_recommender``) in a benchmark
   workspace as ``scale-hnsw`` and ``scale-exact``;
4. ``serve``: for each, ``shipyard serve`` (2 workers, the user table memory-mapped by
   each) loaded by ``wrk`` at 64 connections with one-user top-10 requests (KServe V2) cycling
   through 10,000 bodies of random users across all users; requests/s, p50, p99, non-2xx,
   server RSS.

Run from the repository root (needs ``wrk``)::

    .venv/bin/python benchmarks/recsys/bench_scale.py --quick          # 200k users x 100k items
    .venv/bin/python benchmarks/recsys/bench_scale.py                  # 10M users x 1M items
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import WORK, markdown_table, measure  # noqa: E402
from benchmarks.serving.bench_serving import (  # noqa: E402
    _ms,
    free_port,
    process_tree_cpu,
    stop,
    wait_ready,
)

RESULTS = Path(__file__).with_name("results-scale.md")
BIN = Path(sys.executable).parent
STAGES = ("generate", "als", "build", "serve")
KINDS = ("hnsw", "exact")
K = 10
FACTORS = 64
CONNECTIONS = 64
BODIES = 10_000  # distinct request bodies (random users), cycled by wrk
PARITY_USERS = 1_000
SINGLE_USERS = 200
TUNE_USERS = 2_000
MEASURED = ("seconds", "peak_rss_mib")  # what benchmarks._common.measure adds to a result
TARGET = 0.96  # ef_search is tuned to this recall@10 on user vectors (bench_ann: 0.95 + 0.01)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="200k users x 100k items")
    parser.add_argument("--iterations", type=int, default=3, help="ALS iterations")
    parser.add_argument("--duration", type=int, default=30, help="wrk seconds per server")
    parser.add_argument("--warmup", type=int, default=10, help="wrk seconds before each")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument(
        "--candidates", type=int, default=200, help="items retrieved per request before filters"
    )
    parser.add_argument("--redo", choices=STAGES, default=None, help="rerun from this stage")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--stage", choices=STAGES, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.items = 200_000, 100_000
    return args


def folder(args: argparse.Namespace) -> Path:
    return WORK / "recsys" / f"scale-{args.users}x{args.items}"


def say(message: str) -> None:
    """A progress line on stderr (the parent passes a stage's stderr through)."""
    print(f"[bench_scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def save_array(path: Path, array: Any) -> None:
    """``np.save`` to a temporary name, then rename: a killed stage leaves no half file."""
    import numpy as np

    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


# -- stages (each runs in its own process) ----------------------------------------------------


def stage_generate(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from shipyard.solutions.recsys.synthetic import generate

    say(f"generating {args.users:,} users x {args.items:,} items")
    started = time.perf_counter()
    indptr, indices = generate(args.users, args.items, mean_interactions=10, seed=0)
    seconds = time.perf_counter() - started
    per_user = np.diff(indptr)
    counts = np.sort(np.bincount(indices, minlength=args.items))[::-1]
    top = max(1, args.items // 100)
    save_array(folder(args) / "indptr.npy", indptr)
    save_array(folder(args) / "indices.npy", indices)
    return {
        "generate_s": round(seconds, 1),
        "interactions": len(indices),
        "per_user_mean": round(float(per_user.mean()), 2),
        "per_user_p50": int(np.median(per_user)),
        "per_user_p99": int(np.percentile(per_user, 99)),
        "per_user_max": int(per_user.max()),
        "top_1pct_items_share": round(float(counts[:top].sum()) / len(indices), 3),
        "items_never_seen": int((counts == 0).sum()),
    }


def stage_als(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from shipyard.solutions.recsys.synthetic import interaction_matrix

    here = folder(args)
    indptr = np.load(here / "indptr.npy", mmap_mode="r")
    indices = np.load(here / "indices.npy", mmap_mode="r")
    matrix = interaction_matrix(np.asarray(indptr), np.asarray(indices), args.items)
    model = AlternatingLeastSquares(
        factors=FACTORS,
        regularization=0.05,
        alpha=10.0,
        iterations=args.iterations,
        random_state=0,
        num_threads=2,
    )
    times: list[float] = []

    def progress(iteration: int, elapsed: float, loss: Any) -> None:
        times.append(float(elapsed))
        say(f"ALS iteration {iteration + 1}/{args.iterations}: {elapsed:.1f} s")

    say(f"ALS on {matrix.shape[0]:,} x {matrix.shape[1]:,}, {matrix.nnz:,} interactions")
    started = time.perf_counter()
    with threadpool_limits(1, "blas"):
        model.fit(matrix, show_progress=False, callback=progress)
    seconds = time.perf_counter() - started
    save_array(here / "user_factors.npy", np.asarray(model.user_factors, dtype=np.float32))
    save_array(here / "item_factors.npy", np.asarray(model.item_factors, dtype=np.float32))
    return {
        "fit_s": round(seconds, 1),
        "iteration_s": [round(t, 1) for t in times],
        "iterations": args.iterations,
    }


def build_recommenders(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """The HNSW and the exact Recommender over the saved factors (user table memory-mapped)."""
    import numpy as np

    from shipyard.training.ann import ItemIndex, tune_ef_search
    from shipyard.training.recommend import Recommender

    here = folder(args)
    items = np.load(here / "item_factors.npy")
    users = np.load(here / "user_factors.npy", mmap_mode="r")
    indptr = np.load(here / "indptr.npy", mmap_mode="r")
    indices = np.load(here / "indices.npy", mmap_mode="r")
    say(f"HNSW index of {len(items):,} items")
    started = time.perf_counter()
    hnsw = ItemIndex.build(items, kind="hnsw", M=32, ef_construction=100, threads=2)
    build_s = time.perf_counter() - started
    sample = np.random.default_rng(3).choice(len(users), TUNE_USERS, replace=False)
    ef, recall = tune_ef_search(hnsw, items, np.asarray(users[np.sort(sample)]), k=K, target=TARGET)
    say(f"index built in {build_s:.0f} s; ef_search {ef} (recall@10 {recall:.3f} on user vectors)")
    hnsw.threads = 1
    popularity = np.bincount(indices, minlength=len(items)).astype(np.float32)
    say(f"recommenders over {len(users):,} users")
    shared = {
        "item_ids": np.arange(len(items)),  # ids "0", "1", ... without a string object each
        "item_vectors": items,
        "user_ids": np.arange(len(users)),
        "user_vectors": users,
        "seen_indptr": indptr,
        "seen_indices": indices,
        "popularity": popularity,
        "candidates": args.candidates,
    }
    exact = ItemIndex.build(items, kind="exact", threads=1)
    info = {"index_build_s": round(build_s, 1), "ef_search": ef, "tuned_recall": round(recall, 4)}
    info["candidates"] = args.candidates
    return Recommender(**shared, index=hnsw), Recommender(**shared, index=exact), info


def answer_parity(args: argparse.Namespace, hnsw: Any, exact: Any) -> dict[str, Any]:
    """Recall@10 of the HNSW recommender's answers against the exact one's, random users."""
    import numpy as np

    users = np.random.default_rng(4).choice(args.users, PARITY_USERS, replace=False)
    ids = [str(u) for u in users]
    timings = {}
    answers = {}
    for name, model in (("hnsw", hnsw), ("exact", exact)):
        started = time.perf_counter()
        answers[name] = [
            {e["item"] for e in row["items"]} for row in model.recommend(ids, k=[K] * len(ids))
        ]
        timings[f"in_process_{name}_ms_per_user"] = round(
            (time.perf_counter() - started) / len(ids) * 1e3, 3
        )
        started = time.perf_counter()
        for user in ids[:SINGLE_USERS]:  # one request's work: what bounds a worker's req/s
            model.recommend([user], k=K)
        timings[f"single_{name}_ms"] = round(
            (time.perf_counter() - started) / SINGLE_USERS * 1e3, 3
        )
    overlap = [len(a & b) / K for a, b in zip(answers["hnsw"], answers["exact"], strict=True)]
    return {"answer_recall_at_10": round(float(np.mean(overlap)), 4), **timings}


def stage_build(args: argparse.Namespace) -> dict[str, Any]:
    import shutil

    from shipyard.solutions.recsys.served import register_recommender
    from shipyard.workspace import Workspace

    hnsw, exact, info = build_recommenders(args)
    say(f"comparing answers for {PARITY_USERS:,} users")
    info.update(answer_parity(args, hnsw, exact))
    say(f"answers: recall@10 of HNSW against exact {info['answer_recall_at_10']}")
    root = folder(args) / "ws"
    shutil.rmtree(root, ignore_errors=True)  # a rerun starts from a clean workspace
    ws = Workspace.init(root)
    try:
        for kind, model in (("hnsw", hnsw), ("exact", exact)):
            say(f"registering scale-{kind}")
            started = time.perf_counter()
            version = register_recommender(
                ws,
                model,
                name=f"scale-{kind}",
                split_note=(
                    f"synthetic implicit feedback ({args.users:,} users x {args.items:,} items,"
                    " benchmarks/recsys/bench_scale.py), not evaluated"
                ),
                params={"factors": FACTORS, "iterations": args.iterations, "index": kind},
            )
            info[f"register_{kind}_s"] = round(time.perf_counter() - started, 1)
            size = Path(version.native_path).stat().st_size
            info[f"file_{kind}_mib"] = round(size / 2**20, 1)
    finally:
        ws.close()
    return info


# -- serving -----------------------------------------------------------------------------------


def request_body(user: str) -> str:
    """One user's top-10 request in KServe V2 (the recommender's five string inputs)."""
    values = {"user": user, "session": "", "k": str(K), "exclude_seen": "", "genre": ""}
    inputs = [
        {"name": name, "shape": [1], "datatype": "BYTES", "data": [value]}
        for name, value in values.items()
    ]
    return json.dumps({"inputs": inputs})


def lua_script(bodies: list[str]) -> str:
    """A wrk script that POSTs the bodies in turn."""
    items = ",\n".join(f"[==[{b}]==]" for b in bodies)
    return (
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"local bodies = {{\n{items}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[i])\nend\n"
    )


def run_wrk(url: str, script: Path, duration: int, pid: int) -> dict[str, Any]:
    """Load ``url`` at 64 connections for ``duration`` s: requests/s, p50, p99, server CPU."""
    import re

    cpu_before, started = process_tree_cpu(pid), time.monotonic()
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration}s", "--timeout", "30s"]
    done = subprocess.run(
        [*command, "--latency", "-s", str(script), url], capture_output=True, text=True, check=True
    )
    cpu = (process_tree_cpu(pid) - cpu_before) / (time.monotonic() - started)
    out = done.stdout

    def field(pattern: str) -> str:
        match = re.search(pattern, out, re.M)
        if match is None:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        return match.group(1)

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "req_s": float(field(r"Requests/sec:\s+([\d.]+)")),
        "p50_ms": _ms(field(r"^\s+50%\s+(\S+)")),
        "p99_ms": _ms(field(r"^\s+99%\s+(\S+)")),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "server_cpu_cores": round(cpu, 2),
    }


def process_tree_memory(root: int) -> dict[str, float]:
    """RSS now and peak RSS (VmHWM), summed over a process and its descendants, in MiB."""
    parent: dict[int, int] = {}
    memory: dict[int, tuple[int, int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
            )
        except OSError:
            continue
        pid = int(status.parent.name)
        parent[pid] = int(fields["PPid"])
        kib = [int(fields.get(key, "0 kB").split()[0]) for key in ("VmRSS", "VmHWM")]
        memory[pid] = (kib[0], kib[1])
    tree, frontier = {root}, [root]
    while frontier:
        current = frontier.pop()
        children = [pid for pid, ppid in parent.items() if ppid == current and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    rss = sum(memory.get(pid, (0, 0))[0] for pid in tree) / 1024
    peak = sum(memory.get(pid, (0, 0))[1] for pid in tree) / 1024
    return {"server_rss_mib": round(rss, 1), "server_peak_rss_mib": round(peak, 1)}


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(PYTHONPATH=str(ROOT), PATH=f"{BIN}:{env.get('PATH', '')}")
    return env


def serve_one(args: argparse.Namespace, kind: str, script: Path, probe: str) -> dict[str, Any]:
    """Start ``shipyard serve scale-KIND``, check one answer, warm up, measure, stop."""
    name, port = f"scale-{kind}", free_port()
    command = [str(BIN / "shipyard"), "-w", str(folder(args) / "ws"), "serve", f"{name}@champion"]
    command += ["--endpoint", name, "--reset", "--workers", str(args.workers)]
    command += ["--port", str(port), "--timeout-ms", "30000"]
    log = folder(args) / f"server-{kind}.log"
    say(f"starting {name} ({args.workers} workers); its log: {log}")
    started = time.monotonic()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, env=server_env(), cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        try:
            wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", process, seconds=900)
        except RuntimeError as exc:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name}: {exc}; its output ({log}):\n{tail}") from None
        ready_s = time.monotonic() - started
        url = f"http://127.0.0.1:{port}/v2/models/{name}/infer"
        request = urllib.request.Request(url, probe.encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(json.loads(response.read())["outputs"][0]["data"][0])
        if len(answer["items"]) != K:
            raise RuntimeError(f"{name} answered {answer} to {probe}")
        say(f"{name} ready in {ready_s:.0f} s; warm-up {args.warmup} s")
        run_wrk(url, script, args.warmup, process.pid)
        measured = run_wrk(url, script, args.duration, process.pid)
        measured.update(process_tree_memory(process.pid))
        say(f"{name}: {json.dumps(measured)}")
        return {"server": name, "ready_s": round(ready_s, 1), **measured}
    finally:
        stop(process)


def stage_serve(args: argparse.Namespace) -> dict[str, Any]:
    picker = random.Random(5)
    bodies = [request_body(str(picker.randrange(args.users))) for _ in range(BODIES)]
    script = folder(args) / "wrk-bodies.lua"
    script.write_text(lua_script(bodies))
    return {"rows": [serve_one(args, kind, script, bodies[0]) for kind in KINDS]}


RUNNERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "generate": stage_generate,
    "als": stage_als,
    "build": stage_build,
    "serve": stage_serve,
}


# -- the parent: stages in order, resumable ----------------------------------------------------


def run_stage(args: argparse.Namespace, stage: str) -> dict[str, Any]:
    """Run one stage in a fresh interpreter, its progress lines passed through; its result."""
    command = [sys.executable, __file__, "--stage", stage, "--users", str(args.users)]
    command += ["--items", str(args.items), "--iterations", str(args.iterations)]
    command += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    command += ["--workers", str(args.workers), "--candidates", str(args.candidates)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"stage {stage} failed (exit {done.returncode}); see the lines above")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def write_results(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> str:
    generated, als, build = results["generate"], results["als"], results["build"]
    serve = results["serve"]
    stages = [{"stage": name, **{k: results[name][k] for k in MEASURED}} for name in STAGES]
    served = [
        {**row, "p99 goal (<= 10 ms)": "met" if row["p99_ms"] <= 10 else "missed"}
        for row in serve["rows"]
    ]
    columns = ["server", "req_s", "p50_ms", "p99_ms", "p99 goal (<= 10 ms)", "non_2xx"]
    columns += ["server_cpu_cores", "server_rss_mib", "server_peak_rss_mib", "ready_s"]
    text = "\n\n".join(
        [
            f"# Recommender at scale: {args.users:,} users x {args.items:,} items",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared by the server and"
            f" wrk), {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB;"
            f" {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. How to read it: README.md.",
            "## Serving: top-10 for random users, 64 connections\n\n"
            + markdown_table(served, columns)
            + f"\n\n{args.workers} workers each; each request retrieves k + the user's seen items"
            f" (at most {build['candidates']}), drops the seen ones and answers the top 10; wrk"
            f" {args.duration} s after {args.warmup} s of warm-up, {BODIES:,} bodies of random"
            " users cycled. HNSW ef_search"
            f" {build['ef_search']} (tuned to recall@10 {build['tuned_recall']} on user"
            " vectors; faiss searches with max(ef_search, items retrieved)); the served answers"
            " of the two agree on"
            f" {build['answer_recall_at_10']:.1%} of top-10 items ({PARITY_USERS:,} random"
            " users, seen items excluded). In process (`Recommender.recommend`, the"
            f" {PARITY_USERS:,} users in one call): {build['in_process_hnsw_ms_per_user']} ms"
            f" (HNSW) and {build['in_process_exact_ms_per_user']} ms (exact) per user; one user"
            f" per call ({SINGLE_USERS} calls, what one request costs a worker):"
            f" {build['single_hnsw_ms']} ms (HNSW) and {build['single_exact_ms']} ms (exact).",
            "## Data and training\n\n"
            + markdown_table([generated], [k for k in generated if k not in MEASURED])
            + f"\n\nALS: {FACTORS} factors, {als['iterations']} iterations in {als['fit_s']} s"
            f" (per iteration: {', '.join(f'{t} s' for t in als['iteration_s'])}), implicit's 2"
            " threads, BLAS 1 thread.",
            "## Stages\n\n"
            + markdown_table(stages, ["stage", "seconds", "peak_rss_mib"])
            + f"\n\nbuild: HNSW index {build['index_build_s']} s; registering the HNSW version"
            f" {build['register_hnsw_s']} s and the exact one {build['register_exact_s']} s;"
            f" model files {build['file_hnsw_mib']:,} MiB and {build['file_exact_mib']:,} MiB."
            " peak_rss_mib is the stage's own process (serve: the benchmark's; the servers'"
            " memory is in the serving table).",
        ]
    )
    args.out.write_text(text + "\n", encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.stage:
        measure(lambda: RUNNERS[args.stage](args))
        return
    here = folder(args)
    here.mkdir(parents=True, exist_ok=True)
    redo = STAGES.index(args.redo) if args.redo else len(STAGES)
    results: dict[str, dict[str, Any]] = {}
    ran = False  # once a stage runs, every later one runs too: its inputs changed
    for number, stage in enumerate(STAGES):
        record = here / f"{stage}.json"
        if record.exists() and number < redo and not ran:
            results[stage] = json.loads(record.read_text())
            say(f"{stage}: done before ({record}); --redo {stage} to run it again")
            continue
        say(f"{stage} ...")
        ran = True
        record.unlink(missing_ok=True)
        results[stage] = run_stage(args, stage)
        record.write_text(json.dumps(results[stage], indent=1))
        shown = {k: v for k, v in results[stage].items() if k != "rows"}
        say(f"{stage}: {json.dumps(shown)}")
    print(write_results(args, results))


if __name__ == "__main__":
    main()
