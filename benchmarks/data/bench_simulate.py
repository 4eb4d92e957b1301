"""Benchmark: generating the default fraud data set (1,754,155 transactions, 183 days).

Side by side, each in a fresh process: Shipyard's reference mode (exact published draws,
customers spread over worker processes), Shipyard's fast mode (vectorized), and the
handbook's straightforward code (tests/data/handbook.py, the same algorithm written the
obvious way). Run from the repository root::

    .venv/bin/python benchmarks/data/bench_simulate.py            # all three
    .venv/bin/python benchmarks/data/bench_simulate.py --skip-handbook
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import markdown_table, measure, run_case  # noqa: E402

RESULTS = Path(__file__).with_name("results.md")


def case(name: str) -> None:
    if name == "handbook":
        from tests.data import handbook

        def work() -> dict[str, object]:
            tx = handbook.generate(n_customers=5_000, n_terminals=10_000, nb_days=183)
            return {"rows": len(tx), "frauds": int(tx["TX_FRAUD"].sum())}

    else:
        from shipyard.data.fraud_simulator import FraudSimulator

        def work() -> dict[str, object]:
            tx = FraudSimulator(mode=name).simulate().transactions  # type: ignore[arg-type]
            return {"rows": len(tx), "frauds": int(tx["TX_FRAUD"].sum())}

    measure(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--skip-handbook", action="store_true", help="skip the slow baseline")
    args = parser.parse_args()
    if args.case:
        case(args.case)
        return
    names = ["reference", "fast"] + ([] if args.skip_handbook else ["handbook"])
    rows = []
    for name in names:
        result = run_case(__file__, name)
        result["implementation"] = {
            "reference": "Shipyard reference mode (exact draws, 2 processes)",
            "fast": "Shipyard fast mode (vectorized, other draws)",
            "handbook": "Handbook code, straightforward (1 process)",
        }[name]
        rows.append(result)
        print(
            f"{result['implementation']:<52} {result['seconds']:>7.1f} s  "
            f"{result['rows']:>9,} rows  {result['frauds']:>6,} frauds  "
            f"peak {result['peak_rss_mib']:,.0f} MiB",
            flush=True,
        )
    table = markdown_table(rows, ["implementation", "seconds", "rows", "frauds", "peak_rss_mib"])
    RESULTS.write_text(
        "# Fraud data set generation: last results\n\n"
        f"Machine: {platform.machine()}, 2 cores, Python {platform.python_version()}; "
        "peak RSS is the main process's (reference mode's 2 workers excluded); "
        "5,000 customers, 10,000 terminals, 183 days. Goal: <= 60 s.\n\n" + table + "\n"
    )
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
