"""Streaming window aggregates equal the offline store's values, on SQLite and on Redis."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.errors import DataValidationError, FeatureDefinitionError
from shipyard.features.definitions import Aggregation, FeatureView, RowFeature
from shipyard.features.fraud import CUSTOMER_SPENDING, TERMINAL_RISK, TRANSACTION
from shipyard.features.offline import OfflineStore, view_sql
from shipyard.features.online import OnlineStore, RedisOnlineStore, SQLiteOnlineStore, Update
from shipyard.features.streaming import (
    EntityState,
    LateEventError,
    StreamingView,
    process_together,
    replay,
)
from shipyard.workspace import Workspace
from tests.features.test_online import redis_server  # noqa: F401  (a fixture)

KEYS = ["TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_DATETIME"]


@pytest.fixture(params=["sqlite", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def reopen(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """Opens the same fresh store again each call (a restart); closes them all at teardown."""
    opened: list[OnlineStore] = []
    url = request.getfixturevalue("redis_server") if store_kind == "redis" else ""
    if url:
        import redis

        redis.Redis.from_url(url).flushdb()

    def factory() -> OnlineStore:
        store: OnlineStore = (
            RedisOnlineStore(url) if url else SQLiteOnlineStore(tmp_path / "online.db")
        )
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def _replay(view: FeatureView, events: pd.DataFrame, reopen: object) -> pd.DataFrame:
    """Replay ``events`` through the streaming path, restarting the store halfway."""
    assert callable(reopen)
    ordered = events.sort_values(view.timestamp, kind="stable")
    half = ordered[view.timestamp].iloc[len(ordered) // 2]
    parts = []
    for part in (ordered[ordered[view.timestamp] < half], ordered[ordered[view.timestamp] >= half]):
        store = reopen()  # the second part runs on a reopened store: the state must survive
        stream = StreamingView(view, store)
        parts += [r.features for r in replay(stream, part, batch_rows=4_000)]
        assert all(not r.rejected for r in replay(stream, part.iloc[:0]))
    online = pd.concat(parts, ignore_index=True)
    online.index = ordered.index
    return online.sort_index()


@pytest.mark.parametrize(
    "view", [TRANSACTION, CUSTOMER_SPENDING, TERMINAL_RISK], ids=lambda v: v.name
)
def test_replay_equals_offline_point_in_time_retrieval(
    small_workspace: tuple[Workspace, Dataset], view: FeatureView, reopen: object
) -> None:
    ws, dataset = small_workspace
    events = dataset.read()
    offline = OfflineStore(ws).get_historical_features(events[KEYS], [view]).to_pandas()
    online = _replay(view, events, reopen)
    assert len(online) == len(offline) == len(events)
    for name in view.feature_names:
        got, want = online[name], offline[name]
        if name.startswith("CUSTOMER_ID_NB_TX"):
            assert got.astype("int64").tolist() == want.astype("int64").tolist(), name
        else:
            np.testing.assert_allclose(
                got.astype("float64"), want.astype("float64"), rtol=0, atol=1e-9, err_msg=name
            )


def _at(day: int, hour: int = 0, minute: int = 0, second: int = 0) -> pd.Timestamp:
    return pd.Timestamp("2018-04-01") + pd.Timedelta(
        days=day, hours=hour, minutes=minute, seconds=second
    )


MIXED = FeatureView(
    name="mixed",
    entity="CARD",
    timestamp="TS",
    source="none",
    features=(
        RowFeature("DOUBLED", '2 * "AMOUNT"', inputs=("AMOUNT",)),
        Aggregation("N_1H", "count", timedelta(hours=1)),
        Aggregation("N_AMOUNT_1H", "count", timedelta(hours=1), column="AMOUNT"),
        Aggregation("SUM_2D", "sum", timedelta(days=2), column="AMOUNT", decimals=2),
        Aggregation("SUM_2D_FLOAT", "sum", timedelta(days=2), column="AMOUNT"),
        Aggregation("MEAN_1H", "mean", timedelta(hours=1), column="AMOUNT", fill_value=-1.0),
        Aggregation("MIN_1D", "min", timedelta(days=1), column="AMOUNT", decimals=1),
        Aggregation("MAX_1D", "max", timedelta(days=1), column="AMOUNT"),
    ),
)


def _mixed_events() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    times = [_at(0) + pd.Timedelta(minutes=int(m)) for m in rng.integers(0, 6 * 24 * 60, 600)]
    times += [_at(2, 5)] * 4 + [_at(2, 6)] * 3  # same-instant events
    times += [_at(1, 1) + pd.Timedelta(hours=1), _at(1, 1) + pd.Timedelta(microseconds=1)]
    amounts = [round(float(a), 2) for a in rng.uniform(0, 300, len(times))]
    amounts[5] = amounts[17] = None  # type: ignore[call-overload]
    amounts[0] = 0.125  # a cast that rounds
    cards = rng.integers(0, 4, len(times)).tolist()
    return pd.DataFrame({"CARD": cards, "TS": times, "AMOUNT": amounts})


def test_every_function_equals_the_offline_sql(reopen: object) -> None:
    """count, count of a column, exact and float sums, mean with fill, min, max; nulls too."""
    assert callable(reopen)
    events = _mixed_events()
    con = duckdb.connect()
    con.register("events", events)
    offline = con.sql(f"SELECT *, row_number() OVER () AS r FROM ({view_sql(MIXED, 'events')})")
    expected = offline.df()
    # view_sql keeps no row order: match on (card, time, row feature) via the events' order
    stream = StreamingView(MIXED, reopen())
    online = pd.concat([r.features for r in replay(stream, events, batch_rows=50)])
    ordered = events.sort_values("TS", kind="stable").reset_index(drop=True)
    online = pd.concat([ordered, online.reset_index(drop=True)], axis=1)
    keys = ["CARD", "TS", "DOUBLED"]
    merged = online.merge(expected, on=keys, suffixes=("", "_offline"), how="left")
    assert len(merged) >= len(events)
    for feature in MIXED.features:
        if isinstance(feature, Aggregation):
            np.testing.assert_allclose(
                merged[feature.name].astype("float64"),
                merged[f"{feature.name}_offline"].astype("float64"),
                rtol=0,
                atol=1e-9,
                err_msg=feature.name,
            )


def _one(card: int, at: pd.Timestamp, amount: float = 10.0) -> pd.DataFrame:
    return pd.DataFrame({"CARD": [card], "TS": [at], "AMOUNT": [amount]})


def test_same_instant_events_see_each_other(reopen: object) -> None:
    assert callable(reopen)
    stream = StreamingView(MIXED, reopen())
    events = pd.concat([_one(1, _at(0, 1), 10.0), _one(1, _at(0, 1), 20.0), _one(2, _at(0, 1))])
    features = stream.process(events).features
    assert features["N_1H"].tolist() == [2, 2, 1]
    assert features["MEAN_1H"].tolist() == [15.0, 15.0, 10.0]
    assert features["DOUBLED"].tolist() == [20.0, 40.0, 20.0]


def test_late_events_are_rejected_and_change_nothing(reopen: object) -> None:
    assert callable(reopen)
    store = reopen()
    stream = StreamingView(MIXED, store, lateness=timedelta(minutes=5))
    stream.process(pd.concat([_one(1, _at(0, 10)), _one(2, _at(0, 10))]))
    before = store.get_many(MIXED, ["1", "2"])
    batch = pd.concat([_one(2, _at(0, 11)), _one(1, _at(0, 9, 54, 59))])
    with pytest.raises(LateEventError, match="lateness bound of 0:05:00") as error:
        stream.process(batch)
    assert "row 1" in str(error.value)
    assert "CARD = 1" in str(error.value)
    assert "Nothing was stored" in str(error.value)
    assert store.get_many(MIXED, ["1", "2"]) == before  # not even card 2's good event

    counting = StreamingView(MIXED, store, lateness=timedelta(minutes=5), on_late="count")
    result = counting.process(batch)
    assert result.rejected == [1]
    assert result.features["N_1H"].isna().tolist() == [False, True]
    assert store.get(MIXED, "1") == before[0]
    assert store.get(MIXED, "2") != before[1]

    # within the bound: accepted, and read exactly at its own time (newer events unseen)
    accepted = counting.process(_one(1, _at(0, 9, 56), 30.0))
    assert accepted.rejected == []
    assert accepted.features["N_1H"].tolist() == [1]
    assert stream.read([1], _at(0, 10))["N_1H"].tolist() == [2]


def test_an_unseen_entity_has_zero_history(reopen: object) -> None:
    assert callable(reopen)
    stream = StreamingView(MIXED, reopen())
    stream.process(_one(1, _at(0, 1)))
    read = stream.read([1, 99], _at(0, 1, 30))
    assert read["N_1H"].tolist() == [1, 0]
    assert read["MEAN_1H"].tolist() == [10.0, -1.0]  # fill_value
    assert np.isnan(read["SUM_2D"].iloc[1])  # no fill_value: null
    assert read.loc[0, "SUM_2D"] == 10.0


def test_state_is_bounded_by_the_longest_window(reopen: object) -> None:
    assert callable(reopen)
    store = reopen()
    stream = StreamingView(MIXED, store, lateness=timedelta(hours=1))
    hourly = pd.concat([_one(1, _at(0) + pd.Timedelta(hours=h)) for h in range(24 * 10)])
    for _ in replay(stream, hourly, batch_rows=10):
        pass
    blob = store.get(MIXED, "1")
    assert blob is not None
    state = EntityState.from_bytes(blob, stream.series)
    # 2 days + 1 hour of lateness, hourly events: 49 kept, the 240 - 49 older ones expired
    assert len(state.times) == 49
    assert len(blob) == 5 + 8 * 49 * (1 + len(stream.series))


def test_a_delayed_view_keeps_delay_plus_window_and_reads_at_each_time(tmp_path: Path) -> None:
    store = SQLiteOnlineStore(tmp_path / "online.db")
    stream = StreamingView(TERMINAL_RISK, store, lateness=timedelta(0))
    assert stream.retention_us == (7 + 30) * 86_400 * 10**6
    events = pd.DataFrame(
        {
            "TERMINAL_ID": [5, 5, 5],
            "TX_DATETIME": pd.to_datetime(["2018-04-01", "2018-04-03", "2018-04-20"]),
            "TX_FRAUD": [1, 0, 0],
        }
    )
    stream.process(events)
    # at 04-09 12:00 the 1-day window is (04-01 12:00, 04-02 12:00]: empty; 7 days: 04-01 in
    read = stream.read_at([5, 5, 6], ["2018-04-09 12:00", "2018-04-10 00:00", "2018-04-10"])
    assert read["TERMINAL_ID_NB_TX_1DAY_WINDOW"].tolist() == [0, 1, 0]
    assert read["TERMINAL_ID_RISK_1DAY_WINDOW"].tolist() == [0.0, 0.0, 0.0]
    assert read["TERMINAL_ID_NB_TX_7DAY_WINDOW"].tolist() == [1, 2, 0]
    assert read["TERMINAL_ID_RISK_7DAY_WINDOW"].tolist() == [1.0, 0.5, 0.0]
    with pytest.raises(DataValidationError, match="one time per entity"):
        stream.read_at([5], [])
    with pytest.raises(FeatureDefinitionError, match="'lateness' parameter"):
        StreamingView(CUSTOMER_SPENDING, store, lateness=timedelta(seconds=-1))
    store.close()


# -- bad events ---------------------------------------------------------------------------------

NOW = pd.Timestamp("2018-04-10 12:00")


def _blobs(store: OnlineStore, view: FeatureView, keys: list[str]) -> list[bytes | None]:
    return store.get_many(view, keys)


def _bad_stream(reopen: object, view: FeatureView = MIXED) -> tuple[StreamingView, OnlineStore]:
    assert callable(reopen)
    store = reopen()
    return StreamingView(view, store, now=lambda: NOW.to_pydatetime()), store


def _three(**changes: object) -> pd.DataFrame:
    """Three good events of cards 1 and 2 at day 1, one column of row 1 replaced by ``changes``."""
    frame = pd.DataFrame(
        {"CARD": [1, 2, 1], "TS": [_at(1, 1), _at(1, 2), _at(1, 3)], "AMOUNT": [5.0, 6.0, 7.0]}
    )
    frame = frame.astype(object)
    for column, value in changes.items():
        frame.at[1, column] = value
    return frame


@pytest.mark.parametrize(
    ("changes", "column", "expected"),
    [
        ({"CARD": None}, "CARD", "expected an entity key"),
        ({"TS": None}, "TS", "expected a timestamp"),
        ({"TS": "yesterday"}, "TS", "expected a timestamp"),
        ({"TS": NOW + pd.Timedelta(days=1, seconds=1)}, "TS", "in the future"),
        ({"AMOUNT": "abc"}, "AMOUNT", "'abc'; expected a finite number"),
        ({"AMOUNT": float("inf")}, "AMOUNT", "inf; expected a finite number"),
        ({"AMOUNT": 1e20}, "AMOUNT", "fits DECIMAL(18, 2)"),
    ],
    ids=["null key", "null time", "not a time", "future", "text", "infinite", "too big"],
)
def test_bad_events_are_rejected_and_change_nothing(
    reopen: object, changes: dict[str, object], column: str, expected: str
) -> None:
    stream, store = _bad_stream(reopen)
    stream.process(pd.concat([_one(1, _at(1)), _one(2, _at(1))]))
    before = _blobs(store, MIXED, ["1", "2"])
    assert all(before)
    with pytest.raises(DataValidationError) as error:
        stream.process(_three(**changes))  # rows 0 and 2 are good: nothing of them is stored
    message = str(error.value)
    assert f"column {column!r}" in message
    assert "row 1" in message
    assert expected in message
    assert "Nothing of the batch was stored" in message
    assert _blobs(store, MIXED, ["1", "2"]) == before
    # the same batch without the bad value goes through
    assert stream.process(_three()).features["N_1H"].tolist() == [1, 1, 1]


def test_an_arrow_nan_is_rejected_a_pandas_nan_is_a_null(reopen: object) -> None:
    import pyarrow as pa

    stream, store = _bad_stream(reopen)
    table = pa.Table.from_pandas(_three(), preserve_index=False)
    amounts = pa.array([5.0, float("nan"), 7.0], from_pandas=False)
    table = table.set_column(2, "AMOUNT", amounts)
    with pytest.raises(DataValidationError, match=r"row 1.*column 'AMOUNT'.*nan"):
        stream.process(table)
    assert _blobs(store, MIXED, ["1", "2"]) == [None, None]
    # in pandas NaN is the null marker: skipped by the aggregations, as offline
    features = stream.process(_three(AMOUNT=float("nan"))).features
    assert features["N_AMOUNT_1H"].tolist() == [1, 0, 1]
    assert features["N_1H"].tolist() == [1, 1, 1]


def test_the_future_bound_uses_the_injected_clock(reopen: object) -> None:
    assert callable(reopen)
    # a replay of old history is in the past: fine with the real clock
    history = StreamingView(MIXED, reopen())
    assert len(list(replay(history, _three()))) == 1
    store = reopen()
    at_bound = NOW + pd.Timedelta(hours=1)
    stream = StreamingView(
        MIXED, store, max_future=timedelta(hours=1), now=lambda: NOW.to_pydatetime()
    )
    assert stream.process(_one(1, at_bound)).features["N_1H"].tolist() == [1]
    with pytest.raises(DataValidationError, match="now \\+ 1:00:00"):
        stream.process(_one(1, at_bound + pd.Timedelta(microseconds=1)))
    with pytest.raises(FeatureDefinitionError, match="'max_future' parameter"):
        StreamingView(MIXED, store, max_future=timedelta(seconds=-1))


def test_a_row_feature_breaking_its_constraint_is_rejected(reopen: object) -> None:
    stream, store = _bad_stream(reopen, TRANSACTION)
    good = pd.DataFrame(
        {
            "TRANSACTION_ID": [1, 2, 3],
            "TX_DATETIME": [_at(1, 1), _at(1, 2), _at(1, 3)],
            "TX_AMOUNT": [5.0, 6.0, 7.0],
        }
    )
    assert stream.process(good).features["TX_AMOUNT"].tolist() == [5.0, 6.0, 7.0]
    bad = good.assign(TRANSACTION_ID=[4, 5, 6], TX_AMOUNT=[5.0, 6.0, -0.01])
    with pytest.raises(DataValidationError) as error:
        stream.process(bad)
    message = str(error.value)
    assert "row 2" in message
    assert "column 'TX_AMOUNT'" in message
    assert "-0.01" in message
    assert "expected a number >= 0" in message
    text = good.astype(object).assign(TRANSACTION_ID=[7, 8, 9])
    text.at[0, "TX_AMOUNT"] = "abc"
    with pytest.raises(DataValidationError, match=r"row 0.*'abc'.*expected a number >= 0"):
        stream.process(text)
    assert _blobs(store, TRANSACTION, ["1", "4"]) == [None, None]  # row features store nothing


def test_one_bad_row_in_a_replay_stores_nothing_of_its_batch(reopen: object) -> None:
    stream, store = _bad_stream(reopen)
    events = pd.concat([_one(c, _at(1, h)) for c in (1, 2) for h in range(6)], ignore_index=True)
    events = events.astype({"AMOUNT": object})
    events.at[7, "AMOUNT"] = "12,5"  # card 2 at 01:00: the 4th event in time order
    with pytest.raises(DataValidationError, match=r"row 3 \(index 7\).*column 'AMOUNT'.*'12,5'"):
        for _ in replay(stream, events, batch_rows=100):
            pass
    assert _blobs(store, MIXED, ["1", "2"]) == [None, None]


# -- concurrent writers ---------------------------------------------------------------------------


def _open(kind: str, where: str) -> OnlineStore:
    return RedisOnlineStore(where) if kind == "redis" else SQLiteOnlineStore(where)


def _customer_events(first_second: int, n: int) -> list[pd.DataFrame]:
    """``n`` one-event batches of customer 7, two seconds apart from ``first_second``."""
    return [
        pd.DataFrame(
            {
                "TRANSACTION_ID": [first_second + 2 * i],
                "CUSTOMER_ID": [7],
                "TX_DATETIME": [_at(1) + pd.Timedelta(seconds=first_second + 2 * i)],
                "TX_AMOUNT": [1.25],
            }
        )
        for i in range(n)
    ]


def _streaming_worker(kind: str, where: str, first_second: int, n: int, barrier: Any) -> None:
    """A separate process (a serving worker) streaming its events of customer 7, in time order."""
    barrier.wait(timeout=120)  # both processes open the (fresh) store at once
    stream = StreamingView(CUSTOMER_SPENDING, _open(kind, where), lateness=timedelta(days=1))
    barrier.wait(timeout=120)  # a peer that died breaks the barrier: no wait for the join
    for batch in _customer_events(first_second, n):
        stream.process(batch)
    stream.store.close()


def test_two_processes_streaming_one_customer_lose_no_event(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Two processes process events of the same customer at once; every event is counted.

    Each call's read-modify-write of the customer's state is one ``update_many``: with a
    separate read and write, both processes would read the same old state and the second
    write would drop the first's event.
    """
    where = str(tmp_path / "online.db")
    if store_kind == "redis":
        import redis

        where = str(request.getfixturevalue("redis_server"))
        redis.Redis.from_url(where).flushdb()
    n = 60
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    processes = [
        context.Process(target=_streaming_worker, args=(store_kind, where, first, n, barrier))
        for first in (0, 1)  # interleaved in time: one process has the even seconds
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    assert [p.exitcode for p in processes] == [0, 0]
    store = _open(store_kind, where)
    stream = StreamingView(CUSTOMER_SPENDING, store)
    read = stream.read([7], _at(1) + pd.Timedelta(seconds=2 * n))
    assert read["CUSTOMER_ID_NB_TX_30DAY_WINDOW"].tolist() == [2 * n]
    assert read["CUSTOMER_ID_NB_TX_1DAY_WINDOW"].tolist() == [2 * n]
    assert read["CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"].tolist() == [1.25]
    store.close()


class _AnotherWriterFirst(RedisOnlineStore):
    """A real Redis store where ``between`` runs once, after the first computation of an
    update and before its write: another writer's turn, at the worst moment."""

    def __init__(self, url: str, between: Callable[[], object]) -> None:
        super().__init__(url)
        self.between: Callable[[], object] | None = between

    def update_many(self, view: FeatureView, keys: Sequence[str], update: Update) -> None:
        def then_the_other(states: list[bytes | None]) -> Mapping[str, bytes]:
            result = update(states)
            if self.between is not None:
                between, self.between = self.between, None
                between()
            return result

        super().update_many(view, keys, then_the_other)


def test_a_retried_update_returns_the_features_of_the_state_it_wrote(
    redis_server: str,  # noqa: F811  (the fixture)
) -> None:
    import redis

    redis.Redis.from_url(redis_server).flushdb()
    other = StreamingView(MIXED, RedisOnlineStore(redis_server))
    store = _AnotherWriterFirst(redis_server, lambda: other.process(_one(1, _at(0, 1), 30.0)))
    stream = StreamingView(MIXED, store)
    features = stream.process(_one(1, _at(0, 1, 30), 10.0)).features
    # computed first without the other event, then again with it: the second is the answer
    assert features["N_1H"].tolist() == [2]
    assert features["MEAN_1H"].tolist() == [20.0]
    assert stream.read([1], _at(0, 1, 45))["N_1H"].tolist() == [2]  # both were stored
    store.close()
    other.store.close()


def test_threads_share_one_streaming_view(tmp_path: Path) -> None:
    """Serving threads call process on one view at once (one DuckDB cursor per call)."""
    from concurrent.futures import ThreadPoolExecutor

    store = SQLiteOnlineStore(tmp_path / "online.db")
    stream = StreamingView(MIXED, store)

    def card(c: int) -> list[int]:
        return [
            int(stream.process(_one(c, _at(0, 1, m), 1.0)).features["N_1H"].iloc[0])
            for m in range(30)
        ]

    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(card, range(8)))
    assert counts == [list(range(1, 31))] * 8
    store.close()


