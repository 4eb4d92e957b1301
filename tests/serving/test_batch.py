"""Batch scoring on real components: a registered LightGBM model, real Parquet, both engines."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from shipyard.data.catalog import Dataset
from shipyard.engines import LocalEngine
from shipyard.engines.ray import RayEngine
from shipyard.errors import (
    ConfigError,
    DatasetNotFoundError,
    DataValidationError,
    IntegrityError,
    ModelNotFoundError,
    ParameterError,
    SchemaError,
)
from shipyard.registry.models import ModelRegistry, ModelVersion
from shipyard.serving.batch import (
    MANIFEST,
    ScoringTask,
    read_manifest,
    score_dataset,
    score_partition,
)
from shipyard.training.frames import Window, load_frame
from shipyard.workspace import Workspace
from tests.conftest import small_fraud_models


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Dataset]]:
    """A small fraud workspace whose LightGBM champion is fraud v1."""
    ws, dataset = small_fraud_models(tmp_path_factory.mktemp("batch") / "ws")
    yield ws, dataset
    ws.close()


@pytest.fixture(scope="module")
def champion(scored: tuple[Workspace, Dataset]) -> ModelVersion:
    return ModelRegistry(scored[0]).get("fraud", "champion")


@pytest.fixture(scope="module")
def expected(scored: tuple[Workspace, Dataset], champion: ModelVersion) -> pd.DataFrame:
    """Every row with its features (point-in-time) and the champion's score, via the registry."""
    ws, dataset = scored
    window = Window(
        dataset.name, dataset.version, "2018-01-01", "2019-12-31", champion.features_ref
    )
    frame = load_frame(ws, window)
    predictor = ModelRegistry(ws).load("fraud", "champion")
    frame["expected"] = predictor.predict(frame[champion.input_schema.names].to_numpy("float64"))
    return frame


