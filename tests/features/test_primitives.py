"""std, past-only windows and derived features: offline (DuckDB) and online (streaming) equal
an independent pandas computation, and equal each other bit for bit."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.errors import DataValidationError, FeatureDefinitionError
from shipyard.features.definitions import Aggregation, Derived, FeatureView, RowFeature
from shipyard.features.fraud import CUSTOMER_HISTORY, EXTENDED_VIEWS, TERMINAL_HISTORY
from shipyard.features.materialize_online import materialize_online, read_online
from shipyard.features.offline import OfflineStore, view_sql
from shipyard.features.online import SQLiteOnlineStore
from shipyard.features.parity import exact_features, parity
from shipyard.features.streaming import StreamingView, decimal_mean, decimal_std, replay
from shipyard.types import NON_NEGATIVE
from shipyard.workspace import Workspace
from tests.features.test_online import redis_server  # noqa: F401  (a fixture)

T0 = pd.Timestamp("2018-04-01")
HOUR = pd.Timedelta(hours=1)
WINDOW = timedelta(hours=3)

PRIMITIVES = FeatureView(
    name="primitives",
    entity="CARD",
    timestamp="TS",
    source="none",
    features=(
        RowFeature("HALF", '"AMOUNT" / 2', inputs=("AMOUNT",)),
        Aggregation("N", "count", WINDOW),
        Aggregation("PAST_N", "count", WINDOW, past_only=True),
        Aggregation("PAST_MEAN", "mean", WINDOW, column="AMOUNT", decimals=2, past_only=True),
        Aggregation("PAST_STD", "std", WINDOW, column="AMOUNT", decimals=2, past_only=True),
        Aggregation("STD", "std", WINDOW, column="AMOUNT", decimals=2),
        Aggregation(
            "PAST_STD_FILLED",
            "std",
            WINDOW,
            column="AMOUNT",
            decimals=2,
            past_only=True,
            fill_value=-1.0,
        ),
        Aggregation("PAST_MAX", "max", WINDOW, column="AMOUNT", past_only=True),
        Derived("RATIO", "ratio", ("AMOUNT", "PAST_MEAN")),
        Derived("ZSCORE", "zscore", ("AMOUNT", "PAST_MEAN", "PAST_STD")),
        Derived("ZSCORE_FILLED", "zscore", ("AMOUNT", "PAST_MEAN", "PAST_STD"), fill_value=0.0),
        Derived("ABOVE_MAX", "difference", ("AMOUNT", "PAST_MAX")),
        Derived("HALF_PER_EVENT", "ratio", ("HALF", "N")),  # a row feature and a count
        Derived("RATIO_LESS_ONE", "difference", ("RATIO", "ONE")),  # a derived input
    ),
)


def _events() -> pd.DataFrame:
    """Two cards: ties at one instant, a lone first event, equal amounts (std 0), an event
    exactly one window after another (outside: the window is open at its start)."""
    rows = [
        (1, T0, 10.0),  # first of card 1: empty past
        (1, T0 + HOUR, 10.0),  # past: one value -> std 0, zscore null (filled 0)
        (1, T0 + 2 * HOUR, 10.0),  # past: two equal values -> std 0
        (1, T0 + 2 * HOUR, 25.5),  # a tie: neither sees the other in its past
        (1, T0 + 2 * HOUR + pd.Timedelta(minutes=30), 7.25),
        (1, T0 + 5 * HOUR, 99.99),  # T0 + 2h is exactly one window before: out
        (1, T0 + 9 * HOUR, 3.0),  # the past is empty again
        (2, T0 + HOUR, 0.0),
        (2, T0 + 2 * HOUR, 12.34),  # past mean 0: the ratio divides by zero -> null
        (2, T0 + 2 * HOUR + pd.Timedelta(microseconds=1), 0.125),
    ]
    frame = pd.DataFrame(rows, columns=["CARD", "TS", "AMOUNT"])
    frame["ONE"] = 1.0
    return frame


def _oracle(events: pd.DataFrame) -> pd.DataFrame:
    """The definitions, one event at a time, with pandas masks and numpy (independent of
    both implementations)."""
    window = pd.Timedelta(WINDOW)
    # decimals=2: amounts in cents, halves away from zero (DuckDB's cast to DECIMAL(18, 2))
    cents = events.AMOUNT.map(
        lambda a: float(Decimal(repr(a)).quantize(Decimal("0.01"), ROUND_HALF_UP))
    )
    out = []
    for event in events.itertuples(index=False):
        card = events.CARD == event.CARD
        upto = cents[card & (event.TS - window < events.TS) & (events.TS <= event.TS)]
        before = card & (event.TS - window < events.TS) & (events.TS < event.TS)
        past = cents[before]
        mean = past.mean() if len(past) else None
        std = float(np.std(past.to_numpy())) if len(past) else None
        peak = events.AMOUNT[before].max() if len(past) else None
        zscore = None if mean is None or not std else (event.AMOUNT - mean) / std
        ratio = None if mean is None or mean == 0 else event.AMOUNT / mean
        out.append(
            {
                "HALF": event.AMOUNT / 2,
                "N": len(upto),
                "PAST_N": len(past),
                "PAST_MEAN": mean,
                "PAST_STD": std,
                "STD": float(np.std(upto.to_numpy())),
                "PAST_STD_FILLED": -1.0 if std is None else std,
                "PAST_MAX": peak,
                "RATIO": ratio,
                "ZSCORE": zscore,
                "ZSCORE_FILLED": 0.0 if zscore is None else zscore,
                "ABOVE_MAX": None if peak is None else event.AMOUNT - peak,
                "HALF_PER_EVENT": event.AMOUNT / 2 / len(upto),
                "RATIO_LESS_ONE": None if ratio is None else ratio - 1.0,
            }
        )
    return pd.DataFrame(out, dtype="float64")


def _offline(view: FeatureView, events: pd.DataFrame) -> pd.DataFrame:
    """``view_sql`` over ``events`` in their order (a row number carried through)."""
    con = duckdb.connect()
    numbered = events.assign(__row=range(len(events)))
    con.register("events", numbered)
    # the row number is a source column of a derived feature: carried to the output
    probe = Derived("__ROW_KEPT", "difference", ("__row", "__zero"))
    keyed = FeatureView(
        view.name, view.entity, view.timestamp, view.source, (*view.features, probe)
    )
    source = "(SELECT *, 0.0 AS __zero FROM events)"
    result = con.sql(view_sql(keyed, source)).df()
    con.close()
    return result.sort_values("__ROW_KEPT").drop(columns="__ROW_KEPT").reset_index(drop=True)


def _online(view: FeatureView, events: pd.DataFrame, folder: Path) -> pd.DataFrame:
    store = SQLiteOnlineStore(folder / "online.db")
    try:
        stream = StreamingView(view, store)
        ordered = events.sort_values(view.timestamp, kind="stable")
        parts = [r.features for r in replay(stream, ordered, batch_rows=3)]
    finally:
        store.close()
    online = pd.concat(parts, ignore_index=True)
    online.index = ordered.index
    return online.sort_index()


def _same(a: pd.Series, b: pd.Series) -> bool:
    """Bit for bit, nulls equal to nulls."""
    x = a.to_numpy(dtype="float64", na_value=np.nan)
    y = b.to_numpy(dtype="float64", na_value=np.nan)
    return bool(np.array_equal(x, y, equal_nan=True))


def test_each_primitive_equals_pandas_offline_and_online(tmp_path: Path) -> None:
    events = _events()
    expected = _oracle(events)
    offline = _offline(PRIMITIVES, events)
    online = _online(PRIMITIVES, events, tmp_path)
    # the output keeps definition order; the derived features' source columns are dropped
    assert list(offline.columns) == ["CARD", "TS", *PRIMITIVES.feature_names]
    assert list(online.columns) == PRIMITIVES.feature_names
    for name in PRIMITIVES.feature_names:
        want = expected[name].to_numpy(dtype="float64", na_value=np.nan)
        for side, got in (("offline", offline[name]), ("online", online[name])):
            values = got.to_numpy(dtype="float64", na_value=np.nan)
            np.testing.assert_array_equal(np.isnan(values), np.isnan(want), f"{side} {name}")
            np.testing.assert_allclose(values, want, rtol=1e-12, err_msg=f"{side} {name}")
        assert _same(offline[name], online[name]), name


def test_the_written_semantics_on_the_hand_made_events(tmp_path: Path) -> None:
    online = _online(PRIMITIVES, _events(), tmp_path)
    # a tie at one instant: each counts the other in (t - w, t], neither in its past
    assert online["N"].tolist()[2:4] == [4, 4]
    assert online["PAST_N"].tolist()[2:4] == [2, 2]
    # the first event has no past: null mean, std and z-score, the fills where given
    assert online.loc[0, ["PAST_N", "PAST_STD_FILLED", "ZSCORE_FILLED"]].tolist() == [0, -1, 0]
    assert online.loc[0, ["PAST_MEAN", "PAST_STD", "RATIO", "ZSCORE"]].isna().all()
    # one past value: std 0, so the z-score is null (its fill 0); std of one value is 0
    assert online.loc[1, "PAST_STD"] == 0.0 and online.loc[0, "STD"] == 0.0
    assert pd.isna(online.loc[1, "ZSCORE"]) and online.loc[1, "ZSCORE_FILLED"] == 0.0
    # a window open at its start: the events of exactly one window ago are out
    assert online.loc[5, "PAST_N"] == 1 and online.loc[6, "PAST_N"] == 0
    # a past mean of 0 divides by zero: null, not an infinity
    assert online.loc[8, "PAST_MEAN"] == 0.0 and pd.isna(online.loc[8, "RATIO"])


def test_a_decimal_mean_is_the_offline_average_bit_for_bit() -> None:
    """DuckDB's windowed average of a DECIMAL rounds twice (long double, then double): the
    means where that differs from one rounding are found, and the offline store asked."""
    rng = random.Random(5)
    pairs = []
    while len(pairs) < 25:
        n, total = rng.randint(2, 300), rng.randint(-(10**9), 10**9)
        if decimal_mean(total, n, 100) != total / (n * 100):
            pairs.append((n, total))
    hard = len(pairs)
    pairs += [(rng.randint(1, 50), rng.randint(0, 10**7)) for _ in range(100)]
    pairs += [(1, 0), (3, -1), (7, 2**40 + 3)]
    rows = []
    for card, (n, total) in enumerate(pairs):
        units = [total // n] * n
        units[0] += total - sum(units)
        rows += [(card, T0, u / 100) for u in units]  # one instant: one window holds them all
    events = pd.DataFrame(rows, columns=["CARD", "TS", "AMOUNT"])
    view = FeatureView(
        "means",
        "CARD",
        "TS",
        "none",
        (
            Aggregation("N", "count", WINDOW),
            Aggregation("MEAN", "mean", WINDOW, column="AMOUNT", decimals=2),
        ),
    )
    offline = _offline(view, events).drop_duplicates("CARD").set_index("CARD")
    for card, (n, total) in enumerate(pairs):
        assert offline.loc[card, "N"] == n
        assert offline.loc[card, "MEAN"] == decimal_mean(total, n, 100), (n, total)
        if card < hard:  # one rounding would have missed it
            assert offline.loc[card, "MEAN"] != total / (n * 100)


def test_std_of_large_values_equals_duckdb_past_2_64(tmp_path: Path) -> None:
    """n * S2 - S1**2 beyond 2**64 (and 2**53): DuckDB's HUGEINT -> DOUBLE and Python's
    int -> float round alike."""
    rng = np.random.default_rng(11)
    n = 300
    events = pd.DataFrame(
        {
            "CARD": rng.integers(0, 3, n),
            "TS": [T0 + pd.Timedelta(minutes=int(m)) for m in rng.integers(0, 600, n)],
            "AMOUNT": np.round(rng.uniform(1e6, 9e8, n), 2),
        }
    )
    view = FeatureView(
        "big",
        "CARD",
        "TS",
        "none",
        (Aggregation("STD", "std", timedelta(hours=5), column="AMOUNT", decimals=2),),
    )
    offline = _offline(view, events.assign(ONE=1.0))
    online = _online(view, events, tmp_path)
    assert _same(offline["STD"], online["STD"])
    units = [round(a * 100) for a in events.AMOUNT]
    assert len(units) * sum(u * u for u in units) - sum(units) ** 2 > 2**64
    assert decimal_std([5, 5, 5], 100) == 0.0
    assert decimal_std([100, 300], 100) == 1.0


def test_a_derived_value_breaking_its_constraint_stores_nothing(tmp_path: Path) -> None:
    view = FeatureView(
        "ratios",
        "CARD",
        "TS",
        "none",
        (
            Aggregation("MEAN", "mean", WINDOW, column="AMOUNT", decimals=2),
            Derived("RATIO", "ratio", ("AMOUNT", "MEAN"), constraint=NON_NEGATIVE),
        ),
    )
    store = SQLiteOnlineStore(tmp_path / "online.db")
    try:
        stream = StreamingView(view, store)
        first = pd.DataFrame({"CARD": [1], "TS": [T0], "AMOUNT": [100.0]})
        assert stream.process(first).values["RATIO"] == [1.0]
        before = store.get_many(view, ["1"])
        # the second event's mean stays positive: its ratio is negative
        times = [T0 + HOUR, T0 + 2 * HOUR]
        bad = pd.DataFrame({"CARD": [1, 1], "TS": times, "AMOUNT": [5.0, -40.0]})
        with pytest.raises(DataValidationError) as caught:
            stream.process(bad)
        message = str(caught.value)
        assert "'RATIO'" in message and "row 1" in message and "derived feature" in message
        assert "Nothing of the batch was stored" in message
        assert store.get_many(view, ["1"]) == before
    finally:
        store.close()


def test_reading_without_an_event_computes_derived_features_of_the_state(tmp_path: Path) -> None:
    of_state = FeatureView(
        "state_only",
        "CARD",
        "TS",
        "none",
        (
            Aggregation("N", "count", WINDOW),
            Aggregation("SUM", "sum", WINDOW, column="AMOUNT", decimals=2),
            Derived("PER_EVENT", "ratio", ("SUM", "N"), fill_value=-1.0),
        ),
    )
    store = SQLiteOnlineStore(tmp_path / "online.db")
    try:
        stream = StreamingView(of_state, store)
        stream.process(pd.DataFrame({"CARD": [1, 1], "TS": [T0, T0], "AMOUNT": [1.0, 2.0]}))
        read = stream.read_at([1, 2], [T0 + HOUR, T0 + HOUR])
        assert list(read.columns) == ["N", "SUM", "PER_EVENT"]
        assert read["PER_EVENT"].tolist() == [1.5, -1.0]
        with pytest.raises(FeatureDefinitionError, match=r"RATIO.*reads the event"):
            StreamingView(PRIMITIVES, store).read_at([1], [T0])
    finally:
        store.close()


def test_exact_features_leave_only_sums_and_means_of_doubles_to_the_tolerance() -> None:
    view = FeatureView(
        "tolerance",
        "CARD",
        "TS",
        "none",
        (
            Aggregation("N", "count", WINDOW),
            Aggregation("MEAN_FLOAT", "mean", WINDOW, column="AMOUNT"),
            Aggregation("MEAN_EXACT", "mean", WINDOW, column="AMOUNT", decimals=2),
            Aggregation("MAX", "max", WINDOW, column="AMOUNT"),
            Derived("OF_FLOAT", "ratio", ("AMOUNT", "MEAN_FLOAT")),
            Derived("OF_EXACT", "ratio", ("AMOUNT", "MEAN_EXACT")),
        ),
    )
    assert exact_features(view) == {"N", "MEAN_EXACT", "MAX", "OF_EXACT"}
    assert exact_features(CUSTOMER_HISTORY) == set(CUSTOMER_HISTORY.feature_names)
    assert exact_features(TERMINAL_HISTORY) == set(TERMINAL_HISTORY.feature_names)


@pytest.fixture(params=["sqlite", "redis"])
def store_env(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str | None]:
    """None for SQLite; for Redis a running server's URL, set as SHIPYARD_REDIS_URL."""
    if request.param == "sqlite":
        yield None
        return
    url = str(request.getfixturevalue("redis_server"))
    monkeypatch.setenv("SHIPYARD_REDIS_URL", url)
    yield url


