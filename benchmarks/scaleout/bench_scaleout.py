"""Benchmark: the Ray engine against the local engine, and a projection to a cluster.

Three parts, each configuration in a fresh interpreter with its own Ray (started by the case
with ``RayEngine.connect(num_cpus=N)``: 127.0.0.1 only, no dashboard; shut down when the
case ends):

(a) **overhead**: ``engine.map`` over empty tasks (one task per item) on the local engine and
    on Ray with 2 CPUs; one task at a time (``ray.get`` of each before the next: the round
    trip); ``ray.put`` of a 100 MB DataFrame and a task that reads it.
(b) **search**: the same ``search(...)`` (LightGBM, 6 trials, the small space below, 3
    prequential folds; ``batch=2`` when :func:`shipyard.training.search.search` has it: two
    trials at a time, one task each, else trial after trial with the folds on the engine) on
    the local engine (1 worker) and on Ray with 1 and 2 CPUs. The trials must be identical
    (asserted).
(c) **batch scoring** with :func:`shipyard.serving.batch.score_dataset` of a registered
    LightGBM model over every row of the data set (about 300,000), on the local engine and on
    Ray with 1 and 2 CPUs, twice: from the rows with their 15 features in 16 Parquet files,
    and from the registered data set itself (105 daily partitions, features computed
    point-in-time from the offline store in each task). The output parts must be identical
    (asserted).

Each timed part also gets a projection to 8, 32 and 128 CPUs with the model
``T(n) = T_serial + m * ceil(k / min(n, k)) * (w + o)`` (``m`` engine maps one after the
other, ``k`` tasks each, ``w`` one task's work, ``o`` the per-task overhead measured in (a)),
``T_serial`` and ``w`` fitted by least squares on the local, Ray 1-CPU and Ray 2-CPU times;
see README.md. Search and the Parquet scoring are timed twice per case (the faster counts).

Run from the repository root (about 5 minutes on 2 cores; the first run also simulates the
data set and trains the model into benchmarks/_work/scaleout-ws, about 1 minute)::

    .venv/bin/python benchmarks/scaleout/bench_scaleout.py
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import os
import platform
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import WORK, markdown_table, run_case  # noqa: E402

HERE = Path(__file__).parent
WS = WORK / "scaleout-ws"
SCORE_IN = WORK / "scaleout-score-in"
SCORE_OUT = WORK / "scaleout-score-out"
SIM = {"n_customers": 1500, "n_terminals": 3000, "n_days": 105, "mode": "fast", "seed": 7}
PROTOCOL = {"start_date_training": "2018-05-20", "n_folds": 3}
MODEL = {"n_estimators": 100, "num_leaves": 31}
PARTITIONS = 16
EMPTY_TASKS = 400
ROUND_TRIPS = 100
BIG_MB = 100
N_TRIALS = 6
CASES = {
    "overhead-local": ("overhead", "local", 0),
    "overhead-ray2": ("overhead", "ray", 2),
    "search-local": ("search", "local", 0),
    "search-ray1": ("search", "ray", 1),
    "search-ray2": ("search", "ray", 2),
    "score-local": ("score", "local", 0),
    "score-ray1": ("score", "ray", 1),
    "score-ray2": ("score", "ray", 2),
    "scoreds-local": ("scoreds", "local", 0),
    "scoreds-ray1": ("scoreds", "ray", 1),
    "scoreds-ray2": ("scoreds", "ray", 2),
}
PARTS = ("search", "score", "scoreds")
TITLES = {
    "search": "search",
    "score": "scoring, features in Parquet",
    "scoreds": "scoring the data set, features point-in-time",
}
PROJECT_CPUS = (8, 32, 128)
REPEATS = {"search": 2, "score": 2, "scoreds": 1}
"""Timed runs per case (the fastest counts); the data set case once, to stay in budget."""


# -- setup (parent, once) -----------------------------------------------------------------


def prepare() -> dict[str, Any]:
    """The workspace, its data set, the model and the scoring input (made on the first run)."""
    from shipyard.data.catalog import get_dataset
    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
    from shipyard.features.fraud import BASELINE_VIEWS
    from shipyard.features.offline import OfflineStore
    from shipyard.registry.models import ModelRegistry
    from shipyard.solutions.fraud import Protocol, train_suite
    from shipyard.workspace import Workspace

    if (WS / "shipyard.toml").exists():
        ws = Workspace.open(WS)
        dataset = get_dataset(ws, "fraud")
    else:
        ws = Workspace.init(WS)
        dataset = simulate_fraud_dataset(ws, FraudSimulator(**SIM))  # type: ignore[arg-type]
        OfflineStore(ws).materialize(BASELINE_VIEWS)
    versions = ModelRegistry(ws).versions("fraud")
    if not versions:
        train_suite(
            ws,
            dataset,
            model_types=["lightgbm"],
            protocol=Protocol(**PROTOCOL),  # type: ignore[arg-type]
            model_params={"lightgbm": MODEL},
            n_boot=0,
        )
        versions = ModelRegistry(ws).versions("fraud")
    version = versions[0].version  # newest first
    rows = _write_score_input(ws, dataset)
    ws.close()
    return {
        "dataset": dataset.name,
        "dataset_version": dataset.version,
        "model_version": version,
        "rows": rows,
    }


def _write_score_input(ws: Any, dataset: Any) -> int:
    """Every row of the data set with its 15 features, as PARTITIONS Parquet files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if SCORE_IN.is_dir() and len(list(SCORE_IN.glob("*.parquet"))) == PARTITIONS:
        return sum(pq.ParquetFile(p).metadata.num_rows for p in SCORE_IN.glob("*.parquet"))
    frame = _full_frame(ws, dataset)
    SCORE_IN.mkdir(parents=True, exist_ok=True)
    size = math.ceil(len(frame) / PARTITIONS)
    for i in range(PARTITIONS):
        part = frame.iloc[i * size : (i + 1) * size]
        pq.write_table(
            pa.Table.from_pandas(part, preserve_index=False), SCORE_IN / f"part-{i:03d}.parquet"
        )
    return len(frame)


