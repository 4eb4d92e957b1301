"""Benchmark: the 15 baseline features over the full data set, and a 1M-event point-in-time
retrieval, Shipyard (DuckDB) side by side with pandas, each case in a fresh process.

Cases
- ``materialize``: Shipyard computes the three baseline views (1,754,155 rows each) from the
  daily Parquet partitions and stores them.
- ``pandas_rolling``: the handbook's pandas code for the same features (groupby + time-based
  rolling per customer and per terminal) on the same data, loaded from the same Parquet.
- ``retrieve``: 1,000,000 events (random customer, terminal and time) get the customer and
  terminal features as of their time: Shipyard's ASOF join, streamed to Parquet (default
  4 GB DuckDB memory limit, and again with the limit lowered to 300 MB: it spills instead).
- ``merge_asof``: the same with ``pandas.merge_asof`` (load features, sort, merge, write).

Run from the repository root: ``.venv/bin/python benchmarks/features/bench_features.py``.
The first run simulates the data set into benchmarks/_work (about 10 s).
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import WORK, markdown_table, measure, run_case  # noqa: E402

RESULTS = Path(__file__).with_name("results.md")
N_EVENTS = 1_000_000
WS = WORK / "features-ws"
EVENTS = WORK / "events_1m.parquet"


def prepare() -> None:
    """Simulate the data set, materialize once, and draw the 1M events (idempotent)."""
    import numpy as np
    import pandas as pd

    from shipyard.data.fraud_simulator import simulate_fraud_dataset
    from shipyard.features.fraud import BASELINE_VIEWS
    from shipyard.features.offline import OfflineStore
    from shipyard.workspace import Workspace

    ws = Workspace.open(WS) if (WS / "shipyard.toml").exists() else Workspace.init(WS)
    dataset = simulate_fraud_dataset(ws)
    OfflineStore(ws).materialize(BASELINE_VIEWS)
    if not EVENTS.exists():
        rng = np.random.default_rng(0)
        start = pd.Timestamp(dataset.time_min).value // 1000
        end = pd.Timestamp(dataset.time_max).value // 1000
        pd.DataFrame(
            {
                "CUSTOMER_ID": rng.integers(0, 5_000, N_EVENTS),
                "TERMINAL_ID": rng.integers(0, 10_000, N_EVENTS),
                "TX_DATETIME": pd.to_datetime(rng.integers(start, end, N_EVENTS), unit="us"),
            }
        ).to_parquet(EVENTS, index=False)


def _views() -> list[object]:
    from shipyard.features.fraud import CUSTOMER_SPENDING, TERMINAL_RISK

    return [CUSTOMER_SPENDING, TERMINAL_RISK]


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


def case_retrieve() -> dict[str, object]:
    from shipyard.features.offline import OfflineStore
    from shipyard.workspace import Workspace

    store = OfflineStore(Workspace.open(WS))
    out = store.get_historical_features(EVENTS, _views()).to_parquet(WORK / "out_shipyard.parquet")  # type: ignore[arg-type]
    import pyarrow.parquet as pq

    return {"rows": pq.read_metadata(out).num_rows}


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


def check_same_answers() -> str:
    import numpy as np
    import pandas as pd

    ours = pd.read_parquet(WORK / "out_shipyard.parquet")
    theirs = pd.read_parquet(WORK / "out_pandas.parquet")
    worst = 0.0
    for column in ours.columns:
        if column in ("CUSTOMER_ID", "TERMINAL_ID", "TX_DATETIME"):
            assert (ours[column].to_numpy() == theirs[column].to_numpy()).all(), column
            continue
        a = ours[column].to_numpy(dtype=float)
        b = theirs[column].to_numpy(dtype=float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), column
        worst = max(worst, float(np.nanmax(np.abs(a - b))))
    return f"retrieval results agree: max |difference| over all features = {worst:.2e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        measure(CASES[args.case][1])
        return
    WORK.mkdir(parents=True, exist_ok=True)
    prepare()
    rows = []
    for name, (label, _) in CASES.items():
        result = run_case(__file__, name)
        result["case"] = label
        rows.append(result)
        print(
            f"{label:<52} {result['seconds']:>7.2f} s  {result['rows']:>9,} rows  "
            f"peak RSS {result['peak_rss_mib']:>7,.0f} MiB",
            flush=True,
        )
    agreement = check_same_answers()
    print(agreement)
    RESULTS.write_text(
        "# Offline features: last results\n\n"
        f"Machine: {platform.machine()}, 2 cores, Python {platform.python_version()}. "
        "Full reference data set (1,754,155 transactions); retrieval of "
        f"{N_EVENTS:,} random events against the customer and terminal views. "
        "Each case runs in a fresh process; peak RSS is that process's.\n\n"
        + markdown_table(rows, ["case", "seconds", "rows", "peak_rss_mib"])
        + f"\n\n{agreement}\n"
    )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
