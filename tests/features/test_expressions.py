"""A view's SQL computed in Python for small batches equals DuckDB's, value for value."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from shipyard.data.catalog import Dataset
from shipyard.errors import FeatureDefinitionError
from shipyard.features.definitions import Aggregation, FeatureView, RowFeature
from shipyard.features.expressions import (
    MAX_ROWS,
    FallbackError,
    RawSpec,
    calibrate,
    compile_select,
    decimal_units,
)
from shipyard.features.fraud import CUSTOMER_SPENDING, TRANSACTION
from shipyard.features.online import SQLiteOnlineStore
from shipyard.features.streaming import StreamingView, process_together
from shipyard.workspace import Workspace

TRICKY = [
    0.0, -0.0, 0.005, 0.015, 0.025, -0.005, 0.125, 0.135, 0.145, -0.125, 1.005, 2.675, 12.345,
    99.995, 0.49999999999999994, 1e-9, 1234567.885, 123456789012.345, 1e13, 9.2e16, 1e300,
    math.nan, math.inf, -math.inf,
]  # fmt: skip


@pytest.mark.parametrize("decimals", [0, 1, 2, 3, 9])
def test_decimal_units_round_halves_away_from_zero_like_duckdb(decimals: int) -> None:
    con = duckdb.connect()
    for value in TRICKY:
        try:
            mine = decimal_units(value, "float", decimals)
        except FallbackError:  # DuckDB decides: near DECIMAL(18)'s bound it may fail
            assert abs(value) * 10 ** (2 * decimals) >= 1e16
            continue
        cast = f"TRY_CAST(TRY_CAST(x AS DECIMAL(18, {decimals})) * {10**decimals} AS BIGINT)"
        sql = f"SELECT {cast} FROM (SELECT ?::DOUBLE AS x)"
        ((theirs,),) = con.execute(sql, [value]).fetchall()
        assert mine == theirs, value


EVERYTHING = FeatureView(
    name="everything",
    entity="CARD",
    timestamp="TS",
    source="none",
    features=(
        RowFeature("AMOUNT_COPY", '"AMOUNT"', inputs=("AMOUNT",)),
        RowFeature("DOUBLED", '2 * "AMOUNT" + 0.5', inputs=("AMOUNT",)),
        RowFeature("RATIO", '"AMOUNT" / "QTY"', inputs=("AMOUNT", "QTY")),
        RowFeature("NEGATED", '-"AMOUNT" - 1.25', inputs=("AMOUNT",)),
        RowFeature("BIG", '"AMOUNT" > 100', inputs=("AMOUNT",)),
        RowFeature("QTY_SMALL", 'CAST("QTY" <= 3 AS TINYINT)', inputs=("QTY",)),
        RowFeature("NULLS", '"QTY" IS NULL OR "NAME" IS NOT NULL', inputs=("QTY", "NAME")),
        RowFeature("QTY_AS_DOUBLE", 'CAST("QTY" AS DOUBLE)', inputs=("QTY",)),
        RowFeature("QTY_TINY", 'TRY_CAST("QTY" AS TINYINT)', inputs=("QTY",)),
        RowFeature("BOTH", 'NOT ("AMOUNT" >= 50 AND "QTY" <> 2)', inputs=("AMOUNT", "QTY")),
        RowFeature("FLAG", 'CAST("ONLINE" AS INTEGER)', inputs=("ONLINE",)),
        RowFeature("WEEKEND", 'CAST(isodow("TS") >= 6 AS TINYINT)', inputs=("TS",)),
        RowFeature("NIGHT", 'CAST(hour("TS") <= 6 AS TINYINT)', inputs=("TS",)),
        RowFeature("DOW", 'dayofweek("TS")', inputs=("TS",)),
        RowFeature("MINUTE", 'CAST(minute("TS") AS DOUBLE) + second("TS")', inputs=("TS",)),
        RowFeature("YEAR", 'year("TS")', inputs=("TS",)),
        RowFeature("MONTH", 'month("TS")', inputs=("TS",)),
        RowFeature("DAY", 'day("TS")', inputs=("TS",)),
        Aggregation("N_1H", "count", timedelta(hours=1)),
        Aggregation("SUM_1D", "sum", timedelta(days=1), column="AMOUNT", decimals=2),
        Aggregation("MEAN_1D", "mean", timedelta(days=1), column="QTY"),
        Aggregation("MAX_1D", "max", timedelta(days=1), column="AMOUNT", decimals=1),
    ),
)


def _events(n: int, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2018-04-01")
    micros = np.sort(rng.integers(0, 9 * 86_400_000_000, n))
    amounts: list[Any] = [round(float(a), 3) for a in rng.uniform(0, 300, n)]
    amounts[:6] = [0.125, 2.675, 0.005, 100.0, -0.0, None]
    quantities: list[Any] = rng.integers(-200, 200, n).tolist()
    quantities[:3] = [0, None, 128]  # a division by zero sends its batch to DuckDB
    return pd.DataFrame(
        {
            "CARD": rng.integers(0, 6, n),
            "TS": start + pd.to_timedelta(micros, unit="us"),
            "AMOUNT": amounts,
            "QTY": pd.array(quantities, dtype="Int64"),
            "NAME": [None if i % 7 == 0 else f"n{i}" for i in range(n)],
            "ONLINE": [i % 3 == 0 for i in range(n)],
        }
    )


def _arrow(frame: pd.DataFrame) -> pa.Table:
    """As serving gives events: timestamps in microseconds."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    at = table.schema.get_field_index("TS")
    return table.set_column(at, "TS", table.column("TS").cast(pa.timestamp("us")))