def _full_frame(ws: Any, dataset: Any) -> Any:
    from shipyard.features.fraud import BASELINE_VIEWS_REF
    from shipyard.training.frames import Window, load_frame

    window = Window(dataset.name, dataset.version, "2018-04-01", "2018-12-31", BASELINE_VIEWS_REF)
    return load_frame(ws, window).sort_values("TRANSACTION_ID").reset_index(drop=True)


# -- engines (in a case) ----------------------------------------------------------------------


def start_engine(kind: str, cpus: int) -> tuple[Any, float]:
    """The engine of a case and the seconds its start took (Ray: a fresh local Ray)."""
    from shipyard.engines import LocalEngine

    if kind == "local":
        return LocalEngine(max_workers=1), 0.0
    from shipyard.engines.ray import RayEngine

    started = time.perf_counter()
    # Shipyard's own start of a local Ray: this process's own (never a cluster named by
    # RAY_ADDRESS or left by `ray start`), 127.0.0.1 only, no dashboard
    engine = RayEngine.connect(num_cpus=cpus, object_store_bytes=600 * 1024 * 1024)
    engine.map(_empty, list(range(cpus)))  # workers up before anything is timed
    return engine, time.perf_counter() - started


def stop_engine(kind: str) -> None:
    """Shut down the case's own Ray (nothing else)."""
    if kind == "ray":
        import ray

        ray.shutdown()


def _empty(item: int) -> int:
    return item


def _rows(frame: Any) -> int:
    return len(frame)