@pytest.fixture(scope="module")
def features_file(expected: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rows with their features as one Parquet file of many small row groups."""
    path = tmp_path_factory.mktemp("features") / "features.parquet"
    expected.drop(columns="expected").to_parquet(path, row_group_size=4000, index=False)
    return path


def _parts(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("part-*.parquet"))}


def test_a_registered_data_set_is_scored_once_per_row_with_features_from_its_views(
    scored: tuple[Workspace, Dataset], expected: pd.DataFrame, tmp_path: Path
) -> None:
    ws, dataset = scored
    seen: list[tuple[int, int]] = []
    result = score_dataset(
        ws,
        "fraud@champion",
        "fraud",
        tmp_path / "out",
        engine=LocalEngine(),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert result.partitions == len(dataset.partitions)
    # progress in partitions, one call per engine task (runs of partitions share one join)
    assert seen == sorted(seen) and seen[-1] == (result.partitions, result.partitions)
    assert 1 < len(seen) == result.tasks < result.partitions
    assert result.rows == dataset.n_rows
    out = pd.read_parquet(tmp_path / "out")
    assert list(out.columns) == ["TRANSACTION_ID", "TX_DATETIME", "score", "model_version"]
    assert out["TRANSACTION_ID"].is_unique and len(out) == dataset.n_rows
    merged = out.merge(expected, on="TRANSACTION_ID")
    assert len(merged) == len(expected)
    np.testing.assert_array_equal(merged["score"].to_numpy(), merged["expected"].to_numpy())
    assert set(out["model_version"]) == {result.version}
    # one part per input partition, the manifest names the model by hash and every part's rows
    manifest = read_manifest(tmp_path / "out")
    assert manifest["sha256"] == result.sha256 and manifest["version"] == result.version
    assert manifest["data"] == f"fraud@{dataset.version}" and manifest["engine"] == "local"
    assert [p["rows"] for p in manifest["parts"]] == [p.rows for p in dataset.partitions]
    assert sorted(_parts(tmp_path / "out")) == [p["file"] for p in manifest["parts"]]
    assert result.loads_per_worker == {os.getpid(): 1} or set(result.loads_per_worker.values()) == {
        1
    }  # this process may have loaded it in an earlier test: still once
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_parquet_file_holding_the_features_is_split_by_row_groups(
    scored: tuple[Workspace, Dataset], expected: pd.DataFrame, features_file: Path, tmp_path: Path
) -> None:
    ws, _ = scored
    result = score_dataset(
        ws,
        "fraud@1",
        str(features_file),
        tmp_path / "out",
        engine=LocalEngine(),
        partition_rows=10_000,
    )
    groups = pq.ParquetFile(features_file).metadata.num_row_groups
    assert 1 < result.partitions < groups  # whole row groups, grouped to >= 10,000 rows
    out = pd.read_parquet(tmp_path / "out")
    assert out["TRANSACTION_ID"].tolist() == expected["TRANSACTION_ID"].tolist()
    np.testing.assert_array_equal(out["score"].to_numpy(), expected["expected"].to_numpy())


def test_the_model_is_loaded_once_per_process_and_again_when_its_file_changes(
    scored: tuple[Workspace, Dataset], champion: ModelVersion, features_file: Path, tmp_path: Path
) -> None:
    ws, _ = scored
    first = score_dataset(ws, "fraud", str(features_file), tmp_path / "a", engine=LocalEngine())
    again = score_dataset(ws, "fraud", str(features_file), tmp_path / "b", engine=LocalEngine())
    assert first.loads_per_worker == again.loads_per_worker  # cached: no second load
    os.utime(champion.native_path)  # same bytes, touched: loaded (and verified) again
    touched = score_dataset(ws, "fraud", str(features_file), tmp_path / "c", engine=LocalEngine())
    assert touched.loads_per_worker[os.getpid()] == first.loads_per_worker[os.getpid()] + 1
    assert _parts(tmp_path / "a") == _parts(tmp_path / "c")


def test_a_tampered_model_is_refused_before_and_inside_a_task(
    scored: tuple[Workspace, Dataset], champion: ModelVersion, features_file: Path, tmp_path: Path
) -> None:
    ws, _ = scored
    original = champion.native_path.read_bytes()
    try:
        champion.native_path.write_bytes(original + b"\n")
        with pytest.raises(IntegrityError, match="does not match"):
            score_dataset(ws, "fraud@champion", str(features_file), tmp_path / "out")
        assert not (tmp_path / "out").exists()
        task = _task(champion, features_file, tmp_path)
        with pytest.raises(IntegrityError, match="does not match") as caught:
            LocalEngine().map(score_partition, [task], label="partition")
        assert "partition 0 of 1 on the local engine" in str(caught.value.__notes__)
    finally:
        champion.native_path.write_bytes(original)


def _task(version: ModelVersion, source: Path, out: Path, index: int = 0) -> ScoringTask:
    return ScoringTask(
        index=index,
        source=str(source),
        row_groups=None,
        sha256=None,
        out_dir=str(out),
        model=version.name,
        version=version.version,
        framework=version.framework,
        native_path=str(version.native_path),
        native_sha256=version.native_sha256,
        features=tuple(version.input_schema.names),
        keep=("TRANSACTION_ID",),
    )


def test_data_without_the_model_columns_or_with_a_wrong_type_is_a_schema_error(
    scored: tuple[Workspace, Dataset],
    expected: pd.DataFrame,
    champion: ModelVersion,
    tmp_path: Path,
) -> None:
    ws, _ = scored
    feature = champion.input_schema.names[-1]
    lacking = tmp_path / "lacking.parquet"
    expected.drop(columns=[feature, "expected"]).head(100).to_parquet(lacking)
    with pytest.raises(SchemaError, match=f"lacks the model's input column.*{feature}") as caught:
        score_dataset(ws, "fraud@champion", str(lacking), tmp_path / "out")
    assert "The model expects" in str(caught.value) and "the data holds" in str(caught.value)
    typed = tmp_path / "typed.parquet"
    frame = expected.drop(columns="expected").head(100)
    frame[feature] = frame[feature].astype(str)
    frame.to_parquet(typed)
    with pytest.raises(SchemaError, match=f"numeric .*{feature} \\((large_)?string\\)"):
        score_dataset(ws, "fraud@champion", str(typed), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_models_data_sets_and_a_used_output_folder_are_clear_errors(
    scored: tuple[Workspace, Dataset], features_file: Path, tmp_path: Path
) -> None:
    ws, _ = scored
    out = tmp_path / "out"
    with pytest.raises(ModelNotFoundError, match="no alias 'gold'"):
        score_dataset(ws, "fraud@gold", "fraud", out)
    with pytest.raises(ModelNotFoundError, match="No registered model 'nope'"):
        score_dataset(ws, "nope@3", "fraud", out)
    with pytest.raises(DatasetNotFoundError, match=r"No data set 'missing'.*Registered: fraud"):
        score_dataset(ws, "fraud@champion", "missing", out)
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ParameterError, match=r"exists and is not empty.*--overwrite"):
        score_dataset(ws, "fraud", str(features_file), out)
    with pytest.raises(ParameterError, match="not a scoring output"):
        score_dataset(ws, "fraud", str(features_file), out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    score_dataset(ws, "fraud", str(features_file), out, engine=LocalEngine())
    replaced = score_dataset(ws, "fraud", str(features_file), out, overwrite=True)
    assert json.loads((out / MANIFEST).read_text())["rows"] == replaced.rows


def test_a_retried_task_rewrites_its_own_part(
    champion: ModelVersion, features_file: Path, tmp_path: Path
) -> None:
    task = dataclasses.replace(_task(champion, features_file, tmp_path), index=3)
    first = score_partition(task)
    before = (tmp_path / "part-00003.parquet").read_bytes()
    second = score_partition(task)
    assert first.rows == second.rows and [p.name for p in tmp_path.iterdir()] == [
        "part-00003.parquet"
    ]
    assert (tmp_path / "part-00003.parquet").read_bytes() == before


def test_a_partition_that_does_not_match_its_recorded_hash_is_not_scored(
    champion: ModelVersion, features_file: Path, tmp_path: Path
) -> None:
    task = dataclasses.replace(_task(champion, features_file, tmp_path), sha256="0" * 64)
    with pytest.raises(IntegrityError, match=f"Refusing to load {features_file}"):
        score_partition(task)
    assert not list(tmp_path.iterdir())


def test_a_missing_path_is_named_and_an_empty_file_scores_to_an_empty_part(
    scored: tuple[Workspace, Dataset], expected: pd.DataFrame, tmp_path: Path
) -> None:
    ws, _ = scored
    with pytest.raises(DataValidationError, match=r"'nowhere/x\.parquet' is neither a Parquet"):
        score_dataset(ws, "fraud", "nowhere/x.parquet", tmp_path / "out")
    empty = tmp_path / "empty.parquet"
    expected.drop(columns="expected").head(0).to_parquet(empty)
    result = score_dataset(ws, "fraud", str(empty), tmp_path / "out", engine=LocalEngine())
    assert result.rows == 0 and result.partitions == 1
    assert pd.read_parquet(tmp_path / "out").columns.tolist()[-2:] == ["score", "model_version"]


# -- the Ray engine -------------------------------------------------------------------------


def test_ray_and_local_outputs_are_identical_byte_for_byte(
    scored: tuple[Workspace, Dataset], features_file: Path, ray_engine: RayEngine, tmp_path: Path
) -> None:
    ws, _ = scored
    local = score_dataset(
        ws,
        "fraud",
        str(features_file),
        tmp_path / "local",
        engine=LocalEngine(),
        partition_rows=4000,
    )
    ray = score_dataset(
        ws, "fraud", str(features_file), tmp_path / "ray", engine=ray_engine, partition_rows=4000
    )
    assert ray.engine == "ray" and ray.rows == local.rows and ray.partitions == local.partitions > 1
    assert _parts(tmp_path / "local") == _parts(tmp_path / "ray")
    assert read_manifest(tmp_path / "ray")["engine"] == "ray"
    # each Ray worker process loaded the model once, however many partitions it scored
    assert ray.loads_per_worker and set(ray.loads_per_worker.values()) == {1}
    assert os.getpid() not in ray.loads_per_worker


@pytest.mark.slow
def test_a_data_set_scored_on_ray_with_features_from_its_views_matches_local_bytes(
    scored: tuple[Workspace, Dataset], ray_engine: RayEngine, tmp_path: Path
) -> None:
    ws, dataset = scored
    local = score_dataset(ws, "fraud@champion", "fraud", tmp_path / "local", engine=LocalEngine())
    ray = score_dataset(ws, "fraud@champion", "fraud", tmp_path / "ray", engine=ray_engine)
    assert ray.rows == local.rows == dataset.n_rows
    assert ray.partitions == local.partitions == len(dataset.partitions)
    assert _parts(tmp_path / "local") == _parts(tmp_path / "ray")
    assert set(ray.loads_per_worker.values()) == {1}


class _KillOnce:
    """The Ray engine with one partition whose first attempt waits to be killed: it writes
    its worker's pid to ``marker`` and sleeps; the test SIGKILLs that process from outside."""

    name = "ray"

    def __init__(self, inner: RayEngine, marker: Path, victim: int) -> None:
        self.inner = inner
        self.marker = marker
        self.victim = victim

    @property
    def parallelism(self) -> int:
        return self.inner.parallelism

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], **options: Any) -> list[Any]:
        marker, victim = str(self.marker), self.victim

        def run(task: Any) -> Any:  # a run of partitions, pickled by value into the workers
            import os
            import time

            if any(t.index == victim for t in task) and not os.path.exists(marker):
                with open(marker + ".tmp", "w") as fh:
                    fh.write(str(os.getpid()))
                os.replace(marker + ".tmp", marker)
                time.sleep(300)  # killed long before
            return fn(task)

        return self.inner.map(run, items, **options)


