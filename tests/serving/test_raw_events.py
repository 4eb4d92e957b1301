"""Raw-event serving: a real server computes the model's features from raw transactions with
the online store (SQLite or a real redis-server), equal to the offline point-in-time
retrieval, and refuses bad events, an unreachable store and stale features clearly."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.errors import RequestError
from shipyard.features.fraud import BASELINE_VIEWS, CUSTOMER_SPENDING
from shipyard.features.materialize_online import materialize_online
from shipyard.features.offline import OfflineStore
from shipyard.features.online import (
    OnlineStore,
    RedisOnlineStore,
    SQLiteOnlineStore,
    online_store_path,
)
from shipyard.monitoring.logstore import query
from shipyard.registry.models import ModelRegistry
from shipyard.serving.event_codec import (
    EventColumns,
    decode_events_csv,
    decode_events_mlflow,
    decode_events_v2,
)
from shipyard.serving.features import event_columns, stale_views
from shipyard.workspace import Workspace
from tests.features.test_online import redis_server, start_redis, stop_redis
from tests.serving.conftest import Server, start_server

__all__ = ["redis_server"]  # a fixture

EVENT = ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT"]
REPLAY_FROM = pd.Timestamp("2018-06-05")
MIDDLE = pd.Timestamp("2018-06-06")
REPLAY_TO = pd.Timestamp("2018-06-07")
PROTOCOLS = ("split", "records", "csv", "v2")
STALE_HEADER = "x-shipyard-stale-features"


# -- helpers -----------------------------------------------------------------------------------


def _store(ws: Workspace, redis_url: str | None) -> OnlineStore:
    if redis_url:
        return RedisOnlineStore(redis_url)
    return SQLiteOnlineStore(online_store_path(ws))


def _env(redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {"SHIPYARD_ONLINE_STORE": "redis", "SHIPYARD_REDIS_URL": redis_url} if redis_url else {}
    return {**env, **extra}


def _warm(ws: Workspace, store: OnlineStore, until: pd.Timestamp) -> None:
    """A fresh online state fed with the events before ``until``: the streamed views
    backfilled, the delayed view fed with labels (as ``shipyard features materialize
    --online`` does before a server goes live)."""
    for view in BASELINE_VIEWS:
        store.drop_view(view.name)
    materialize_online(ws, BASELINE_VIEWS, store=store, as_of=until - pd.Timedelta(1, "us"))


def _chunks(events: pd.DataFrame) -> Iterator[pd.DataFrame]:
    """Consecutive events in requests of 1 to 4, never splitting one instant."""
    times = events["TX_DATETIME"].to_numpy()
    start, size = 0, 1
    while start < len(events):
        stop = min(start + size, len(events))
        while stop < len(events) and times[stop] == times[stop - 1]:
            stop += 1
        yield events.iloc[start:stop]
        start, size = stop, size % 4 + 1


def _cells(chunk: pd.DataFrame) -> dict[str, list[Any]]:
    return {
        "TRANSACTION_ID": [int(v) for v in chunk["TRANSACTION_ID"]],
        "TX_DATETIME": [pd.Timestamp(v).isoformat() for v in chunk["TX_DATETIME"]],
        "CUSTOMER_ID": [int(v) for v in chunk["CUSTOMER_ID"]],
        "TERMINAL_ID": [int(v) for v in chunk["TERMINAL_ID"]],
        "TX_AMOUNT": [float(v) for v in chunk["TX_AMOUNT"]],
    }


def send(
    server: Server, cells: dict[str, list[Any]], protocol: str, request_id: str
) -> tuple[int, dict[str, str], Any]:
    """POST raw events in ``protocol``: MLflow split / records / CSV, or V2 (BYTES for the
    timestamp and, as strings, the customer keys)."""
    names = list(cells)
    rows = [list(r) for r in zip(*cells.values(), strict=True)]
    head = {"X-Request-Id": request_id}
    if protocol == "split":
        payload: Any = {"dataframe_split": {"columns": names, "data": rows}}
        return server.post_json("/invocations", payload, head)
    if protocol == "records":
        payload = {"dataframe_records": [dict(zip(names, r, strict=True)) for r in rows]}
        return server.post_json("/invocations", payload, head)
    if protocol == "csv":
        lines = [",".join(names)] + [",".join("" if v is None else str(v) for v in r) for r in rows]
        status, headers, body = server.request(
            "POST", "/invocations", "\n".join(lines).encode(), {"Content-Type": "text/csv", **head}
        )
        return status, headers, json.loads(body)
    types = {"TX_DATETIME": "BYTES", "CUSTOMER_ID": "BYTES", "TX_AMOUNT": "FP64"}
    inputs = [
        {
            "name": name,
            "shape": [len(values)],
            "datatype": types.get(name, "INT64"),
            "data": [str(v) for v in values] if name == "CUSTOMER_ID" else values,
        }
        for name, values in cells.items()
    ]
    return server.post_json("/v2/models/fraud/infer", {"id": request_id, "inputs": inputs})


def _served(ws: Workspace, endpoint: str) -> pd.DataFrame:
    """The assembled features of every primary raw-event answer in the log, by transaction."""
    names = ModelRegistry(ws).get("fraud", "champion").input_schema.names
    records = query(
        ws,
        endpoint,
        "SELECT request_id, inputs, events, stale_features FROM predictions "
        "WHERE arm = 'primary' AND events IS NOT NULL",
    )
    rows = []
    for record in records.itertuples():
        events = json.loads(record.events)
        for i, inputs in enumerate(record.inputs):
            row = dict(zip(names, inputs, strict=True))
            row["TRANSACTION_ID"] = int(events["TRANSACTION_ID"][i])
            stale = record.stale_features
            row["stale"] = [] if stale is None or stale is pd.NA else list(stale)
            rows.append(row)
    return pd.DataFrame(rows)


def _assert_equal_offline(ws: Workspace, events: pd.DataFrame, served: pd.DataFrame) -> None:
    names = ModelRegistry(ws).get("fraud", "champion").input_schema.names
    offline = (
        OfflineStore(ws)
        .get_historical_features(events[["TRANSACTION_ID", *EVENT[1:4]]], BASELINE_VIEWS)
        .to_pandas()
    )
    assert served["TRANSACTION_ID"].is_unique
    merged = offline.merge(served, on="TRANSACTION_ID", suffixes=("", "_served"))
    assert len(merged) == len(events) == len(offline)
    for name in names:
        expected = merged[name].to_numpy(dtype=np.float64, na_value=np.nan)
        got = merged[f"{name}_served"].to_numpy(dtype=np.float64)
        if "NB_TX" in name:
            assert np.array_equal(expected, got), name
        else:
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9, err_msg=name)


@pytest.fixture(scope="module")
def events(serving_workspace: tuple[Workspace, Dataset]) -> pd.DataFrame:
    _, dataset = serving_workspace
    return dataset.read().sort_values("TX_DATETIME", kind="stable").reset_index(drop=True)


# -- decoding (no server) ----------------------------------------------------------------------


def _columns() -> EventColumns:
    names = [n for v in BASELINE_VIEWS for n in v.feature_names]
    return event_columns(BASELINE_VIEWS, names)


def test_event_columns_of_the_fraud_views_exclude_the_label() -> None:
    columns = _columns()
    assert dict(columns.kinds) == {
        "TRANSACTION_ID": "key",
        "TX_DATETIME": "time",
        "CUSTOMER_ID": "key",
        "TERMINAL_ID": "key",
        "TX_AMOUNT": "number",
    }
    assert columns.markers == {"TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID"}


def test_raw_decoders_read_each_protocol_and_name_the_bad_column() -> None:
    columns = _columns()
    cells = {
        "TRANSACTION_ID": [1, 2],
        "TX_DATETIME": ["2018-06-05T10:00:00", "2018-06-05 11:00:00+01:00"],
        "CUSTOMER_ID": [7, "card-8"],
        "TERMINAL_ID": [3, 4],
        "TX_AMOUNT": [10.5, 3],
    }
    data = [list(row) for row in zip(*cells.values(), strict=True)]
    split = {"dataframe_split": {"columns": list(cells), "data": data}}
    decoded = decode_events_mlflow(json.dumps(split).encode(), columns)
    assert decoded is not None and decoded.rows == 2
    assert decoded.columns["CUSTOMER_ID"] == [7, "card-8"]
    assert decoded.columns["TX_DATETIME"][1] == pd.Timestamp("2018-06-05 10:00:00")  # in UTC
    csv = (
        b"TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT\n"
        b"1,2018-06-05T10:00:00,7,3,1.5\n"
    )
    decoded = decode_events_csv(csv, columns)
    assert decoded is not None and decoded.columns["CUSTOMER_ID"] == [7]
    inputs = [
        {"name": "TRANSACTION_ID", "shape": [1], "datatype": "INT64", "data": [1]},
        {"name": "TX_DATETIME", "shape": [1], "datatype": "BYTES", "data": ["2018-06-05T10:00:00"]},
        {"name": "CUSTOMER_ID", "shape": [1], "datatype": "BYTES", "data": ["7"]},
        {"name": "TERMINAL_ID", "shape": [1], "datatype": "INT32", "data": [3]},
        {"name": "TX_AMOUNT", "shape": [1], "datatype": "FP32", "data": [2.5]},
    ]
    v2 = decode_events_v2(json.dumps({"inputs": inputs}).encode(), columns)
    assert v2 is not None and v2[0].columns["TX_AMOUNT"] == [2.5]
    # a body of the model's features is not an event: the feature decoder's error stands
    features = {"dataframe_split": {"columns": ["TX_AMOUNT"], "data": [[1.0]]}}
    assert decode_events_mlflow(json.dumps(features).encode(), columns) is None

    def refused(body: dict[str, Any]) -> str:
        with pytest.raises(RequestError) as caught:
            decode_events_mlflow(json.dumps(body).encode(), columns)
        assert caught.value.status == 422
        return str(caught.value)

    record = {k: v[0] for k, v in cells.items()}
    missing = {k: v for k, v in record.items() if k != "CUSTOMER_ID"}
    assert "missing column(s) ['CUSTOMER_ID']" in refused({"dataframe_records": [missing]})
    message = refused({"dataframe_records": [{**record, "TX_AMOUNT": "abc"}]})
    assert "'TX_AMOUNT' (row 0): expected a number, got 'abc'" in message
    message = refused({"dataframe_records": [{**record, "TX_DATETIME": None}]})
    assert "'TX_DATETIME' (row 0): expected an ISO 8601 timestamp" in message and "null" in message
    message = refused({"dataframe_records": [{**record, "TX_DATETIME": "yesterday"}]})
    assert "'TX_DATETIME'" in message and "'yesterday'" in message
    message = refused({"dataframe_records": [{**record, "CUSTOMER_ID": 4.5}]})
    assert "'CUSTOMER_ID' (row 0): expected an entity key" in message
    message = refused({"dataframe_records": [{**record, "TX_FRAUD": 1}]})
    assert "unexpected column(s) ['TX_FRAUD']" in message
    bad_type = [dict(t, datatype="FP64") if t["name"] == "TX_DATETIME" else t for t in inputs]
    with pytest.raises(RequestError, match="'TX_DATETIME': datatype must be BYTES"):
        decode_events_v2(json.dumps({"inputs": bad_type}).encode(), columns)


def test_a_delayed_read_is_stale_past_what_was_fed() -> None:
    day = 86_400_000_000
    delays = {"terminal_risk": 7 * day}
    assert stale_views([10 * day], delays, {"terminal_risk": 3 * day}) == ()
    assert stale_views([10 * day], delays, {"terminal_risk": 3 * day - 1}) == ("terminal_risk",)
    assert stale_views([10 * day], delays, {"terminal_risk": None}) == ("terminal_risk",)


# -- a real server -----------------------------------------------------------------------------


def _replay_over_http(server: Server, events: pd.DataFrame, tag: str) -> int:
    sent = 0
    for i, chunk in enumerate(_chunks(events)):
        status, headers, body = send(server, _cells(chunk), PROTOCOLS[i % 4], f"{tag}-{i}")
        assert status == 200, body
        assert STALE_HEADER not in headers  # fed up to REPLAY_FROM: exact for 7 days
        sent += len(chunk)
    return sent


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_served_features_of_raw_events_equal_the_offline_retrieval_across_a_restart(
    serving_workspace: tuple[Workspace, Dataset],
    events: pd.DataFrame,
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    ws, _ = serving_workspace
    url = request.getfixturevalue("redis_server") if kind == "redis" else None
    store = _store(ws, url)
    try:
        _warm(ws, store, REPLAY_FROM)
    finally:
        store.close()
    endpoint = f"fraud-raw-{kind}"
    first = events[(events["TX_DATETIME"] >= REPLAY_FROM) & (events["TX_DATETIME"] < MIDDLE)]
    second = events[(events["TX_DATETIME"] >= MIDDLE) & (events["TX_DATETIME"] < REPLAY_TO)]
    server = start_server(ws, "fraud@champion", tmp_path, "--endpoint", endpoint, env=_env(url))
    try:
        sent = _replay_over_http(server, first, "a")
        features = ModelRegistry(ws).get("fraud", "champion").input_schema.names
        precomputed = {"dataframe_split": {"columns": features, "data": [[0.0] * len(features)]}}
        precomputed["dataframe_split"]["data"][0][features.index("TX_AMOUNT")] = 12.0
        status, headers, body = server.post_json("/invocations", precomputed)
        assert status == 200 and len(body["predictions"]) == 1, body
        assert STALE_HEADER not in headers
    finally:
        server.stop()
    server = start_server(ws, "fraud@champion", tmp_path, "--endpoint", endpoint, env=_env(url))
    try:
        sent += _replay_over_http(server, second, "b")
    finally:
        server.stop()
    replayed = pd.concat([first, second])
    assert sent == len(replayed) > 500
    served = _served(ws, endpoint)
    assert all(s == [] for s in served["stale"])
    _assert_equal_offline(ws, replayed, served)


@pytest.fixture(scope="module")
def raw_server(
    serving_workspace: tuple[Workspace, Dataset], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server of fraud@champion on SQLite for raw events (endpoint fraud-raw), its online
    store fed with the events before REPLAY_FROM."""
    ws, _ = serving_workspace
    store = _store(ws, None)
    try:
        _warm(ws, store, REPLAY_FROM)
    finally:
        store.close()
    server = start_server(
        ws, "fraud@champion", tmp_path_factory.mktemp("raw"), "--endpoint", "fraud-raw"
    )
    yield server
    server.stop()


