"""Estimated performance without labels: Shipyard's CBPE beside NannyML's, against realized.

Simulates a fraud data set (``shipyard.data.fraud_simulator``, fast mode: 1,000 customers,
2,000 terminals, 91 days) with its 15 baseline features, trains a LightGBM (100 trees) on
days 0-27, takes days 28-55 as the reference (scores and labels) and sets the serving
threshold at the reference's top 3 % of scores. The analysis windows are the held-out weeks
8-12 (days 56-90), each three times:

- ``as is``: the week's transactions, like the reference;
- ``fewer large amounts``: transactions over 100 kept with probability 0.2 (a covariate
  shift: rows chosen by a feature, never by the label, so P(fraud | features) is unchanged);
  it removes most large-amount frauds, the easiest to detect, and performance drops;
- ``compromised terminals up``: transactions at terminals without a fraud in their last 7
  days kept with probability 0.3, so traffic at compromised terminals weighs more.

On every window: the realized ROC AUC, precision and recall (labels joined,
``RealizedPerformance``), Shipyard's estimate (``ConfidenceBasedEstimator`` fitted on the
reference, its default calibration rule, 500 label draws for the sampling error) and
NannyML's (``nannyml.CBPE``, binary, roc_auc / precision / recall, each window one chunk),
each with its sampling error and time. NannyML runs from its own environment, never
Shipyard's; the two exchange Parquet files (``nannyml_cbpe.py`` is its side). NannyML 0.13.1
imports statsmodels without declaring it; the committed run used pandas 2.3.3::

    python3 -m venv /tmp/nannyml
    /tmp/nannyml/bin/pip install nannyml pyarrow statsmodels "pandas<3"
    .venv/bin/python benchmarks/monitoring/bench_cbpe.py --nannyml /tmp/nannyml/bin/python

Results: ``benchmarks/monitoring/cbpe_results.md`` and ``cbpe_results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import WORK, markdown_table  # noqa: E402

HERE = Path(__file__).parent
HELPER = HERE / "nannyml_cbpe.py"
CACHE = WORK / "cbpe" / "frame.parquet"
SIMULATION = {"n_customers": 1000, "n_terminals": 2000, "n_days": 91, "mode": "fast", "seed": 7}
METRICS = ("roc_auc", "precision", "recall")
TOP_SHARE = 0.03
SHIFTS = ("as is", "fewer large amounts", "compromised terminals up")


def load_frame() -> pd.DataFrame:
    """The simulated transactions with their baseline features (cached in benchmarks/_work)."""
    if CACHE.exists():
        return pd.read_parquet(CACHE)
    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
    from shipyard.features.fraud import BASELINE_VIEWS, BASELINE_VIEWS_REF
    from shipyard.features.offline import OfflineStore
    from shipyard.training.frames import Window, load_frame
    from shipyard.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.init(Path(tmp) / "ws")
        dataset = simulate_fraud_dataset(ws, FraudSimulator(**SIMULATION))  # type: ignore[arg-type]
        OfflineStore(ws).materialize(BASELINE_VIEWS)
        frame = load_frame(
            ws,
            Window(dataset.name, dataset.version, "2018-04-01", "2018-12-31", BASELINE_VIEWS_REF),
        )
        ws.close()
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(CACHE, index=False)
    return frame


def score_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Train on days 0-27; return day, score and label of every later transaction."""
    from shipyard.features.fraud import BASELINE_FEATURES
    from shipyard.training.trainers import make_config

    day = (frame["TX_DATETIME"].dt.normalize() - frame["TX_DATETIME"].min().normalize()).dt.days
    X, y = frame[list(BASELINE_FEATURES)], frame["TX_FRAUD"].to_numpy()
    train = (day < 28).to_numpy()
    model = make_config("lightgbm", n_estimators=100).fit(X[train], y[train])
    later = ~train
    return pd.DataFrame(
        {
            "day": day.to_numpy()[later],
            "score": np.asarray(model.predict_proba(X[later]), dtype=np.float64),
            "label": y[later].astype(np.int64),
            "amount": frame["TX_AMOUNT"].to_numpy()[later],
            "terminal_risk": frame["TERMINAL_ID_RISK_7DAY_WINDOW"].to_numpy()[later],
        }
    )