def test_every_supported_construct_equals_duckdb_in_small_batches(tmp_path: Path) -> None:
    """The same events in batches of 7 (Python) and in one batch over MAX_ROWS (DuckDB):
    every feature value and type equal, every stored state equal."""
    events = _events(MAX_ROWS + 100)
    small_store = SQLiteOnlineStore(tmp_path / "small.db")
    big_store = SQLiteOnlineStore(tmp_path / "big.db")
    small = StreamingView(EVERYTHING, small_store, lateness=timedelta(days=30))
    big = StreamingView(EVERYTHING, big_store, lateness=timedelta(days=30))
    table = _arrow(events)
    # batches never split an instant: times are distinct
    assert events["TS"].is_unique
    assert small.prepare_for(table)  # every expression compiled, the calibration agreed
    parts = [small.process(table.slice(i, 7)).features for i in range(0, len(events), 7)]
    got = pd.concat(parts, ignore_index=True)
    assert table.num_rows > MAX_ROWS  # one DuckDB query
    expected = big.process(table).features
    pd.testing.assert_frame_equal(got, expected)
    keys = [str(k) for k in sorted(events["CARD"].unique())]
    assert small_store.get_many(EVERYTHING, keys) == big_store.get_many(EVERYTHING, keys)
    small_store.close()
    big_store.close()


def test_serving_batches_of_the_fraud_views_equal_duckdb(
    small_workspace: tuple[Workspace, Dataset], tmp_path: Path
) -> None:
    """Two days of the data set, 14 events per call as serving batches them, against the
    same events in one DuckDB batch: equal features and states."""
    _, dataset = small_workspace
    events = dataset.read().sort_values("TX_DATETIME", kind="stable")
    first = events["TX_DATETIME"].iloc[0]
    events = events[events["TX_DATETIME"] < first + pd.Timedelta(days=2)]
    events = events[["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TX_AMOUNT"]]
    events = events.reset_index(drop=True)
    table = pa.Table.from_pandas(events, preserve_index=False)
    table = table.set_column(1, "TX_DATETIME", table.column(1).cast(pa.timestamp("us")))
    views = [TRANSACTION, CUSTOMER_SPENDING]
    results = {}
    assert len(events) > MAX_ROWS
    for label, size in (("python", 14), ("duckdb", len(events))):
        store = SQLiteOnlineStore(tmp_path / f"{label}.db")
        streams = [StreamingView(v, store) for v in views]
        assert all(stream.prepare_for(table) for stream in streams)
        frames: list[list[pd.DataFrame]] = [[], []]
        start = 0
        times = events["TX_DATETIME"]
        while start < len(events):
            stop = min(start + size, len(events))
            while stop < len(events) and times.iloc[stop] == times.iloc[stop - 1]:
                stop += 1
            for i, result in enumerate(process_together(streams, table.slice(start, stop - start))):
                frames[i].append(result.features)
            start = stop
        keys = [str(k) for k in events["CUSTOMER_ID"].unique()]
        results[label] = (
            [pd.concat(f, ignore_index=True) for f in frames],
            store.get_many(CUSTOMER_SPENDING, keys),
        )
        store.close()
    (python_frames, python_states), (duckdb_frames, duckdb_states) = results.values()
    for got, expected in zip(python_frames, duckdb_frames, strict=True):
        pd.testing.assert_frame_equal(got, expected)
    assert python_states == duckdb_states


