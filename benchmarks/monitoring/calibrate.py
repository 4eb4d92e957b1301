"""Calibration of Shipyard's drift verdicts: A/A false-alarm rates and a power table.

Each trial draws a reference and a current data set of ``n`` rows each from the same
distribution (20 numeric columns of assorted shapes, with ties, zeros and missing values,
and 5 categorical ones of 2 to 500 categories), profiles both, and asks whether the data set
drifted, under several settings. The data-set false-alarm rate is the share of trials that
say "drift". The same trial then injects one shift at a time into the current data (a mean
shift of 0.1, 0.25 or 0.5 sigma on one feature, a category-mix change, a missing-rate jump)
and records whether that column is caught. Run from the repository root::

    .venv/bin/python benchmarks/monitoring/calibrate.py   # the committed run, ~24 min on 2 cores
    .venv/bin/python benchmarks/monitoring/calibrate.py --trials 1000:50 --sizes 1000,10000

``--trials`` lists trials per size in the order of ``--sizes``. Results go to
``benchmarks/monitoring/calibration.md`` (tables) and ``calibration.json`` (numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import markdown_table  # noqa: E402

from shipyard.monitoring import (  # noqa: E402
    DatasetDriftTest,
    DatasetProfile,
    JensenShannonDistance,
    KolmogorovSmirnovTest,
    Verdict,
    WassersteinDistance,
)

HERE = Path(__file__).parent
ALPHA = 0.05
CATEGORIES = {"cat0": 2, "cat1": 5, "cat2": 12, "cat3": 40, "cat4": 500}
CAT1_P = np.array([0.35, 0.25, 0.20, 0.12, 0.08])
CAT1_SHIFTED = np.array([0.30, 0.25, 0.20, 0.12, 0.13])  # 5 points from the first to the last
NO_FLOOR = JensenShannonDistance(floor=0.0)

SETTINGS: dict[str, Callable[[], DatasetDriftTest]] = {
    "default (chi-square + BH + JS floor 0.05)": lambda: DatasetDriftTest(),
    "chi-square + BH, no floor": lambda: DatasetDriftTest(
        numeric_distance=NO_FLOOR, categorical_distance=NO_FLOOR
    ),
    "chi-square + Bonferroni + JS floor 0.05": lambda: DatasetDriftTest(correction="bonferroni"),
    "KS (binned) + BH + Wasserstein floor 0.1 sd": lambda: DatasetDriftTest(
        numeric_test=KolmogorovSmirnovTest(), numeric_distance=WassersteinDistance()
    ),
    "chi-square uncorrected, no floor": lambda: DatasetDriftTest(
        correction="none", numeric_distance=NO_FLOOR, categorical_distance=NO_FLOOR
    ),
}
POWER_SETTINGS = list(SETTINGS)[:2]
SCENARIOS = {
    "mean shift 0.1 sd (num0)": "num0",
    "mean shift 0.25 sd (num0)": "num0",
    "mean shift 0.5 sd (num0)": "num0",
    "category mix, 5 points moved (cat1)": "cat1",
    "missing rate 2% -> 10% (num1)": "num1",
}


def _numeric(rng: np.random.Generator, i: int, n: int) -> np.ndarray:
    """Column ``num{i}``: normal, lognormal, exponential, Poisson counts, zero-inflated, uniform."""
    if i < 8:
        return rng.normal(10.0 * i, 1.0 + i, n)
    if i < 12:
        return rng.lognormal(0.0, 0.5 + 0.25 * (i - 8), n)
    if i < 15:
        return rng.exponential(1.0 + i, n)
    if i < 17:
        return rng.poisson(2.0 + 3 * (i - 15), n).astype(np.float64)  # ties
    if i < 19:
        return np.where(rng.random(n) < 0.7, 0.0, rng.exponential(50.0, n))  # 70 % zeros
    return rng.uniform(-1.0, 1.0, n)


def _with_missing(rng: np.random.Generator, values: np.ndarray, rate: float) -> np.ndarray:
    values[rng.random(values.size) < rate] = np.nan
    return values


def _categorical(rng: np.random.Generator, name: str, n: int, p: Any = None) -> np.ndarray:
    k = CATEGORIES[name]
    if p is None:
        p = (
            CAT1_P
            if name == "cat1"
            else (1.0 / np.arange(1, k + 1)) / (1.0 / np.arange(1, k + 1)).sum()
        )
    return rng.choice(k, size=n, p=p)


def draw(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """One data set: 20 numeric columns (num1..num5 with 2 % missing) and 5 categorical."""
    columns: dict[str, np.ndarray] = {}
    for i in range(20):
        values = _numeric(rng, i, n)
        columns[f"num{i}"] = _with_missing(rng, values, 0.02) if 1 <= i <= 5 else values
    for name in CATEGORIES:
        columns[name] = _categorical(rng, name, n)
    return columns


def shifted_column(rng: np.random.Generator, scenario: str, n: int) -> np.ndarray:
    """The one column a scenario changes, drawn afresh with the change."""
    if scenario.startswith("mean shift"):
        k = float(scenario.split()[2])
        return _numeric(rng, 0, n) + k * 1.0  # num0 has sd 1
    if scenario.startswith("category mix"):
        return _categorical(rng, "cat1", n, CAT1_SHIFTED)
    return _with_missing(rng, _numeric(rng, 1, n), 0.10)


def trial(args: tuple[int, int]) -> dict[str, Any]:
    """One A/A trial and its power scenarios; returns verdicts and the shifted distances."""
    n, seed = args
    rng = np.random.default_rng(np.random.SeedSequence([n, seed]))
    reference = DatasetProfile.from_reference(draw(rng, n), categorical=list(CATEGORIES))
    current = reference.empty().update(draw(rng, n))
    aa = {
        name: make().compare(reference, current).verdict is Verdict.DRIFT
        for name, make in SETTINGS.items()
    }
    power: dict[str, dict[str, bool]] = {}
    distance: dict[str, float] = {}
    for scenario, column in SCENARIOS.items():
        changed = reference.empty()
        changed.columns = {**current.columns}
        changed.columns[column] = reference[column].empty().update(shifted_column(rng, scenario, n))
        changed.n_rows = n
        power[scenario] = {}
        for name in POWER_SETTINGS:
            report = SETTINGS[name]().compare(reference, changed)
            power[scenario][name] = column in report.drifted
            distance[scenario] = float(report[column].distance.statistic)
    return {"aa": aa, "power": power, "distance": distance}


def upper_bound(alarms: int, trials: int) -> float:
    """The 95 % Clopper-Pearson upper bound of a rate."""
    from scipy.stats import binomtest

    return float(binomtest(alarms, trials).proportion_ci(0.95, method="exact").high)


def run(sizes: list[int], trials: list[int], workers: int) -> dict[str, Any]:
    from rich.progress import Progress

    results: dict[str, Any] = {}
    with ProcessPoolExecutor(workers) as pool, Progress() as progress:
        for n, count in zip(sizes, trials, strict=True):
            task = progress.add_task(f"{n:>9,} rows", total=count)
            started = time.perf_counter()
            outcomes = []
            for outcome in pool.map(trial, [(n, s) for s in range(count)], chunksize=1):
                outcomes.append(outcome)
                progress.advance(task)
            results[str(n)] = {
                "trials": count,
                "seconds": round(time.perf_counter() - started, 1),
                "aa": {name: sum(o["aa"][name] for o in outcomes) for name in SETTINGS},
                "power": {
                    s: {name: sum(o["power"][s][name] for o in outcomes) for name in POWER_SETTINGS}
                    for s in SCENARIOS
                },
                "distance": {
                    s: float(np.median([o["distance"][s] for o in outcomes])) for s in SCENARIOS
                },
            }
    return results


def tables(results: dict[str, Any], workers: int) -> str:
    sizes = list(results)
    header = [f"{int(n):,} rows" for n in sizes]
    aa_rows = []
    for name in SETTINGS:
        row = {"setting": name}
        for n, label in zip(sizes, header, strict=True):
            alarms, count = results[n]["aa"][name], results[n]["trials"]
            row[label] = f"{alarms / count:.3f} (≤ {upper_bound(alarms, count):.3f})"
        aa_rows.append(row)
    trials_row = {
        "setting": "trials",
        **{h: str(results[n]["trials"]) for n, h in zip(sizes, header, strict=True)},
    }
    power_rows = []
    for scenario in SCENARIOS:
        for name in POWER_SETTINGS:
            row = {
                "shift": scenario,
                "setting": "default" if name.startswith("default") else "no floor",
            }
            for n, label in zip(sizes, header, strict=True):
                row[label] = f"{results[n]['power'][scenario][name] / results[n]['trials']:.2f}"
            power_rows.append(row)
    distance_rows = [
        {
            "shift": s,
            **{h: f"{results[n]['distance'][s]:.3f}" for n, h in zip(sizes, header, strict=True)},
        }
        for s in SCENARIOS
    ]
    seconds = ", ".join(f"{int(n):,} rows {results[n]['seconds']} s" for n in sizes)
    return f"""# Drift calibration: A/A false alarms and power

