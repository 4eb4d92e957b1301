"""Per-column check of the chi-square p-values on A/A data: are they uniform in the tail?

Draws reference and current data sets from one distribution (the calibration's 25 columns),
runs the chi-square test on each column and reports, per column, the share of p-values
below 0.05, 0.01 and 0.002 (under a valid test: about those numbers). Run from the
repository root; writes ``benchmarks/monitoring/column_pvalues.md``::

    .venv/bin/python benchmarks/monitoring/column_pvalues.py --trials 3000 --rows 1000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks._common import markdown_table
from benchmarks.monitoring.calibrate import CATEGORIES, draw

from shipyard.monitoring import ChiSquareTest, DatasetProfile

LEVELS = (0.05, 0.01, 0.002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=3000)
    parser.add_argument("--rows", type=int, default=1000)
    args = parser.parse_args()
    p_values: dict[str, list[float]] = {}
    test = ChiSquareTest()
    for seed in range(args.trials):
        rng = np.random.default_rng(np.random.SeedSequence([args.rows, seed, 7]))
        reference = DatasetProfile.from_reference(
            draw(rng, args.rows), categorical=list(CATEGORIES)
        )
        current = reference.empty().update(draw(rng, args.rows))
        for name in reference.names:
            p_values.setdefault(name, []).append(
                float(test.compare(reference[name], current[name]).p_value or 0.0)
            )
    rows = [
        {"column": name, **{f"p < {a}": f"{np.mean(np.array(p) < a):.4f}" for a in LEVELS}}
        for name, p in p_values.items()
    ]
    pooled = np.concatenate([np.array(p) for p in p_values.values()])
    rows.append({"column": "all", **{f"p < {a}": f"{np.mean(pooled < a):.4f}" for a in LEVELS}})
    table = markdown_table(rows, ["column", *(f"p < {a}" for a in LEVELS)])
    text = (
        "# Chi-square p-values per column on A/A data\n\n"
        f"{args.trials} trials of {args.rows:,} rows per side "
        "(`.venv/bin/python benchmarks/monitoring/column_pvalues.py`). A valid test shows about "
        "0.05, 0.01 and 0.002; with this many trials the standard error of the last column is "
        f"about {np.sqrt(0.002 * 0.998 / args.trials):.4f}.\n\n{table}\n"
    )
    Path(__file__).with_name("column_pvalues.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