def test_the_extended_views_replay_online_exactly_as_offline(
    small_workspace: tuple[Workspace, Dataset], store_env: str | None
) -> None:
    """Several days of the small data set through the streaming path: every feature of the
    extended views identical to the offline retrieval (tolerance 0), on SQLite and Redis."""
    OfflineStore(small_workspace[0]).materialize(EXTENDED_VIEWS)
    ws = Workspace.open(small_workspace[0].root)  # settings re-read with SHIPYARD_* applied
    try:
        report = parity(
            ws,
            EXTENDED_VIEWS,
            start="2018-05-20",
            end="2018-05-24",
            store="redis" if store_env else "sqlite",
            tolerance=0.0,
        )
    finally:
        ws.close()
    assert report.ok, report.describe()
    assert report.mismatches == {}
    assert report.views == [v.name for v in EXTENDED_VIEWS]
    assert report.features_compared == sum(len(v.features) for v in EXTENDED_VIEWS)
    assert report.events_compared > 1_000


def test_the_fraud_history_views_are_not_all_null(
    small_workspace: tuple[Workspace, Dataset],
) -> None:
    """The derived features of the small data set take values (a null everywhere would pass
    every equality above)."""
    ws, dataset = small_workspace
    OfflineStore(ws).materialize([CUSTOMER_HISTORY])
    events = dataset.read(columns=["CUSTOMER_ID", "TX_DATETIME", "TX_AMOUNT"])
    frame = OfflineStore(ws).get_historical_features(events, [CUSTOMER_HISTORY]).to_pandas()
    zscore = frame["CUSTOMER_ID_AMOUNT_ZSCORE_30DAY"].dropna()
    assert len(zscore) > 0.8 * len(frame)
    ratio = frame["CUSTOMER_ID_AMOUNT_RATIO_30DAY"]
    recomputed = frame["TX_AMOUNT"] / frame["CUSTOMER_ID_PAST_AVG_AMOUNT_30DAY"]
    assert np.allclose(ratio.dropna(), recomputed[ratio.notna()], rtol=1e-12)
    assert not math.isnan(float(frame["CUSTOMER_ID_PAST_STD_AMOUNT_90DAY"].max()))


