"""One typed ``Settings`` object, read from ``shipyard.toml`` then ``SHIPYARD_*`` variables.

Precedence, lowest first: defaults, the workspace's ``shipyard.toml``, environment variables
named ``SHIPYARD_<SETTING>`` (``SHIPYARD_DATABASE_URL``, ``SHIPYARD_ARTIFACT_ROOT`` ...).
Unknown keys in either place are an error, with the closest known name suggested, so a
typo never silently falls back to a default.

Relative paths (and a relative SQLite path in ``database_url``) are resolved against the
workspace folder, so a workspace can be moved or checked out elsewhere.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shipyard.errors import ConfigError

SETTINGS_FILE = "shipyard.toml"
ENV_PREFIX = "SHIPYARD_"
# Variables with the prefix that are not settings: where to find the workspace itself.
ENV_NOT_SETTINGS = frozenset({"SHIPYARD_WORKSPACE", "SHIPYARD_SERVE_CONFIG"})


class Settings(BaseModel):
    """Every setting Shipyard reads, with its type and default.

    Example::

        >>> Settings(engine="local").database_url
        'sqlite:///.shipyard/metadata.db'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str = Field(
        default="sqlite:///.shipyard/metadata.db",
        description="SQLAlchemy URL of the metadata database (SQLite file or postgresql://...).",
    )
    artifact_root: str = Field(
        default=".shipyard/artifacts",
        description="Folder for models, materialized features and reports.",
    )
    data_root: str = Field(
        default=".shipyard/data",
        description="Folder for registered data sets (daily-partitioned Parquet).",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI; default: a SQLite store inside the workspace.",
    )
    engine: Literal["local", "ray"] = Field(
        default="local", description="Where work runs: in-process ('local') or on Ray."
    )
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster to connect to when engine = 'ray' ('HOST:PORT' of its head "
        "node); unset: start a local Ray for the process. Needs the 'ray' extra.",
    )
    ray_num_cpus: int | None = Field(
        default=None,
        ge=1,
        description="CPUs of the local Ray started when ray_address is unset (default: all).",
    )
    duckdb_memory_limit: str = Field(
        default="4GB", description="Memory DuckDB may use before it spills to disk."
    )
    duckdb_threads: int = Field(default=0, ge=0, description="DuckDB threads; 0 = one per core.")
    serving_admin_token: str | None = Field(
        default=None,
        description="Bearer token for serving admin routes; set it by environment, not in a file.",
    )
    serving_predict_token: str | None = Field(
        default=None, description="Bearer token required on prediction routes (none by default)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level of the log records Shipyard's processes write."
    )
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="Log records on stderr as JSON lines ('json') or plain lines ('text').",
    )
    serving_access_log: bool = Field(
        default=False,
        description="Log one JSON line per served request (request id, endpoint, version, arm, "
        "status, latency_ms).",
    )
    serving_tracing: Literal["off", "console", "otlp"] = Field(
        default="off",
        description="OpenTelemetry spans of each request: 'off', 'console' (JSON lines on "
        "stdout) or 'otlp' (OTLP/HTTP to serving_otlp_endpoint).",
    )
    serving_trace_sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of requests traced when serving_tracing is on (decided per request "
        "before any span is made; 0.01 keeps the cost of tracing at about 1% of its full cost).",
    )
    serving_otlp_endpoint: str = Field(
        default="http://127.0.0.1:4318/v1/traces",
        description="Where 'otlp' tracing sends spans (an OTLP/HTTP traces URL).",
    )
    serving_reject_stale_features: bool = Field(
        default=False,
        description="Refuse (503) a raw event whose delayed feature views (label-based, such "
        "as terminal risk) were not fed up to the event's time minus the delay, instead of "
        "scoring it flagged as stale.",
    )
    serving_refuse_long_text: bool = Field(
        default=False,
        description="Refuse (422, stating the count and the limit) a text over its model's "
        "token limit instead of scoring it truncated (the model keeps its first max_tokens - 2 "
        "word pieces) and flagged in the prediction log's truncated column and the x-truncated "
        "header.",
    )
    serving_model_threads: int | None = Field(
        default=None,
        ge=1,
        description="Intra-op threads of a text model (PyTorch or ONNX Runtime) in each "
        "serving worker; unset: the CPU count divided by the workers, at least 1. Tabular "
        "models score on one thread (workers scale by process).",
    )

    llm_max_running: int = Field(
        default=32,
        ge=1,
        description="Sequences a language model's engine decodes together (its KV pool holds "
        "this many slots of llm_max_context tokens, allocated at load).",
    )
    llm_max_waiting: int = Field(
        default=256,
        ge=0,
        description="Requests that may wait for a slot; past it, new requests are refused "
        "with 503 (a bounded queue, never an unbounded backlog).",
    )
    llm_max_context: int = Field(
        default=2048,
        ge=64,
        description="Tokens of prompt plus completion per sequence (a prompt that leaves no "
        "room is refused with the limit; max_tokens is cut to what fits, finish 'length').",
    )
    llm_prefix_cache_mb: int = Field(
        default=256,
        ge=0,
        description="Memory for cached prompt prefixes (keys and values of shared system "
        "prompts, reused by later requests); 0 turns prefix caching off.",
    )
    llm_semantic_cache: bool = Field(
        default=False,
        description="Answer a chat request from an earlier answer of the same model version "
        "to a prompt whose MiniLM embedding is at least llm_semantic_threshold similar "
        "(greedy requests only; never for sampled or structured ones).",
    )
    llm_semantic_threshold: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="Cosine similarity from which the semantic cache answers.",
    )

    online_store: Literal["sqlite", "redis"] = Field(
        default="sqlite",
        description="Where online feature state lives: 'sqlite' (a file in the workspace) or "
        "'redis' (at redis_url; needs the 'online' extra).",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis URL of the online store when online_store = 'redis'.",
    )
    monitor_webhook_token: str | None = Field(
        default=None,
        description="Bearer token sent to alert webhooks (Authorization header) when set; "
        "set it by environment, not in a file.",
    )
    monitor_webhook_timeout_s: float = Field(
        default=5.0,
        gt=0.0,
        description="Seconds an alert webhook may take to answer one try (3 tries per alert).",
    )

    @field_validator("artifact_root", "data_root")
    @classmethod
    def _local_folder(cls, value: str) -> str:
        """Artifacts and data live in folders (local or a shared mount), never at a URL: a
        URL would silently become a local folder named ``s3:``."""
        if "://" in value:
            raise ValueError(
                "expected a folder path (local, or a shared filesystem mounted at the same "
                "path on every machine); object-store URLs are not supported"
            )
        return value

    @classmethod
    def load(cls, root: Path, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``root/shipyard.toml`` and overlay ``SHIPYARD_*`` environment variables."""
        path = root / SETTINGS_FILE
        values: dict[str, Any] = {}
        if path.exists():
            try:
                values.update(tomllib.loads(path.read_text(encoding="utf-8")))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML ({exc})") from None
            _reject_unknown(values, where=str(path), style="key")
        env = dict(os.environ if environ is None else environ)
        from_env = {
            key[len(ENV_PREFIX) :].lower(): value
            for key, value in env.items()
            if key.startswith(ENV_PREFIX) and key not in ENV_NOT_SETTINGS
        }
        _reject_unknown(from_env, where="environment", style="env")
        values.update(from_env)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, path)) from None

    def to_toml(self) -> str:
        """Render the settings as the text of a ``shipyard.toml`` file, with descriptions."""
        lines = ["# Shipyard workspace settings. Environment variables SHIPYARD_<NAME> override."]
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            lines.append(f"# {field.description}")
            if value is None:
                lines.append(f"# {name} = ")
            elif isinstance(value, bool):  # TOML spells them in lower case
                lines.append(f"{name} = {str(value).lower()}")
            elif isinstance(value, str):
                lines.append(f"{name} = {_toml_string(value)}")
            else:
                lines.append(f"{name} = {value!r}")
        return "\n".join(lines) + "\n"


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _reject_unknown(values: Mapping[str, Any], where: str, style: str) -> None:
    known = list(Settings.model_fields)
    for key in values:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        shown = f"{ENV_PREFIX}{key.upper()}" if style == "env" else repr(key)
        raise ConfigError(
            f"Unknown setting {shown} in {where}.{hint} Known settings: {', '.join(known)}."
        )


def _describe(exc: ValidationError, path: Path) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"])
        parts.append(f"setting {field!r}: {error['msg']} (got {error.get('input')!r})")
    return f"Invalid settings ({path} and SHIPYARD_* variables): " + "; ".join(parts)
