"""``shipyard llm adapters``: train, register and list LoRA adapters of a base model, and
the results run that trains both task adapters and compares them with the base model.

A thin layer over :mod:`shipyard.llm.lora` (see ``docs/llm-adapters.md``)::

    shipyard llm adapters train --task sentiment --model smollm2 --base-version 1 --steps 300
    shipyard llm adapters list --model smollm2 --base-version 1
    shipyard llm adapters results --out docs/llm-adapters-results.md  # python -m shipyard.llm.lora
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from shipyard.cli._common import console, open_workspace, progress_bars

if TYPE_CHECKING:
    from shipyard.llm.lora import TrainedAdapter
    from shipyard.llm.model import LoadedModel
    from shipyard.training.metrics import Interval

Progress = Callable[[str, int, int], None]

RESULT_SETTINGS: dict[str, dict[str, Any]] = {
    "sentiment": {"steps": 8, "batch_size": 8, "learning_rate": 1e-3, "max_length": 128,
                  "eval_every": 4, "eval_rows": 30},
    "extraction": {"steps": 12, "batch_size": 4, "learning_rate": 2e-3, "max_length": 192,
                   "eval_every": 6, "eval_rows": 20},
}  # fmt: skip
"""Training settings of the results run per task (rank 8, alpha 16 on q and v; seed 0):
sized for 2 shared cores, where one step of 8 rows of about 80 tokens costs about 15 s of
CPU time. ``eval_rows`` validation rows are scored for every prompt."""
TEST_ROWS = {"sentiment": 60, "extraction": 40}
SHOTS = 3


@click.group()
def adapters() -> None:
    """LoRA adapters of a registered language model."""


@adapters.command()
@click.option("--task", required=True, help="sentiment or extraction.")
@click.option("--model", default="smollm2", show_default=True, help="Registered base model.")
@click.option("--base-version", type=int, required=True, help="Its version to train on.")
@click.option("--name", default=None, help="Adapter name (default: the task's).")
@click.option("--steps", type=int, default=200, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--learning-rate", type=float, default=1e-3, show_default=True)
@click.option("--rank", type=int, default=8, show_default=True)
@click.option("--alpha", type=float, default=16.0, show_default=True)
@click.option("--target", "targets", multiple=True, default=("q", "v"), show_default=True)
@click.option("--max-length", type=int, default=160, show_default=True, help="Tokens per row.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--reason", default="trained a LoRA adapter", show_default=True)
@click.option("--actor", default=None, help="Who (default: the current user).")
@click.pass_context
def train(ctx: click.Context, /, task: str, model: str, base_version: int, **options: Any) -> None:
    """Train an adapter for TASK on MODEL v BASE-VERSION, track it and register it."""
    from shipyard.llm.lora import load_base, register_adapter, train_lora

    ws = open_workspace(ctx)
    reason, actor = options.pop("reason"), options.pop("actor")
    out = console()
    loaded = load_base(ws, model, base_version)
    with progress_bars(out) as progress:
        trained = train_lora(loaded, task, workspace=ws, progress=progress, **options)
    registered = register_adapter(ws, model, base_version, trained, actor=actor, reason=reason)
    metric = trained.metrics.get("validation_exact_match", float("nan"))
    out.print(
        f"[green]{model}:{registered.name}[/] v{registered.version} over {model} "
        f"v{base_version}: {len(trained.losses)} steps in {trained.seconds:.0f} s, validation "
        f"exact match {metric:.3f} (run {trained.run_id})"
    )


@adapters.command(name="list")
@click.option("--model", default="smollm2", show_default=True, help="Registered base model.")
@click.option("--base-version", type=int, required=True, help="Its version.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_command(ctx: click.Context, model: str, base_version: int, as_json: bool) -> None:
    """The adapters of MODEL v BASE-VERSION (each name's latest version first)."""
    from shipyard.llm.lora import list_adapters

    found = list_adapters(open_workspace(ctx), model, base_version)
    if as_json:
        rows = [
            {"name": a.name, "version": a.version, "task": a.task, "sha256": a.sha256,
             "run_id": a.run_id, "metrics": a.metrics, "created_at": a.created_at.isoformat()}
            for a in found
        ]  # fmt: skip
        click.echo(json.dumps(rows, indent=2))
        return
    out = console()
    if not found:
        out.print(f"No adapters of {model} v{base_version}.")
    for a in found:
        metric = a.metrics.get("validation_exact_match", float("nan"))
        out.print(
            f"{model}:{a.name} v{a.version}  task {a.task}  validation exact match "
            f"{metric:.3f}  sha256 {a.sha256[:12]}  {a.created_at:%Y-%m-%d %H:%M}"
        )


# --- the results run -------------------------------------------------------------------


@dataclass(frozen=True)
class TaskResult:
    """One task's results: training, and each prompt's validation mean and test interval."""

    task: str
    trained: TrainedAdapter
    validation: dict[str, float]
    test: dict[str, Interval]
    extra: dict[str, dict[str, float]]
    """Each prompt's mean of the task's other test metrics (JSON validity, fields ...)."""


def task_result(model: LoadedModel, task: str, progress: Progress | None = None) -> TaskResult:
    """Train ``task``'s adapter with :data:`RESULT_SETTINGS` and evaluate base and adapter."""
    from shipyard.llm.lora import evaluate, train_lora
    from shipyard.llm.tasks import load_task
    from shipyard.solutions.recsys.metrics import bootstrap_mean

    trained = train_lora(model, task, progress=progress or False, **RESULT_SETTINGS[task])
    shots = load_task(task, "train", limit=SHOTS, seed=1)
    prompts: dict[str, dict[str, Any]] = {
        "base, zero-shot": {},
        f"base, {SHOTS}-shot": {"examples": shots},
        "adapter": {"adapter": trained.adapter},
    }
    validation, test, extra = {}, {}, {}
    validation["adapter"] = trained.metrics["validation_exact_match"]
    limits = (("validation", RESULT_SETTINGS[task]["eval_rows"]), ("test", TEST_ROWS[task]))
    for split, limit in limits:
        rows = load_task(task, split, limit=limit, seed=0)
        for label, options in prompts.items():
            if split == "validation" and label == "adapter":
                continue  # measured by train_lora on these rows
            scores = evaluate(model, task, rows, progress=progress, **options)
            exact = [s["exact_match"] for s in scores]
            if split == "validation":
                validation[label] = sum(exact) / len(exact)
                continue
            import numpy as np

            test[label] = bootstrap_mean(np.asarray(exact, dtype=np.float64), n_boot=2000)
            extra[label] = {k: sum(s[k] for s in scores) / len(scores) for k in scores[0]}
    return TaskResult(task, trained, validation, test, extra)


def results_markdown(results: Sequence[TaskResult], seconds: float) -> str:
    """The results file: settings, then one table per task (base prompts against adapter)."""
    lines = [
        "# LoRA adapters: results",
        "",
        "Written by `python -m shipyard.llm.lora --task sentiment --task extraction --out "
        "docs/llm-adapters-results.md` (SmolLM2-135M-Instruct, float32 on CPU, "
        f"{platform.machine()}, {_cores()} cores shared with other work; {seconds / 60:.1f} "
        "min in all). Greedy decoding through the engine. Exact match on seeded samples of "
        "each split's rows (counts below); test with a 95% percentile bootstrap interval "
        "over rows (2,000 resamples). "
        f"Few-shot prompts put {SHOTS} training rows before the question as chat turns.",
        "",
    ]
    for r in results:
        p = r.trained.params
        lines += [
            f"## {r.task}",
            "",
            f"Adapter: rank {p['rank']}, alpha {p['alpha']:g} on {', '.join(p['targets'])}; "
            f"{len(r.trained.losses)} steps of {p['batch_size']} rows (of {p['steps']} planned; "
            f"kept step {r.trained.best_step}, the lowest validation loss), AdamW at "
            f"{p['learning_rate']:g}, rows up to {p['max_length']} tokens "
            f"({r.trained.skipped_rows} longer training rows left out); training "
            f"{r.trained.seconds:.0f} s; training loss {r.trained.losses[0]:.3f} -> "
            f"{r.trained.losses[-1]:.3f}.",
            "",
            f"Rows: {p['eval_rows']} validation, {TEST_ROWS[r.task]} test.",
            "",
            "| prompt | validation exact match | test exact match [95% CI] | other test metrics |",
            "|---|---|---|---|",
        ]
        for label, interval in r.test.items():
            other = ", ".join(
                f"{k} {v:.3f}" for k, v in r.extra[label].items() if k != "exact_match"
            )
            lines.append(
                f"| {label} | {r.validation[label]:.3f} | {interval.estimate:.3f} "
                f"[{interval.low:.3f}, {interval.high:.3f}] | {other} |"
            )
        lines.append("")
    return "\n".join(lines)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@adapters.command()
@click.option("--task", "tasks", multiple=True, default=("sentiment", "extraction"))
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Markdown file."
)
def results(tasks: Sequence[str], out: Path | None) -> None:
    """Train each task's adapter and compare it with the base model's prompts."""
    from shipyard.llm.model import load_model

    started = time.perf_counter()
    screen = console()
    model = load_model()
    with progress_bars(screen) as progress:
        found = [task_result(model, task, progress) for task in tasks]
    text = results_markdown(found, time.perf_counter() - started)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
        screen.print(f"wrote {out}")
    click.echo(text)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shipyard.llm.lora``: the results run."""
    results.main(args=list(argv) if argv is not None else None, standalone_mode=True)
