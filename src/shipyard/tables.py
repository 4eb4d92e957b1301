"""Shipyard's own metadata tables, all declared here so the whole schema is in one place.

MLflow keeps runs and model versions; these tables keep what MLflow lacks (data sets,
feature materializations, later lineage, gates and traffic policies). They live in the
workspace's database: SQLite by default, any SQLAlchemy URL (PostgreSQL) by setting.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

datasets = Table(
    "shipyard_datasets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("path", Text, nullable=False, doc="folder relative to the workspace data root"),
    Column("n_rows", BigInteger, nullable=False),
    Column("n_positives", BigInteger, nullable=True, doc="label count, where there is a label"),
    Column("time_column", String(200), nullable=True),
    Column("time_min", DateTime, nullable=True),
    Column("time_max", DateTime, nullable=True),
    Column("schema", JSON, nullable=False, doc="[{name, type}] of the main table"),
    Column("partitions", JSON, nullable=False, doc="[{file, rows, sha256}]"),
    Column("params", JSON, nullable=False, doc="how the data set was produced"),
    Column("created_at", DateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    UniqueConstraint("name", "version", name="uq_dataset_version"),
)

feature_materializations = Table(
    "shipyard_feature_materializations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("view", String(200), nullable=False),
    Column("definition_hash", String(64), nullable=False),
    Column("dataset", String(200), nullable=False),
    Column("dataset_version", Integer, nullable=False),
    Column("dataset_hash", String(64), nullable=False),
    Column("path", Text, nullable=False, doc="Parquet file relative to the artifact root"),
    Column("sha256", String(64), nullable=False),
    Column("n_rows", BigInteger, nullable=False),
    Column("definition", JSON, nullable=False),
    Column("seconds", JSON, nullable=False, doc="wall time of the computation"),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("view", "definition_hash", "dataset_hash", name="uq_materialization"),
)