Produced by `.venv/bin/python benchmarks/monitoring/calibrate.py` on {platform.machine()}
Linux, {os.cpu_count()} cores ({workers} worker processes; {seconds}).
Each trial: a reference and a current data set of the stated size each, drawn from one
distribution (20 numeric columns: normal, lognormal, exponential, Poisson counts with ties,
70 %-zero, uniform, five of them with 2 % missing; 5 categorical columns of 2, 5, 12, 40 and
500 categories, Zipf-distributed but the 5, whose long tail a small reference partly
misses). α = {ALPHA} for the data set.

## A/A: the data-set false-alarm rate (nothing changed)

Share of trials where the data set was declared drifted, with the 95 % Clopper–Pearson upper
bound of the true rate in parentheses. The default must stay ≤ α.

{markdown_table([trials_row, *aa_rows], ["setting", *header])}

The default at 1,000 rows over 10,000 trials (these 1,000 among them), with the columns that
fire and the chi-square p-value tail at the levels Benjamini–Hochberg uses:
[aa_breakdown.md](aa_breakdown.md) (`aa_breakdown.py`).

## Power: share of trials in which the shifted column is declared drifted

One change at a time in the current data, everything else as in the A/A trial. "default" is
chi-square + Benjamini–Hochberg + the Jensen–Shannon floor of 0.05; "no floor" is the same
without the floor (significance only).

{markdown_table(power_rows, ["shift", "setting", *header])}

Median Jensen–Shannon distance (base 2) of the shifted column, against the default floor of
0.05 (at small sizes it includes sampling noise):

{markdown_table(distance_rows, ["shift", *header])}
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument(
        "--trials", default="1000:500:200:200", help="trials per size, ':'-separated"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "calibration.md"))
    parser.add_argument(
        "--tables-only", action="store_true", help="rewrite the tables from the last JSON"
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.tables_only:
        out.write_text(tables(json.loads(out.with_suffix(".json").read_text()), args.workers))
        print(out.read_text())
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    trials = [int(t) for t in args.trials.split(":")]
    if len(trials) != len(sizes):
        parser.error("--trials needs one count per size")
    results = run(sizes, trials, args.workers)
    out.write_text(tables(results, args.workers))
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
