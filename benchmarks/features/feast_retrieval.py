"""Feast's point-in-time retrieval over Shipyard's materialized feature files (one case).

Run by ``bench_features.py --feast PYTHON`` with the interpreter of an environment that has
``feast`` (never Shipyard's: Feast's pins would fight ours), so it imports no Shipyard code.
It builds a Feast repository in a temporary folder (local provider, ``file`` offline store,
one ``FileSource`` + ``FeatureView`` per Shipyard view over the same Parquet file, ttl of
100 years so that a feature row counts when its timestamp is at or before the event's),
applies it with ``FeatureStore.apply``, then times reading the events,
``get_historical_features(...).to_df()``, restoring the events' order and writing the result
to Parquet. Printed last, one JSON line: seconds, peak RSS (MiB) of this process, rows, and
the seconds the repository set-up and ``apply`` took (not in ``seconds``).

    python feast_retrieval.py SPEC.json EVENTS.parquet OUT.parquet

SPEC.json: ``[{"name", "entity", "timestamp", "path"}, ...]``, one per view; the features
of a view are the columns of its file other than entity and timestamp.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import measure  # noqa: E402  (no Shipyard import: stdlib only)

ROW = "EVENT_ROW"
"""Column added to the events to restore their order (Feast's result comes back sorted)."""
FEAST_TS = "event_timestamp"
TTL = timedelta(days=36_500)

YAML = """\
project: shipyard_bench
registry: {repo}/registry.db
provider: local
online_store:
  type: sqlite
  path: {repo}/online.db
offline_store:
  type: file
entity_key_serialization_version: 3
"""


def _feast_type(arrow_type: Any) -> Any:
    import pyarrow as pa
    from feast import types

    if pa.types.is_floating(arrow_type):
        return types.Float64
    if pa.types.is_int64(arrow_type):
        return types.Int64
    if pa.types.is_integer(arrow_type):
        return types.Int32
    raise TypeError(f"no Feast type for {arrow_type}")


def build_store(spec: list[dict[str, str]], repo: Path) -> tuple[Any, list[str]]:
    """Write and apply the Feast repository; return the store and the feature references."""
    import pyarrow.parquet as pq
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Int64

    (repo / "feature_store.yaml").write_text(YAML.format(repo=repo))
    store = FeatureStore(repo_path=str(repo))
    objects: list[Any] = []
    refs: list[str] = []
    for view in spec:
        entity = Entity(
            name=view["entity"].lower(), join_keys=[view["entity"]], value_type=ValueType.INT64
        )
        schema = pq.read_schema(view["path"])
        features = [
            Field(name=f.name, dtype=_feast_type(f.type))
            for f in schema
            if f.name not in (view["entity"], view["timestamp"])
        ]
        source = FileSource(
            name=f"{view['name']}_source", path=view["path"], timestamp_field=view["timestamp"]
        )
        objects += [
            entity,
            FeatureView(
                name=view["name"],
                entities=[entity],
                ttl=TTL,
                schema=[Field(name=view["entity"], dtype=Int64), *features],
                source=source,
                online=False,
            ),
        ]
        refs += [f"{view['name']}:{f.name}" for f in features]
    store.apply(objects)
    return store, refs


def main() -> None:
    spec_path, events_path, out_path = sys.argv[1:4]
    spec: list[dict[str, str]] = json.loads(Path(spec_path).read_text())
    timestamp = spec[0]["timestamp"]
    with tempfile.TemporaryDirectory(prefix="feast-repo-") as folder:
        started = time.perf_counter()
        store, refs = build_store(spec, Path(folder))
        setup_seconds = round(time.perf_counter() - started, 3)

        def retrieve() -> dict[str, Any]:
            import pandas as pd

            events = pd.read_parquet(events_path)
            columns = list(events.columns)
            events[ROW] = range(len(events))
            entity_df = events.rename(columns={timestamp: FEAST_TS})
            out = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
            out = out.sort_values(ROW).rename(columns={FEAST_TS: timestamp})
            if getattr(out[timestamp].dt, "tz", None) is not None:
                out[timestamp] = out[timestamp].dt.tz_convert(None)
            features = [r.split(":", 1)[1] for r in refs]
            out[[*columns, ROW, *features]].to_parquet(out_path, index=False)
            return {"rows": len(out), "setup_seconds": setup_seconds}

        measure(retrieve)


if __name__ == "__main__":
    main()
