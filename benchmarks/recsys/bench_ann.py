"""Benchmark: HNSW retrieval (faiss, ``shipyard.training.ann``) against exact inner-product search.

The issue's check: "recall@10 >= 0.95 of exact at the chosen settings, stated with the
speed-up, on a synthetic catalogue of 1M items". Each case runs in a fresh interpreter
(time and peak RSS from ``benchmarks/_common.py``):

1. ``data``: 1M item vectors and 10k query vectors (f=64). By default from a clustered
   generator shaped like a factor model's output (below); ``--factors DIR`` reads
   ``item_factors.npy`` / ``user_factors.npy`` instead (bench_scale.py writes ALS factors
   there), so the same measurement runs on a trained model's vectors;
2. ``exact``: ``IndexFlatIP`` on all queries (one thread), batched and one query at a time;
3. ``build``: the HNSW graph (``--M``, ``--ef-construction``; 2 threads), its bytes saved;
4. ``sweep``: recall@10 against exact and queries/s at each ``ef_search`` of a grid (one
   thread), then ``tune_ef_search`` on the first 20% of the queries (target 0.96) and the
   chosen setting's recall checked on the other 80%, which took no part in choosing it.

The clustered generator: 1,024 taste directions; an item is its cluster's direction plus
noise of the same length (cosine ~0.7 to its centre), scaled by a lognormal norm (sigma 0.5):
in implicit ALS popular items get long vectors, which is what makes inner-product search
harder than cosine search. Queries (users) are drawn the same way from the same directions.

Run from the repository root::

    .venv/bin/python benchmarks/recsys/bench_ann.py [--items 1000000] [--queries 10000]
    .venv/bin/python benchmarks/recsys/bench_ann.py --quick   # 100k items, 2k queries
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import WORK, markdown_table, measure, run_case  # noqa: E402

HERE = WORK / "recsys"
RESULTS = Path(__file__).with_name("results-ann.md")
K = 10
TARGET = 0.95
MARGIN = 0.01  # tuned to TARGET + MARGIN so the held-out queries' recall clears TARGET
TUNE_SHARE = 0.2  # of the queries, to choose ef_search on; the rest check the choice
EF_GRID = (10, 16, 32, 64, 128, 256)
SINGLE = 1000  # one-query searches timed for latency


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--factors", type=Path, default=None, help="folder of ALS factors")
    parser.add_argument("--M", type=int, default=32, help="HNSW links per node")
    parser.add_argument("--ef-construction", type=int, default=100)
    parser.add_argument("--build-threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="100k items, 2k queries")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--report", action="store_true", help="rewrite the results file from the last run's JSON"
    )
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.queries = 100_000, 2_000
    return args


def folder(args: argparse.Namespace) -> Path:
    source = "als" if args.factors else "clustered"
    return HERE / f"ann-{source}-{args.items}x{args.queries}"


def clustered(n: int, f: int, seed: int, centres: Any) -> Any:
    """``n`` vectors around the given unit directions (see the module doc)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, f)).astype(np.float32) / np.sqrt(f)
    out = centres[rng.integers(0, len(centres), n)] + noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    out *= rng.lognormal(0.0, 0.5, (n, 1)).astype(np.float32)
    return out.astype(np.float32)