def _blob(ws: Workspace, customer: int | str) -> bytes | None:
    store = SQLiteOnlineStore(online_store_path(ws))
    try:
        return store.get(CUSTOMER_SPENDING, str(customer))
    finally:
        store.close()


def test_a_bad_raw_event_is_refused_naming_the_column_and_stores_nothing(
    serving_workspace: tuple[Workspace, Dataset], events: pd.DataFrame, raw_server: Server
) -> None:
    ws, _ = serving_workspace
    event = _cells(events[events["TX_DATETIME"] >= REPLAY_TO].iloc[:1])
    customer = event["CUSTOMER_ID"][0]
    before = _blob(ws, customer)
    far = (pd.Timestamp.now() + pd.Timedelta(days=30)).isoformat()
    cases = [
        ({k: v for k, v in event.items() if k != "CUSTOMER_ID"}, "CUSTOMER_ID"),
        ({**event, "TX_AMOUNT": [-5.0]}, "TX_AMOUNT"),
        ({**event, "TX_AMOUNT": ["abc"]}, "TX_AMOUNT"),
        ({**event, "TX_DATETIME": [far]}, "TX_DATETIME"),
        ({**event, "TX_DATETIME": [None]}, "TX_DATETIME"),
    ]
    for i, (cells, column) in enumerate(cases):
        for protocol in ("records", "v2") if column != "TX_AMOUNT" or i == 1 else ("records",):
            if protocol == "v2" and None in cells.get("TX_DATETIME", [""]):
                continue  # a V2 BYTES tensor has no null
            status, _, body = send(raw_server, cells, protocol, f"bad-{i}-{protocol}")
            assert status == 422, (cells, body)
            assert repr(column) in body["error"], body
    assert _blob(ws, customer) == before
    logged = query(
        ws, "fraud-raw", "SELECT count(*) AS n FROM predictions WHERE request_id LIKE 'bad-%'"
    )
    assert int(logged["n"][0]) == 0


