"""Online event state fed from the labelled data set: exact delayed reads, incremental runs."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
from shipyard.errors import ParameterError
from shipyard.features import materialize_online as module
from shipyard.features.fraud import CUSTOMER_SPENDING, TERMINAL_RISK, TRANSACTION
from shipyard.features.materialize_online import (
    LIVE,
    NO_STATE,
    fed_until,
    materialize_online,
    online_status,
    read_online,
)
from shipyard.features.offline import OfflineStore
from shipyard.features.online import OnlineStore, RedisOnlineStore, SQLiteOnlineStore
from shipyard.features.streaming import StreamingView, replay
from shipyard.workspace import Workspace
from tests.cli.test_cli import shipyard
from tests.features.test_online import redis_server  # noqa: F401  (a fixture)

VIEW = TERMINAL_RISK
KEYS = ["TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_DATETIME"]
TS = "TX_DATETIME"
AS_OF = pd.Timestamp("2018-05-20 12:00")  # the small data set runs 2018-04-01 .. 2018-06-09


@pytest.fixture(scope="module")
def events(small_workspace: tuple[Workspace, Dataset]) -> pd.DataFrame:
    return small_workspace[1].read()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    """A fresh online store: a SQLite file, or a flushed real redis-server."""
    opened: OnlineStore
    if request.param == "redis":
        import redis

        url = str(request.getfixturevalue("redis_server"))
        redis.Redis.from_url(url).flushdb()
        opened = RedisOnlineStore(url)
    else:
        opened = SQLiteOnlineStore(tmp_path / "online.db")
    yield opened
    opened.close()


def _sqlite(tmp_path: Path, name: str = "online.db") -> SQLiteOnlineStore:
    return SQLiteOnlineStore(tmp_path / name)


def _rows(store: SQLiteOnlineStore) -> list[tuple[Any, ...]]:
    """Every stored (view, entity, state) of a SQLite store, read from the file itself."""
    con = sqlite3.connect(store.path)
    try:
        return con.execute("SELECT view, entity, state FROM online_state ORDER BY 1, 2").fetchall()
    finally:
        con.close()


def _offline(ws: Workspace, rows: pd.DataFrame, view: Any = VIEW) -> pd.DataFrame:
    return OfflineStore(ws).get_historical_features(rows[KEYS], [view]).to_pandas()


def _assert_exact(online: list[dict[str, Any]], offline: pd.DataFrame, names: Any) -> None:
    assert len(online) == len(offline)
    for name in names:
        got = [row[name] for row in online]
        want = [v.item() if hasattr(v, "item") else v for v in offline[name]]
        assert got == want, name  # exactly, no tolerance


def _window(events: pd.DataFrame, after: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
    times = events["TX_DATETIME"]
    return events[(times > after) & (times <= until)].reset_index(drop=True)


def test_delayed_reads_equal_offline_retrieval_up_to_delay_after_as_of(
    small_workspace: tuple[Workspace, Dataset], events: pd.DataFrame, store: OnlineStore
) -> None:
    ws, dataset = small_workspace
    assert VIEW.delayed and not CUSTOMER_SPENDING.delayed and not TRANSACTION.delayed
    (run,) = materialize_online(ws, [VIEW], store=store, as_of=AS_OF)
    retention = timedelta(microseconds=StreamingView(VIEW, store).retention_us)
    fed = _window(events, AS_OF - retention, AS_OF)
    assert not run.incremental and run.skipped is None
    assert run.events_fed == len(fed)
    assert run.entities_written == run.entities == fed["TERMINAL_ID"].nunique()
    assert run.dataset_hash == dataset.content_hash
    assert run.fed_until == fed["TX_DATETIME"].max().to_pydatetime()
    assert fed_until(store, VIEW) == run.fed_until

    # serving reads at t with t - 7 days <= as_of: the exact offline values of those events
    served = _window(events, AS_OF, AS_OF + VIEW.features[0].delay)
    assert len(served) > 500
    online = read_online(
        store, VIEW, served["TERMINAL_ID"].tolist(), served["TX_DATETIME"].tolist()
    )
    assert [row["TERMINAL_ID"] for row in online] == [str(t) for t in served["TERMINAL_ID"]]
    _assert_exact(online, _offline(ws, served), VIEW.feature_names)


def test_reruns_are_incremental_and_equal_a_run_from_scratch(
    small_workspace: tuple[Workspace, Dataset], events: pd.DataFrame, tmp_path: Path
) -> None:
    ws, _ = small_workspace
    store = _sqlite(tmp_path)
    try:
        (first,) = materialize_online(ws, [VIEW], store=store, as_of=AS_OF)
        before = _rows(store)
        (again,) = materialize_online(ws, [VIEW], store=store, as_of=AS_OF)
        assert again.incremental
        assert again.events_fed == again.entities_written == 0
        assert again.entities == first.entities and again.fed_until == first.fed_until
        assert _rows(store) == before  # nothing written

        later = AS_OF + timedelta(days=3)
        (second,) = materialize_online(ws, [VIEW], store=store, as_of=str(later))
        new = _window(events, pd.Timestamp(first.fed_until), later)
        assert second.incremental
        assert second.events_fed == len(new) > 0
        assert second.entities_written == new["TERMINAL_ID"].nunique()
        assert (
            second.fed_until == new["TX_DATETIME"].max().to_pydatetime() == fed_until(store, VIEW)
        )

        scratch = _sqlite(tmp_path, "scratch.db")
        (fresh,) = materialize_online(ws, [VIEW], store=scratch, as_of=later)
        assert not fresh.incremental
        assert (fresh.fed_until, fresh.entities) == (second.fed_until, second.entities)
        terminals = [*sorted(events["TERMINAL_ID"].unique().tolist()), -1]
        for at in (later, later + timedelta(days=2), later + timedelta(days=7)):
            assert read_online(store, VIEW, terminals, at) == read_online(
                scratch, VIEW, terminals, at
            )
        scratch.close()

        with pytest.raises(ParameterError, match="cannot be taken back out"):
            materialize_online(ws, [VIEW], store=store, as_of=AS_OF)
        assert fed_until(store, VIEW) == second.fed_until  # the refused run changed nothing

        status = {r.view: r for r in online_status(ws)}[VIEW.name]  # the last run: scratch
        assert (status.fed_until, status.entities) == (fresh.fed_until, fresh.entities)
        assert status.entities_written == fresh.entities_written and not status.incremental
    finally:
        store.close()


def test_a_run_that_died_while_feeding_is_rebuilt(
    small_workspace: tuple[Workspace, Dataset], tmp_path: Path
) -> None:
    ws, dataset = small_workspace
    store = _sqlite(tmp_path)
    try:
        (first,) = materialize_online(ws, [VIEW], store=store, as_of=AS_OF)
        watermark = module._to_micros(first.fed_until)
        # what a run leaves behind when it dies between its first and its last write
        module._write_mark(
            store, VIEW, dataset.content_hash, watermark, first.entities, feeding=True
        )
        store.put(VIEW, "999999", b"half-fed")
        assert fed_until(store, VIEW) == first.fed_until  # the last finished run
        (rebuilt,) = materialize_online(ws, [VIEW], store=store, as_of=AS_OF)
        assert not rebuilt.incremental
        assert rebuilt.entities == first.entities
        assert store.get(VIEW, "999999") is None  # dropped, then fed again
    finally:
        store.close()


def test_a_new_data_set_version_rebuilds(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws")
    try:
        small = {"n_customers": 40, "n_terminals": 60, "n_days": 20, "mode": "fast"}
        one = simulate_fraud_dataset(ws, FraudSimulator(**small, seed=1))  # type: ignore[arg-type]
        two = simulate_fraud_dataset(ws, FraudSimulator(**small, seed=2))  # type: ignore[arg-type]
        assert (one.version, two.version) == (1, 2)
        store = _sqlite(tmp_path)
        (first,) = materialize_online(ws, [VIEW], store=store, dataset_version=1)
        (second,) = materialize_online(ws, [VIEW], store=store)
        assert first.dataset_hash == one.content_hash
        assert second.dataset_hash == two.content_hash and second.dataset_version == 2
        assert not second.incremental and second.events_fed > 0
        scratch = _sqlite(tmp_path, "scratch.db")
        materialize_online(ws, [VIEW], store=scratch)
        terminals = list(range(60))
        at = pd.Timestamp(second.fed_until) + timedelta(days=1)
        assert read_online(store, VIEW, terminals, at) == read_online(scratch, VIEW, terminals, at)
        store.close()
        scratch.close()
    finally:
        ws.close()


def test_streamed_views_are_backfilled_once_then_skipped(
    small_workspace: tuple[Workspace, Dataset], events: pd.DataFrame, tmp_path: Path
) -> None:
    ws, _ = small_workspace
    store = _sqlite(tmp_path)
    try:
        runs = materialize_online(ws, [TRANSACTION, CUSTOMER_SPENDING], store=store, as_of=AS_OF)
        transaction, spending = runs
        assert transaction.skipped == NO_STATE and transaction.events_fed == 0
        assert spending.skipped is None and spending.events_fed > 0
        assert spending.entities == spending.entities_written > 0
        # the backfill is the state that streaming the whole history up to as_of leaves
        streamed = _sqlite(tmp_path, "streamed.db")
        for _ in replay(StreamingView(CUSTOMER_SPENDING, streamed), events[events[TS] <= AS_OF]):
            pass
        customers = sorted(events["CUSTOMER_ID"].unique().tolist())
        for at in (AS_OF, AS_OF + timedelta(hours=20), AS_OF + timedelta(days=6)):
            assert read_online(store, CUSTOMER_SPENDING, customers, at) == read_online(
                streamed, CUSTOMER_SPENDING, customers, at
            )
        streamed.close()

        before = _rows(store)
        (again,) = materialize_online(
            ws, [CUSTOMER_SPENDING], store=store, as_of=AS_OF + timedelta(days=5)
        )
        assert again.skipped == LIVE
        assert again.events_fed == again.entities_written == 0
        assert _rows(store) == before  # served live from now on: never fed twice
        recorded = [r for r in online_status(ws) if r.view == CUSTOMER_SPENDING.name]
        assert recorded and recorded[-1].run_at == spending.run_at  # a skip is not a run
    finally:
        store.close()


def test_an_unseen_terminal_has_zero_history(
    small_workspace: tuple[Workspace, Dataset], tmp_path: Path
) -> None:
    ws, _ = small_workspace
    store = _sqlite(tmp_path)
    try:
        materialize_online(ws, [VIEW], store=store, as_of=AS_OF)
        (row,) = read_online(store, VIEW, [-1], AS_OF)
        assert row[VIEW.entity] == "-1" and row[VIEW.timestamp] == AS_OF
        for name in VIEW.feature_names:
            assert row[name] == (0.0 if "RISK" in name else 0)
            assert type(row[name]) is (float if "RISK" in name else int)
    finally:
        store.close()


def test_state_of_the_old_latest_row_format_is_rebuilt(
    small_workspace: tuple[Workspace, Dataset], tmp_path: Path
) -> None:
    ws, dataset = small_workspace
    store = _sqlite(tmp_path)
    try:
        old = b'{"kind":"watermark","dataset_hash":"%s","t":1}' % dataset.content_hash.encode()
        store.put_many(VIEW, {module._MARK: old, "17": b'{"kind":"latest","v":1,"t":1,"f":[]}'})
        (run,) = materialize_online(ws, [VIEW], store=store, as_of=AS_OF)
        assert not run.incremental
        assert store.get(VIEW, "17") != b'{"kind":"latest","v":1,"t":1,"f":[]}'
    finally:
        store.close()


def test_cli_materialize_online_and_status(tmp_path: Path) -> None:
    assert shipyard("init", "proj", cwd=tmp_path).returncode == 0
    project = tmp_path / "proj"
    done = shipyard(
        "data", "simulate", "--mode", "fast", "--customers", "60", "--terminals", "100",
        "--days", "15", cwd=project,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = shipyard("features", "status", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "No features fed online yet" in done.stdout
    done = shipyard("features", "materialize", "--online", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "Online features" in done.stdout
    assert "terminal_risk" in done.stdout and "rebuilt" in done.stdout
    assert "customer_spending" in done.stdout and "backfilled" in done.stdout
    assert "transaction" in done.stdout and NO_STATE in done.stdout
    done = shipyard("features", "materialize", "--online", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "incremental" in done.stdout and LIVE in done.stdout
    done = shipyard("features", "status", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "Online feature freshness" in done.stdout
    assert "terminal_risk" in done.stdout and "customer_spending" in done.stdout
    assert TERMINAL_RISK.definition_hash[:12] in done.stdout
    assert "fraud v1" in done.stdout
    assert "yes" in done.stdout  # the last terminal_risk run was incremental
