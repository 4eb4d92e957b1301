"""Evidently's side of bench_drift.py, run by the python of a separate environment with
``evidently`` (never Shipyard's): its data drift preset with default settings on Parquet
files written by bench_drift.py.

Usage: ``PYTHON evidently_drift.py REFERENCE.parquet CURRENT.parquet [REF CUR ...]``.
Prints one JSON line: seconds and peak RSS of this process, and per pair of files each
column's method, value, threshold and drift flag, the drifted share and the data set's
verdict (Evidently's rule: drifted share >= drift_share, 0.5 by default).
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _run(reference_path: str, current_path: str) -> dict[str, object]:
    import pandas as pd

    reference = pd.read_parquet(reference_path)
    current = pd.read_parquet(current_path)
    try:  # evidently >= 0.6
        from evidently import Report
        from evidently.presets import DataDriftPreset

        snapshot = Report([DataDriftPreset()]).run(current, reference)
        metrics = snapshot.dict()["metrics"]
    except ImportError:  # evidently 0.4.x
        from evidently.metric_preset import DataDriftPreset  # type: ignore[no-redef]
        from evidently.report import Report  # type: ignore[no-redef]

        report = Report(metrics=[DataDriftPreset()])
        report.run(reference_data=reference, current_data=current)
        return {"legacy": report.as_dict()}
    columns: dict[str, dict[str, object]] = {}
    share = drift_share = None
    for metric in metrics:
        config = metric["config"]
        if config["type"].endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
            drift_share = float(config["drift_share"])
        elif config["type"].endswith("ValueDrift"):
            method = str(config["method"])
            value = float(metric["value"])
            threshold = float(config["threshold"])
            # p-value tests drift below the threshold, distances at or above it
            drifted = value < threshold if "p_value" in method else value >= threshold
            columns[config["column"]] = {
                "method": method,
                "value": value,
                "threshold": threshold,
                "drift": drifted,
            }
    assert share is not None and drift_share is not None
    return {
        "columns": columns,
        "share": share,
        "drift_share": drift_share,
        "dataset_drift": share >= drift_share,
    }


def main() -> None:
    import evidently

    paths = sys.argv[1:]
    started = time.perf_counter()
    runs = [_run(paths[i], paths[i + 1]) for i in range(0, len(paths), 2)]
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import pandas as pd

    print(
        json.dumps(
            {
                "seconds": round(seconds, 3),
                "peak_rss_mib": round(peak_mib, 1),
                "evidently": evidently.__version__,
                "pandas": pd.__version__,
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