def test_row_features_keep_the_types_duckdb_gives_them(tmp_path: Path) -> None:
    """Integers stay narrow, text stays text, nulls stay nulls, as DuckDB's Arrow has them."""
    store = SQLiteOnlineStore(tmp_path / "online.db")
    events = pd.DataFrame(
        {
            "TRANSACTION_ID": [1, 2],
            "TX_DATETIME": [_at(5, 3), _at(6, 12)],  # 2018-04-06 is a Friday, 04-07 a Saturday
            "TX_AMOUNT": [12.5, None],
        }
    )
    features = StreamingView(TRANSACTION, store).process(events).features
    assert features.dtypes.astype(str).to_dict() == {
        "TX_AMOUNT": "float64",
        "TX_DURING_WEEKEND": "int8",
        "TX_DURING_NIGHT": "int8",
    }
    assert features["TX_DURING_WEEKEND"].tolist() == [0, 1]
    assert features["TX_DURING_NIGHT"].tolist() == [1, 0]
    assert features["TX_AMOUNT"].iloc[0] == 12.5 and np.isnan(features["TX_AMOUNT"].iloc[1])
    labelled = FeatureView(
        name="labelled",
        entity="CARD",
        timestamp="TS",
        source="none",
        features=(
            RowFeature("LABEL", 'upper("NAME")', inputs=("NAME",)),
            RowFeature("BIG", '"AMOUNT" > 100', inputs=("AMOUNT",)),
        ),
    )
    rows = pd.DataFrame({"CARD": [1, 2], "TS": [_at(1), _at(1)], "NAME": ["a", None]})
    rows["AMOUNT"] = [150.0, 5.0]
    features = StreamingView(labelled, store).process(rows).features
    assert features["LABEL"].tolist()[0] == "A" and pd.isna(features["LABEL"].iloc[1])
    assert features["BIG"].tolist() == [True, False] and features["BIG"].dtype == bool
    store.close()