def test_a_late_event_skipped_gets_no_derived_feature(tmp_path: Path) -> None:
    store = SQLiteOnlineStore(tmp_path / "online.db")
    try:
        stream = StreamingView(PRIMITIVES, store, lateness=timedelta(0), on_late="count")
        stream.process(_events().iloc[[1]])  # card 1 at T0 + 1h
        late_and_new = _events().iloc[[0, 7]]  # card 1 at T0 (late), card 2 at T0 + 1h
        result = stream.process(late_and_new)
        assert result.rejected == [0]
        assert all(result.values[name][0] is None for name in PRIMITIVES.feature_names)
        assert result.values["ZSCORE_FILLED"][1] == 0.0  # the accepted one: empty past
        assert result.values["PAST_N"][1] == 0
    finally:
        store.close()


def test_the_terminal_history_is_fed_by_materialize_online_as_offline(
    small_workspace: tuple[Workspace, Dataset], tmp_path: Path
) -> None:
    """Fed with labelled history up to a day, the delayed view read at the times of the next
    day's events (within its 7-day delay) equals their offline features exactly."""
    ws, dataset = small_workspace
    OfflineStore(ws).materialize([TERMINAL_HISTORY])
    fed = pd.Timestamp("2018-05-20")
    store = SQLiteOnlineStore(tmp_path / "online.db")
    try:
        (run,) = materialize_online(ws, [TERMINAL_HISTORY], store=store, as_of=fed)
        assert run.skipped is None and run.events_fed > 0
        events = dataset.read(columns=["TERMINAL_ID", "TX_DATETIME"])
        day = events[
            (fed < events.TX_DATETIME) & (fed + pd.Timedelta(days=1) >= events.TX_DATETIME)
        ]
        day = day.reset_index(drop=True)
        online = pd.DataFrame(
            read_online(store, TERMINAL_HISTORY, day.TERMINAL_ID.tolist(), day.TX_DATETIME.tolist())
        )
    finally:
        store.close()
    offline = OfflineStore(ws).get_historical_features(day, [TERMINAL_HISTORY]).to_pandas()
    assert len(day) > 100
    for name in TERMINAL_HISTORY.feature_names:
        assert _same(online[name], offline[name]), name
    assert online["TERMINAL_ID_NB_FRAUD_30DAY_WINDOW"].sum() > 0  # labels were fed
