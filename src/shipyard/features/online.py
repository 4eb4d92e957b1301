"""The online feature store: per-entity state blobs of one feature view, SQLite or Redis.

An :class:`OnlineStore` holds opaque state (bytes) per entity of a view, keyed by the view's
name, its definition hash and the entity key. What the bytes mean is the business of
:mod:`shipyard.features.streaming`; the store only keeps them and refuses to mix
definitions: a view whose stored state was written under another definition hash is
refused with a :class:`~shipyard.errors.FeatureDefinitionError` naming both hashes (drop the
old state with ``drop_view`` and rebuild it).

**Read-modify-write.** :meth:`OnlineStore.update_many` reads the states of some entities,
calls a function of them and writes what it returns, atomically against other threads and
other processes (several serving workers updating the same customer lose no event). Use it
whenever the new state depends on the old one; ``get_many`` then ``put_many`` is a race.
The function must be *pure* (no effect outside its return value and what it overwrites on
each call): on Redis it is called again when another writer got there first.

Two implementations behind one protocol, chosen by the ``online_store`` setting:

* :class:`SQLiteOnlineStore` (default): one file in the workspace,
  ``<artifact_root>/online/online.db``, in WAL mode; ``update_many`` holds the write lock
  (``BEGIN IMMEDIATE``) from the read to the commit, so writers queue (up to 10 s, trying
  again every 50 us to 1 ms) and the function runs once. The file is read through a memory map
  (no system call per page read) and checkpointed every 10,000 WAL pages (40 MiB);
* :class:`RedisOnlineStore`: one Redis string per entity,
  ``shipyard:online:state:{view}:{definition hash}:{entity}``, at ``redis_url`` (needs the
  ``online`` extra), and the hash ``shipyard:online:views`` of view name to definition hash.
  ``update_many`` is optimistic (``WATCH`` the entities' keys, read, compute, ``MULTI`` /
  ``EXEC``): when another writer changed one of them in between, it reads and computes
  again, a bounded number of times with a short random backoff, then raises
  :class:`OnlineContentionError`. An unreachable server raises
  :class:`OnlineStoreUnavailableError`. Redis state written by Shipyard before this layout
  (one hash per view) is refused with a clear error: drop the view and replay its events.

Example::

    store = open_online_store(ws)
    store.put_many(view, {"42": b"..."})
    store.get_many(view, ["42", "43"])   # [b"...", None]
    store.update_many(view, ["42"], lambda old: {"42": (old[0] or b"") + b"!"})
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shipyard.errors import (
    FeatureDefinitionError,
    OnlineContentionError,
    OnlineStoreUnavailableError,
    ParameterError,
    ShipyardError,
    invalid_parameter,
)
from shipyard.workspace import switch_to_wal

if TYPE_CHECKING:
    from shipyard.features.definitions import FeatureView
    from shipyard.workspace import Workspace

_SQLITE_CHUNK = 500  # entity keys per IN (...) query, well under SQLite's variable limit
_SQLITE_MMAP_BYTES = 256 * 2**20
_SQLITE_BUSY_S = 10.0  # how long a writer waits for another's write lock
# WAL pages between checkpoints (SQLite's default: 1,000). A checkpoint stalls the commit that
# runs it (it fsyncs); fewer, larger ones cost less in all (measured with serving's writes:
# 0.65 -> 0.45 ms per transaction of 14 entities, p99 15 -> 4 ms) for a WAL of up to 40 MiB.
_SQLITE_CHECKPOINT_PAGES = 10_000
_REDIS_CHUNK = 1_000  # keys per UNLINK and per SCAN step

Update = Callable[[list[bytes | None]], Mapping[str, bytes]]
"""The states of the keys (in order, None where absent) -> the new states of some of them."""


class OnlineStore(Protocol):
    """Per-entity state of feature views, keyed by view name, definition hash and entity key."""

    def get(self, view: FeatureView, key: str) -> bytes | None:
        """The state of one entity, or None if it has none."""
        ...

    def get_many(self, view: FeatureView, keys: Sequence[str]) -> list[bytes | None]:
        """The states of ``keys``, in their order (None where an entity has none)."""
        ...

    def put(self, view: FeatureView, key: str, state: bytes) -> None:
        """Store the state of one entity (replacing what it had)."""
        ...

    def put_many(self, view: FeatureView, states: Mapping[str, bytes]) -> None:
        """Store the states of several entities at once (atomically where the store can)."""
        ...

    def update_many(self, view: FeatureView, keys: Sequence[str], update: Update) -> None:
        """Atomically read the states of ``keys``, call ``update`` on them, write its result.

        ``update`` gets the current states in the order of ``keys`` (None where an entity has
        none) and returns the new states of some of those keys (others are refused with a
        :class:`~shipyard.errors.ParameterError`). No other writer, thread or process,
        changes these entities between the read and the write. When ``update`` raises,
        nothing is written and the exception propagates. ``update`` may be called more than
        once (Redis retries on contention): it must be pure, and only its last call's result
        is written. It must not call the store itself.
        """
        ...

    def stored_hash(self, view_name: str) -> str | None:
        """The definition hash the stored state of ``view_name`` was written under, if any."""
        ...

    def drop_view(self, view_name: str) -> int:
        """Delete every state of ``view_name`` and its registration; return how many."""
        ...

    def close(self) -> None:
        """Release connections (idempotent)."""
        ...


def _mismatch(view: FeatureView, stored: str) -> FeatureDefinitionError:
    return FeatureDefinitionError(
        f"The online store holds state of feature view {view.name!r} written under definition "
        f"{stored}, but this view's definition is {view.definition_hash}: its state would be "
        "read with the wrong meaning. Drop the old state (store.drop_view("
        f"{view.name!r})) and replay the events again."
    )


def _refuse_foreign(view: FeatureView, keys: Sequence[str], states: Mapping[str, bytes]) -> None:
    """An update may only write the keys it read (it was not given the others' state)."""
    allowed = set(keys)
    foreign = [k for k in states if k not in allowed]
    if foreign:
        raise ParameterError(
            f"An update of feature view {view.name!r} returned the state of {len(foreign)} "
            f"entity key(s) it was not given, the first {foreign[0]!r}; expected only keys "
            f"among the {len(keys)} read. Nothing was written."
        )


class _DefinitionHashes:
    """``view.definition_hash`` per view, computed once (it hashes the whole definition).

    Keyed by the view object's identity (hashing a view hashes every feature: it showed in
    the profile of serving); the entry keeps the view alive, so its id is never reused.
    """

    def __init__(self) -> None:
        self._hashes: dict[int, tuple[FeatureView, str]] = {}

    def __call__(self, view: FeatureView) -> str:
        entry = self._hashes.get(id(view))
        if entry is not None and entry[0] is view:
            return entry[1]
        value = view.definition_hash
        if len(self._hashes) >= 256:  # views made on the fly (parity's fresh names): bounded
            self._hashes.clear()
        self._hashes[id(view)] = (view, value)
        return value


class SQLiteOnlineStore:
    """The default online store: one SQLite file (WAL) with one row per (view, entity)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._checked: dict[str, str] = {}
        self._hash = _DefinitionHashes()
        self._con = sqlite3.connect(
            self.path, timeout=_SQLITE_BUSY_S, check_same_thread=False, isolation_level=None
        )
        self._con.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_S * 1000)}")
        switch_to_wal(self._con)
        self._con.execute("PRAGMA synchronous=NORMAL")
        self._con.execute(f"PRAGMA mmap_size={_SQLITE_MMAP_BYTES}")
        self._con.execute(f"PRAGMA wal_autocheckpoint={_SQLITE_CHECKPOINT_PAGES}")
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS online_views (view TEXT PRIMARY KEY, "
            "definition_hash TEXT NOT NULL, created_at TEXT NOT NULL)"
        )
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS online_state (view TEXT NOT NULL, "
            "definition_hash TEXT NOT NULL, entity TEXT NOT NULL, state BLOB NOT NULL, "
            "PRIMARY KEY (view, definition_hash, entity)) WITHOUT ROWID"
        )

    def __repr__(self) -> str:
        return f"SQLiteOnlineStore({str(self.path)!r})"

    def stored_hash(self, view_name: str) -> str | None:
        row = self._con.execute(
            "SELECT definition_hash FROM online_views WHERE view = ?", (view_name,)
        ).fetchone()
        return None if row is None else str(row[0])

    def _check(self, view: FeatureView, register: bool) -> bool:
        """True if ``view`` is registered with its hash (registering it if asked)."""
        definition = self._hash(view)
        if self._checked.get(view.name) == definition:
            return True
        stored = self.stored_hash(view.name)
        registering = stored is None and register
        if registering:
            self._con.execute(
                "INSERT OR IGNORE INTO online_views VALUES (?, ?, ?)",
                (view.name, definition, datetime.now(UTC).isoformat()),
            )
            stored = self.stored_hash(view.name)
        if stored is None:
            return False
        if stored != definition:
            raise _mismatch(view, stored)
        if not (registering and self._con.in_transaction):  # a rollback would undo it
            self._checked[view.name] = stored
        return True

    def get(self, view: FeatureView, key: str) -> bytes | None:
        return self.get_many(view, [key])[0]

    def _select(self, view: FeatureView, keys: Sequence[str]) -> list[bytes | None]:
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(keys))
        definition = self._hash(view)
        for i in range(0, len(unique), _SQLITE_CHUNK):
            chunk = unique[i : i + _SQLITE_CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = self._con.execute(
                "SELECT entity, state FROM online_state WHERE view = ? AND "
                f"definition_hash = ? AND entity IN ({marks})",
                (view.name, definition, *chunk),
            ).fetchall()
            found.update(rows)  # TEXT and BLOB columns: str and bytes already
        return [found.get(key) for key in keys]

    def _write(self, view: FeatureView, states: Mapping[str, bytes]) -> None:
        definition = self._hash(view)
        # an upsert rewrites the row in place; INSERT OR REPLACE deletes and inserts it, which
        # dirtied more pages: its commit cost twice as much CPU
        self._con.executemany(
            "INSERT INTO online_state VALUES (?, ?, ?, ?) ON CONFLICT "
            "(view, definition_hash, entity) DO UPDATE SET state = excluded.state",
            [(view.name, definition, k, v) for k, v in states.items()],
        )

    def get_many(self, view: FeatureView, keys: Sequence[str]) -> list[bytes | None]:
        with self._lock:
            if not self._check(view, register=False):
                return [None] * len(keys)
            return self._select(view, keys)

    def put(self, view: FeatureView, key: str, state: bytes) -> None:
        self.put_many(view, {key: state})

    def put_many(self, view: FeatureView, states: Mapping[str, bytes]) -> None:
        with self._lock:
            self._check(view, register=True)
            self._con.execute("BEGIN")
            try:
                self._write(view, states)
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    def update_many(self, view: FeatureView, keys: Sequence[str], update: Update) -> None:
        """Read, update and write under SQLite's write lock (other writers wait for it)."""
        with self._lock:
            # IMMEDIATE takes the write lock now: a second process waits here instead of
            # reading the same old state and overwriting this update.
            self._begin_immediate()
            try:
                registered = self._check(view, register=False)
                current: list[bytes | None] = [None] * len(keys)
                if registered:
                    current = self._select(view, keys)
                states = update(current)
                _refuse_foreign(view, keys, states)
                if states:
                    self._check(view, register=True)
                    self._write(view, states)
                self._con.execute("COMMIT")
            except BaseException:
                if self._con.in_transaction:
                    self._con.execute("ROLLBACK")
                raise

    def _begin_immediate(self) -> None:
        """``BEGIN IMMEDIATE``, tried again every 50 us to 1 ms while another writer holds
        the lock, for up to ``busy_timeout``. SQLite's own busy handler sleeps 1, 2, 5, 10 ...
        ms between tries: with two serving workers writing at once, most of a batch's time
        went to that sleep while the other's transaction takes a fraction of a millisecond."""
        con = self._con
        con.execute("PRAGMA busy_timeout=0")
        try:
            deadline = time.monotonic() + _SQLITE_BUSY_S
            pause = 50e-6
            while True:
                try:
                    con.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
                    if not busy or time.monotonic() > deadline:
                        raise
                time.sleep(pause)
                pause = min(2 * pause, 1e-3)
        finally:
            con.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_S * 1000)}")

    def drop_view(self, view_name: str) -> int:
        with self._lock:
            self._con.execute("BEGIN")
            n = self._con.execute("DELETE FROM online_state WHERE view = ?", (view_name,)).rowcount
            self._con.execute("DELETE FROM online_views WHERE view = ?", (view_name,))
            self._con.execute("COMMIT")
            self._checked.pop(view_name, None)
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._con.close()


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern (SCAN MATCH)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisOnlineStore:
    """The online store on Redis: one key per (view, definition, entity), holding its state.

    ``max_attempts`` bounds how many times :meth:`update_many` reads and computes again after
    losing a race to another writer of the same entities (with a random backoff of up to
    ``backoff_s`` times the attempt number, capped at 50 ms) before it raises
    :class:`OnlineContentionError`.
    """

    PREFIX = "shipyard:online"

    def __init__(
        self, url: str, *, timeout_s: float = 2.0, max_attempts: int = 50, backoff_s: float = 0.001
    ) -> None:
        try:
            import redis
        except ImportError:
            raise ShipyardError(
                "online_store = 'redis' needs the redis client: pip install 'shipyard[online]'"
            ) from None
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise invalid_parameter("max_attempts", "RedisOnlineStore", "an int >= 1", max_attempts)
        self.url = url
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._checked: dict[str, str] = {}
        self._hash = _DefinitionHashes()
        self._errors: tuple[type[Exception], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
        )
        self._watch_error: type[Exception] = redis.exceptions.WatchError
        self._client: Any = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        self._call("ping")

    def __repr__(self) -> str:
        return f"RedisOnlineStore({self.url!r})"

    def _unavailable(self, exc: Exception) -> OnlineStoreUnavailableError:
        return OnlineStoreUnavailableError(
            f"The Redis online store at {self.url} cannot be reached ({exc}); no online "
            "features can be read or written. Start Redis there or set online_store = "
            "'sqlite' / the right redis_url."
        )

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, method)(*args, **kwargs)
        except self._errors as exc:
            raise self._unavailable(exc) from None

    def _prefix(self, view: FeatureView) -> str:
        return f"{self.PREFIX}:state:{view.name}:{self._hash(view)}:"

    def _keys(self, view: FeatureView, keys: Sequence[str]) -> list[str]:
        prefix = self._prefix(view)
        return [prefix + key for key in keys]

    def stored_hash(self, view_name: str) -> str | None:
        value = self._call("hget", f"{self.PREFIX}:views", view_name)
        return None if value is None else bytes(value).decode()

    def _check(self, view: FeatureView, register: bool) -> bool:
        definition = self._hash(view)
        if self._checked.get(view.name) == definition:
            return True
        if register:
            self._call("hsetnx", f"{self.PREFIX}:views", view.name, definition)
        stored = self.stored_hash(view.name)
        if stored is None:
            return False
        if stored != definition:
            raise _mismatch(view, stored)
        # before this layout, a view's state was one Redis hash at the prefix without ':'
        if self._call("type", self._prefix(view)[:-1]) == b"hash":
            raise FeatureDefinitionError(
                f"The Redis online store holds state of feature view {view.name!r} in the "
                "layout of an older Shipyard (one hash per view), which this version does not "
                f"read. Drop it (store.drop_view({view.name!r})) and replay the events again."
            )
        self._checked[view.name] = stored
        return True

    def get(self, view: FeatureView, key: str) -> bytes | None:
        return self.get_many(view, [key])[0]

    def get_many(self, view: FeatureView, keys: Sequence[str]) -> list[bytes | None]:
        if not keys or not self._check(view, register=False):
            return [None] * len(keys)
        values = self._call("mget", self._keys(view, keys))
        return [None if v is None else bytes(v) for v in values]

    def put(self, view: FeatureView, key: str, state: bytes) -> None:
        self.put_many(view, {key: state})

    def put_many(self, view: FeatureView, states: Mapping[str, bytes]) -> None:
        self._check(view, register=True)
        if states:
            prefix = self._prefix(view)
            self._call("mset", {prefix + k: v for k, v in states.items()})

    def update_many(self, view: FeatureView, keys: Sequence[str], update: Update) -> None:
        """WATCH, MGET, ``update``, MULTI/SET/EXEC; again while another writer got in between."""
        registered = self._check(view, register=False)
        names = self._keys(view, keys)
        try:
            for attempt in range(1, self.max_attempts + 1):
                with self._client.pipeline(transaction=True) as pipe:
                    try:
                        if names:
                            pipe.watch(*names)
                        # read even when the view was not registered at the check above:
                        # another writer may have registered it and written since
                        values = pipe.mget(names) if names else []
                        states = update([None if v is None else bytes(v) for v in values])
                        _refuse_foreign(view, keys, states)
                        if not states:
                            return
                        if not registered:
                            registered = self._check(view, register=True)
                        prefix = self._prefix(view)
                        pipe.multi()
                        pipe.mset({prefix + k: v for k, v in states.items()})
                        pipe.execute()
                        return
                    except self._watch_error:
                        pass
                time.sleep(random.uniform(0, min(0.05, self.backoff_s * attempt)))
        except self._errors as exc:
            raise self._unavailable(exc) from None
        raise OnlineContentionError(
            f"Updating {len(set(keys))} entity state(s) of feature view {view.name!r} in the "
            f"Redis online store at {self.url} lost to other writers of the same entities "
            f"{self.max_attempts} times in a row; nothing was written. Too many processes "
            "update these entities at once: retry later, or raise max_attempts."
        )

    def drop_view(self, view_name: str) -> int:
        pattern = f"{self.PREFIX}:state:{_glob_escape(view_name)}:*"
        removed = 0
        batch: list[bytes] = []
        try:  # SCAN walks the key space in steps (never KEYS, which blocks the server)
            for key in self._client.scan_iter(match=pattern, count=_REDIS_CHUNK):
                batch.append(key)
                if len(batch) >= _REDIS_CHUNK:
                    removed += int(self._client.unlink(*batch))
                    batch.clear()
            if batch:
                removed += int(self._client.unlink(*batch))
            self._client.hdel(f"{self.PREFIX}:views", view_name)
        except self._errors as exc:
            raise self._unavailable(exc) from None
        self._checked.pop(view_name, None)
        return removed

    def close(self) -> None:
        self._client.close()


def online_store_path(workspace: Workspace) -> Path:
    """Where the SQLite online store of ``workspace`` lives."""
    return workspace.artifact_root / "online" / "online.db"


def open_online_store(workspace: Workspace) -> OnlineStore:
    """The workspace's online store, as its ``online_store`` setting says (SQLite by default)."""
    settings = workspace.settings
    if settings.online_store == "redis":
        return RedisOnlineStore(settings.redis_url)
    return SQLiteOnlineStore(online_store_path(workspace))