def test_a_value_outside_the_exact_domain_is_left_to_duckdb(tmp_path: Path) -> None:
    """An amount whose exact cents overflow DECIMAL(18, 2) in DuckDB's product fails as it
    did before (DuckDB's error), and nothing is stored."""
    store = SQLiteOnlineStore(tmp_path / "online.db")
    stream = StreamingView(CUSTOMER_SPENDING, store)
    event = pa.table(
        {
            "TRANSACTION_ID": pa.array([1], pa.int64()),
            "TX_DATETIME": pa.array([pd.Timestamp("2018-04-01 10:00")], pa.timestamp("us")),
            "CUSTOMER_ID": pa.array([7], pa.int64()),
            "TX_AMOUNT": pa.array([12.5], pa.float64()),
        }
    )
    assert stream.prepare_for(event)
    stream.process(event)
    before = store.get(CUSTOMER_SPENDING, "7")
    huge = event.set_column(3, "TX_AMOUNT", pa.array([5e14], pa.float64()))
    with pytest.raises(FeatureDefinitionError, match="Overflow"):
        stream.process(huge)
    assert store.get(CUSTOMER_SPENDING, "7") == before
    store.close()


def test_what_is_not_compiled_stays_with_duckdb() -> None:
    raw = RawSpec("TS", "CARD", (("AMOUNT", 2),))
    names = ["CARD", "TS", "AMOUNT", "NAME"]
    types = [pa.int64(), pa.timestamp("us"), pa.float64(), pa.string()]
    schema = pa.schema(list(zip(names, types, strict=True)))
    assert compile_select(raw, ['"AMOUNT" > 1'], schema) is not None
    for expression in ['upper("NAME")', '"AMOUNT" // 2', "random()", '"TS"', "\"NAME\" = 'a'"]:
        assert compile_select(raw, [expression], schema) is None, expression
    with_timezone = schema.set(1, pa.field("TS", pa.timestamp("us", tz="UTC")))
    assert compile_select(raw, [], with_timezone) is None


def test_a_calibration_that_disagrees_with_duckdb_keeps_duckdb(tmp_path: Path) -> None:
    """One value different from DuckDB's over the calibration table, and the Python path is
    not used for that schema."""
    raw = RawSpec("TS", "CARD", (("AMOUNT", 2),))
    schema = pa.schema([("CARD", pa.int64()), ("TS", pa.timestamp("us")), ("AMOUNT", pa.float64())])
    compiled = compile_select(raw, ['"AMOUNT" * 2'], schema)
    assert compiled is not None
    store = SQLiteOnlineStore(tmp_path / "online.db")
    stream = StreamingView(
        FeatureView(
            name="v",
            entity="CARD",
            timestamp="TS",
            source="none",
            features=(
                RowFeature("X", '"AMOUNT" * 2', inputs=("AMOUNT",)),
                Aggregation("S", "sum", timedelta(days=1), column="AMOUNT", decimals=2),
            ),
        ),
        store,
    )
    selects = stream._raw_selects + stream._row_selects

    def duckdb_select(table: pa.Table) -> tuple[list[list[Any]], list[str]]:
        columns, types = stream._select(table, selects)
        changed = [None if v is None else v + 1.0 for v in columns[-1]]  # X = 2 * AMOUNT + 1
        return [*columns[:-1], changed], types

    assert calibrate(compiled, schema, lambda table: stream._select(table, selects))
    assert not calibrate(compiled, schema, duckdb_select)
    store.close()