# -- several views at once (what serving does per batch) --------------------------------------


def test_process_together_equals_each_view_on_its_own(
    small_workspace: tuple[Workspace, Dataset], tmp_path: Path
) -> None:
    _, dataset = small_workspace
    events = dataset.read().sort_values("TX_DATETIME", kind="stable").iloc[:3_000]
    events = events[["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TX_AMOUNT"]]
    together_store = SQLiteOnlineStore(tmp_path / "together.db")
    apart_store = SQLiteOnlineStore(tmp_path / "apart.db")
    views = [TRANSACTION, CUSTOMER_SPENDING]
    together = [StreamingView(v, together_store) for v in views]
    apart = [StreamingView(v, apart_store) for v in views]
    for start in range(0, len(events), 500):  # the first 3,000 events split into batches
        batch = events.iloc[start : start + 500]
        results = process_together(together, batch)
        for stream, result in zip(apart, results, strict=True):
            expected = stream.process(batch)
            pd.testing.assert_frame_equal(result.features, expected.features)
            assert result.values == expected.values
            assert result.rejected == expected.rejected == []
    for view in views:
        keys = [str(k) for k in events[view.entity].unique()]
        assert together_store.get_many(view, keys) == apart_store.get_many(view, keys)
    together_store.close()
    apart_store.close()


def test_process_together_stores_nothing_when_one_view_refuses_an_event(tmp_path: Path) -> None:
    store = SQLiteOnlineStore(tmp_path / "online.db")
    streams = [StreamingView(TRANSACTION, store), StreamingView(CUSTOMER_SPENDING, store)]
    good = pd.DataFrame(
        {
            "TRANSACTION_ID": [1, 2],
            "TX_DATETIME": [_at(0, 1), _at(0, 2)],
            "CUSTOMER_ID": [7, 7],
            "TX_AMOUNT": [10.0, 20.0],
        }
    )
    process_together(streams, good)
    before = store.get(CUSTOMER_SPENDING, "7")
    bad = good.assign(TX_DATETIME=[_at(0, 3), _at(0, 4)], TX_AMOUNT=[5.0, -1.0])
    # a negative amount breaks the transaction view's constraint: customer_spending, which
    # alone would accept it, stores nothing either
    with pytest.raises(DataValidationError, match="TX_AMOUNT"):
        process_together(streams, bad)
    assert store.get(CUSTOMER_SPENDING, "7") == before
    store.close()