@pytest.mark.slow
def test_a_worker_killed_while_scoring_is_retried_and_every_row_is_written_once(
    scored: tuple[Workspace, Dataset], features_file: Path, ray_engine: RayEngine, tmp_path: Path
) -> None:
    ws, _ = scored
    marker = tmp_path / "victim.pid"
    engine = _KillOnce(ray_engine, marker, victim=3)
    outcome: dict[str, Any] = {}

    def score() -> None:
        try:
            outcome["result"] = score_dataset(
                ws,
                "fraud",
                str(features_file),
                tmp_path / "ray",
                engine=engine,
                partition_rows=2000,
            )
        except BaseException as exc:  # re-raised below, in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=score)
    thread.start()
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    assert marker.exists(), outcome.get("error")
    victim = int(marker.read_text())
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    result = outcome["result"]
    parts = read_manifest(tmp_path / "ray")["parts"]
    assert parts[3]["pid"] != victim  # the killed attempt never came back; a retry wrote it
    local = score_dataset(
        ws,
        "fraud",
        str(features_file),
        tmp_path / "local",
        engine=LocalEngine(),
        partition_rows=2000,
    )
    assert result.partitions == local.partitions > 3
    out = pd.read_parquet(tmp_path / "ray")
    assert out["TRANSACTION_ID"].is_unique and len(out) == result.rows == local.rows
    assert _parts(tmp_path / "ray") == _parts(tmp_path / "local")
    assert not list((tmp_path / "ray").glob(".*"))  # no temporary part left behind


