"""A throwaway PostgreSQL cluster for the tests: Debian's binaries, a temp dir, a free port.

``PostgresCluster.start(folder)`` runs ``initdb`` into ``folder`` and starts ``postgres`` on
127.0.0.1 (its unix socket in the folder too), tuned for tests (no fsync). ``template()``
builds, once, one database with every Shipyard table and one with MLflow's migrated schema;
``fresh()`` copies both (``CREATE DATABASE ... TEMPLATE``: milliseconds, where MLflow's
migrations take seconds). As root, the cluster runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = (
    "PostgreSQL's server binaries (initdb, pg_ctl, postgres) were not found on PATH nor in "
    "/usr/lib/postgresql/*/bin. Install Debian's `postgresql` package (apt-get install "
    "postgresql; .ci/run does) to run the tests on PostgreSQL."
)
PASSWORD_ROLE, PASSWORD = "shipyard_pw", "s3cret-pw"
"""A role that logs in with a password (every other connection is trusted)."""
SHIPYARD_TEMPLATE = "shipyard_template"
MLFLOW_TEMPLATE = "mlflow_template"


def find_bin_dir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``; RuntimeError with INSTALL_HINT if none."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise RuntimeError(INSTALL_HINT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresCluster:
    """A running throwaway cluster; ``stop()`` shuts it down and removes its folder."""

    folder: Path
    port: int
    bin_dir: Path
    user: str = "postgres"
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def start(cls, folder: Path) -> PostgresCluster:
        """``initdb`` into ``folder/data`` and start the server on a free loopback port."""
        bin_dir = find_bin_dir()
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / "data"
        as_root = os.geteuid() == 0
        if as_root:
            shutil.chown(folder, "postgres", "postgres")
        cluster = cls(folder, _free_port(), bin_dir)
        cluster._run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        # trust on the loopback, except one role that must give its password (for the tests
        # of a wrong password)
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={cluster.port} "
            f"-c unix_socket_directories={folder} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        cluster._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(data), "-l", str(folder / "log"),
            "-o", options,
        )  # fmt: skip
        cluster.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'")
        return cluster

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = self.folder / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} failed: {done.stderr or done.stdout}\n{tail}")

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder."""
        try:
            self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.folder / "data"))
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        """The SQLAlchemy URL of ``database`` on this cluster (psycopg 3 driver)."""
        who = self.user if password is None else f"{self.user}:{password}"
        return f"postgresql+psycopg://{who}@127.0.0.1:{self.port}/{database}"

    def execute(self, *statements: str) -> None:
        """Run statements on the ``postgres`` database in autocommit (CREATE/DROP DATABASE)."""
        import psycopg

        dsn = f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement.encode())

    def template(self) -> None:
        """Create the two template databases: Shipyard's tables and MLflow's schema."""
        from sqlalchemy import create_engine

        from shipyard.tables import metadata

        self.execute(f"CREATE DATABASE {SHIPYARD_TEMPLATE}", f"CREATE DATABASE {MLFLOW_TEMPLATE}")
        engine = create_engine(self.url(SHIPYARD_TEMPLATE))
        metadata.create_all(engine)
        engine.dispose()
        _migrate_mlflow(self.url(MLFLOW_TEMPLATE))

    def fresh(self) -> tuple[str, str]:
        """Two new databases copied from the templates: (Shipyard's, MLflow's) names."""
        n = next(self._counter)
        names = (f"t_{os.getpid()}_{n}", f"t_{os.getpid()}_{n}_mlflow")
        self.execute(
            f"CREATE DATABASE {names[0]} TEMPLATE {SHIPYARD_TEMPLATE}",
            f"CREATE DATABASE {names[1]} TEMPLATE {MLFLOW_TEMPLATE}",
        )
        return names

    def drop(self, *names: str) -> None:
        """Drop databases, ending the connections still open to them."""
        self.execute(*(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)" for name in names))


def _migrate_mlflow(url: str) -> None:
    """Let MLflow create and migrate its tables in ``url`` (what a first client does)."""
    from mlflow.store.model_registry.sqlalchemy_store import (
        SqlAlchemyStore as RegistryStore,
    )
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # the default experiment's artifact root: never written (Shipyard names its own)
    store = SqlAlchemyStore(url, default_artifact_root="./mlruns")  # type: ignore[no-untyped-call]
    store.engine.dispose()
    registry = RegistryStore(url)  # type: ignore[no-untyped-call]
    registry.engine.dispose()  # no connection left: the database can serve as a template