def analysis_windows(scored: pd.DataFrame) -> pd.DataFrame:
    """Weeks 8-12, each as is and under the two covariate shifts, with a ``window`` column."""
    rng = np.random.default_rng(11)
    parts = []
    held_out = scored[scored["day"] >= 56]
    for week, rows in held_out.groupby((held_out["day"] - 56) // 7 + 8):
        for shift in SHIFTS:
            keep = np.ones(len(rows), dtype=bool)
            if shift == "fewer large amounts":
                keep = (rows["amount"].to_numpy() <= 100) | (rng.random(len(rows)) < 0.2)
            elif shift == "compromised terminals up":
                keep = (rows["terminal_risk"].to_numpy() > 0) | (rng.random(len(rows)) < 0.3)
            parts.append(rows[keep].assign(window=f"week {week}, {shift}"))
    return pd.concat(parts, ignore_index=True)


def ours(reference: pd.DataFrame, analysis: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Shipyard's estimate and realized metrics per window, with the seconds of each."""
    from shipyard.monitoring import ConfidenceBasedEstimator, RealizedPerformance

    started = time.perf_counter()
    estimator = ConfidenceBasedEstimator(threshold=threshold).fit(
        reference["score"].to_numpy(), reference["label"].to_numpy()
    )
    fit_seconds = time.perf_counter() - started
    windows: dict[str, Any] = {}
    for window, rows in analysis.groupby("window", sort=False):
        score, label = rows["score"].to_numpy(), rows["label"].to_numpy()
        started = time.perf_counter()
        estimated = estimator.estimate(score)["all"]
        seconds = time.perf_counter() - started
        realized = RealizedPerformance(threshold=threshold).compute(score, label)["all"]
        windows[str(window)] = {
            "rows": len(rows),
            "positives": int(label.sum()),
            "expected_positives": round(estimated.expected_positives, 1),
            "alerts": estimated.alerts,
            "alerted_positives": int(label[score >= threshold].sum()),
            "expected_alerted_positives": round(estimated.expected_confusion["tp"], 1),
            "seconds": round(seconds, 3),
            **{
                m: {
                    "value": estimated[m].value,
                    "sampling_error": estimated.standard_errors[m],
                    "low": estimated[m].low,
                    "high": estimated[m].high,
                    "realized": realized[m].value,
                }
                for m in METRICS
            },
        }
    check = estimator.calibration_
    return {
        "fit_seconds": round(fit_seconds, 3),
        "calibrated": check.calibrated,
        "ece_raw": check.ece_raw,
        "ece_calibrated": check.ece_calibrated,
        "windows": windows,
    }


def nannyml(python: str, reference: pd.DataFrame, analysis: pd.DataFrame, threshold: float) -> Any:
    """NannyML's CBPE on the same reference and windows, from its own environment."""
    directory = WORK / "cbpe"
    columns = ["score", "pred", "label"]
    ref_path, analysis_path = directory / "reference.parquet", directory / "analysis.parquet"
    reference.assign(pred=(reference["score"] >= threshold).astype(np.int64))[columns].to_parquet(
        ref_path, index=False
    )
    analysis.assign(pred=(analysis["score"] >= threshold).astype(np.int64))[
        [*columns, "window"]
    ].to_parquet(analysis_path, index=False)
    done = subprocess.run(
        [python, str(HELPER), str(ref_path), str(analysis_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"nannyml_cbpe.py failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _with_error(entry: dict[str, Any]) -> str:
    value, error = entry.get("value"), entry.get("sampling_error")
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:.3f} ± {error:.3f}" if error is not None else f"{value:.3f}"


def report(results: dict[str, Any]) -> str:
    mine, theirs = results["ours"], results.get("nannyml")
    sections = []
    summary_rows = []
    errors: dict[str, dict[str, list[float]]] = {
        tool: {m: [] for m in METRICS} for tool in ("Shipyard", "NannyML")
    }
    z: dict[str, dict[str, list[float]]] = {
        tool: {m: [] for m in METRICS} for tool in ("Shipyard", "NannyML")
    }
    for window, w in mine["windows"].items():
        rows = []
        for m in METRICS:
            realized = w[m]["realized"]
            row = {
                "metric": m,
                "realized": "–" if realized is None else f"{realized:.3f}",
                "Shipyard (± sampling error)": _with_error(w[m]),
            }
            if realized is not None and w[m]["value"] is not None:
                errors["Shipyard"][m].append(w[m]["value"] - realized)
                z["Shipyard"][m].append((w[m]["value"] - realized) / w[m]["sampling_error"])
            if theirs:
                t = theirs["windows"][window][m]
                row["NannyML (± sampling error)"] = _with_error(t)
                if realized is not None and np.isfinite(t.get("value", np.nan)):
                    errors["NannyML"][m].append(t["value"] - realized)
                    z["NannyML"][m].append((t["value"] - realized) / t["sampling_error"])
            rows.append(row)
        columns = ["metric", "realized", "Shipyard (± sampling error)"]
        if theirs:
            columns.append("NannyML (± sampling error)")
        timing = f"Shipyard {w['seconds']:.2f} s"
        if theirs:
            timing += f", NannyML {theirs['windows'][window]['seconds']:.2f} s"
        sections.append(
            f"### {window}\n\n{w['rows']:,} rows, {w['positives']} frauds (calibrated scores"
            f" expect {w['expected_positives']:.0f}); {w['alerts']} alerts holding"
            f" {w['alerted_positives']} frauds (expected {w['expected_alerted_positives']:.0f});"
            f" estimate time: {timing}.\n\n{markdown_table(rows, columns)}\n"
        )
    for tool, by_metric in errors.items():
        for m, diffs in by_metric.items():
            if diffs:
                d = np.array(diffs)
                summary_rows.append(
                    {
                        "tool": tool,
                        "metric": m,
                        "mean error (estimate − realized)": f"{d.mean():+.3f}",
                        "mean absolute error": f"{np.abs(d).mean():.3f}",
                        "largest absolute error": f"{np.abs(d).max():.3f}",
                        "within 2 SE": f"{int(np.sum(np.abs(z[tool][m]) <= 2))} of {len(d)}",
                    }
                )
    header = list(summary_rows[0]) if summary_rows else []
    nanny = (
        f"NannyML {theirs['nannyml']} (pandas {theirs['pandas']}, its own environment); fit "
        f"{theirs['fit_seconds']:.2f} s, calibration "
        f"{'on' if theirs['needs_calibration'] else 'off'} by its ECE check"
        if theirs
        else "NannyML not run (pass --nannyml PYTHON)"
    )
    lines = [
        f"`.venv/bin/python benchmarks/monitoring/bench_cbpe.py --nannyml /tmp/nannyml/bin/python`"
        f" on {platform.machine()} Linux, {os.cpu_count()} cores (shared).",
        f"Simulated fraud data ({results['simulation']}); LightGBM with 100 trees trained on"
        " days 0–27; reference days 28–55"
        f" ({results['reference_rows']:,} rows, {results['reference_positives']:,} frauds);"
        f" threshold {results['threshold']:.4f} (the reference's top {TOP_SHARE:.0%}).",
        "Windows: the held-out weeks 8–12 as they are, with fewer large amounts (transactions"
        " over 100 kept with probability 0.2) and with more traffic at compromised terminals"
        " (the others kept with probability 0.3); both shifts choose rows by a feature, never"
        " by the label.",
        f"Shipyard: fit {mine['fit_seconds']:.2f} s; its rule calibrates:"
        f" {'yes' if mine['calibrated'] else 'no'} (ECE raw {mine['ece_raw']:.3f}, out of fold"
        f" {mine['ece_calibrated']:.3f}); sampling error = standard deviation of the metric over"
        " 500 label draws from Bernoulli(p) of the window's own rows.",
        f"{nanny}; its sampling error is its own (from the reference's labels, scaled by the"
        " window's row count).",
        "Times are for `estimate` of one window.",
    ]
    return f"""# Estimated performance without labels: Shipyard's CBPE and NannyML's

{chr(10).join(lines)}

## Error against the realized value, over all windows

"Within 2 SE": windows whose realized value lies within two of that tool's sampling errors
of its estimate.

{markdown_table(summary_rows, header) if summary_rows else ""}

## Per window

{chr(10).join(sections)}"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--nannyml", metavar="PYTHON", help="python of an env with nannyml")
    parser.add_argument("--out", default=str(HERE / "cbpe_results.md"))
    args = parser.parse_args()
    scored = score_frame(load_frame())
    reference = scored[(scored["day"] >= 28) & (scored["day"] < 56)]
    threshold = float(np.quantile(reference["score"], 1 - TOP_SHARE))
    analysis = analysis_windows(scored)
    results: dict[str, Any] = {
        "simulation": ", ".join(f"{k}={v}" for k, v in SIMULATION.items()),
        "reference_rows": len(reference),
        "reference_positives": int(reference["label"].sum()),
        "threshold": threshold,
        "ours": ours(reference, analysis, threshold),
    }
    if args.nannyml:
        results["nannyml"] = nannyml(args.nannyml, reference, analysis, threshold)
    out = Path(args.out)
    out.write_text(report(results))
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
