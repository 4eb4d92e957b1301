"""The online feature store: per-entity state blobs of one feature view, SQLite or Redis.

An :class:`OnlineStore` holds opaque state (bytes) per entity of a view, keyed by the view's
name, its definition hash and the entity key. What the bytes mean is the business of
:mod:`shipyard.features.streaming`; the store only keeps them and refuses to mix
definitions: a view whose stored state was written under another definition hash is
refused with a :class:`~shipyard.errors.FeatureDefinitionError` naming both hashes (drop the
old state with ``drop_view`` and rebuild it).

Two implementations behind one protocol, chosen by the ``online_store`` setting:

* :class:`SQLiteOnlineStore` (default): one file in the workspace,
  ``<artifact_root>/online/online.db``, in WAL mode;
* :class:`RedisOnlineStore`: one Redis hash per (view, definition) at ``redis_url`` (needs
  the ``online`` extra). An unreachable server raises :class:`OnlineStoreUnavailableError`.

Example::

    store = open_online_store(ws)
    store.put_many(view, {"42": b"..."})
    store.get_many(view, ["42", "43"])   # [b"...", None]
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shipyard.errors import FeatureDefinitionError, OnlineStoreUnavailableError, ShipyardError

if TYPE_CHECKING:
    from shipyard.features.definitions import FeatureView
    from shipyard.workspace import Workspace

_SQLITE_CHUNK = 500  # entity keys per IN (...) query, well under SQLite's variable limit


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


class SQLiteOnlineStore:
    """The default online store: one SQLite file (WAL) with one row per (view, entity)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._checked: dict[str, str] = {}
        self._con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=NORMAL")
        self._con.execute("PRAGMA busy_timeout=10000")
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
        if self._checked.get(view.name) == view.definition_hash:
            return True
        stored = self.stored_hash(view.name)
        if stored is None and register:
            self._con.execute(
                "INSERT OR IGNORE INTO online_views VALUES (?, ?, ?)",
                (view.name, view.definition_hash, datetime.now(UTC).isoformat()),
            )
            stored = self.stored_hash(view.name)
        if stored is None:
            return False
        if stored != view.definition_hash:
            raise _mismatch(view, stored)
        self._checked[view.name] = stored
        return True

    def get(self, view: FeatureView, key: str) -> bytes | None:
        return self.get_many(view, [key])[0]

    def get_many(self, view: FeatureView, keys: Sequence[str]) -> list[bytes | None]:
        with self._lock:
            if not self._check(view, register=False):
                return [None] * len(keys)
            found: dict[str, bytes] = {}
            unique = list(dict.fromkeys(keys))
            for i in range(0, len(unique), _SQLITE_CHUNK):
                chunk = unique[i : i + _SQLITE_CHUNK]
                marks = ", ".join("?" * len(chunk))
                rows = self._con.execute(
                    "SELECT entity, state FROM online_state WHERE view = ? AND "
                    f"definition_hash = ? AND entity IN ({marks})",
                    (view.name, view.definition_hash, *chunk),
                )
                found.update((str(entity), bytes(state)) for entity, state in rows)
        return [found.get(key) for key in keys]

    def put(self, view: FeatureView, key: str, state: bytes) -> None:
        self.put_many(view, {key: state})

    def put_many(self, view: FeatureView, states: Mapping[str, bytes]) -> None:
        with self._lock:
            self._check(view, register=True)
            rows = [(view.name, view.definition_hash, k, v) for k, v in states.items()]
            self._con.execute("BEGIN")
            try:
                self._con.executemany(
                    "INSERT OR REPLACE INTO online_state VALUES (?, ?, ?, ?)", rows
                )
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

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


class RedisOnlineStore:
    """The online store on Redis: one hash per (view, definition), one field per entity."""

    PREFIX = "shipyard:online"

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        try:
            import redis
        except ImportError:
            raise ShipyardError(
                "online_store = 'redis' needs the redis client: pip install 'shipyard[online]'"
            ) from None
        self.url = url
        self._checked: dict[str, str] = {}
        self._errors: tuple[type[Exception], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
        )
        self._client: Any = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        self._call("ping")

    def __repr__(self) -> str:
        return f"RedisOnlineStore({self.url!r})"

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, method)(*args, **kwargs)
        except self._errors as exc:
            raise OnlineStoreUnavailableError(
                f"The Redis online store at {self.url} cannot be reached ({exc}); no online "
                "features can be read or written. Start Redis there or set online_store = "
                "'sqlite' / the right redis_url."
            ) from None

    def _state_key(self, view: FeatureView) -> str:
        return f"{self.PREFIX}:state:{view.name}:{view.definition_hash}"

    def stored_hash(self, view_name: str) -> str | None:
        value = self._call("hget", f"{self.PREFIX}:views", view_name)
        return None if value is None else bytes(value).decode()

    def _check(self, view: FeatureView, register: bool) -> bool:
        if self._checked.get(view.name) == view.definition_hash:
            return True
        if register:
            self._call("hsetnx", f"{self.PREFIX}:views", view.name, view.definition_hash)
        stored = self.stored_hash(view.name)
        if stored is None:
            return False
        if stored != view.definition_hash:
            raise _mismatch(view, stored)
        self._checked[view.name] = stored
        return True

    def get(self, view: FeatureView, key: str) -> bytes | None:
        return self.get_many(view, [key])[0]

    def get_many(self, view: FeatureView, keys: Sequence[str]) -> list[bytes | None]:
        if not keys or not self._check(view, register=False):
            return [None] * len(keys)
        values = self._call("hmget", self._state_key(view), list(keys))
        return [None if v is None else bytes(v) for v in values]

    def put(self, view: FeatureView, key: str, state: bytes) -> None:
        self.put_many(view, {key: state})

    def put_many(self, view: FeatureView, states: Mapping[str, bytes]) -> None:
        self._check(view, register=True)
        if states:
            self._call("hset", self._state_key(view), mapping=dict(states))

    def drop_view(self, view_name: str) -> int:
        removed = 0
        for key in self._call("keys", f"{self.PREFIX}:state:{view_name}:*"):
            removed += int(self._call("hlen", key))
            self._call("delete", key)
        self._call("hdel", f"{self.PREFIX}:views", view_name)
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
