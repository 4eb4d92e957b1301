"""Raw-event serving of a model trained on the extended fraud views (past-only windows, std,
derived features, the delayed terminal history): the served features equal the offline
retrieval bit for bit, and the terminal history is stale past its shortest delay."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.features.fraud import EXTENDED_VIEWS, TERMINAL_HISTORY
from shipyard.features.materialize_online import materialize_online
from shipyard.features.offline import OfflineStore
from shipyard.features.online import SQLiteOnlineStore, online_store_path
from shipyard.monitoring.logstore import query
from shipyard.registry.models import ModelRegistry
from shipyard.serving.features import event_columns
from shipyard.workspace import Workspace
from tests.conftest import SMALL
from tests.serving.conftest import PROTOCOL_START, start_server
from tests.serving.test_raw_events import _cells, _chunks, send

FED_UNTIL = pd.Timestamp("2018-06-05")
REPLAY_TO = pd.Timestamp("2018-06-06")
STALE_HEADER = "x-shipyard-stale-features"
TARGET = "fraud@challenger"


@pytest.fixture(scope="module")
def extended_workspace(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Workspace, Dataset]]:
    """A decision tree on the extended views, registered as fraud@challenger, small data."""
    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
    from shipyard.solutions.fraud import Candidate, Protocol, train_suite

    ws = Workspace.init(tmp_path_factory.mktemp("extended") / "ws")
    dataset = simulate_fraud_dataset(ws, FraudSimulator(**SMALL))  # type: ignore[arg-type]
    OfflineStore(ws).materialize(EXTENDED_VIEWS)
    train_suite(
        ws,
        dataset,
        candidates=[Candidate("decision_tree", features="extended")],
        protocol=Protocol(start_date_training=PROTOCOL_START, n_folds=2),
        n_boot=0,
    )
    yield ws, dataset
    ws.close()


def test_the_extended_views_need_the_same_raw_event_columns() -> None:
    names = [n for v in EXTENDED_VIEWS for n in v.feature_names]
    columns = event_columns(EXTENDED_VIEWS, names)
    assert columns.kinds == {
        "TRANSACTION_ID": "key",
        "TX_DATETIME": "time",
        "CUSTOMER_ID": "key",
        "TERMINAL_ID": "key",
        "TX_AMOUNT": "number",
    }


def _served(ws: Workspace, endpoint: str) -> pd.DataFrame:
    names = ModelRegistry(ws).get("fraud", "challenger").input_schema.names
    records = query(ws, endpoint, "SELECT inputs, events FROM predictions WHERE events IS NOT NULL")
    rows = []
    for record in records.itertuples():
        events = json.loads(record.events)
        for i, inputs in enumerate(record.inputs):
            row = dict(zip(names, inputs, strict=True))
            row["TRANSACTION_ID"] = int(events["TRANSACTION_ID"][i])
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_served_extended_features_of_raw_events_equal_the_offline_retrieval(
    extended_workspace: tuple[Workspace, Dataset], tmp_path: Path
) -> None:
    ws, dataset = extended_workspace
    model = ModelRegistry(ws).get("fraud", "challenger")
    assert model.lineage.views == "shipyard.features.fraud:EXTENDED_VIEWS"
    names = model.input_schema.names
    assert (
        "CUSTOMER_ID_AMOUNT_ZSCORE_30DAY" in names and "TERMINAL_ID_NB_FRAUD_42_35DAYS_AGO" in names
    )
    store = SQLiteOnlineStore(online_store_path(ws))
    try:  # streamed views backfilled, the delayed ones fed with labels, up to FED_UNTIL
        materialize_online(ws, EXTENDED_VIEWS, store=store, as_of=FED_UNTIL - pd.Timedelta(1, "us"))
    finally:
        store.close()
    events = dataset.read().sort_values("TX_DATETIME", kind="stable").reset_index(drop=True)
    replayed = events[(events["TX_DATETIME"] >= FED_UNTIL) & (events["TX_DATETIME"] < REPLAY_TO)]
    server = start_server(ws, TARGET, tmp_path, "--endpoint", "fraud-extended")
    try:
        for i, chunk in enumerate(_chunks(replayed)):
            status, headers, body = send(server, _cells(chunk), ("split", "v2")[i % 2], f"e-{i}")
            assert status == 200, body
            assert STALE_HEADER not in headers  # fed until a day ago: exact for 7 days
        # eight days after the feed: past the terminal history's shortest delay (7 days)
        late = replayed.iloc[-1:].assign(
            TX_DATETIME=FED_UNTIL + pd.Timedelta(days=8), TRANSACTION_ID=10**9
        )
        status, headers, body = send(server, _cells(late), "split", "stale")
        assert status == 200, body
        assert TERMINAL_HISTORY.name in headers.get(STALE_HEADER, "")
    finally:
        server.stop()
    served = _served(ws, "fraud-extended")
    served = served[served["TRANSACTION_ID"] != 10**9]
    offline = (
        OfflineStore(ws)
        .get_historical_features(
            replayed[["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID"]],
            EXTENDED_VIEWS,
        )
        .to_pandas()
    )
    merged = offline.merge(served, on="TRANSACTION_ID", suffixes=("", "_served"))
    assert len(merged) == len(replayed) > 200
    for name in names:
        want = merged[name].to_numpy(dtype=np.float64, na_value=np.nan)
        got = merged[f"{name}_served"].to_numpy(dtype=np.float64)
        assert np.array_equal(got, want, equal_nan=True), name
