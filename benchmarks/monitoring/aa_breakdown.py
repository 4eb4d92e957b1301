"""The A/A false-alarm rate of the default drift check at one size, measured precisely.

Runs many A/A trials of the calibration's data (``calibrate.draw``; trial ``s`` at ``n`` rows
uses the seed ``calibrate.py`` uses, so the first 1,000 trials are its trials), compares them
with the default ``DatasetDriftTest()`` and keeps, per trial and column, the chi-square
p-value, the Benjamini–Hochberg adjusted p-value and the Jensen–Shannon distance. Reports the
data-set rate with its exact 95 % interval, which columns fire, and the per-column p-value
tail at the levels Benjamini–Hochberg uses with 25 columns (α·k/m: 0.002, 0.004, ..., 0.01)
pooled over columns of one kind. Run from the repository root; writes
``benchmarks/monitoring/aa_breakdown.md`` and ``aa_breakdown.json``::

    .venv/bin/python benchmarks/monitoring/aa_breakdown.py --trials 10000 --rows 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks._common import markdown_table
from benchmarks.monitoring.calibrate import ALPHA, CATEGORIES, draw

from shipyard.monitoring import DatasetDriftTest, DatasetProfile, Verdict

HERE = Path(__file__).parent
LEVELS = (0.05, 0.01, 0.006, 0.004, 0.002, 0.001)
GROUPS = {
    "normal, lognormal, exponential, uniform (num0-14, num19)": [
        f"num{i}" for i in [*range(15), 19]
    ],
    "Poisson counts with ties (num15, num16)": ["num15", "num16"],
    "70 % zeros (num17, num18)": ["num17", "num18"],
    "2 % missing (num1-num5)": [f"num{i}" for i in range(1, 6)],
    "categorical, 2 / 5 / 12 categories (cat0-cat2)": ["cat0", "cat1", "cat2"],
    "categorical, 40 and 500 categories, pooled (cat3, cat4)": ["cat3", "cat4"],
}


def trial(args: tuple[int, int]) -> dict[str, Any]:
    """One A/A trial (the A/A half of ``calibrate.trial``): per-column numbers and verdict."""
    n, seed = args
    rng = np.random.default_rng(np.random.SeedSequence([n, seed]))
    reference = DatasetProfile.from_reference(draw(rng, n), categorical=list(CATEGORIES))
    current = reference.empty().update(draw(rng, n))
    report = DatasetDriftTest().compare(reference, current)
    return {
        "drift": report.verdict is Verdict.DRIFT,
        "p": [c.test.p_value for c in report.columns],
        "adjusted": [c.adjusted_p_value for c in report.columns],
        "distance": [c.distance.statistic for c in report.columns],
        "columns": [c.column for c in report.columns],
        "drifted": report.drifted,
    }


def interval(alarms: int, trials: int) -> tuple[float, float]:
    """The exact (Clopper–Pearson) 95 % interval of a rate."""
    from scipy.stats import binomtest

    ci = binomtest(alarms, trials).proportion_ci(0.95, method="exact")
    return float(ci.low), float(ci.high)


def summarize(outcomes: list[dict[str, Any]], n: int, seconds: float) -> dict[str, Any]:
    from scipy.stats import binomtest, false_discovery_control

    columns = outcomes[0]["columns"]
    p = np.array([o["p"] for o in outcomes], dtype=np.float64)
    distance = np.array([o["distance"] for o in outcomes], dtype=np.float64)
    trials = len(outcomes)
    alarms = sum(o["drift"] for o in outcomes)
    bh = false_discovery_control(p, axis=1, method="bh") <= ALPHA
    bonferroni = np.minimum(1.0, p * p.shape[1]) <= ALPHA
    floor = distance >= 0.05
    rates = {
        "default (chi-square + BH + JS floor 0.05)": int(alarms),
        "chi-square + BH, no floor": int(bh.any(axis=1).sum()),
        "chi-square + Bonferroni + JS floor 0.05": int((bonferroni & floor).any(axis=1).sum()),
        "chi-square + Bonferroni, no floor": int(bonferroni.any(axis=1).sum()),
    }
    first = {
        f"first {k:,} trials": int(sum(o["drift"] for o in outcomes[:k]))
        for k in (1000, 5000)
        if k < trials
    }
    fired: dict[str, int] = {}
    for o in outcomes:
        for c in o["drifted"]:
            fired[c] = fired.get(c, 0) + 1
    tail = {c: {str(a): float(np.mean(p[:, i] < a)) for a in LEVELS} for i, c in enumerate(columns)}
    groups = {
        g: {str(a): float(np.mean(p[:, [columns.index(c) for c in cs]] < a)) for a in LEVELS}
        for g, cs in GROUPS.items()
    }
    pooled = {str(a): float(np.mean(p < a)) for a in LEVELS}
    return {
        "rows": n,
        "trials": trials,
        "seconds": round(seconds, 1),
        "alarms": rates,
        "one_sided_p_above_alpha": float(
            binomtest(int(alarms), trials, ALPHA, alternative="greater").pvalue
        ),
        "first": first,
        "fired": dict(sorted(fired.items(), key=lambda kv: -kv[1])),
        "columns_per_alarm": [len(o["drifted"]) for o in outcomes if o["drift"]],
        "tail": tail,
        "groups": groups,
        "pooled": pooled,
    }


def markdown(s: dict[str, Any]) -> str:
    trials = s["trials"]
    rate_rows = []
    for name, alarms in s["alarms"].items():
        low, high = interval(alarms, trials)
        rate_rows.append(
            {
                "setting": name,
                "alarms": str(alarms),
                "rate": f"{alarms / trials:.4f}",
                "95 % interval": f"{low:.4f} – {high:.4f}",
            }
        )
    for name, alarms in s["first"].items():
        count = int(name.split()[1].replace(",", ""))
        low, high = interval(alarms, count)
        rate_rows.append(
            {
                "setting": f"default, {name}",
                "alarms": str(alarms),
                "rate": f"{alarms / count:.4f}",
                "95 % interval": f"{low:.4f} – {high:.4f}",
            }
        )
    if trials > 1000:  # the trials that did not raise the question (the first 1,000 did)
        later = s["alarms"]["default (chi-square + BH + JS floor 0.05)"] - s["first"].get(
            "first 1,000 trials", 0
        )
        low, high = interval(later, trials - 1000)
        rate_rows.append(
            {
                "setting": f"default, trials 1,001–{trials:,}",
                "alarms": str(later),
                "rate": f"{later / (trials - 1000):.4f}",
                "95 % interval": f"{low:.4f} – {high:.4f}",
            }
        )
    fired_rows = [
        {"column": c, "trials in which it drifted": str(k), "share": f"{k / trials:.4f}"}
        for c, k in s["fired"].items()
    ]
    levels = [str(a) for a in LEVELS]
    head = [f"p < {a}" for a in LEVELS]
    group_rows = [
        {"columns": g, **{h: f"{v[a]:.4f}" for h, a in zip(head, levels, strict=True)}}
        for g, v in s["groups"].items()
    ]
    group_rows.append(
        {
            "columns": "all 25",
            **{h: f"{s['pooled'][a]:.4f}" for h, a in zip(head, levels, strict=True)},
        }
    )
    column_rows = [
        {"column": c, **{h: f"{v[a]:.4f}" for h, a in zip(head, levels, strict=True)}}
        for c, v in s["tail"].items()
    ]
    multi = (
        np.bincount(np.array(s["columns_per_alarm"], dtype=int)) if s["columns_per_alarm"] else []
    )
    above = s["one_sided_p_above_alpha"]
    per_alarm = [int(x) for x in multi][1:]
    return f"""# A/A false alarms of the default drift check at {s["rows"]:,} rows