def timed(work: Any, repeats: int) -> tuple[list[float], Any]:
    """Seconds of each of ``repeats`` runs of ``work()`` (the fastest is reported), and its
    last result: on a shared machine the fastest run is the one least slowed by others."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        times.append(round(time.perf_counter() - started, 3))
    return times, result


# -- (a) overhead -------------------------------------------------------------------------------


def case_overhead(kind: str, engine: Any) -> dict[str, Any]:
    """Per-task cost of empty tasks, one-at-a-time round trips, a 100 MB frame in a task."""
    import numpy as np
    import pandas as pd

    items = list(range(EMPTY_TASKS))
    started = time.perf_counter()
    assert engine.map(_empty, items) == items
    mapped = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(ROUND_TRIPS):
        assert engine.map(_empty, [i]) == [i]
    trip = (time.perf_counter() - started) / ROUND_TRIPS
    columns = 10
    n = BIG_MB * 1024 * 1024 // (8 * columns)
    frame = pd.DataFrame(np.random.default_rng(0).random((n, columns)), columns=list("abcdefghij"))
    put_s, task_s = _big_frame(kind, engine, frame)
    return {
        "map_per_task_ms": round(mapped / EMPTY_TASKS * 1000, 4),
        "round_trip_ms": round(trip * 1000, 4),
        "frame_mb": round(frame.memory_usage().sum() / 2**20, 1),
        "put_s": round(put_s, 3),
        "task_on_frame_s": round(task_s, 3),
    }


def _big_frame(kind: str, engine: Any, frame: Any) -> tuple[float, float]:
    """Seconds to put the frame in the object store, and for one task to read it."""
    if kind == "local":
        started = time.perf_counter()
        assert engine.map(_rows, [frame]) == [len(frame)]
        return 0.0, time.perf_counter() - started
    import ray

    started = time.perf_counter()
    ref = ray.put(frame)
    put_s = time.perf_counter() - started
    started = time.perf_counter()
    assert ray.get(ray.remote(_rows).remote(ref)) == len(frame)
    return put_s, time.perf_counter() - started


# -- (b) search ---------------------------------------------------------------------------------


def _space(trial: Any) -> dict[str, Any]:
    """A small LightGBM space (one thread per fit, so that tasks, not threads, use the CPUs)."""
    return {
        "n_estimators": trial.suggest_int("n_estimators", 100, 300, step=100),
        "num_leaves": trial.suggest_int("num_leaves", 7, 31),
        "learning_rate": trial.suggest_float("learning_rate", 0.03, 0.3, log=True),
        "n_jobs": 1,
    }


def case_search(engine: Any) -> dict[str, Any]:
    """Time one search; its trials are returned for the parent to compare across engines."""
    from shipyard.data.catalog import get_dataset
    from shipyard.features.fraud import BASELINE_FEATURES
    from shipyard.solutions.fraud import Protocol
    from shipyard.training.frames import load_frame
    from shipyard.training.search import search
    from shipyard.workspace import Workspace

    ws = Workspace.open(WS)
    protocol = Protocol(**PROTOCOL)  # type: ignore[arg-type]
    dataset = get_dataset(ws, "fraud")
    frame = load_frame(ws, protocol.window(dataset))
    split = protocol.splits()[0]
    extra = {"batch": 2} if "batch" in inspect.signature(search).parameters else {}

    def run() -> Any:
        return search(
            frame,
            list(BASELINE_FEATURES),
            "lightgbm",
            split,
            n_trials=N_TRIALS,
            space=_space,
            engine=engine,
            seed=0,
            **extra,
        )

    times, result = timed(run, REPEATS["search"])
    ws.close()
    return {
        "seconds": min(times),
        "runs_s": times,
        "mode": "batch=2" if extra else "folds on the engine",
        # batch=2: one map per batch, one task per trial (its folds in turn inside it);
        # else one map per trial, one task per fold
        "tasks": N_TRIALS if extra else N_TRIALS * PROTOCOL["n_folds"],
        "maps": N_TRIALS // 2 if extra else N_TRIALS,
        "tasks_per_map": 2 if extra else PROTOCOL["n_folds"],
        "trials": result.trials,
        "best_value": result.best_value,
    }


# -- (c) batch scoring ----------------------------------------------------------------------------


def case_score(name: str, engine: Any, version: int, data: str) -> dict[str, Any]:
    """Score every row with score_dataset; a digest of the output goes to the parent."""
    from shipyard.serving.batch import score_dataset
    from shipyard.workspace import Workspace

    out = SCORE_OUT / name
    ws = Workspace.open(WS)

    def run() -> Any:
        shutil.rmtree(out, ignore_errors=True)
        return score_dataset(ws, f"fraud@{version}", data, out, engine=engine)

    times, result = timed(run, REPEATS[name.split("-")[0]])
    ws.close()
    rows, digest = _digest_outputs(out)
    assert rows == result.rows
    tasks = result.tasks  # runs of partitions when the features come from the views
    return {
        "seconds": min(times),
        "runs_s": times,
        "rows": rows,
        "tasks": tasks,
        "maps": 1,
        "tasks_per_map": tasks,
        "digest": digest,
    }


def _digest_outputs(out: Path) -> tuple[int, str]:
    """Rows and SHA-256 of the output parts, read in part order (the manifest is left out)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(out.glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    digest = hashlib.sha256()
    for column in table.column_names:
        digest.update(column.encode())
        digest.update(table[column].combine_chunks().to_numpy(zero_copy_only=False).tobytes())
    return table.num_rows, digest.hexdigest()


# -- one case (child process) --------------------------------------------------------------------


def run_one(name: str, model_version: int, dataset_version: int) -> dict[str, Any]:
    """Run case ``name`` with its own engine; returns its timings."""
    part, kind, cpus = CASES[name]
    engine, start_s = start_engine(kind, cpus)
    try:
        if part == "overhead":
            result = case_overhead(kind, engine)
        elif part == "search":
            result = case_search(engine)
        else:
            data = str(SCORE_IN) if part == "score" else f"fraud@{dataset_version}"
            result = case_score(name, engine, model_version, data)
    finally:
        stop_engine(kind)
    return {
        "case": name,
        "engine": kind,
        "cpus": cpus or 1,
        "engine_start_s": round(start_s, 2),
        **result,
    }


# -- projection and report (parent) ----------------------------------------------------------------


def fit(points: list[tuple[float, float, float]]) -> dict[str, float]:
    """T_serial and the work of one task, by least squares over ``(T, waves, overhead)``.

    Each measurement is ``T = T_serial + waves * (w + o)``: ``waves`` one-task-long steps
    (``maps * ceil(k / n)``), ``o`` the per-task overhead (0 on the local engine). A negative
    T_serial (noise) is refitted as 0; a non-positive ``w`` cannot be projected.
    """
    import numpy as np

    waves = np.array([p[1] for p in points])
    y = np.array([p[0] - p[1] * p[2] for p in points])  # T - waves * o
    serial, work = np.linalg.lstsq(np.column_stack([np.ones_like(waves), waves]), y, rcond=None)[0]
    if serial < 0:
        serial, work = 0.0, float(waves @ y / (waves @ waves))
    fitted = serial + waves * (work + np.array([p[2] for p in points]))
    measured = np.array([p[0] for p in points])
    return {
        "serial_s": float(serial),
        "task_s": float(work),
        "max_error": float(np.max(np.abs(fitted - measured) / measured)),
    }


def project(model: dict[str, float], maps: int, tasks: int, overhead_s: float, cpus: int) -> float:
    """T(n) for ``cpus`` CPUs under the fitted model."""
    waves = maps * math.ceil(tasks / min(cpus, tasks))
    return model["serial_s"] + waves * (model["task_s"] + overhead_s)


def projections(results: dict[str, dict[str, Any]], overhead_s: float) -> list[dict[str, Any]]:
    """Fitted serial and parallel parts and projected times for search and scoring."""
    rows = []
    for part in PARTS:
        one = results[f"{part}-ray1"]
        maps, tasks = int(one["maps"]), int(one["tasks_per_map"])
        points = [
            (results[f"{part}-local"]["seconds"], maps * tasks, 0.0),
            (one["seconds"], maps * tasks, overhead_s),
            (results[f"{part}-ray2"]["seconds"], maps * math.ceil(tasks / 2), overhead_s),
        ]
        model = fit(points)
        row: dict[str, Any] = {
            "work": TITLES[part],
            "maps x tasks": f"{maps} x {tasks}",
            "T_serial_s": round(model["serial_s"], 2),
            "task_s": round(model["task_s"], 3),
            "fit_error": f"{model['max_error']:.0%}",
        }
        if model["task_s"] <= 0:
            row["note"] = "not fitted: more CPUs were not faster on this run"
            rows.append(row)
            continue
        for n in PROJECT_CPUS:
            projected = project(model, maps, tasks, overhead_s, n)
            row[f"T({n})_s"] = round(projected, 2)
            row[f"speed-up({n})"] = round(results[f"{part}-local"]["seconds"] / projected, 2)
        rows.append(row)
    return rows


def compare(results: dict[str, dict[str, Any]]) -> None:
    """Same search trials and the same predictions on every engine, or stop here."""
    local = results["search-local"]
    for name in ("search-ray1", "search-ray2"):
        assert results[name]["trials"] == local["trials"], f"{name}: trials differ from local"
    for name in ("score-ray1", "score-ray2", "scoreds-ray1", "scoreds-ray2"):
        got, want = results[name], results[name.replace("ray1", "local").replace("ray2", "local")]
        assert (got["digest"], got["rows"]) == (want["digest"], want["rows"]), (
            f"{name}: predictions differ from local"
        )


def load_average() -> str:
    """The 1/5/15-minute load averages while the benchmark ran."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def write(setup: dict[str, Any], results: dict[str, dict[str, Any]], loads: list[str]) -> None:
    """results.json (everything) and results.md (the tables)."""
    overhead_s = results["overhead-ray2"]["map_per_task_ms"] / 1000
    proj = projections(results, overhead_s)
    meta = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "load_average_1_5_15": loads,
        **setup,
    }
    (HERE / "results.json").write_text(
        json.dumps({"meta": meta, "results": results, "projection": proj}, indent=1) + "\n"
    )
    (HERE / "results.md").write_text(render(meta, results, proj))


OVERHEAD_COLUMNS = ["engine", "cpus", "engine_start_s", "map_per_task_ms", "round_trip_ms"]
OVERHEAD_COLUMNS += ["frame_mb", "put_s", "task_on_frame_s"]
TIMED_COLUMNS = ["work", "engine", "cpus", "seconds", "runs_s", "speed-up vs local", "tasks"]
TIMED_COLUMNS += ["engine_start_s"]


def timed_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per timed case, with its speed-up against the local engine's time."""
    rows = []
    for part in PARTS:
        local = results[f"{part}-local"]["seconds"]
        for name in (f"{part}-local", f"{part}-ray1", f"{part}-ray2"):
            r = results[name]
            rows.append(
                {
                    **{c: r[c] for c in ("engine", "cpus", "seconds", "tasks", "engine_start_s")},
                    "work": TITLES[part],
                    "runs_s": " / ".join(str(t) for t in r.get("runs_s", [])),
                    "speed-up vs local": round(local / r["seconds"], 2),
                }
            )
    return rows


def render(meta: dict[str, Any], results: dict[str, dict[str, Any]], proj: list[Any]) -> str:
    """The markdown page of one run."""
    search, score = results["search-local"], results["score-local"]
    cols = ["work", "maps x tasks", "T_serial_s", "task_s", "fit_error"]
    cols += [c for n in PROJECT_CPUS for c in (f"T({n})_s", f"speed-up({n})")]
    if any("note" in row for row in proj):
        cols.append("note")
    return "\n".join(
        [
            "# Scale-out: last results",
            "",
            f"Run {meta['when']}; {meta['machine']}; load average (1/5/15 min) before and after: "
            f"{' -> '.join(meta['load_average_1_5_15'])}. Data: {meta['rows']:,} rows "
            f"({meta['dataset']} v{meta['dataset_version']}), model fraud v{meta['model_version']} "
            f"(LightGBM, {MODEL['n_estimators']} trees).",
            "",
            "## (a) Per-task overhead",
            "",
            markdown_table([results["overhead-local"], results["overhead-ray2"]], OVERHEAD_COLUMNS),
            "",
            f"`map_per_task_ms`: {EMPTY_TASKS} empty tasks in one `map`, per task; "
            f"`round_trip_ms`: one `map` of one empty task, {ROUND_TRIPS} times in a row; "
            "`put_s` / `task_on_frame_s`: `ray.put` of the frame, then one task that takes it "
            "(local: a call).",
            "",
            "## (b) Search and (c) batch scoring",
            "",
            markdown_table(timed_rows(results), TIMED_COLUMNS),
            "",
            f"Search: {search['mode']}, {N_TRIALS} trials x {PROTOCOL['n_folds']} folds; "
            "the trials are identical on every engine (asserted). Scoring (`score_dataset`): "
            f"{score['rows']:,} rows, with their features in {score['tasks']} Parquet files, "
            f"and the data set's {SIM['n_days']} daily partitions with features computed "
            "point-in-time in runs of partitions (`tasks`: the runs); the output parts are "
            "identical on every engine (asserted).",
            "",
            "## Projection",
            "",
            "T(n) = T_serial + m x ceil(k / min(n, k)) x (w + o): m maps one after the other "
            "of k tasks each, w = one task's work (`task_s`), o = the Ray per-task overhead of "
            "(a) (0 on the local engine); T_serial and w fitted by least squares on the three "
            "times above (`fit_error`: the largest gap between the fit and a measurement); "
            "speed-up against the local engine's time. See README.md for what it leaves out.",
            "",
            markdown_table(proj, cols),
            "",
        ]
    )


def main() -> None:
    """Prepare once, run every case in its own process, compare, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES))
    parser.add_argument("--model-version", type=int, default=1)
    parser.add_argument("--dataset-version", type=int, default=1)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_one(args.case, args.model_version, args.dataset_version)))
        return
    loads = [load_average()]
    started = time.perf_counter()
    setup = prepare()
    print(f"setup: {time.perf_counter() - started:.1f} s, {setup}", flush=True)
    results = {}
    for name in CASES:
        versions = ("--model-version", str(setup["model_version"]))
        versions += ("--dataset-version", str(setup["dataset_version"]))
        results[name] = run_case(__file__, name, *versions)
        shown = {k: v for k, v in results[name].items() if k not in ("trials",)}
        print(json.dumps(shown), flush=True)
    loads.append(load_average())
    compare(results)
    write(setup, results, loads)
    print(f"total {time.perf_counter() - started:.0f} s; wrote {HERE / 'results.md'}")


if __name__ == "__main__":
    main()