def test_a_never_seen_card_and_terminal_get_zero_history_features(
    serving_workspace: tuple[Workspace, Dataset], raw_server: Server
) -> None:
    ws, _ = serving_workspace
    cells = {
        "TRANSACTION_ID": [10**9],
        "TX_DATETIME": ["2018-06-08T12:00:00"],
        "CUSTOMER_ID": ["never-seen-card"],
        "TERMINAL_ID": [10**8],
        "TX_AMOUNT": [42.5],
    }
    status, _, body = send(raw_server, cells, "split", "unseen")
    assert status == 200, body
    status, _, metadata = raw_server.request("GET", "/v2/models/fraud")
    inputs = json.loads(metadata)["parameters"]["raw_event_inputs"]
    assert [i["name"] for i in inputs] == EVENT
    served = _served(ws, "fraud-raw").set_index("TRANSACTION_ID").loc[10**9]
    for n in (1, 7, 30):  # the card's own transaction is its only history, as offline
        assert served[f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW"] == 1
        assert served[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] == 42.5
        assert served[f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW"] == 0
        assert served[f"TERMINAL_ID_RISK_{n}DAY_WINDOW"] == 0.0


def test_concurrent_raw_events_are_batched_and_a_bad_one_fails_alone(
    serving_workspace: tuple[Workspace, Dataset], raw_server: Server
) -> None:
    import concurrent.futures

    ws, _ = serving_workspace

    def event(i: int) -> dict[str, list[Any]]:
        return {
            "TRANSACTION_ID": [2 * 10**9 + i],
            "TX_DATETIME": ["2018-06-09T08:00:00"],
            "CUSTOMER_ID": [f"batch-card-{i}"],
            "TERMINAL_ID": [1],
            "TX_AMOUNT": [-1.0 if i == 7 else 10.0 + i],
        }

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(lambda i: send(raw_server, event(i), "records", f"conc-{i}"), range(48))
        )
    for i, (status, _, body) in enumerate(answers):
        if i == 7:
            assert status == 422 and "'TX_AMOUNT'" in body["error"], body
        else:
            assert status == 200, body
    served = _served(ws, "fraud-raw").set_index("TRANSACTION_ID")
    for i in range(48):
        if i != 7:
            assert served.loc[2 * 10**9 + i, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1
            assert served.loc[2 * 10**9 + i, "TX_AMOUNT"] == 10.0 + i
    assert _blob(ws, "batch-card-7") is None


def test_stale_features_are_flagged_counted_and_refused_by_setting(
    serving_workspace: tuple[Workspace, Dataset], raw_server: Server, tmp_path: Path
) -> None:
    ws, _ = serving_workspace
    # terminal_risk was fed up to at most the end of the data (2018-06-09): a read on
    # 2018-07-01 needs labels up to 2018-06-24, which were never fed
    cells = {
        "TRANSACTION_ID": [3 * 10**9],
        "TX_DATETIME": ["2018-07-01T12:00:00"],
        "CUSTOMER_ID": ["stale-card"],
        "TERMINAL_ID": [5],
        "TX_AMOUNT": [12.0],
    }
    before = _stale_count(raw_server, "fraud-raw")
    status, headers, body = send(raw_server, cells, "split", "stale-flagged")
    assert status == 200, body
    assert headers[STALE_HEADER] == "terminal_risk"
    served = _served(ws, "fraud-raw").set_index("TRANSACTION_ID")
    assert served.loc[3 * 10**9, "stale"] == ["terminal_risk"]
    assert _stale_count(raw_server, "fraud-raw") == before + 1

    env = {"SHIPYARD_SERVING_REJECT_STALE_FEATURES": "true"}
    server = start_server(ws, "fraud@champion", tmp_path, "--endpoint", "fraud-stale", env=env)
    try:
        cells = {**cells, "TRANSACTION_ID": [3 * 10**9 + 1], "CUSTOMER_ID": ["refused-card"]}
        status, _, body = send(server, cells, "v2", "stale-refused")
        assert status == 503 and "stale features" in body["error"], body
        assert "terminal_risk" in body["error"] and "serving_reject_stale_features" in body["error"]
        assert _blob(ws, "refused-card") is None  # refused before the event was applied
        assert _stale_count(server, "fraud-stale") == 1
    finally:
        server.stop()


def _stale_count(server: Server, endpoint: str) -> int:
    series = f'shipyard_stale_features_total{{endpoint="{endpoint}",view="terminal_risk"}} '
    for line in server.request("GET", "/metrics")[2].decode().splitlines():
        if line.startswith(series):
            return int(float(line[len(series) :]))
    return 0


def test_redis_stopped_answers_503_and_logs_nothing(
    serving_workspace: tuple[Workspace, Dataset], tmp_path: Path
) -> None:
    ws, _ = serving_workspace
    process, url = start_redis(tmp_path)
    server = None
    try:
        server = start_server(
            ws, "fraud@champion", tmp_path, "--endpoint", "fraud-down", env=_env(url)
        )
        cells = {
            "TRANSACTION_ID": [4 * 10**9],
            "TX_DATETIME": ["2018-06-08T12:00:00"],
            "CUSTOMER_ID": [1],
            "TERMINAL_ID": [5],
            "TX_AMOUNT": [12.0],
        }
        assert send(server, cells, "split", "up")[0] == 200
        stop_redis(process)
        for protocol in ("split", "v2"):
            status, _, body = send(server, cells, protocol, f"down-{protocol}")
            assert status == 503, body
            assert "Redis online store" in body["error"] and "cannot be reached" in body["error"]
        features = ModelRegistry(ws).get("fraud", "champion").input_schema.names
        payload = {"dataframe_split": {"columns": features, "data": [[1.0] * len(features)]}}
        assert server.post_json("/invocations", payload)[0] == 200  # features still served
        logged = query(ws, "fraud-down", "SELECT request_id FROM predictions")
        assert "up" in set(logged["request_id"])
        assert not {"down-split", "down-v2"} & set(logged["request_id"])
    finally:
        if server is not None:
            server.stop()
        if process.poll() is None:
            stop_redis(process)


def test_online_state_of_another_definition_makes_the_endpoint_not_ready(
    serving_workspace: tuple[Workspace, Dataset], raw_server: Server
) -> None:
    from dataclasses import replace

    ws, _ = serving_workspace
    store = SQLiteOnlineStore(online_store_path(ws))
    other = replace(CUSTOMER_SPENDING, features=CUSTOMER_SPENDING.features[:2])
    saved = store.drop_view(CUSTOMER_SPENDING.name)
    try:
        store.put_many(other, {"x": b"other"})
        # each worker polls the store every second: wait until both say so (20 in a row)
        deadline = time.monotonic() + 60
        in_a_row = 0
        while in_a_row < 20:
            assert time.monotonic() < deadline, "the endpoint stayed ready"
            status, _, body = raw_server.request("GET", "/v2/health/ready")
            in_a_row = in_a_row + 1 if status == 503 else 0
            if not in_a_row:
                time.sleep(0.2)
        reason = json.loads(body)["reason"]
        assert "customer_spending" in reason and "definition" in reason, reason
        cells = {
            "TRANSACTION_ID": [5 * 10**9],
            "TX_DATETIME": ["2018-06-08T12:00:00"],
            "CUSTOMER_ID": [1],
            "TERMINAL_ID": [5],
            "TX_AMOUNT": [12.0],
        }
        status, _, answer = send(raw_server, cells, "records", "other-definition")
        assert status == 503 and "customer_spending" in answer["error"], answer
    finally:
        store.drop_view(CUSTOMER_SPENDING.name)
        store.close()
    assert saved >= 0
    deadline = time.monotonic() + 60
    while raw_server.request("GET", "/v2/health/ready")[0] != 200:
        assert time.monotonic() < deadline, "the endpoint did not become ready again"
        time.sleep(0.2)


def test_versions_trained_on_other_feature_views_cannot_share_an_endpoint(
    serving_workspace: tuple[Workspace, Dataset],
) -> None:
    from dataclasses import replace

    from shipyard.errors import FeatureDefinitionError
    from shipyard.serving.features import check_same_views

    ws, _ = serving_workspace
    one, two = (ModelRegistry(ws).get("fraud", v) for v in (1, 2))
    check_same_views([one, two])  # both trained on the baseline views
    hashes = {**one.lineage.view_hashes, "customer_spending": "0" * 64}
    other = replace(two, lineage=replace(two.lineage, view_hashes=hashes))
    with pytest.raises(FeatureDefinitionError, match="different feature views"):
        check_same_views([one, other])


def test_a_traced_raw_event_has_a_features_span_between_decode_and_queue(
    serving_workspace: tuple[Workspace, Dataset],
) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from shipyard.serving.app import ServingApp
    from shipyard.serving.runtime import ServeConfig
    from shipyard.serving.server import prepare
    from shipyard.serving.tracing import start_tracing
    from tests.serving.test_tracing import _serve_in_process

    ws, _ = serving_workspace
    prepare(ws, "fraud@champion", "traced-raw", reset=True)
    exporter = InMemorySpanExporter()
    tracing = start_tracing("console", "traced-raw", exporter=exporter)
    assert tracing is not None
    config = ServeConfig(workspace=str(ws.root), endpoint="traced-raw", tracing="console")
    app = ServingApp(ws, config, tracing)
    event = {
        "dataframe_records": [
            {
                "TRANSACTION_ID": 6 * 10**9,
                "TX_DATETIME": "2018-06-08T12:00:00",
                "CUSTOMER_ID": "traced-card",
                "TERMINAL_ID": 5,
                "TX_AMOUNT": 3.5,
            }
        ]
    }
    headers = {"Content-Type": "application/json", "X-Request-Id": "traced-raw"}
    answers = _serve_in_process(app, [("/invocations", json.dumps(event).encode(), headers)])
    tracing.shutdown()
    assert answers[0][0] == 200, answers
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.name == "predict"]
    children = sorted(
        (s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id),
        key=lambda s: s.start_time or 0,
    )
    assert [c.name for c in children] == ["decode", "features", "queue", "model", "log", "encode"]


def test_a_raw_event_waiting_on_a_locked_store_is_answered_503_after_the_timeout(
    serving_workspace: tuple[Workspace, Dataset], raw_server: Server, tmp_path: Path
) -> None:
    """Another writer holds the online store's lock longer than --timeout-ms: the request
    is answered 503 naming the timeout; once the lock is free, events are served again."""
    import sqlite3

    ws, _ = serving_workspace
    server = start_server(
        ws, "fraud@champion", tmp_path, "--endpoint", "fraud-timeout", "--timeout-ms", "1000"
    )

    def event(i: int) -> dict[str, list[Any]]:
        return {
            "TRANSACTION_ID": [3 * 10**9 + i],
            "TX_DATETIME": ["2018-06-09T09:00:00"],
            "CUSTOMER_ID": [f"locked-card-{i}"],
            "TERMINAL_ID": [1],
            "TX_AMOUNT": [10.0],
        }

    holder = sqlite3.connect(online_store_path(ws), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write lock, as a long transaction holds it
        status, _, body = send(server, event(0), "split", "locked-0")
        assert status == 503, body
        assert "took more than 1000 ms" in body["error"], body
        holder.execute("ROLLBACK")
        status, _, body = send(server, event(1), "split", "locked-1")
        assert status == 200, body
    finally:
        holder.close()
        server.stop()
