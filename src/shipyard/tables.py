"""Shipyard's own metadata tables, all declared here so the whole schema is in one place.

MLflow keeps runs and model versions; these tables keep what MLflow lacks: data sets,
feature materializations, the freshness of the features written online, each model
version's lineage, files and schema, the hash-chained audit trail (registrations, alias
changes, promotions, gate results, rollbacks, traffic-policy changes, threshold changes,
prediction-log compactions: :mod:`shipyard.governance.audit`), the traffic policies of
endpoints and the monitored quantities of each endpoint per window (with the alert rules and
alerts raised on them), the guardrails of endpoints, online experiments, lifecycle
pipeline runs with their step cache, and language models' LoRA adapters, prompt versions
and evaluations. They live in the workspace's database: SQLite by
default, any SQLAlchemy URL (PostgreSQL) by setting. ``Workspace.init`` creates them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

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

online_freshness = Table(
    "shipyard_online_freshness",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("view", String(200), nullable=False),
    Column("definition_hash", String(64), nullable=False),
    Column("dataset", String(200), nullable=False),
    Column("dataset_version", Integer, nullable=False),
    Column("dataset_hash", String(64), nullable=False),
    Column("as_of", DateTime, nullable=True, doc="the cutoff asked for (None: end of the data)"),
    Column(
        "newest_row_at",
        DateTime,
        nullable=True,
        doc="time of the newest event fed online (fed until): the watermark of the next run",
    ),
    Column("rows_written", BigInteger, nullable=False, doc="entities whose state the run wrote"),
    Column("entities", BigInteger, nullable=False, doc="entities with state online"),
    Column("incremental", Boolean, nullable=False, doc="only events past the watermark fed"),
    Column("seconds", Float, nullable=False),
    Column("run_at", DateTime, nullable=False),
)

model_versions = Table(
    "shipyard_model_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False, doc="the MLflow registered model version"),
    Column("run_id", String(64), nullable=False),
    Column("model_type", String(100), nullable=False),
    Column("framework", String(50), nullable=False),
    Column("params", JSON, nullable=False),
    Column("native_path", Text, nullable=False, doc="native model file, relative to artifact root"),
    Column("native_sha256", String(64), nullable=False),
    Column("input_schema", JSON, nullable=False),
    Column("output_schema", JSON, nullable=False),
    Column(
        "lineage",
        JSON,
        nullable=False,
        doc="Lineage.to_dict(): data set, views and hashes, protocol, windows, column roles",
    ),
    Column("dataset", String(200), nullable=False),
    Column("dataset_version", Integer, nullable=False),
    Column("dataset_hash", String(64), nullable=False),
    Column("features_hash", String(64), nullable=False),
    Column("features_ref", Text, nullable=False, doc="module:attribute of the feature views"),
    Column("train_window", JSON, nullable=False, doc="Window.to_dict() of the training days"),
    Column("eval_window", JSON, nullable=False, doc="out-of-time window the gate compares on"),
    Column("metrics", JSON, nullable=False),
    Column(
        "card_path", Text, nullable=False, doc="model card (Markdown), relative to artifact root"
    ),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("name", "version", name="uq_model_version"),
)

registry_events = Table(
    "shipyard_registry_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sequence", BigInteger, nullable=False, doc="1, 2, 3 ... contiguous: the trail's order"),
    Column("kind", String(50), nullable=False, doc="what the entry is about: model, endpoint ..."),
    Column("name", String(200), nullable=False, doc="the subject: model or endpoint name"),
    Column("version", Integer, nullable=True),
    Column(
        "action",
        String(50),
        nullable=False,
        doc="register, promote, refuse, rollback, gate, policy.set, threshold, logs.compact ...",
    ),
    Column("alias", String(100), nullable=True),
    Column("previous_version", Integer, nullable=True),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("details", JSON, nullable=False),
    Column("before", JSON, nullable=True, doc="the state the action changed, as it was"),
    Column("after", JSON, nullable=True, doc="the state the action left"),
    Column("at", DateTime, nullable=False),
    Column("previous_hash", String(64), nullable=False, doc="hash of entry sequence - 1"),
    Column("hash", String(64), nullable=False, doc="SHA-256 of this entry's canonical JSON"),
    UniqueConstraint("sequence", name="uq_audit_sequence"),
)

traffic_policies = Table(
    "shipyard_traffic_policies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("endpoint", String(200), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("model", String(200), nullable=False),
    Column("arms", JSON, nullable=False, doc="[{version, weight}]"),
    Column("shadows", JSON, nullable=False, doc="[version]"),
    Column("sticky_key", String(200), nullable=True),
    Column("salt", String(200), nullable=True, doc="hashed with the routing key (experiments)"),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("endpoint", "revision", name="uq_policy_revision"),
)


monitor_points = Table(
    "shipyard_monitor_points",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("endpoint", String(200), nullable=False),
    Column("group", String(200), nullable=False, doc="'fraud v3', 'fraud v3 (shadow)'"),
    Column("metric", String(300), nullable=False, doc="'drift.distance.TX_AMOUNT'"),
    Column("window_start", DateTime, nullable=False, doc="UTC, inclusive"),
    Column("window_end", DateTime, nullable=False, doc="UTC, exclusive"),
    Column("value", Float, nullable=True, doc="NULL: insufficient data"),
    Column("low", Float, nullable=True),
    Column("high", Float, nullable=True),
    Column("n", BigInteger, nullable=True, doc="rows behind the value"),
    Column("run_id", String(64), nullable=False),
    Column("computed_at", DateTime, nullable=False),
    UniqueConstraint(
        "endpoint", "group", "metric", "window_start", "window_end", name="uq_monitor_point"
    ),
)

alert_rules = Table(
    "shipyard_alert_rules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("endpoint", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("metric", String(300), nullable=False, doc="a name, or a prefix ending in '*'"),
    Column("op", String(2), nullable=False, doc="'>', '>=', '<', '<='"),
    Column("threshold", Float, nullable=False),
    Column("windows", Integer, nullable=False, doc="consecutive windows that must all breach"),
    Column("group", String(200), nullable=True, doc="NULL: every group"),
    Column("webhook", Text, nullable=True, doc="http(s) URL the alerts are posted to"),
    Column("description", Text, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("endpoint", "name", name="uq_alert_rule"),
)

alerts = Table(
    "shipyard_alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("endpoint", String(200), nullable=False),
    Column("rule", String(200), nullable=False),
    Column("group", String(200), nullable=False),
    Column("metric", String(300), nullable=False),
    Column("op", String(2), nullable=False),
    Column("threshold", Float, nullable=False),
    Column("windows", Integer, nullable=False),
    Column("webhook", Text, nullable=True, doc="where its events are posted"),
    Column("status", String(20), nullable=False, doc="open, acknowledged, resolved"),
    Column(
        "active_key",
        String(1000),
        nullable=True,
        unique=True,
        doc="endpoint/rule/group/metric while open or acknowledged, NULL once resolved: "
        "at most one active alert per series, even with concurrent evaluations",
    ),
    Column("breaches", JSON, nullable=False, doc="[{window_start, window_end, value}]"),
    Column("first_window_start", DateTime, nullable=False),
    Column("last_window_end", DateTime, nullable=False),
    Column("raised_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("resolved_at", DateTime, nullable=True),
    Column("acknowledged_by", String(200), nullable=True),
    Column("acknowledged_at", DateTime, nullable=True),
    Column("note", Text, nullable=False),
    Column("delivery", Text, nullable=True, doc="webhook delivery of the latest event"),
)

experiments = Table(
    "shipyard_experiments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("endpoint", String(200), nullable=False),
    Column("status", String(20), nullable=False, doc="running, stopped"),
    Column("spec", JSON, nullable=False, doc="arms, salt, metric, guardrails, alpha, method"),
    Column("result", JSON, nullable=True, doc="the decision and statistics when stopped"),
    Column("active_key", String(200), nullable=True, unique=True,
           doc="the endpoint while running, NULL once stopped: one running experiment per "
           "endpoint, even with concurrent starts"),
    Column("started_at", DateTime, nullable=False),
    Column("started_by", String(200), nullable=False),
    Column("stopped_at", DateTime, nullable=True),
    Column("stopped_by", String(200), nullable=True),
    Column("reason", Text, nullable=False, doc="why it started, then why it stopped"),
    UniqueConstraint("name", name="uq_experiment_name"),
)  # fmt: skip

guardrails = Table(
    "shipyard_guardrails",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("endpoint", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("spec", JSON, nullable=False, doc="metric, op, threshold, counts, action"),
    Column("enabled", Boolean, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("endpoint", "name", name="uq_guardrail"),
)

pipeline_runs = Table(
    "shipyard_pipeline_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, unique=True),
    Column("pipeline", String(300), nullable=False),
    Column("status", String(20), nullable=False, doc="running, succeeded, failed, waiting"),
    Column("trigger", JSON, nullable=False, doc="{kind: schedule|alert|command, detail}"),
    Column("graph", JSON, nullable=False, doc="steps, their inputs and parameters"),
    Column("state", JSON, nullable=False, doc="per step: status, input hash, outputs, times"),
    Column("error", Text, nullable=True),
    Column("active_key", String(300), nullable=True, unique=True,
           doc="the pipeline while the run is unfinished, NULL after: never two at once"),
    Column("started_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("finished_at", DateTime, nullable=True),
    Column("actor", String(200), nullable=False),
)  # fmt: skip

step_cache = Table(
    "shipyard_step_cache",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pipeline", String(300), nullable=False),
    Column("step", String(200), nullable=False),
    Column("input_hash", String(64), nullable=False),
    Column("outputs", JSON, nullable=False),
    Column("run_id", String(64), nullable=False, doc="the run that computed it"),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("pipeline", "step", "input_hash", name="uq_step_cache"),
)


llm_adapters = Table(
    "shipyard_llm_adapters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False, doc="the registered base model's name"),
    Column("base_version", Integer, nullable=False, doc="the version the adapter was trained on"),
    Column("base_sha256", String(64), nullable=False, doc="SHA-256 of the base GGUF file"),
    Column("adapter", String(200), nullable=False, doc="its name in requests: model:adapter"),
    Column("version", Integer, nullable=False, doc="1, 2, 3 ... per (model, adapter)"),
    Column("task", String(200), nullable=False),
    Column("path", Text, nullable=False, doc="adapter file, relative to the artifact root"),
    Column("sha256", String(64), nullable=False),
    Column("run_id", String(64), nullable=False, doc="the MLflow run that trained it"),
    Column("params", JSON, nullable=False, doc="rank, alpha, targets, epochs, learning rate ..."),
    Column("metrics", JSON, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("model", "adapter", "version", name="uq_llm_adapter_version"),
)

llm_prompts = Table(
    "shipyard_llm_prompts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False, doc="1, 2, 3 ... per name"),
    Column("messages", JSON, nullable=False, doc="[{role, content}] with {variable} fields"),
    Column("variables", JSON, nullable=False, doc="{name: {type, required, description}}"),
    Column("eval_set", String(200), nullable=True, doc="the catalog data set it is judged on"),
    Column("description", Text, nullable=False),
    Column("sha256", String(64), nullable=False, doc="of the canonical template"),
    Column("actor", String(200), nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("name", "version", name="uq_llm_prompt_version"),
)

llm_prompt_aliases = Table(
    "shipyard_llm_prompt_aliases",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("alias", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("name", "alias", name="uq_llm_prompt_alias"),
)

llm_evaluations = Table(
    "shipyard_llm_evaluations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject", String(20), nullable=False, doc="prompt, adapter or model"),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("eval_set", String(200), nullable=False),
    Column("eval_set_version", Integer, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("metrics", JSON, nullable=False, doc="{metric: {value, low, high}} (95% bootstrap)"),
    Column("run_id", String(64), nullable=True, doc="the MLflow run it was logged to"),
    Column("actor", String(200), nullable=False),
    Column("created_at", DateTime, nullable=False),
)


def latest_row(
    engine: Engine,
    table: Table,
    key: tuple[str, object],
    version: tuple[str, int | None],
) -> dict[str, Any] | None:
    """The row of ``table`` whose ``key`` column equals the value, at the given version
    (the highest version when it is None); None if there is no such row."""
    from sqlalchemy import select

    key_column, key_value = key
    version_column, version_value = version
    query = select(table).where(table.c[key_column] == key_value)
    if version_value is not None:
        query = query.where(table.c[version_column] == version_value)
    query = query.order_by(table.c[version_column].desc()).limit(1)
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)
