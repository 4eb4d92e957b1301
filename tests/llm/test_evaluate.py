"""Evaluation of prompt versions with SmolLM2 through the engine: scores recounted from the
completions, intervals, the paired comparison, storage (table and MLflow) and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from shipyard.data.catalog import get_dataset
from shipyard.errors import DatasetNotFoundError, ParameterError
from shipyard.llm.evaluate import (
    Evaluation,
    compare,
    evaluate,
    list_evaluations,
    mean_interval,
    paired_interval,
)
from shipyard.llm.prompts import PromptNotFoundError, create_prompt
from shipyard.llm.tasks import EXTRACTION_SCHEMA, SENTIMENT_SYSTEM, get_task, write_eval_set
from shipyard.workspace import Workspace

if TYPE_CHECKING:
    from shipyard.llm.model import LoadedModel

ROWS = 12
ASK = "Review: {text}\nIs this review positive or negative? Answer with one word."
"""Prompt v2's user message: SmolLM2 answers it with a label far more often than the bare
review (v1), which it mostly continues as prose."""
Evaluated = tuple[Workspace, Evaluation, Evaluation]


def test_intervals_resample_rows() -> None:
    rng = np.random.default_rng(0)
    coin = rng.integers(0, 2, 400).astype(float)
    ci = mean_interval(coin)
    assert ci.low < coin.mean() < ci.high
    assert 0.08 < ci.high - ci.low < 0.12  # ±1.96 sqrt(.25 / 400) = ±0.049
    assert (mean_interval(np.ones(30)).low, mean_interval(np.ones(30)).high) == (1.0, 1.0)
    with_gaps = np.array([1.0, np.nan, 3.0, np.nan])  # NaN: the metric does not apply
    assert mean_interval(with_gaps).estimate == 2.0
    assert np.isnan(mean_interval(np.full(3, np.nan)).estimate)
    # paired: a constant shift is known exactly; noise common to both cancels
    noise = rng.normal(0, 10, 400)
    shift = paired_interval(noise, noise + 0.5)
    assert (shift.estimate, shift.low, shift.high) == pytest.approx((0.5, 0.5, 0.5))
    unpaired_width = mean_interval(noise).high - mean_interval(noise).low
    assert unpaired_width > 1.5  # what an unpaired comparison would have to beat


@pytest.fixture(scope="module")
def evaluated(smollm2: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Evaluated:
    """Two prompt versions of the sentiment task evaluated on the same 12 test rows."""
    ws = Workspace.init(tmp_path_factory.mktemp("evaluate") / "ws")
    eval_set = write_eval_set(ws, "sentiment", "test", limit=ROWS)
    system = {"role": "system", "content": SENTIMENT_SYSTEM}
    create_prompt(ws, "sentiment", [system, {"role": "user", "content": "{text}"}],
                  eval_set=eval_set)  # fmt: skip
    create_prompt(ws, "sentiment", [system, {"role": "user", "content": ASK}], eval_set=eval_set)
    a = evaluate(ws, prompt=("sentiment", 1), task="sentiment", loaded=smollm2)
    b = evaluate(ws, prompt=("sentiment", 2), task="sentiment", loaded=smollm2,
                 log_to_mlflow=False)  # fmt: skip
    return ws, a, b


def test_scores_are_the_tasks_scores_of_the_completions(evaluated: Evaluated) -> None:
    ws, a, _ = evaluated
    frame = get_dataset(ws, "llm-sentiment-test").read()
    task = get_task("sentiment")
    recount = [
        task.score(c, r) for c, r in zip(a.completions, frame.to_dict("records"), strict=True)
    ]
    assert (a.subject, a.name, a.version, a.rows) == ("prompt", "sentiment", 1, ROWS)
    assert a.prompt == "sentiment@1" and a.eval_set_version == 1
    assert a.metrics["exact_match"].estimate == pytest.approx(np.mean(recount))
    for name in ("exact_match", "valid_label", "completion_tokens", "ttft_s"):
        m = a.metrics[name]
        assert m.low <= m.estimate <= m.high, name
    assert 1 <= a.metrics["completion_tokens"].estimate <= get_task("sentiment").max_tokens
    assert a.metrics["ttft_s"].estimate > 0
    assert "exact_match" in a.describe() and "95% interval" in a.describe()


def test_the_prompt_changes_the_answers_and_compare_pairs_rows(evaluated: Evaluated) -> None:
    _, a, b = evaluated
    assert b.metrics["valid_label"].estimate > a.metrics["valid_label"].estimate
    assert a.completions != b.completions
    diff = compare(a, b)
    d = diff.differences["exact_match"]
    assert d.estimate == pytest.approx(
        b.metrics["exact_match"].estimate - a.metrics["exact_match"].estimate
    )
    assert d.low <= d.estimate <= d.high
    same = compare(a, a).differences["exact_match"]
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    assert "paired over 12 rows" in diff.describe()


def test_stored_in_the_table_and_in_mlflow(evaluated: Evaluated) -> None:
    from mlflow import MlflowClient

    ws, a, b = evaluated
    stored = list_evaluations(ws, subject="prompt", name="sentiment")
    assert [(r["version"], r["id"]) for r in stored] == [(2, b.id), (1, a.id)]
    first = stored[1]
    assert first["metrics"]["exact_match"]["value"] == pytest.approx(
        a.metrics["exact_match"].estimate
    )
    assert (first["eval_set"], first["rows"], first["run_id"]) == (
        "llm-sentiment-test", ROWS, a.run_id
    )  # fmt: skip
    assert stored[0]["run_id"] is None  # b was not logged
    client = MlflowClient(tracking_uri=ws.mlflow_tracking_uri)
    run = client.get_run(a.run_id)
    assert run.data.metrics["exact_match"] == pytest.approx(a.metrics["exact_match"].estimate)
    assert run.data.params["prompt"] == "sentiment@1"
    assert client.get_experiment(run.info.experiment_id).name == "llm-evaluations"
    path = client.download_artifacts(a.run_id, "rows.jsonl")
    lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert [line["completion"] for line in lines] == list(a.completions)


def test_constrained_extraction_always_parses(smollm2: LoadedModel, workspace: Workspace) -> None:
    write_eval_set(workspace, "extraction", "test", limit=2)
    # the expected answers are 48 to 53 tokens (digits are one token each): room for them
    result = evaluate(
        workspace, task="extraction", eval_set="llm-extraction-test", loaded=smollm2,
        json_schema=EXTRACTION_SCHEMA, max_tokens=64, log_to_mlflow=False,
    )  # fmt: skip
    assert result.subject == "model" and result.prompt is None  # the task's own messages
    assert result.metrics["json_valid"].estimate == 1.0
    for text in result.completions:
        assert set(json.loads(text)) == {"customer_id", "terminal_id", "amount", "datetime"}


def test_bad_input_is_refused_naming_it(smollm2: LoadedModel, workspace: Workspace) -> None:
    write_eval_set(workspace, "sentiment", "test", limit=2)
    create_prompt(workspace, "review", [{"role": "user", "content": "{review}"}],
                  eval_set="llm-sentiment-test")  # fmt: skip
    with pytest.raises(ParameterError, match=r"lacks column\(s\) \['review'\]"):
        evaluate(workspace, prompt=("review", 1), task="sentiment", loaded=smollm2)
    with pytest.raises(PromptNotFoundError, match="no version 3"):
        evaluate(workspace, prompt=("review", 3), task="sentiment", loaded=smollm2)
    with pytest.raises(DatasetNotFoundError, match="nope"):
        evaluate(workspace, task="sentiment", eval_set="nope", loaded=smollm2)
    with pytest.raises(ParameterError, match="'limit'"):
        evaluate(workspace, task="sentiment", eval_set="llm-sentiment-test", limit=0,
                 loaded=smollm2)  # fmt: skip
    with pytest.raises(ParameterError, match="'task'"):
        evaluate(workspace, task="poetry", loaded=smollm2)
    assert list_evaluations(workspace) == []


def test_command_line_names_an_unknown_prompt(workspace: Workspace) -> None:
    from click.testing import CliRunner

    from shipyard.cli.main import cli

    create_prompt(workspace, "sentiment", [{"role": "user", "content": "{text}"}])
    arguments = ["-w", str(workspace.root), "llm", "evaluate", "--task", "sentiment"]
    result = CliRunner().invoke(cli, [*arguments, "--prompt", "sentiment@candidate"])
    assert isinstance(result.exception, PromptNotFoundError)
    assert "no alias 'candidate'" in str(result.exception)


def test_an_adapter_is_the_subject_and_generates_through_the_engine(
    evaluated: Evaluated, smollm2: LoadedModel
) -> None:
    import torch

    from shipyard.llm.types import LoraAdapter

    ws, a, _ = evaluated
    c = smollm2.config
    # B = 0: the adapter adds nothing, so its answers are the base model's
    zero = LoraAdapter(
        "noop", rank=2, alpha=4.0, base_sha256=smollm2.sha256,
        weights={(0, "q"): (torch.randn(2, c.hidden), torch.zeros(c.q_size, 2))},
    )  # fmt: skip
    result = evaluate(ws, prompt=("sentiment", 1), task="sentiment", adapter=zero,
                      loaded=smollm2, log_to_mlflow=False)  # fmt: skip
    assert (result.subject, result.name, result.adapter, result.prompt) == (
        "adapter", "noop", "noop", "sentiment@1"
    )  # fmt: skip
    assert result.completions == a.completions
    with pytest.raises(ParameterError, match="none is registered"):
        evaluate(ws, prompt=("sentiment", 1), task="sentiment", adapter="sentiment",
                 loaded=smollm2)  # fmt: skip
