"""Evaluate a prompt or adapter version on an evaluation set, with 95% bootstrap intervals.

:func:`evaluate` reads the evaluation set (a catalog data set whose rows hold the prompt's
variables and an ``expected`` column, e.g. :func:`shipyard.llm.tasks.write_eval_set`),
renders every row with the prompt (a version of :mod:`shipyard.llm.prompts`; without one,
the registered model version's pinned prompt, else the task's own messages), submits all
rows at once to a generation engine in this process (:class:`shipyard.llm.engine.Engine`:
it batches them; greedy decoding), and scores each completion with the task's scorer
(:meth:`shipyard.llm.tasks.Task.metrics`).

**Metrics**, each the mean over rows with a 95% percentile bootstrap interval resampling
rows (:func:`shipyard.training.metrics.day_bootstrap` with one row per unit, 1,000 draws,
seeded): the task's metrics (``exact_match``, the sentiment task's ``valid_label``, the
extraction task's ``json_valid``, ``field_accuracy`` and per-field ``*_correct``),
``json_valid`` for any task when a JSON schema constrains the output, ``completion_tokens``
(the completion's length), and the latency of the run: ``ttft_s`` (time to first token,
from submission: it includes the wait for a slot, as every row is submitted at once) and
``tpot_s`` (time per output token after the first; rows of one token have none). Latency
depends on the batch and the machine: compare it only within one run.

**Stored** as a row of ``shipyard_llm_evaluations`` (subject ``prompt``, ``adapter`` or
``model`` with its name and version, the set and its version, the metrics as ``{metric:
{value, low, high}}``) and an MLflow run in experiment ``llm-evaluations`` (parameters,
each metric with ``_low``/``_high``, and ``rows.jsonl``: every row's completion and scores).

:func:`compare` gives, per metric, the paired difference ``b - a`` over the same rows with
its bootstrap interval (the same resampled rows for both): the way to tell whether prompt
v2 beats v1 beyond the noise of a few hundred rows.

Example::

    a = evaluate(ws, prompt=("sentiment", 1), task="sentiment", limit=200)
    b = evaluate(ws, prompt=("sentiment", 2), task="sentiment", limit=200)
    print(compare(a, b).describe())   # exact_match +0.085 [+0.040, +0.130] ...
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shipyard.errors import ParameterError, RequestError, invalid_parameter

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from shipyard.config import Settings
    from shipyard.llm.model import LoadedModel
    from shipyard.llm.prompts import PromptVersion
    from shipyard.llm.tasks import Task
    from shipyard.llm.types import GenerationResult, LoraAdapter, SamplingParams
    from shipyard.training.metrics import Interval
    from shipyard.workspace import Workspace

EXPERIMENT = "llm-evaluations"
"""The MLflow experiment evaluations are logged to."""
N_BOOT = 1000
LEVEL = 0.95
LATENCY = ("completion_tokens", "ttft_s", "tpot_s")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation: what was evaluated, on which rows, and each metric with its 95%
    interval; ``values`` keeps the per-row numbers (aligned with ``row_ids``) for
    :func:`compare`."""

    subject: str
    """``prompt``, ``adapter`` or ``model``: what ``name`` and ``version`` name."""
    name: str
    version: int
    task: str
    eval_set: str
    eval_set_version: int
    model: str
    model_version: int | None
    adapter: str | None
    prompt: str | None
    """``name@version`` of the prompt used, or None (the task's own messages)."""
    max_tokens: int
    row_ids: tuple[int, ...]
    metrics: dict[str, Interval]
    values: dict[str, NDArray[np.float64]] = field(repr=False)
    completions: tuple[str, ...] = field(repr=False)
    run_id: str | None = None
    id: int | None = None

    @property
    def rows(self) -> int:
        """How many rows were evaluated."""
        return len(self.row_ids)

    def describe(self) -> str:
        """A table: one line per metric with its estimate and 95% interval."""
        width = max(len(m) for m in self.metrics)
        what = f"{self.subject} {self.name} v{self.version}"
        head = (
            f"{what} on {self.eval_set} v{self.eval_set_version} ({self.rows:,} rows, task "
            f"{self.task}, model {self.model}"
            f"{'' if self.model_version is None else ' v' + str(self.model_version)}"
            f"{', adapter ' + self.adapter if self.adapter else ''}"
            f"{', prompt ' + self.prompt if self.prompt else ''})"
        )
        lines = [head, f"  {'metric':<{width}}  estimate  95% interval"]
        for name, value in self.metrics.items():
            lines.append(
                f"  {name:<{width}}  {_number(value.estimate):>8}  "
                f"[{_number(value.low)}, {_number(value.high)}]{_unit(name)}"
            )
        if self.run_id:
            lines.append(f"  MLflow run {self.run_id} (experiment {EXPERIMENT})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The evaluation as JSON-ready data (per-row values left out)."""
        return {
            "id": self.id,
            "subject": self.subject,
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "eval_set": self.eval_set,
            "eval_set_version": self.eval_set_version,
            "model": self.model,
            "model_version": self.model_version,
            "adapter": self.adapter,
            "prompt": self.prompt,
            "max_tokens": self.max_tokens,
            "rows": self.rows,
            "metrics": metrics_json(self.metrics),
            "run_id": self.run_id,
        }


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def _unit(metric: str) -> str:
    return {"completion_tokens": " tokens", "ttft_s": " s", "tpot_s": " s"}.get(metric, "")


def metrics_json(metrics: Mapping[str, Interval]) -> dict[str, dict[str, float | None]]:
    """``{metric: {value, low, high}}`` (NaN as None), as the evaluations table keeps them."""

    def plain(x: float) -> float | None:
        return None if math.isnan(x) else float(x)

    return {
        name: {"value": plain(v.estimate), "low": plain(v.low), "high": plain(v.high)}
        for name, v in metrics.items()
    }


# ------------------------------------------------------------------------ the statistics


def mean_interval(values: NDArray[np.float64], n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """The mean of the finite ``values`` with a 95% bootstrap interval resampling rows
    (NaN marks a row the metric does not apply to; all NaN gives NaN)."""
    import numpy as np

    from shipyard.training.metrics import Interval, day_bootstrap, interval

    x = np.asarray(values, dtype=np.float64)
    if not np.isfinite(x).any():
        return Interval(float("nan"), float("nan"), float("nan"), LEVEL)
    estimate, replicates = day_bootstrap(np.arange(len(x)), _weighted_mean(x), n_boot, seed)
    return interval(estimate, replicates, LEVEL)


def _weighted_mean(x: NDArray[np.float64]) -> Any:
    import numpy as np

    finite = np.isfinite(x)
    clean = np.where(finite, x, 0.0)

    def statistic(weights: NDArray[np.float64]) -> float:
        total = float((weights * finite).sum())
        return float((weights * clean).sum() / total) if total else float("nan")

    return statistic


def paired_interval(
    a: NDArray[np.float64], b: NDArray[np.float64], n_boot: int = N_BOOT, seed: int = 0
) -> Interval:
    """The difference of means ``b - a`` over the same rows, with a 95% bootstrap interval
    (each replicate resamples rows once and takes both means on them)."""
    import numpy as np

    from shipyard.training.metrics import day_bootstrap, interval

    mean_a, mean_b = _weighted_mean(np.asarray(a)), _weighted_mean(np.asarray(b))
    estimate, replicates = day_bootstrap(
        np.arange(len(a)), lambda w: mean_b(w) - mean_a(w), n_boot, seed
    )
    return interval(estimate, replicates, LEVEL)


@dataclass(frozen=True)
class Comparison:
    """Paired differences ``b - a`` per metric over the same rows, with 95% intervals."""

    a: str
    b: str
    rows: int
    differences: dict[str, Interval]

    def significant(self, metric: str) -> bool:
        """Whether the 95% interval of ``b - a`` on ``metric`` excludes 0."""
        d = self.differences[metric]
        return bool(d.low > 0 or d.high < 0)

    def describe(self) -> str:
        """One line per metric: the difference and its interval, marked when it excludes 0."""
        width = max(len(m) for m in self.differences)
        lines = [f"{self.b} minus {self.a}, paired over {self.rows:,} rows"]
        for name, d in self.differences.items():
            mark = "  *" if self.significant(name) else ""
            lines.append(
                f"  {name:<{width}}  {d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"
                f"{_unit(name)}{mark}"
            )
        lines.append("  * the 95% interval excludes 0")
        return "\n".join(lines)


def compare(a: Evaluation, b: Evaluation, n_boot: int = N_BOOT) -> Comparison:
    """``b - a`` on every metric both have, paired over their rows (which must be the same:
    the same evaluation set, version and rows, else ParameterError)."""
    same = (a.eval_set, a.eval_set_version, a.row_ids) == (
        b.eval_set,
        b.eval_set_version,
        b.row_ids,
    )
    if not same:
        raise ParameterError(
            f"compare needs two evaluations of the same rows; got {a.eval_set} "
            f"v{a.eval_set_version} ({a.rows} rows) and {b.eval_set} v{b.eval_set_version} "
            f"({b.rows} rows). Evaluate both on one set with the same limit."
        )
    names = [m for m in a.values if m in b.values]
    return Comparison(
        a=_label(a),
        b=_label(b),
        rows=a.rows,
        differences={m: paired_interval(a.values[m], b.values[m], n_boot) for m in names},
    )


def _label(e: Evaluation) -> str:
    return f"{e.subject} {e.name} v{e.version}"


# ------------------------------------------------------------------------------ evaluate


@dataclass(frozen=True)
class _Base:
    """The model evaluated: loaded, its registered version (None: the wheel's, unregistered)
    and the prompt that version pins."""

    model: LoadedModel
    version: int | None
    pinned: tuple[str, int] | None


def evaluate(
    workspace: Workspace,
    *,
    task: str,
    model: str = "smollm2",
    version: int | None = None,
    adapter: str | LoraAdapter | None = None,
    prompt: tuple[str, int | str] | None = None,
    eval_set: str | None = None,
    limit: int | None = None,
    max_tokens: int | None = None,
    json_schema: Mapping[str, Any] | None = None,
    loaded: LoadedModel | None = None,
    log_to_mlflow: bool = True,
    actor: str | None = None,
    n_boot: int = N_BOOT,
) -> Evaluation:
    """Generate an answer for every row of the evaluation set and score them (module doc).

    ``prompt`` is ``(name, version or alias)``; ``eval_set`` defaults to the prompt's linked
    set, else the task's test split (written to the catalog, 200 rows, if missing);
    ``limit`` keeps its first rows; ``max_tokens`` defaults to the task's; ``adapter`` is a
    registered adapter of the model version (or a :class:`LoraAdapter`); ``loaded`` is a
    model already in memory (else the registered version's GGUF, else the wheel's SmolLM2).
    Example: ``evaluate(ws, prompt=("sentiment", 2), task="sentiment", limit=100)``.
    """
    from shipyard.llm.prompts import get_prompt
    from shipyard.llm.tasks import get_task
    from shipyard.llm.types import SamplingParams

    spec = get_task(task)
    chosen = None if prompt is None else get_prompt(workspace, *_prompt_ref(prompt))
    base = _base(workspace, model, version, loaded)
    if chosen is None and base.pinned is not None:
        chosen = get_prompt(workspace, *base.pinned)
    dataset_name = (
        eval_set or (chosen.eval_set if chosen else None) or _default_set(workspace, task)
    )
    dataset_version, rows = read_rows(workspace, dataset_name, limit, chosen, spec)
    lora = _adapter(workspace, model, base, adapter)
    params = SamplingParams(
        max_tokens=max_tokens if max_tokens is not None else spec.max_tokens,
        temperature=0.0,
        json_schema=json_schema,
    )
    messages = [render_row(spec, chosen, row, i) for i, row in enumerate(rows)]
    logger.info("evaluating %d rows of %s with %s", len(rows), dataset_name, _what(chosen, adapter))
    adapter_weights = None if lora is None else lora[0]
    results = generate(base.model, messages, params, adapter_weights, workspace.settings)
    values = score(spec, rows, [r.text for r in results], results, json_schema)
    subject, name, subject_version = _subject(model, base, prompt, chosen, lora)
    evaluation = Evaluation(
        subject=subject, name=name, version=subject_version, task=task,
        eval_set=dataset_name, eval_set_version=dataset_version, model=model,
        model_version=base.version, adapter=None if lora is None else lora[0].name,
        prompt=None if chosen is None else chosen.ref, max_tokens=params.max_tokens,
        row_ids=tuple(range(len(rows))),
        metrics={m: mean_interval(v, n_boot) for m, v in values.items()},
        values=values, completions=tuple(r.text for r in results),
    )  # fmt: skip
    if log_to_mlflow:
        evaluation = replace(evaluation, run_id=_log_run(workspace, evaluation, rows, json_schema))
    return replace(evaluation, id=_store(workspace, evaluation, actor))


def _prompt_ref(prompt: object) -> tuple[str, int | str]:
    if (
        not isinstance(prompt, tuple | list)
        or len(prompt) != 2
        or not isinstance(prompt[0], str)
        or not isinstance(prompt[1], int | str)
    ):
        raise invalid_parameter("prompt", "evaluate", "(name, version or alias)", prompt)
    return prompt[0], prompt[1]


def _what(prompt: PromptVersion | None, adapter: str | LoraAdapter | None) -> str:
    used = f"prompt {prompt.ref}" if prompt else "the task's messages"
    named = adapter if isinstance(adapter, str) or adapter is None else adapter.name
    return used + (f" and adapter {named}" if named else "")


def _base(
    workspace: Workspace, model: str, version: int | None, loaded: LoadedModel | None
) -> _Base:
    """The model to generate with: ``loaded``, else the registered version, else (for a
    name nobody registered) the wheel's SmolLM2."""
    from shipyard.errors import ModelNotFoundError
    from shipyard.llm.model import load_model
    from shipyard.registry.models import ModelRegistry
    from shipyard.training.trainers import load_native

    registry = ModelRegistry(workspace)
    try:
        registered = registry.get(model, version if version is not None else "latest")
    except ModelNotFoundError:
        if version is not None:
            raise
        registered = None
    if registered is None:
        logger.info("model %r is not registered: evaluating the wheel's SmolLM2", model)
        return _Base(loaded or load_model(), None, None)
    if registered.framework != "llm":
        raise ParameterError(
            f"model {model!r} v{registered.version} is a {registered.framework} model, not a "
            "language model (register one with shipyard llm register)"
        )
    llm = load_native("llm", registered.native_path, registered.native_sha256)
    if loaded is not None and loaded.sha256 != llm.spec.sha256:
        raise ParameterError(
            f"loaded: the model in memory ({loaded.sha256[:12]}...) is not {model} "
            f"v{registered.version}'s GGUF ({llm.spec.sha256[:12]}...)"
        )
    model_in_memory = loaded or load_model(llm.gguf, sha256=llm.spec.sha256)
    return _Base(model_in_memory, registered.version, llm.spec.prompt)


def _default_set(workspace: Workspace, task: str) -> str:
    """The task's test split in the catalog (written on first use)."""
    from shipyard.data.catalog import get_dataset
    from shipyard.errors import DatasetNotFoundError
    from shipyard.llm.tasks import eval_set_name, write_eval_set

    name = eval_set_name(task, "test")
    try:
        get_dataset(workspace, name)
    except DatasetNotFoundError:
        write_eval_set(workspace, task, "test")
    return name


def read_rows(
    workspace: Workspace,
    name: str,
    limit: int | None,
    prompt: PromptVersion | None,
    task: Task,
) -> tuple[int, list[dict[str, Any]]]:
    """The evaluation set's version and its first ``limit`` rows, after checking that it has
    the columns the prompt (or the task) and the scorer need."""
    from shipyard.data.catalog import get_dataset

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise invalid_parameter("limit", "evaluate", "None or an int >= 1", limit)
    dataset = get_dataset(workspace, name)
    needed = [*(prompt.variables if prompt else task.variables), "expected"]
    missing = [c for c in needed if c not in dataset.columns]
    if missing:
        raise ParameterError(
            f"eval set {name!r} v{dataset.version} lacks column(s) {missing} that "
            f"{'prompt ' + prompt.ref if prompt else 'task ' + task.name} needs; its columns "
            f"are {dataset.columns}"
        )
    frame = dataset.read()
    if limit is not None:
        frame = frame.head(limit)
    if len(frame) == 0:
        raise ParameterError(f"eval set {name!r} v{dataset.version} has no rows")
    return dataset.version, [dict(r) for r in frame.to_dict(orient="records")]


def render_row(
    task: Task, prompt: PromptVersion | None, row: Mapping[str, Any], index: int
) -> list[dict[str, str]]:
    """The chat messages of one row: the prompt rendered from the row's columns (those it
    declares), else the task's own messages."""
    if prompt is None:
        return task.messages(row)
    variables = {k: _plain(row[k]) for k in prompt.variables if k in row}
    try:
        return prompt.render(variables)
    except ParameterError as exc:
        raise ParameterError(f"row {index} of the eval set: {exc}") from exc


def _plain(value: Any) -> Any:
    """A NumPy scalar as its Python value (what the prompt's type checks expect); NaN as
    None (a missing value)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def _adapter(
    workspace: Workspace, model: str, base: _Base, adapter: str | LoraAdapter | None
) -> tuple[LoraAdapter, int] | None:
    """The adapter to generate with and its version: a registered adapter of the model
    version by name (verified), or one given in memory (version 0)."""
    if adapter is None:
        return None
    if not isinstance(adapter, str):
        return adapter, 0
    if base.version is None:
        raise ParameterError(
            f"adapter {adapter!r}: adapters belong to a registered version of {model!r}, "
            "and none is registered (shipyard llm register)"
        )
    from shipyard.llm.lora import get_adapter

    found = get_adapter(workspace, model, base.version, adapter)
    return found.load(), found.version


def generate(
    model: LoadedModel,
    messages: Sequence[Sequence[Mapping[str, str]]],
    params: SamplingParams,
    adapter: LoraAdapter | None = None,
    settings: Settings | None = None,
) -> list[GenerationResult]:
    """Every chat's completion from one engine over ``model``, all submitted at once (the
    engine batches them; its slots and window sized to the rows, within ``settings``'
    ``llm_*`` limits); a failed generation raises naming its row."""
    from shipyard.config import Settings
    from shipyard.llm.engine import Engine, EngineConfig

    prompts = [model.encode_chat(m) for m in messages]
    window = min(model.config.max_context, max(len(p) for p in prompts) + params.max_tokens + 1)
    limits = EngineConfig.from_settings(settings or Settings())
    config = replace(
        limits,
        max_running=min(limits.max_running, len(prompts)),
        max_waiting=max(limits.max_waiting, len(prompts)),
        max_context=min(limits.max_context, max(window, 64)),
    )
    engine = Engine(model, config)
    if adapter is not None:
        engine.add_adapter(adapter)
    engine.start()
    generations = []
    try:
        for i, tokens in enumerate(prompts):
            name = None if adapter is None else adapter.name
            try:
                generations.append(engine.submit(tokens, params, adapter=name))
            except RequestError as exc:  # a prompt over the window: name the row
                raise ParameterError(f"row {i} of the eval set: {exc.message}") from exc
        results = [g.wait() for g in generations]
    finally:
        engine.close()
    for i, result in enumerate(results):
        if result.finish_reason == "error":
            raise RuntimeError(f"generation of row {i} failed: {result.text!r}")
    return results


def score(
    task: Task,
    rows: Sequence[Mapping[str, Any]],
    completions: Sequence[str],
    results: Sequence[GenerationResult],
    json_schema: Mapping[str, Any] | None = None,
) -> dict[str, NDArray[np.float64]]:
    """Per-row values of every metric: the task's, ``json_valid`` when a schema constrained
    the output, completion length and latency (NaN where a metric does not apply)."""
    import numpy as np

    scored = [task.metrics(c, row) for c, row in zip(completions, rows, strict=True)]
    names = list(dict.fromkeys(name for s in scored for name in s))
    values = {n: np.array([s.get(n, np.nan) for s in scored], dtype=np.float64) for n in names}
    if json_schema is not None and "json_valid" not in values:
        values["json_valid"] = np.array([_parses(c) for c in completions], dtype=np.float64)
    values["completion_tokens"] = np.array([r.completion_tokens for r in results], np.float64)
    values["ttft_s"] = np.array([r.ttft_s for r in results], dtype=np.float64)
    values["tpot_s"] = np.array(
        [r.tpot_s if r.completion_tokens > 1 else np.nan for r in results], dtype=np.float64
    )
    return values


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _subject(
    model: str,
    base: _Base,
    prompt: tuple[str, int | str] | None,
    chosen: PromptVersion | None,
    lora: tuple[LoraAdapter, int] | None,
) -> tuple[str, str, int]:
    """What the evaluation is of: the adapter if one was used, else a prompt that was asked
    for, else the model version (0: the unregistered wheel)."""
    if lora is not None:
        return "adapter", lora[0].name, lora[1]
    if prompt is not None and chosen is not None:
        return "prompt", chosen.name, chosen.version
    return "model", model, base.version or 0


def _store(workspace: Workspace, evaluation: Evaluation, actor: str | None) -> int:
    from sqlalchemy import insert

    from shipyard.registry.models import current_user
    from shipyard.tables import llm_evaluations as table

    row = {
        "subject": evaluation.subject,
        "name": evaluation.name,
        "version": evaluation.version,
        "eval_set": evaluation.eval_set,
        "eval_set_version": evaluation.eval_set_version,
        "rows": evaluation.rows,
        "metrics": metrics_json(evaluation.metrics),
        "run_id": evaluation.run_id,
        "actor": actor or current_user(),
        "created_at": datetime.now(UTC).replace(tzinfo=None),
    }
    with workspace.engine.begin() as conn:
        key = conn.execute(insert(table).values(**row)).inserted_primary_key
    return int(key[0]) if key else 0


def _log_run(
    workspace: Workspace,
    evaluation: Evaluation,
    rows: Sequence[Mapping[str, Any]],
    json_schema: Mapping[str, Any] | None,
) -> str:
    """An MLflow run in :data:`EXPERIMENT`: parameters, metrics with their bounds, and
    ``rows.jsonl`` (each row's completion, expected answer and scores)."""
    from mlflow.entities import Metric, Param, RunTag

    from shipyard.registry.tracking import Tracker, environment_tags

    tracker = Tracker(workspace)
    client = tracker.client
    e = evaluation
    run = client.create_run(tracker.experiment_id(EXPERIMENT), run_name=_label(e))
    run_id = str(run.info.run_id)
    try:
        params = {k: v for k, v in e.to_dict().items() if k not in ("metrics", "run_id", "id")} | {
            "json_schema": json.dumps(json_schema) if json_schema else ""
        }
        metrics = [
            Metric(f"{name}{suffix}", value, 0, 0)
            for name, interval in e.metrics.items()
            for suffix, value in (
                ("", interval.estimate),
                ("_low", interval.low),
                ("_high", interval.high),
            )
            if not math.isnan(value)
        ]
        tags = {"solution": "llm", "subject": e.subject, **environment_tags()}
        client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        client.log_text(run_id, _rows_jsonl(e, rows), "rows.jsonl")
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id


def _rows_jsonl(evaluation: Evaluation, rows: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for i, (row, completion) in enumerate(zip(rows, evaluation.completions, strict=True)):
        record = {"row": i, "expected": str(row.get("expected")), "completion": completion}
        record |= {m: _finite(v[i]) for m, v in evaluation.values.items()}
        lines.append(json.dumps(record, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def list_evaluations(
    workspace: Workspace, subject: str | None = None, name: str | None = None
) -> list[dict[str, Any]]:
    """Stored evaluations (of ``subject`` and ``name``), newest first, as table rows."""
    from sqlalchemy import select

    from shipyard.tables import llm_evaluations as table

    query = select(table).order_by(table.c.id.desc())
    if subject is not None:
        query = query.where(table.c.subject == subject)
    if name is not None:
        query = query.where(table.c.name == name)
    with workspace.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]