def test_a_tampered_model_is_refused_in_a_ray_worker(
    champion: ModelVersion, features_file: Path, ray_engine: RayEngine, tmp_path: Path
) -> None:
    task = dataclasses.replace(_task(champion, features_file, tmp_path), native_sha256="0" * 64)
    with pytest.raises(IntegrityError, match="does not match") as caught:
        ray_engine.map(score_partition, [task], label="partition")
    assert "partition 0 of 1 on the ray engine" in str(caught.value.__notes__)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_ray_worker_without_the_model_framework_names_the_package_and_the_fix(
    champion: ModelVersion, features_file: Path, ray_engine: RayEngine, tmp_path: Path
) -> None:
    import ray

    from shipyard.engines.ray import _call

    # a worker whose PYTHONPATH puts a lightgbm that cannot be imported first: a cluster
    # node where the model's framework is not installed
    broken = tmp_path / "site" / "lightgbm"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text(
        "raise ImportError('No module named lightgbm', name='lightgbm')\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    remote = ray.remote(_call).options(
        runtime_env={"env_vars": {"PYTHONPATH": str(tmp_path / "site")}}, max_retries=0
    )
    ok, error, _ = ray.get(remote.remote(score_partition, _task(champion, features_file, out)))
    assert not ok and isinstance(error, ConfigError)
    assert "cannot import 'lightgbm'" in str(error)
    assert "pip install 'shipyard[train]'" in str(error)
    assert not list(out.iterdir())
