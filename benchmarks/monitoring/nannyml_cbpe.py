"""NannyML's side of bench_cbpe.py, run by the python of a separate environment with
``nannyml`` (never Shipyard's): ``nannyml.CBPE`` on Parquet files written by bench_cbpe.py.

Usage: ``PYTHON nannyml_cbpe.py REFERENCE.parquet ANALYSIS.parquet``. Both files hold
``score`` (the model's score), ``pred`` (1 where ``score >= threshold``) and ``label``; the
analysis file also ``window``. CBPE is fitted once on the reference with its defaults
(isotonic calibration where its ECE check asks for it), then estimates each window as one
chunk (``chunk_number=1``), so every window is exactly one of bench_cbpe.py's windows.
Prints one JSON line: fit seconds, per window the estimate, NannyML's sampling error, its
confidence band and the seconds of ``estimate``.
"""

from __future__ import annotations

import json
import sys
import time

METRICS = ("roc_auc", "precision", "recall")


def main() -> None:
    import warnings

    import nannyml as nml
    import pandas as pd

    # "the resulting number of chunks is too low": one chunk per window is the point here
    warnings.filterwarnings("ignore", message="The resulting number of chunks")
    reference = pd.read_parquet(sys.argv[1])
    analysis = pd.read_parquet(sys.argv[2])
    started = time.perf_counter()
    estimator = nml.CBPE(
        problem_type="classification_binary",
        y_pred_proba="score",
        y_pred="pred",
        y_true="label",
        metrics=list(METRICS),
        chunk_number=1,
    )
    estimator.fit(reference)
    fit_seconds = time.perf_counter() - started
    windows: dict[str, dict[str, object]] = {}
    for window, rows in analysis.groupby("window", sort=False):
        started = time.perf_counter()
        frame = estimator.estimate(rows.drop(columns=["window"]).reset_index(drop=True)).to_df()
        seconds = time.perf_counter() - started
        # the result keeps the reference's chunk too: take the window's
        frame = frame[frame[("chunk", "period")] == "analysis"]
        out: dict[str, object] = {"seconds": round(seconds, 3), "rows": len(rows)}
        for metric in METRICS:
            out[metric] = {
                key: float(frame[(metric, key)].iloc[0])
                for key in (
                    "value",
                    "sampling_error",
                    "lower_confidence_boundary",
                    "upper_confidence_boundary",
                    "realized",
                )
                if (metric, key) in frame.columns
            }
        windows[str(window)] = out
    calibrated = getattr(estimator, "needs_calibration", None)
    print(
        json.dumps(
            {
                "nannyml": nml.__version__,
                "pandas": pd.__version__,
                "fit_seconds": round(fit_seconds, 3),
                "needs_calibration": None if calibrated is None else bool(calibrated),
                "windows": windows,
            }
        )
    )


if __name__ == "__main__":
    main()