`.venv/bin/python benchmarks/monitoring/aa_breakdown.py --trials {trials} --rows {s["rows"]}`
({s["seconds"]} s). Trial *s* draws the reference and the current data set exactly as trial *s*
of `calibrate.py` does, so the first 1,000 trials are the calibration run's trials. α = {ALPHA}.

## The data-set rate

{markdown_table(rate_rows, ["setting", "alarms", "rate", "95 % interval"])}

One-sided binomial test of "the default's rate is above {ALPHA}": p = {above:.3f}.
Columns drifted per alarm (count of alarms with 1, 2, ... columns): {per_alarm}.

## Which columns fire (default)

{markdown_table(fired_rows, ["column", "trials in which it drifted", "share"])}

## Chi-square p-value tail on A/A data

Share of p-values below each level; a valid test shows the level itself. With 25 columns
Benjamini–Hochberg compares the k-th smallest p-value with 0.05·k/25 (0.002, 0.004, ...), so
the levels from 0.01 down are where the data-set rate is decided. Standard error of one
column's share at 0.002 over {trials:,} trials: {np.sqrt(0.002 * 0.998 / trials):.4f}.

{markdown_table(group_rows, ["columns", *head])}

Per column:

{markdown_table(column_rows, ["column", *head])}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=10000)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "aa_breakdown.md"))
    parser.add_argument(
        "--tables-only", action="store_true", help="rewrite the tables from the last JSON"
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.tables_only:
        out.write_text(markdown(json.loads(out.with_suffix(".json").read_text())))
        print(out.read_text())
        return
    started = time.perf_counter()
    outcomes = []
    with ProcessPoolExecutor(args.workers) as pool:
        jobs = [(args.rows, s) for s in range(args.trials)]
        for outcome in pool.map(trial, jobs, chunksize=20):
            outcomes.append(outcome)
            if len(outcomes) % 500 == 0:
                alarms = sum(o["drift"] for o in outcomes)
                print(f"{len(outcomes)} trials, {alarms} alarms", flush=True)
    summary = summarize(outcomes, args.rows, time.perf_counter() - started)
    out.write_text(markdown(summary))
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
