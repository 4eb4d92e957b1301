"""Benchmark: the 15 baseline features over the full data set, and a 1M-event point-in-time
retrieval, Shipyard (DuckDB) side by side with pandas, each case in a fresh process.

Cases
- ``materialize``: Shipyard computes the three baseline views (1,754,155 rows each) from the
  daily Parquet partitions and stores them.
- ``pandas_rolling``: the handbook's pandas code for the same features (groupby + time-based
  rolling per customer and per terminal) on the same data, loaded from the same Parquet.
- ``retrieve``: 1,000,000 transactions drawn from the data set (TRANSACTION_ID, CUSTOMER_ID,
  TERMINAL_ID, TX_DATETIME) get the 15 features of the three views as of their time:
  Shipyard's ASOF join, streamed to Parquet (default 4 GB DuckDB memory limit, and again with
  the limit lowered to 300 MB: it spills instead).
- ``merge_asof``: the same with ``pandas.merge_asof`` (load features, sort, merge, write).
- with ``--feast PYTHON``: Feast (``feast_retrieval.py``, run by PYTHON, the interpreter of a
  separate environment with feast: local provider, ``file`` offline store, one FeatureView
  per view over the same materialized Parquet files, ttl 100 years) runs
  ``get_historical_features(...).to_df()`` on the first ``--feast-events`` (default 30,000)
  of those events, beside Shipyard on the same subset. Feast's file store left-joins every
  event to every feature row of its entity before filtering (dask), so its memory grows with
  events x rows per entity: 100,000 events took 365 s and 17.7 GB peak RSS on the 2-core,
  23 GB machine; 1M does not fit. Its process runs under a 16 GiB address-space limit.

Every result is compared event by event with Shipyard's (all 15 features, nulls equal to
nulls). Feast's join takes the latest row with ``timestamp <= event time`` within the ttl,
the same rule as Shipyard's ASOF ``>=``; ties on timestamp pick an arbitrary row in both
(the views give tied rows equal values). Feast also drops all but one of the events that
share entity keys and timestamp; the check counts such missing events.

Run from the repository root: ``.venv/bin/python benchmarks/features/bench_features.py``,
with Feast (never installed in Shipyard's environment, its pins would fight ours)::

    python3 -m venv /tmp/feast && /tmp/feast/bin/pip install feast pandas pyarrow
    .venv/bin/python benchmarks/features/bench_features.py --feast /tmp/feast/bin/python

The first run simulates the data set into benchmarks/_work (about 10 s).
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import WORK, markdown_table, measure, run_case  # noqa: E402

RESULTS = Path(__file__).with_name("results.md")
N_EVENTS = 1_000_000
WS = WORK / "features-ws"
EVENTS = WORK / "transactions_1m.parquet"
EVENT_COLUMNS = ("TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_DATETIME")
FEAST_EVENTS = WORK / "transactions_feast.parquet"
FEAST_ROWS = 30_000
FEAST_MEMORY_LIMIT_GIB = 16


def prepare() -> None:
    """Simulate the data set, materialize once, and draw the 1M events (idempotent)."""
    import numpy as np

    from shipyard.data.fraud_simulator import simulate_fraud_dataset
    from shipyard.features.fraud import BASELINE_VIEWS
    from shipyard.features.offline import OfflineStore
    from shipyard.workspace import Workspace

    ws = Workspace.open(WS) if (WS / "shipyard.toml").exists() else Workspace.init(WS)
    simulate_fraud_dataset(ws)
    OfflineStore(ws).materialize(BASELINE_VIEWS)
    if not EVENTS.exists():
        from shipyard.data.catalog import get_dataset

        tx = get_dataset(ws, "fraud").read()[list(EVENT_COLUMNS)]
        rng = np.random.default_rng(0)
        chosen = rng.choice(len(tx), N_EVENTS, replace=False)
        tx.iloc[chosen].reset_index(drop=True).to_parquet(EVENTS, index=False)


def _views() -> list[object]:
    from shipyard.features.fraud import BASELINE_VIEWS

    return list(BASELINE_VIEWS)


def case_materialize() -> dict[str, object]:
    from shipyard.features.fraud import BASELINE_VIEWS
    from shipyard.features.offline import OfflineStore
    from shipyard.workspace import Workspace

    results = OfflineStore(Workspace.open(WS)).materialize(BASELINE_VIEWS, force=True)
    return {"rows": results[0].n_rows}


def case_pandas_rolling() -> dict[str, object]:
    import pandas as pd

    from shipyard.data.catalog import get_dataset
    from shipyard.workspace import Workspace

    tx = get_dataset(Workspace.open(WS), "fraud").read()
    tx["TX_DURING_WEEKEND"] = (tx.TX_DATETIME.dt.weekday >= 5).astype(int)
    tx["TX_DURING_NIGHT"] = (tx.TX_DATETIME.dt.hour <= 6).astype(int)

    def customer(group: pd.DataFrame) -> pd.DataFrame:
        group = group.sort_values("TX_DATETIME").set_index("TX_DATETIME")
        for n in (1, 7, 30):
            total = group["TX_AMOUNT"].rolling(f"{n}D").sum()
            count = group["TX_AMOUNT"].rolling(f"{n}D").count()
            group[f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW"] = count.to_numpy()
            group[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] = (total / count).to_numpy()
        return group.reset_index()

    def terminal(group: pd.DataFrame) -> pd.DataFrame:
        group = group.sort_values("TX_DATETIME").set_index("TX_DATETIME")
        fraud_d = group["TX_FRAUD"].rolling("7D").sum()
        count_d = group["TX_FRAUD"].rolling("7D").count()
        for n in (1, 7, 30):
            fraud = group["TX_FRAUD"].rolling(f"{7 + n}D").sum() - fraud_d
            count = group["TX_FRAUD"].rolling(f"{7 + n}D").count() - count_d
            group[f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW"] = count.to_numpy()
            group[f"TERMINAL_ID_RISK_{n}DAY_WINDOW"] = (fraud / count).fillna(0).to_numpy()
        return group.reset_index()

    out = tx.groupby("CUSTOMER_ID", group_keys=False).apply(customer)
    out = out.groupby("TERMINAL_ID", group_keys=False).apply(terminal)
    return {"rows": len(out)}


def _retrieve(events: Path, out: Path) -> dict[str, object]:
    import pyarrow.parquet as pq

    from shipyard.features.offline import OfflineStore
    from shipyard.workspace import Workspace

    store = OfflineStore(Workspace.open(WS))
    store.get_historical_features(events, _views()).to_parquet(out)  # type: ignore[arg-type]
    return {"rows": pq.read_metadata(out).num_rows}


def case_retrieve() -> dict[str, object]:
    return _retrieve(EVENTS, WORK / "out_shipyard.parquet")


def case_retrieve_feast_sample() -> dict[str, object]:
    return _retrieve(FEAST_EVENTS, WORK / "out_shipyard_sample.parquet")


def case_retrieve_bounded() -> dict[str, object]:
    import os

    os.environ["SHIPYARD_DUCKDB_MEMORY_LIMIT"] = "300MB"  # the workspace setting, lowered
    return case_retrieve()


def case_merge_asof() -> dict[str, object]:
    import pandas as pd

    from shipyard.features.offline import OfflineStore
    from shipyard.workspace import Workspace

    store = OfflineStore(Workspace.open(WS))
    events = pd.read_parquet(EVENTS)
    events["__row"] = range(len(events))
    events = events.sort_values("TX_DATETIME")
    for view in _views():
        features = pd.read_parquet(store.materialization(view).path)  # type: ignore[arg-type]
        features = features.sort_values("TX_DATETIME")
        events = pd.merge_asof(events, features, on="TX_DATETIME", by=view.entity)  # type: ignore[attr-defined]
    events = events.sort_values("__row").drop(columns="__row")
    events.to_parquet(WORK / "out_pandas.parquet", index=False)
    return {"rows": len(events)}


CASES = {
    "materialize": ("Shipyard materialize (DuckDB)", case_materialize),
    "pandas_rolling": ("pandas groupby + rolling (handbook)", case_pandas_rolling),
    "retrieve": ("Shipyard ASOF retrieval (DuckDB, streamed)", case_retrieve),
    "retrieve_bounded": (
        "Shipyard ASOF retrieval, duckdb_memory_limit=300MB",
        case_retrieve_bounded,
    ),
    "merge_asof": ("pandas merge_asof", case_merge_asof),
}
FEAST_CASES = {
    "retrieve_feast_sample": (
        "Shipyard ASOF retrieval (DuckDB), Feast's {n:,} events",
        case_retrieve_feast_sample,
    ),
}


def run_feast(python: str) -> dict[str, Any]:
    """Feast's retrieval in a fresh process of ``python`` (an environment with feast)."""
    import json
    import resource
    import subprocess

    from shipyard.features.offline import OfflineStore
    from shipyard.workspace import Workspace

    store = OfflineStore(Workspace.open(WS))
    spec = [
        {
            "name": view.name,  # type: ignore[attr-defined]
            "entity": view.entity,  # type: ignore[attr-defined]
            "timestamp": view.timestamp,  # type: ignore[attr-defined]
            "path": str(store.materialization(view).path.resolve()),  # type: ignore[arg-type]
        }
        for view in _views()
    ]
    spec_path = WORK / "feast_spec.json"
    spec_path.write_text(json.dumps(spec))

    def cap_memory() -> None:  # Feast's join grows with events x rows per entity
        limit = FEAST_MEMORY_LIMIT_GIB * 2**30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    outputs = [str(FEAST_EVENTS), str(WORK / "out_feast.parquet")]
    done = subprocess.run(
        [python, str(Path(__file__).with_name("feast_retrieval.py")), str(spec_path), *outputs],
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=cap_memory,
    )
    if done.returncode != 0:
        raise RuntimeError(f"Feast case failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


KEYS = (*EVENT_COLUMNS, "EVENT_ROW")


def compare(ours_path: Path, theirs_path: Path, who: str) -> str:
    """Compare two retrieval results event by event; say how many rows differ and how."""
    import numpy as np
    import pandas as pd

    ours = pd.read_parquet(ours_path)
    theirs = pd.read_parquet(theirs_path)
    if "EVENT_ROW" in theirs.columns:  # Feast: align on the event's row number
        theirs = theirs.set_index("EVENT_ROW").reindex(range(len(ours))).reset_index(drop=True)
    missing = int(theirs["TX_DATETIME"].isna().sum())
    differ = np.zeros(len(ours), dtype=bool)
    worst = 0.0
    for column in ours.columns:
        if column in KEYS:
            continue
        a = ours[column].to_numpy(dtype=float)
        b = theirs[column].to_numpy(dtype=float)
        both = ~np.isnan(a) & ~np.isnan(b)
        differ |= np.isnan(a) != np.isnan(b)
        differ |= both & (a != b)
        if both.any():
            worst = max(worst, float(np.max(np.abs(a[both] - b[both]))))
    present = theirs["TX_DATETIME"].notna().to_numpy()
    keys_equal = all(
        (ours[c].to_numpy()[present] == theirs[c].to_numpy()[present]).all() for c in EVENT_COLUMNS
    )
    differ &= present
    nulls = int(ours.drop(columns=list(EVENT_COLUMNS)).isna().to_numpy().sum())
    return (
        f"{who} vs Shipyard over {len(ours):,} events: {len(ours) - missing - int(differ.sum()):,} "
        f"equal rows, {int(differ.sum()):,} rows with a different value, {missing:,} events "
        f"missing from {who}'s result; event columns equal: {'yes' if keys_equal else 'NO'}; "
        f"max |difference| = {worst:.2e}; null feature values in Shipyard's result: {nulls}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", choices=sorted({**CASES, **FEAST_CASES}), help=argparse.SUPPRESS)
    parser.add_argument(
        "--feast", metavar="PYTHON", help="python of an environment with feast, to compare with"
    )
    parser.add_argument(
        "--feast-events",
        type=int,
        default=FEAST_ROWS,
        help=f"how many of the events Feast retrieves (default {FEAST_ROWS:,}; see the docstring)",
    )
    args = parser.parse_args()
    if args.case:
        measure({**CASES, **FEAST_CASES}[args.case][1])
        return
    WORK.mkdir(parents=True, exist_ok=True)
    prepare()
    cases = dict(CASES)
    if args.feast:
        import pandas as pd

        pd.read_parquet(EVENTS).head(args.feast_events).to_parquet(FEAST_EVENTS, index=False)
        label, work = FEAST_CASES["retrieve_feast_sample"]
        cases["retrieve_feast_sample"] = (label.format(n=args.feast_events), work)
    rows = []
    for name, (label, _) in cases.items():
        rows.append(_report({**run_case(__file__, name), "case": label}))
    agreement = [compare(WORK / "out_shipyard.parquet", WORK / "out_pandas.parquet", "pandas")]
    if args.feast:
        feast = run_feast(args.feast)
        rows.append(
            _report(
                {**feast, "case": f"Feast get_historical_features, {args.feast_events:,} events"}
            )
        )
        agreement.append(
            compare(WORK / "out_shipyard_sample.parquet", WORK / "out_feast.parquet", "Feast")
        )
        agreement.append(
            f"Feast repository set-up and apply: {feast['setup_seconds']:.1f} s (not counted)."
        )
    for line in agreement:
        print(line)
    RESULTS.write_text(
        "# Offline features: last results\n\n"
        f"Machine: {platform.machine()}, 2 cores, Python {platform.python_version()}. "
        "Full reference data set (1,754,155 transactions); retrieval of the 15 features of "
        f"the three views for {N_EVENTS:,} transactions drawn from it"
        + (f" (Feast: the first {args.feast_events:,} of them)" if args.feast else "")
        + ". Each case runs in a fresh process; peak RSS is that process's.\n\n"
        + markdown_table(rows, ["case", "seconds", "rows", "peak_rss_mib"])
        + "\n\n"
        + "\n\n".join(agreement)
        + "\n"
    )
    print(f"written to {RESULTS}")


def _report(result: dict[str, Any]) -> dict[str, Any]:
    print(
        f"{result['case']:<56} {result['seconds']:>7.2f} s  {result['rows']:>9,} rows  "
        f"peak RSS {result['peak_rss_mib']:>7,.0f} MiB",
        flush=True,
    )
    return result


if __name__ == "__main__":
    main()
