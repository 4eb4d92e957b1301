"""Pipeline graphs: checked before they run, ordered stably, hashed by what a step reads."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from shipyard.errors import ParameterError, PipelineError
from shipyard.pipelines.graph import (
    Pipeline,
    Step,
    StepContext,
    Wait,
    input_hash,
    load_pipeline,
)


def noop(ctx: StepContext) -> Mapping[str, Any]:
    return {}


def test_validation_names_duplicates_unknown_inputs_cycles_and_empty_pipelines() -> None:
    with pytest.raises(PipelineError, match="has no steps"):
        Pipeline("empty", ()).validate()
    with pytest.raises(PipelineError, match=r"two steps named 'a' \(.*test_graph.py:\d+ and"):
        Pipeline("dup", (Step("a", noop), Step("a", noop))).validate()
    with pytest.raises(PipelineError, match=r"reads input 'nope'.*\(steps: a, b\)"):
        Pipeline("unknown", (Step("a", noop), Step("b", noop, inputs=("nope",)))).validate()
    cyclic = Pipeline(
        "cyclic",
        (
            Step("load", noop),
            Step("a", noop, inputs=("load", "c")),
            Step("b", noop, inputs=("a",)),
            Step("c", noop, inputs=("b",)),
        ),
    )
    with pytest.raises(PipelineError, match="has a cycle: a -> b -> c -> a"):
        cyclic.validate()
    with pytest.raises(PipelineError, match="cycle: a -> a"):
        Pipeline("self", (Step("a", noop, inputs=("a",)),)).validate()
    assert issubclass(PipelineError, ParameterError) and issubclass(PipelineError, ValueError)


def test_parameters_must_be_json_and_the_error_points_at_the_step() -> None:
    bad = Pipeline("bad", (Step("train", noop, params={"when": object()}),))
    with pytest.raises(PipelineError, match=r"parameter 'when' of step 'train' \(.*test_graph"):
        bad.validate()
    with pytest.raises(PipelineError, match="'rate'"):
        Pipeline("nan", (Step("train", noop, params={"rate": float("nan")}),)).validate()
    with pytest.raises(PipelineError, match="'name' parameter of Step"):
        Step("has space", noop)
    with pytest.raises(PipelineError, match="'fn' parameter of Step 'a'"):
        Step("a", "not callable")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'retry_after_s' parameter of Wait"):
        Wait("later", retry_after_s=-1)


def test_order_is_topological_and_stable() -> None:
    pipe = Pipeline(
        "order",
        (
            Step("report", noop, inputs=("evaluate", "features")),
            Step("evaluate", noop, inputs=("train",)),
            Step("window", noop),
            Step("features", noop, inputs=("window",)),
            Step("train", noop, inputs=("features",)),
            Step("audit", noop),
        ),
    )
    names = [step.name for step in pipe.order()]
    assert names == ["window", "features", "train", "evaluate", "report", "audit"]
    assert names == [step.name for step in pipe.order()]
    described = pipe.describe()
    assert [s["name"] for s in described["steps"]] == names
    assert described["steps"][4] == {
        "name": "report",
        "inputs": ["evaluate", "features"],
        "params": {},
        "cache": True,
        "version": "1",
        "fn": f"{__name__}:noop",
    }


def test_input_hash_covers_name_version_params_and_upstream_outputs() -> None:
    step = Step("train", noop, inputs=("features",), params={"a": 1, "b": [1, 2]})
    upstream = {"features": {"path": "x.parquet", "rows": 10}}
    base = input_hash(step, upstream)
    assert base == input_hash(
        Step("train", noop, inputs=("features",), params={"b": [1, 2], "a": 1}),
        {"features": {"rows": 10, "path": "x.parquet"}},
    )  # key order does not matter
    changed = [
        input_hash(Step("fit", noop, inputs=("features",), params=step.params), upstream),
        input_hash(Step("train", noop, ("features",), dict(step.params), version="2"), upstream),
        input_hash(Step("train", noop, ("features",), {"a": 2, "b": [1, 2]}), upstream),
        input_hash(step, {"features": {"path": "x.parquet", "rows": 11}}),
    ]  # fmt: skip
    assert len({base, *changed}) == 5
    assert input_hash(step, {**upstream, "other": {"z": 1}}) == base  # only its own inputs
    with pytest.raises(PipelineError, match="needs the outputs of"):
        input_hash(step, {})


FACTORY = """
from shipyard.pipelines.graph import Pipeline, Step

def noop(ctx):
    return {}

def build(rows=10, model="lgbm"):
    return Pipeline("factory", (Step("load", noop, params={"rows": rows, "model": model}),))

READY = Pipeline("ready", (Step("load", noop),))
NOT_A_PIPELINE = 3
"""


def test_load_pipeline_by_import_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "graph_factory_mod.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "graph_factory_mod", raising=False)

    pipe = load_pipeline("graph_factory_mod:build", rows=5)
    assert pipe.steps[0].params == {"rows": 5, "model": "lgbm"}
    assert pipe.source == {"ref": "graph_factory_mod:build", "params": {"rows": 5}}
    assert pipe.describe()["source"] == {"ref": "graph_factory_mod:build", "params": {"rows": 5}}
    assert load_pipeline("graph_factory_mod:READY").name == "ready"

    with pytest.raises(PipelineError, match=r"package\.module:factory"):
        load_pipeline("graph_factory_mod")
    with pytest.raises(PipelineError, match="Cannot load pipeline 'nowhere_mod:build'"):
        load_pipeline("nowhere_mod:build")
    with pytest.raises(PipelineError, match="has no attribute 'missing'"):
        load_pipeline("graph_factory_mod:missing")
    with pytest.raises(PipelineError, match="unexpected keyword argument 'depth'"):
        load_pipeline("graph_factory_mod:build", depth=3)
    with pytest.raises(PipelineError, match="takes no parameters"):
        load_pipeline("graph_factory_mod:READY", rows=1)
    with pytest.raises(PipelineError, match="must be a Pipeline or a function"):
        load_pipeline("graph_factory_mod:NOT_A_PIPELINE")
