"""The online store: SQLite and a real redis-server behind one protocol."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from shipyard.config import Settings
from shipyard.errors import ConfigError, FeatureDefinitionError, OnlineStoreUnavailableError
from shipyard.features.definitions import Aggregation
from shipyard.features.fraud import CUSTOMER_SPENDING
from shipyard.features.online import (
    OnlineStore,
    RedisOnlineStore,
    SQLiteOnlineStore,
    online_store_path,
    open_online_store,
)
from shipyard.workspace import Workspace

StoreFactory = Callable[[], OnlineStore]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_path() -> str:
    """The path of ``redis-server``; skip without it, except in CI (fail)."""
    path = shutil.which("redis-server")
    if path is None:
        reason = (
            "redis-server is not installed (Debian: apt-get install redis-server; .ci/run does it)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port, no persistence; its URL."""
    import redis

    binary = redis_server_path()
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [*args, "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens (and reopens) one fresh online store of each kind; all are closed at teardown."""
    opened: list[OnlineStore] = []
    if request.param == "redis":
        import redis

        url = request.getfixturevalue("redis_server")
        redis.Redis.from_url(url).flushdb()

        def factory() -> OnlineStore:
            opened.append(RedisOnlineStore(url))
            return opened[-1]
    else:

        def factory() -> OnlineStore:
            opened.append(SQLiteOnlineStore(tmp_path / "online" / "online.db"))
            return opened[-1]

    yield factory
    for store in opened:
        store.close()


def test_put_get_in_order_with_missing_entities(open_store: StoreFactory) -> None:
    store = open_store()
    view = CUSTOMER_SPENDING
    assert store.get(view, "1") is None  # nothing registered yet
    store.put_many(view, {"1": b"one", "2": b"two"})
    store.put(view, "3", b"\x00three")
    assert store.get_many(view, ["3", "404", "1", "1"]) == [b"\x00three", None, b"one", b"one"]
    store.put(view, "1", b"uno")
    assert store.get(view, "1") == b"uno"
    assert store.stored_hash(view.name) == view.definition_hash


def test_state_survives_reopening(open_store: StoreFactory) -> None:
    first = open_store()
    first.put_many(CUSTOMER_SPENDING, {str(i): bytes([i]) * 8 for i in range(100)})
    first.close()
    again = open_store()
    assert again.get_many(CUSTOMER_SPENDING, ["7", "99"]) == [b"\x07" * 8, b"\x63" * 8]


def test_state_of_another_definition_is_refused(open_store: StoreFactory) -> None:
    store = open_store()
    store.put(CUSTOMER_SPENDING, "1", b"old")
    changed = replace(
        CUSTOMER_SPENDING,
        features=(Aggregation("CUSTOMER_ID_NB_TX_2DAY_WINDOW", "count", timedelta(days=2)),),
    )
    for action in (
        lambda s: s.get(changed, "1"),
        lambda s: s.put(changed, "1", b"new"),
    ):
        for s in (store, open_store()):  # the same process and a restarted one
            with pytest.raises(FeatureDefinitionError) as error:
                action(s)
            message = str(error.value)
            assert "'customer_spending'" in message
            assert CUSTOMER_SPENDING.definition_hash in message
            assert changed.definition_hash in message
    assert store.get(CUSTOMER_SPENDING, "1") == b"old"  # nothing was overwritten
    assert store.drop_view(CUSTOMER_SPENDING.name) == 1
    store.put(changed, "1", b"new")
    assert store.get(changed, "1") == b"new"


def test_redis_unreachable_is_a_clear_error() -> None:
    pytest.importorskip("redis")
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with pytest.raises(OnlineStoreUnavailableError, match="cannot be reached") as error:
        RedisOnlineStore(url, timeout_s=0.5)
    assert url in str(error.value)
    assert isinstance(error.value, ConnectionError)


def test_redis_going_away_is_a_clear_error(tmp_path: Path) -> None:
    binary = redis_server_path()
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                store = RedisOnlineStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
                break
            except OnlineStoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        store.put(CUSTOMER_SPENDING, "1", b"x")
    finally:
        process.terminate()
        process.wait(timeout=10)
    with pytest.raises(OnlineStoreUnavailableError, match="cannot be reached"):
        store.get(CUSTOMER_SPENDING, "1")
    store.close()


def test_the_setting_chooses_the_store(tmp_path: Path, redis_server: str) -> None:
    ws = Workspace.init(tmp_path / "ws")
    store = open_online_store(ws)
    assert isinstance(store, SQLiteOnlineStore)
    assert store.path == online_store_path(ws)
    assert store.path.is_relative_to(ws.artifact_root)
    store.close()
    ws = Workspace.init(
        tmp_path / "ws2", settings=Settings(online_store="redis", redis_url=redis_server)
    )
    store = open_online_store(ws)
    assert isinstance(store, RedisOnlineStore)
    store.close()
    with pytest.raises(ConfigError, match="online_store"):
        Settings.load(tmp_path, environ={"SHIPYARD_ONLINE_STORE": "memcached"})
