"""The Workspace: the one context object every Shipyard function takes.

A workspace is a folder holding ``shipyard.toml``; by default it also holds the SQLite
metadata database, the data root and the artifact root (all settings). Nothing in Shipyard
reads global state: open a workspace and pass it along::

    from shipyard import Workspace
    ws = Workspace.init("my-project")      # or Workspace.open("my-project")
    print(ws.database_url, ws.artifact_root)
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
import weakref
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.config import SETTINGS_FILE, Settings
from shipyard.errors import (
    ConfigError,
    WorkspaceExistsError,
    WorkspaceNotFoundError,
    WorkspaceOutdatedError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Connection, Engine

CONNECT_TIMEOUT_S = 5
"""Seconds a PostgreSQL connection may take before the server counts as unreachable."""


class Workspace:
    """A Shipyard project: settings, metadata database, data and artifact roots."""

    def __init__(self, root: str | os.PathLike[str], settings: Settings | None = None) -> None:
        self.root = Path(root).resolve()
        self.settings = settings if settings is not None else Settings.load(self.root)

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    @classmethod
    def init(
        cls, path: str | os.PathLike[str] = ".", settings: Settings | None = None
    ) -> Workspace:
        """Create a workspace at ``path``: ``shipyard.toml``, folders and metadata tables."""
        root = Path(path).resolve()
        config = root / SETTINGS_FILE
        if config.exists():
            raise WorkspaceExistsError(
                f"A workspace already exists at {root} ({SETTINGS_FILE} is there); "
                "open it with Workspace.open or choose another folder."
            )
        settings = settings if settings is not None else Settings()
        root.mkdir(parents=True, exist_ok=True)
        workspace = cls(root, settings)
        workspace.ensure_layout()
        workspace.close()
        config.write_text(settings.to_toml(), encoding="utf-8")
        # Re-read so that SHIPYARD_* variables apply exactly as they will on the next open.
        return cls(root)

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None) -> Workspace:
        """Open the workspace at ``path``, ``$SHIPYARD_WORKSPACE``, or the nearest parent of cwd."""
        explicit = path if path is not None else os.environ.get("SHIPYARD_WORKSPACE")
        if explicit is not None:
            root = Path(explicit).resolve()
            if not (root / SETTINGS_FILE).is_file():
                raise WorkspaceNotFoundError(
                    f"No Shipyard workspace at {root}: {SETTINGS_FILE} is missing. "
                    f"Create one with `shipyard init {explicit}`."
                )
            workspace = cls(root)
        else:
            here = Path.cwd().resolve()
            for candidate in (here, *here.parents):
                if (candidate / SETTINGS_FILE).is_file():
                    workspace = cls(candidate)
                    break
            else:
                raise WorkspaceNotFoundError(
                    f"No Shipyard workspace in {here} or its parents ({SETTINGS_FILE} not found). "
                    "Run `shipyard init` here, pass --workspace, or set SHIPYARD_WORKSPACE."
                )
        workspace.ensure_layout()
        return workspace

    def resolve(self, setting: str) -> Path:
        """Resolve a path setting against the workspace folder."""
        path = Path(os.path.expanduser(setting))
        return path if path.is_absolute() else self.root / path

    @property
    def artifact_root(self) -> Path:
        """Folder holding models, materialized features and reports."""
        return self.resolve(self.settings.artifact_root)

    @property
    def data_root(self) -> Path:
        """Folder holding registered data sets."""
        return self.resolve(self.settings.data_root)

    @property
    def database_url(self) -> str:
        """The metadata database URL, with a relative SQLite path made absolute."""
        url = self.settings.database_url
        prefix = "sqlite:///"
        if url.startswith(prefix) and url != "sqlite:///:memory:":
            return prefix + str(self.resolve(url[len(prefix) :]))
        return url

    @property
    def mlflow_tracking_uri(self) -> str:
        """Where MLflow runs go: the setting, or a SQLite store inside the workspace."""
        if self.settings.mlflow_tracking_uri:
            return self.settings.mlflow_tracking_uri
        return "sqlite:///" + str(self.resolve(".shipyard/mlflow.db"))

    @cached_property
    def engine(self) -> Engine:
        """The SQLAlchemy engine of the metadata database (created on first use)."""
        from sqlalchemy import create_engine, event

        engine = create_engine(self.database_url, future=True, **engine_options(self.database_url))
        if engine.dialect.name == "sqlite":

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(conn, _record):  # type: ignore[no-untyped-def]
                cursor = conn.cursor()
                cursor.execute("PRAGMA busy_timeout=10000")
                cursor.close()
                switch_to_wal(conn)

        # a workspace dropped without close() still closes its connections (PostgreSQL
        # servers count them; psycopg warns about a connection left open)
        weakref.finalize(self, engine.dispose)
        return engine

    def ensure_layout(self) -> None:
        """Create the folders and the metadata tables if they are missing (idempotent)."""
        from shipyard.tables import metadata

        self.artifact_root.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        if self.database_url.startswith("sqlite:///"):
            Path(self.database_url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.engine.connect():
                pass
        except Exception as exc:  # a bad URL, a missing driver, a server that does not answer
            raise database_error("database_url", self.database_url, exc) from None
        metadata.create_all(self.engine)
        self._check_tables()

    @contextmanager
    def lock(self, name: str) -> Iterator[Connection]:
        """A write transaction that holds the workspace-wide lock ``name`` until it ends.

        Changes that read state, decide, and write (a promotion and its audit entry, a
        traffic policy's next revision) run under one, so that two processes never both act
        on what they read. On PostgreSQL it is ``pg_advisory_xact_lock`` on a key of
        ``name``; on SQLite ``BEGIN IMMEDIATE`` (the database's write lock, one for every
        name). Commits on success, rolls back on error. Example::

            with ws.lock("model:fraud") as conn:
                ...  # read, decide, write with conn
        """
        from sqlalchemy import text

        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def _check_tables(self) -> None:
        """Raise WorkspaceOutdatedError if a table made by an earlier Shipyard lacks columns.

        ``create_all`` creates missing tables but never alters existing ones: without this
        check, an old workspace would fail later with an SQL error about a missing column.
        """
        from sqlalchemy import inspect

        from shipyard.tables import metadata

        inspector = inspect(self.engine)
        for table in metadata.sorted_tables:
            have = {column["name"] for column in inspector.get_columns(table.name)}
            missing = [column.name for column in table.columns if column.name not in have]
            if missing:
                raise WorkspaceOutdatedError(
                    f"The workspace at {self.root} was made by an earlier version of Shipyard: "
                    f"its table {table.name} lacks column(s) {', '.join(missing)}. This version "
                    "cannot read it; create a new workspace (`shipyard init NEW_FOLDER`) and run "
                    "the job again there."
                )

    def close(self) -> None:
        """Release database connections (the workspace can still be used afterwards)."""
        if "engine" in self.__dict__:
            self.engine.dispose()


def lock_key(name: str) -> int:
    """The signed 64-bit advisory lock key of a lock name (stable across processes)."""
    return int.from_bytes(
        hashlib.sha256(f"shipyard lock {name}".encode()).digest()[:8], signed=True
    )


def engine_options(url: str) -> dict[str, Any]:
    """``create_engine`` options for ``url``: a connect timeout on PostgreSQL (unless the URL
    sets one), so that an unreachable server is an error within seconds."""
    if url.startswith("postgresql") and "connect_timeout" not in url:
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return {}


def hide_password(url: str) -> str:
    """``url`` with its password shown as ``***`` (for messages and logs)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@", 1)[-1] if "@" in url else url


def database_error(setting: str, url: str, exc: BaseException) -> ConfigError:
    """The ConfigError for a database Shipyard cannot use: the setting, the URL (password
    hidden) and the cause."""
    cause = getattr(exc, "orig", None) or exc
    text = " ".join(str(cause).split()) or type(cause).__name__
    hint = ""
    if isinstance(exc, ImportError) or type(exc).__name__ == "NoSuchModuleError":
        hint = (
            " Install the database driver (for postgresql+psycopg: pip install 'psycopg[binary]')."
        )
    return ConfigError(
        f"Setting {setting}: cannot use the database at {hide_password(url)}: "
        f"{type(cause).__name__}: {text}.{hint} Check the host, port, user, password and "
        "database name (the database must exist; `createdb` makes one)."
    )


def check_database(setting: str, url: str) -> None:
    """Connect once to ``url`` (with a short timeout); ConfigError naming ``setting`` if that
    fails. Example: ``check_database("mlflow_tracking_uri", ws.mlflow_tracking_uri)``."""
    from sqlalchemy import create_engine

    try:
        engine = create_engine(url, **engine_options(url))
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as exc:
        raise database_error(setting, url, exc) from None


def switch_to_wal(con: Any, wait_s: float = 10.0) -> None:
    """Put the file in WAL mode (kept by the file). Switching takes an exclusive lock and
    SQLite answers "database is locked" at once, without its busy handler, to a process
    switching while another does (serving workers opening a fresh store together): retry."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
