"""A/A experiments peeked after every batch, and power for a few effects, per method.

The validation of ``shipyard.experiments``: simulated experiments (``simulate_aa``,
``simulate_power``) feed each arm one batch of units at a time and apply, after every batch,
the mixture SPRT, a naive repeated Welch t-test (stopped at the first p < alpha), the
fixed-horizon test (once, at the end) and Lan–DeMets group-sequential boundaries (every batch
a planned look). Two metrics:

- ``proportion``: a fraud-like alert rate of 2 %, 50 looks of 1,000 units per arm
  (50,000 per arm at the end);
- ``mean``: a skewed, log-normal amount (mean 100, sd 100), 50 looks of 200 units per arm
  (10,000 per arm).

The mSPRT is tuned to the full size (``horizon``). Run from the repository root; writes
``results.json`` and ``results.md`` next to this script::

    .venv/bin/python benchmarks/experiments/aa_peeking.py            # ~1 minute
    .venv/bin/python benchmarks/experiments/aa_peeking.py --experiments 500 --power-experiments 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks._common import markdown_table

from shipyard.experiments.fixed import power, sample_size
from shipyard.experiments.simulation import SimulationResult, simulate_aa, simulate_power

HERE = Path(__file__).parent
CALCULATOR = "calculator: fixed-horizon power at full size / n per arm for 80 %"
ALPHA = 0.05
SETTINGS: dict[str, dict[str, Any]] = {
    "proportion": {
        "baseline": 0.02,
        "sd": None,
        "looks": 50,
        "batch": 1_000,
        "effects": [0.002, 0.003, 0.004],
    },
    "mean": {"baseline": 100.0, "sd": 100.0, "looks": 50, "batch": 200, "effects": [2.0, 4.0, 6.0]},
}


def percent(x: float) -> str:
    return f"{100 * x:.1f} %"


def aa_rows(results: dict[str, SimulationResult]) -> list[dict[str, Any]]:
    """One row per method, the metrics side by side."""
    rows = []
    for method in ("msprt", "naive t-test", "fixed horizon", "group sequential"):
        row: dict[str, Any] = {"method": method}
        for metric, result in results.items():
            o = result.outcome(method)
            interval = f"[{percent(o.low)}, {percent(o.high)}]"
            row[f"{metric}: false positives"] = (
                f"{percent(o.rate)} {interval} ({o.rejections}/{o.experiments})"
            )
        rows.append(row)
    return rows


def power_rows(metric: str, results: list[SimulationResult]) -> list[dict[str, Any]]:
    """One row per effect and method: power and units per arm at stopping."""
    setting = SETTINGS[metric]
    full = setting["looks"] * setting["batch"]
    rows = []
    for result in results:
        planned = power(full, setting["baseline"], result.effect, sd=setting["sd"])
        needed = sample_size(setting["baseline"], result.effect, sd=setting["sd"])
        effect = f"{result.effect:g} ({percent(result.effect / setting['baseline'])})"
        rows += [
            {
                "effect": effect,
                "method": o.method,
                "power": f"{percent(o.rate)} [{percent(o.low)}, {percent(o.high)}]",
                "units per arm at stop (mean)": f"{o.mean_n_at_stop:,.0f} / {full:,}",
                CALCULATOR: f"{percent(planned)} / {needed:,}",
            }
            for o in result.outcomes
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--experiments", type=int, default=10_000, help="A/A experiments per metric"
    )
    parser.add_argument("--power-experiments", type=int, default=1_000, help="per effect")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    aa: dict[str, SimulationResult] = {}
    powers: dict[str, list[SimulationResult]] = {}
    for metric, s in SETTINGS.items():
        common = {
            "looks": s["looks"],
            "batch": s["batch"],
            "alpha": ALPHA,
            "metric": metric,
            "baseline": s["baseline"],
            "sd": s["sd"],
            "horizon": s["looks"] * s["batch"],
        }
        aa[metric] = simulate_aa(args.experiments, seed=args.seed, **common)
        powers[metric] = simulate_power(
            s["effects"], args.power_experiments, seed=args.seed + 100, **common
        )
        print(f"{metric}: done at {time.perf_counter() - started:.1f} s", file=sys.stderr)
    seconds = time.perf_counter() - started
    payload = {
        "alpha": ALPHA,
        "settings": SETTINGS,
        "seconds": round(seconds, 1),
        "aa": {m: r.to_dict() for m, r in aa.items()},
        "power": {m: [r.to_dict() for r in rs] for m, rs in powers.items()},
    }
    (HERE / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    aa_columns = ["method", *[f"{m}: false positives" for m in SETTINGS]]
    power_columns = [
        "effect",
        "method",
        "power",
        "units per arm at stop (mean)",
        CALCULATOR,
    ]
    parts = [
        "# A/A peeking and power, per method",
        "",
        f"`.venv/bin/python {' '.join(sys.argv)}` — {args.experiments:,} A/A experiments "
        "per metric, "
        f"{args.power_experiments:,} per effect, alpha {ALPHA}, seed {args.seed}; "
        f"{seconds:.0f} s on this machine.",
        "",
        "Proportion: 2 % rate, 50 looks x 1,000 units per arm. Mean: log-normal amount "
        "(mean 100, sd 100), 50 looks x 200 units per arm. Every batch is a look; "
        "rates with Wilson 95 % intervals.",
        "",
        "## False-positive rate (A/A, any look)",
        "",
        markdown_table(aa_rows(aa), aa_columns),
    ]
    for metric, results in powers.items():
        parts += [
            "",
            f"## Power, {metric}",
            "",
            markdown_table(power_rows(metric, results), power_columns),
        ]
    (HERE / "results.md").write_text("\n".join(parts) + "\n")
    print("\n".join(parts))


if __name__ == "__main__":
    main()
