"""``optimize`` on a registered text classifier: new versions with reports, or refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shipyard.data.catalog import write_dataset
from shipyard.errors import ParameterError
from shipyard.optimize import Outcome, Settings, optimize
from shipyard.optimize.runner import check_request
from shipyard.registry.models import ModelRegistry, ModelVersion
from shipyard.registry.tracking import Tracker
from shipyard.types import ColumnRoles, Lineage
from shipyard.workspace import Workspace

NAME = "sentiment"
QUICK = Settings(requests=8, batches=1, n_boot=100, calibration_rows=16, sparsity=0.95)


@pytest.fixture(scope="module")
def registered(
    tmp_path_factory: pytest.TempPathFactory, reviews: pd.DataFrame, small_text_model: object
) -> Iterator[Workspace]:
    """A workspace with the reviews as a data set and the small classifier as sentiment v1."""
    from shipyard.training.text import evaluate_texts

    ws = Workspace.init(tmp_path_factory.mktemp("optimize") / "ws")
    dataset = write_dataset(ws, "reviews", reviews, time_column=None, label_column="label")
    lineage = Lineage(
        dataset=dataset.name,
        dataset_version=dataset.version,
        dataset_hash=dataset.content_hash,
        views="",
        view_hashes={},
        features_hash="",
        columns=ColumnRoles(label="label", time="", entity="movie_name"),
        protocol="split column: train / validation / test",
    )
    test = reviews[reviews["split"] == "test"]
    classifier = small_text_model.estimator  # type: ignore[attr-defined]
    evaluation = evaluate_texts(
        classifier, test["text"].tolist(), test["label"].to_numpy(), n_boot=50
    )
    tracker = Tracker(ws)
    run_id = tracker.client.create_run(tracker.experiment_id("sentiment")).info.run_id
    ModelRegistry(ws).register(
        NAME,
        small_text_model,  # type: ignore[arg-type]
        lineage=lineage,
        evaluation=evaluation,
        run_id=run_id,
        sample=test[["text"]].head(20),
    )
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def exported(registered: Workspace, tmp_path_factory: pytest.TempPathFactory) -> object:
    """Sentiment v1 optimized to a generous latency target by dynamic or static int8 (the
    budget is wide: these tests are about plumbing, and int8 arithmetic differs a little
    between CPUs), with the report written to a folder."""
    out = tmp_path_factory.mktemp("report")
    result = optimize(
        registered,
        NAME,
        1,
        transforms=["static-int8", "dynamic-int8"],
        target_latency_ms=1e6,
        accuracy_budget=0.5,
        settings=QUICK,
        out=out,
    )
    return result, out


def test_dynamic_int8_is_registered_with_a_complete_report(
    registered: Workspace, exported: tuple[object, Path], reviews: pd.DataFrame
) -> None:
    result, out = exported
    report = result.report("dynamic-int8")  # type: ignore[attr-defined]
    assert report.outcome is Outcome.REGISTERED, report.reason
    assert report.size_bytes < result.original.size_bytes / 2  # type: ignore[attr-defined]
    assert [t.threads for t in report.timings] == [1, 2]
    assert all(
        t.p50_ms > 0 and t.p99_ms >= t.p50_ms and t.reviews_per_s > 0 for t in report.timings
    )
    for parity in (report.test, report.validation):
        assert parity.rows == 60 and 0 < parity.max_abs_diff < 0.5
        change = parity.accuracy_change
        assert change.low <= change.estimate <= change.high
    document = json.loads((out / "report.json").read_text())
    saved = next(t for t in document["transforms"] if t["transform"] == "dynamic-int8")
    assert saved["version"] == report.version and saved["outcome"] == "registered"
    assert "dynamic-int8: registered" in (out / "report.md").read_text()

    registry = ModelRegistry(registered)
    version = registry.get(NAME, report.version)
    assert (version.framework, version.model_type) == ("onnx-text", "optimized-text")
    assert version.params["source_version"] == 1 and version.params["transform"] == "dynamic-int8"
    assert version.lineage == registry.get(NAME, 1).lineage
    test = reviews[reviews["split"] == "test"]
    batch = np.array([[t] for t in test["text"]], dtype=object)
    loaded = registry.load(NAME, report.version).predict(batch)
    original = registry.load(NAME, 1).predict(batch)
    # the registered file, loaded by hash, scores exactly what the report measured
    assert float(np.max(np.abs(loaded - original))) == pytest.approx(
        report.test.max_abs_diff, abs=1e-6
    )
    card = version.card_path.read_text()
    assert "## Optimization" in card and "Optimized from v1 by dynamic-int8" in card
    registered_by = [e for e in registry.history(NAME) if e.version == report.version]
    assert registered_by[0].reason == "optimized from v1 by dynamic-int8"
    run = registry.tracker.client.get_run(report.run_id)
    assert run.data.metrics["p50_ms_1t"] == pytest.approx(report.timing(1).p50_ms)
    assert run.data.tags["shipyard.outcome"] == "registered"


def test_a_latency_target_stops_at_the_first_transform_that_meets_it(
    registered: Workspace, exported: tuple[object, Path]
) -> None:
    result, out = exported
    assert result.chosen == "dynamic-int8"  # type: ignore[attr-defined]
    assert [(r.transform, r.outcome) for r in result.reports] == [  # type: ignore[attr-defined]
        ("dynamic-int8", Outcome.REGISTERED),
        ("static-int8", Outcome.SKIPPED),
    ]
    skipped = result.report("static-int8")  # type: ignore[attr-defined]
    assert "dynamic-int8 already met the latency target" in skipped.reason
    assert skipped.version is None and not skipped.timings
    assert "**dynamic-int8** is the first to meet it" in (out / "report.md").read_text()
    versions = ModelRegistry(registered).versions(NAME)
    assert not any(v.params.get("transform") == "static-int8" for v in versions)


def _version(framework: str) -> ModelVersion:
    lineage = Lineage("d", 1, "h", "", {}, "", ColumnRoles("label", "", ""))
    return ModelVersion(
        "fraud",
        2,
        "run",
        "lightgbm",
        framework,
        {},
        Path("m"),
        "0" * 64,
        None,
        lineage,
        {},
        Path("c"),
        pd.Timestamp(0).to_pydatetime(),  # type: ignore[arg-type]
    )


def test_tree_models_and_unknown_transforms_are_refused_with_what_applies() -> None:
    with pytest.raises(ParameterError, match="tree models keep their compiled backend") as info:
        check_request(_version("lightgbm"), None, None, 0.01)
    assert "torch-text: onnx, dynamic-int8, static-int8, prune, distill" in str(info.value)
    optimized = replace(_version("onnx-text"), params={"source_version": 1, "transform": "onnx"})
    with pytest.raises(ParameterError, match=r"already optimized \(from v1 by onnx\)"):
        check_request(optimized, None, None, 0.01)
    with pytest.raises(ParameterError, match="Unknown transform 'fp16'; known transforms: onnx"):
        check_request(_version("torch-text"), ["fp16"], None, 0.01)
    with pytest.raises(ParameterError, match="'target_latency_ms' parameter of optimize"):
        check_request(_version("torch-text"), None, -5.0, 0.01)
    order = check_request(_version("torch-text"), ["distill", "onnx", "prune"], None, 0.01)
    assert order == ("onnx", "prune", "distill")
    with pytest.raises(ParameterError, match="'requests' parameter of Settings must be an int"):
        Settings(requests=0)


def test_cli_registers_an_exact_onnx_export_and_refuses_pruning_beyond_the_budget(
    registered: Workspace, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from shipyard.cli.main import cli

    registry = ModelRegistry(registered)
    before = len(registry.versions(NAME))
    args = ["--workspace", str(registered.root), "optimize", f"{NAME}@1"]
    done = CliRunner().invoke(
        cli,
        [*args, "--transform", "prune", "--transform", "onnx", "--sparsity", "0.95",
         "--accuracy-budget", "-1", "--requests", "5", "--batches", "1", "--out", str(tmp_path)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())
    assert "Optimization of sentiment v1 (torch-text)" in said
    assert "prune: refused" in said and "beyond the budget of -1.000" in said
    assert "onnx: registered" in said  # exact: the accuracy budget does not apply
    onnx, prune = json.loads((tmp_path / "report.json").read_text())["transforms"]
    assert onnx["transform"] == "onnx" and onnx["test"]["max_abs_diff"] < 1e-4
    assert registry.get(NAME, onnx["version"]).framework == "onnx-text"
    assert prune["outcome"] == "refused" and prune["version"] is None
    assert prune["details"]["sparsity"] == pytest.approx(0.95, abs=0.01)
    assert len(registry.versions(NAME)) == before + 1  # the onnx export only
    run = registry.tracker.client.get_run(prune["run_id"])  # the refusal's MLflow run says so
    assert run.data.tags["shipyard.outcome"] == "refused"

    bad = CliRunner().invoke(cli, [*args, "--transform", "fp16"])
    assert isinstance(bad.exception, ParameterError)
    assert "known transforms: onnx, dynamic-int8" in str(bad.exception)
