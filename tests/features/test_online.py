"""The online store: SQLite and a real redis-server behind one protocol."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shipyard.config import Settings
from shipyard.errors import (
    ConfigError,
    FeatureDefinitionError,
    OnlineContentionError,
    OnlineStoreUnavailableError,
    ParameterError,
)
from shipyard.features.definitions import Aggregation
from shipyard.features.fraud import CUSTOMER_SPENDING, TERMINAL_RISK
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


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start a real redis-server (free loopback port, no persistence) and wait until it
    answers; (its process, its URL). A server that never answers is stopped, then raised."""
    import redis

    port = free_port()
    args = [redis_server_path(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    process = subprocess.Popen(
        [*args, "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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
    except BaseException:
        stop_redis(process)
        raise
    return process, url


def stop_redis(process: subprocess.Popen[bytes]) -> None:
    """Stop a server started by :func:`start_redis` (killed if it does not stop in 10 s)."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port, no persistence; its URL."""
    process, url = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        stop_redis(process)


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
        lambda s: s.update_many(changed, ["1"], lambda old: {"1": b"new"}),
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
    for action in (
        lambda: store.get(CUSTOMER_SPENDING, "1"),
        lambda: store.update_many(CUSTOMER_SPENDING, ["1"], lambda old: {"1": b"y"}),
        lambda: store.drop_view(CUSTOMER_SPENDING.name),
    ):
        with pytest.raises(OnlineStoreUnavailableError, match="cannot be reached"):
            action()
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


# -- read-modify-write ---------------------------------------------------------------------------


def test_update_many_reads_the_current_states_and_writes_what_it_returns(
    open_store: StoreFactory,
) -> None:
    store = open_store()
    view = CUSTOMER_SPENDING
    seen: list[list[bytes | None]] = []

    def first(states: list[bytes | None]) -> dict[str, bytes]:
        seen.append(states)
        return {"1": b"one"}

    store.update_many(view, ["1", "2"], first)  # a view with no state yet: all None
    assert seen == [[None, None]]
    assert store.stored_hash(view.name) == view.definition_hash
    store.put(view, "3", b"three")

    def second(states: list[bytes | None]) -> dict[str, bytes]:
        seen.append(states)
        return {"2": b"two", "3": (states[0] or b"") + b"!"}

    store.update_many(view, ["3", "1", "2"], second)
    assert seen[1] == [b"three", b"one", None]  # in the order of the keys
    assert store.get_many(view, ["1", "2", "3"]) == [b"one", b"two", b"three!"]
    store.update_many(view, ["1"], lambda states: {})  # nothing to write: nothing changes
    assert store.get(view, "1") == b"one"


def test_update_many_that_raises_writes_nothing(open_store: StoreFactory) -> None:
    store = open_store()
    view = CUSTOMER_SPENDING

    def broken(states: list[bytes | None]) -> dict[str, bytes]:
        raise ZeroDivisionError("the update failed")

    with pytest.raises(ZeroDivisionError, match="the update failed"):
        store.update_many(view, ["1"], broken)
    assert store.stored_hash(view.name) is None  # not even registered
    store.put_many(view, {"1": b"one", "2": b"two"})
    with pytest.raises(ZeroDivisionError):
        store.update_many(view, ["1", "2"], broken)
    assert store.get_many(view, ["1", "2"]) == [b"one", b"two"]
    # the store still works after the rollback
    store.update_many(view, ["1"], lambda states: {"1": b"uno"})
    assert store.get_many(view, ["1", "2"]) == [b"uno", b"two"]


def test_update_many_refuses_a_key_it_was_not_given(open_store: StoreFactory) -> None:
    store = open_store()
    view = CUSTOMER_SPENDING
    store.put(view, "1", b"one")
    with pytest.raises(ParameterError, match="'9'") as error:
        store.update_many(view, ["1"], lambda states: {"1": b"uno", "9": b"nine"})
    assert "Nothing was written" in str(error.value)
    assert isinstance(error.value, ValueError)
    assert store.get_many(view, ["1", "9"]) == [b"one", None]


def _increment(chosen: Sequence[str]) -> Callable[[list[bytes | None]], dict[str, bytes]]:
    def update(states: list[bytes | None]) -> dict[str, bytes]:
        return {k: str(int(s or b"0") + 1).encode() for k, s in zip(chosen, states, strict=True)}

    return update


KEYS = ["a", "b", "c"]


def _chosen(i: int) -> list[str]:
    """The keys the i-th update of a worker increments (several overlapping subsets)."""
    return [KEYS, KEYS[:1], KEYS[1:], ["c", "a"]][i % 4]


def _increment_worker(kind: str, where: str, n: int, barrier: Any) -> None:
    """A separate process applying ``n`` increments through update_many."""
    store: OnlineStore = RedisOnlineStore(where) if kind == "redis" else SQLiteOnlineStore(where)
    barrier.wait()  # all workers start together, so that their updates overlap
    for i in range(n):
        chosen = _chosen(i)
        store.update_many(CUSTOMER_SPENDING, chosen, _increment(chosen))
    store.close()


@pytest.fixture(params=["sqlite", "redis"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, URL or path) of a fresh store that separate processes open."""
    if request.param == "redis":
        import redis

        url = str(request.getfixturevalue("redis_server"))
        redis.Redis.from_url(url).flushdb()
        return "redis", url
    return "sqlite", str(tmp_path / "online" / "online.db")


def test_concurrent_processes_lose_no_update(shared_store: tuple[str, str]) -> None:
    """Three OS processes increment the same keys at once; the totals are exact.

    With ``get_many`` then ``put_many`` instead of ``update_many`` this fails: two processes
    read the same old value and the second write overwrites the first's increment.
    """
    kind, where = shared_store
    workers, n = 3, 150
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers)
    processes = [
        context.Process(target=_increment_worker, args=(kind, where, n, barrier))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    assert [p.exitcode for p in processes] == [0] * workers
    expected = {k: workers * sum(k in _chosen(i) for i in range(n)) for k in KEYS}
    store: OnlineStore = RedisOnlineStore(where) if kind == "redis" else SQLiteOnlineStore(where)
    got = store.get_many(CUSTOMER_SPENDING, KEYS)
    store.close()
    assert {k: int(v or b"0") for k, v in zip(KEYS, got, strict=True)} == expected


# -- Redis: one key per entity -------------------------------------------------------------------


def test_redis_keeps_one_key_per_entity_and_drop_view_removes_them_all(
    redis_server: str,
) -> None:
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    store = RedisOnlineStore(redis_server)
    view = CUSTOMER_SPENDING
    store.put_many(view, {str(i): b"x" * 10 for i in range(2_500)})  # more than a SCAN step
    store.put(TERMINAL_RISK, "1", b"other view")
    key = f"shipyard:online:state:customer_spending:{view.definition_hash}:42"
    assert client.get(key) == b"x" * 10
    assert len(client.keys("shipyard:online:state:customer_spending:*")) == 2_500
    assert store.drop_view(view.name) == 2_500
    assert client.keys("shipyard:online:state:customer_spending:*") == []
    assert store.stored_hash(view.name) is None
    assert store.get(TERMINAL_RISK, "1") == b"other view"  # another view is untouched
    assert store.get(view, "42") is None
    store.close()


def test_redis_state_of_the_older_layout_is_refused(redis_server: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    view = CUSTOMER_SPENDING
    # how an older Shipyard kept it: one hash per (view, definition), one field per entity
    client.hset("shipyard:online:views", view.name, view.definition_hash)
    client.hset(f"shipyard:online:state:{view.name}:{view.definition_hash}", "1", b"old")
    store = RedisOnlineStore(redis_server)
    with pytest.raises(FeatureDefinitionError, match="older Shipyard") as error:
        store.get(view, "1")
    assert f"drop_view('{view.name}')" in str(error.value)
    assert store.drop_view(view.name) == 1
    store.put(view, "1", b"new")
    assert store.get(view, "1") == b"new"
    store.close()


def test_redis_update_many_retries_when_another_writer_got_in_between(redis_server: str) -> None:
    """The update is computed again from the state the other writer left; bounded retries."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    view = CUSTOMER_SPENDING
    store = RedisOnlineStore(redis_server, max_attempts=3)
    store.put(view, "1", b"0")
    key = f"shipyard:online:state:{view.name}:{view.definition_hash}:1"
    calls: list[bytes | None] = []

    def racing(states: list[bytes | None]) -> dict[str, bytes]:
        calls.append(states[0])
        if len(calls) < 3:  # another process writes between this read and this write
            client.set(key, f"other {len(calls)}".encode())
        return {"1": (states[0] or b"") + b"+mine"}

    store.update_many(view, ["1"], racing)
    assert calls == [b"0", b"other 1", b"other 2"]
    assert store.get(view, "1") == b"other 2+mine"  # the last computation was written

    calls.clear()
    always = RedisOnlineStore(redis_server, max_attempts=2, backoff_s=0.0)

    def losing(states: list[bytes | None]) -> dict[str, bytes]:
        calls.append(states[0])
        client.set(key, b"the other's")
        return {"1": b"never written"}

    with pytest.raises(OnlineContentionError, match="'customer_spending'") as error:
        always.update_many(view, ["1"], losing)
    assert "2 times" in str(error.value)
    assert len(calls) == 2
    assert store.get(view, "1") == b"the other's"
    with pytest.raises(ParameterError, match="'max_attempts' parameter of RedisOnlineStore"):
        RedisOnlineStore(redis_server, max_attempts=0)
    store.close()
    always.close()


def _open_fresh_and_write(path: str, worker: int, barrier: Any) -> None:
    """A serving worker starting: open the (fresh) SQLite store, write one state."""
    barrier.wait(timeout=120)
    store = SQLiteOnlineStore(path)
    store.put(CUSTOMER_SPENDING, str(worker), b"state")
    store.close()


def test_workers_opening_a_fresh_sqlite_store_at_once_wait_for_each_other(
    tmp_path: Path,
) -> None:
    """Switching a new file to WAL takes a lock: without a busy timeout set before it, a
    second process opening the store at that moment failed with 'database is locked'."""
    path = str(tmp_path / "online.db")
    context = multiprocessing.get_context("spawn")
    workers = 6
    for attempt in range(8):  # the race is in the first milliseconds: try it a few times
        Path(path).unlink(missing_ok=True)
        barrier = context.Barrier(workers)
        processes = [
            context.Process(target=_open_fresh_and_write, args=(path, i, barrier))
            for i in range(workers)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=120)
        assert [p.exitcode for p in processes] == [0] * workers, f"attempt {attempt}"
        store = SQLiteOnlineStore(path)
        keys = [str(i) for i in range(workers)]
        assert store.get_many(CUSTOMER_SPENDING, keys) == [b"state"] * workers
        store.close()