def case_data(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    out = folder(args)
    out.mkdir(parents=True, exist_ok=True)
    if args.factors:
        items = np.load(args.factors / "item_factors.npy", mmap_mode="r")[: args.items]
        users = np.load(args.factors / "user_factors.npy", mmap_mode="r")
        pick = np.random.default_rng(1).choice(len(users), args.queries, replace=False)
        queries = np.asarray(users[np.sort(pick)])
    else:
        rng = np.random.default_rng(0)
        centres = rng.standard_normal((1024, 64)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        items = clustered(args.items, 64, 1, centres)
        queries = clustered(args.queries, 64, 2, centres)
    np.save(out / "items.npy", np.ascontiguousarray(items, dtype=np.float32))
    np.save(out / "queries.npy", np.ascontiguousarray(queries, dtype=np.float32))
    return {"items": len(items), "queries": len(queries), "dimension": int(items.shape[1])}


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    import numpy as np

    return np.load(folder(args) / "items.npy"), np.load(folder(args) / "queries.npy")


def single_query_timing(index: Any, queries: Any) -> dict[str, float]:
    """Per-query latency of one-query searches (what one served request pays), in µs."""
    import numpy as np

    took = np.empty(min(SINGLE, len(queries)))
    for i in range(len(took)):
        started = time.perf_counter()
        index.search(queries[i : i + 1], K)
        took[i] = time.perf_counter() - started
    return {
        "single_p50_us": round(float(np.percentile(took, 50)) * 1e6, 1),
        "single_p99_us": round(float(np.percentile(took, 99)) * 1e6, 1),
        "single_qps": round(len(took) / float(took.sum())),
    }


def batch_qps(index: Any, queries: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    _, ids = index.search(queries, K)
    return round(len(queries) / (time.perf_counter() - started)), ids


def case_exact(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from shipyard.training.ann import ItemIndex

    items, queries = load(args)
    index = ItemIndex.build(items, kind="exact", threads=1)
    qps, ids = batch_qps(index, queries)
    np.save(folder(args) / "exact_ids.npy", ids)
    return {"batch_qps": qps, **single_query_timing(index, queries)}


def case_build(args: argparse.Namespace) -> dict[str, Any]:
    from shipyard.training.ann import ItemIndex

    items, _ = load(args)
    started = time.perf_counter()
    index = ItemIndex.build(
        items,
        kind="hnsw",
        M=args.M,
        ef_construction=args.ef_construction,
        threads=args.build_threads,
    )
    build_s = time.perf_counter() - started
    data = index.to_bytes()
    (folder(args) / f"hnsw-M{args.M}-efc{args.ef_construction}.faiss").write_bytes(data)
    return {"build_s": round(build_s, 1), "index_mib": round(len(data) / 2**20, 1)}


def case_sweep(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from shipyard.training.ann import ItemIndex, recall_against_exact, tune_ef_search

    items, queries = load(args)
    exact_ids = np.load(folder(args) / "exact_ids.npy")
    data = (folder(args) / f"hnsw-M{args.M}-efc{args.ef_construction}.faiss").read_bytes()
    index = ItemIndex.from_bytes(data, "hnsw", threads=1)
    rows = []
    for ef in EF_GRID:
        index.ef_search = ef
        qps, _ = batch_qps(index, queries)
        recall = recall_against_exact(index, items, queries, K, exact_ids=exact_ids)
        rows.append({"ef_search": ef, "recall": round(recall, 4), "batch_qps": qps})
        rows[-1].update(single_query_timing(index, queries))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    tuning = int(len(queries) * TUNE_SHARE)
    tune, check = slice(0, tuning), slice(tuning, None)
    ef, tuned_recall = tune_ef_search(index, items, queries[tune], k=K, target=TARGET + MARGIN)
    held_out = recall_against_exact(index, items, queries[check], K, exact_ids=exact_ids[check])
    chosen = {"ef_search": ef, "tuning_recall": round(tuned_recall, 4), "tuning": tuning}
    chosen["held_out_recall"] = round(held_out, 4)
    chosen["batch_qps"], _ = batch_qps(index, queries)
    chosen.update(single_query_timing(index, queries[check]))
    return {"rows": rows, "chosen": chosen}


CASES = {"data": case_data, "exact": case_exact, "build": case_build, "sweep": case_sweep}


def child_args(args: argparse.Namespace) -> list[str]:
    out = ["--items", str(args.items), "--queries", str(args.queries), "--M", str(args.M)]
    out += ["--ef-construction", str(args.ef_construction)]
    out += ["--build-threads", str(args.build_threads)]
    return out + (["--factors", str(args.factors)] if args.factors else [])


def write_results(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> str:
    exact, sweep = results["exact"], results["sweep"]
    chosen = sweep["chosen"]
    source = (
        f"ALS factors from {args.factors}"
        if args.factors
        else "the clustered generator (1,024 directions, lognormal norms; module doc)"
    )
    rows = [
        {
            **row,
            "batch speed-up": f"{row['batch_qps'] / exact['batch_qps']:.1f}x",
            "single speed-up": f"{row['single_qps'] / exact['single_qps']:.1f}x",
        }
        for row in sweep["rows"]
    ]
    columns = ["ef_search", "recall", "batch_qps", "batch speed-up", "single_qps"]
    columns += ["single_p50_us", "single_p99_us", "single speed-up"]
    exact_row = {"ef_search": "exact", "recall": 1.0, **exact}
    text = "\n\n".join(
        [
            "# ANN retrieval: faiss HNSW against exact inner-product search",
            f"{args.items:,} items x {args.queries:,} queries, f=64, vectors from {source}."
            f" k={K}. HNSW M={args.M}, ef_construction={args.ef_construction}, built on"
            f" {args.build_threads} threads; every search on 1 thread (as one serving"
            " worker runs it). Batch: all queries in one call; single: one query per call"
            f" ({SINGLE:,} calls), as one served request pays it.",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work;"
            f" {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
            "## Chosen setting\n\n"
            f"`tune_ef_search` on the first {chosen['tuning']:,} queries (target recall@10 >="
            f" {TARGET + MARGIN}: the goal {TARGET} plus {MARGIN} for the sampling error of"
            f" a tuning sample) chose **ef_search = {chosen['ef_search']}** (recall"
            f" {chosen['tuning_recall']} there); on the other"
            f" {args.queries - chosen['tuning']:,} queries its recall@10 is"
            f" **{chosen['held_out_recall']}**. Speed-up over exact search: **"
            f"{chosen['single_qps'] / exact['single_qps']:.1f}x** one query at a time"
            f" ({chosen['single_qps']:,} against {exact['single_qps']:,} queries/s; p99"
            f" {chosen['single_p99_us']} µs against {exact['single_p99_us']} µs),"
            f" {chosen['batch_qps'] / exact['batch_qps']:.1f}x in one batch"
            f" ({chosen['batch_qps']:,} against {exact['batch_qps']:,} queries/s).",
            "## Sweep\n\n" + markdown_table([exact_row, *rows], columns),
            "## Cost\n\n"
            + markdown_table(
                [
                    {"case": name, "seconds": results[name]["seconds"], **results[name]}
                    for name in ("data", "exact", "build", "sweep")
                ],
                ["case", "seconds", "peak_rss_mib", "build_s", "index_mib"],
            )
            + "\n\nseconds: the whole case (loading included); peak_rss_mib: the case's"
            " process; index_mib: the serialized HNSW index (vectors + graph).",
        ]
    )
    args.out.write_text(text + "\n", encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.case:
        measure(lambda: CASES[args.case](args))
        return
    record = folder(args) / "results.json"
    if args.report:
        print(write_results(args, json.loads(record.read_text())))
        return
    results: dict[str, dict[str, Any]] = {}
    for name in ("data", "exact", "build", "sweep"):
        print(f"[bench_ann] {name} ...", flush=True)
        results[name] = run_case(__file__, name, *child_args(args))
        shown = {k: v for k, v in results[name].items() if k != "rows"}
        print(f"[bench_ann] {name}: {json.dumps(shown)}", flush=True)
    record.write_text(json.dumps(results, indent=1))
    print(write_results(args, results))


if __name__ == "__main__":
    main()
