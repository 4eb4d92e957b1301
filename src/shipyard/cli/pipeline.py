"""``shipyard pipeline``: run, inspect, resume and watch lifecycle pipelines.

A thin layer over :mod:`shipyard.pipelines`: pipelines are named by import path
(``package.module:factory``, built with ``--param key=value``); ``run`` starts one, ``status``
shows a run's steps, ``list`` the runs, ``resume`` continues a waiting, failed or dead run,
``graph`` shows the validated graph and ``watch`` starts runs on a schedule or an alert.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from shipyard.cli._common import console, open_workspace

if TYPE_CHECKING:
    from shipyard.pipelines.graph import Pipeline
    from shipyard.pipelines.runs import PipelineRun, StepRecord

_STYLES = {
    "succeeded": "green",
    "cached": "cyan",
    "failed": "bold red",
    "waiting": "yellow",
    "running": "blue",
    "skipped": "dim",
}


def _params(pairs: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE such as days=7, got {pair!r}")
        try:  # numbers, booleans, lists as JSON; anything else stays text
            params[key] = json.loads(text)
        except json.JSONDecodeError:
            params[key] = text
    return params


_PARAM = click.option(
    "--param", "pairs", multiple=True, help="KEY=VALUE for the factory (repeatable; JSON values)."
)


def _load(reference: str, pairs: tuple[str, ...]) -> Pipeline:
    from shipyard.pipelines.graph import load_pipeline

    return load_pipeline(reference, **_params(pairs))


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _took(record: StepRecord) -> str:
    if record.started_at is None or record.ended_at is None:
        return ""
    return f"{(record.ended_at - record.started_at).total_seconds():.2f} s"


def _print_run(run: PipelineRun) -> None:
    from rich.table import Table

    out = console()
    style = _STYLES.get(str(run.status), "")
    trigger = run.trigger.get("reason") or run.trigger.get("kind", "")
    out.print(
        f"[bold]{run.pipeline}[/bold] run {run.run_id}: [{style}]{run.status}[/{style}] "
        f"(trigger: {trigger}; by {run.actor}; started {_when(run.started_at)} UTC"
        + (f", finished {_when(run.finished_at)} UTC)" if run.finished_at else ")")
    )
    table = Table("step", "status", "started (UTC)", "took", "log", "error")
    for record in run.steps.values():
        status = str(record.status)
        table.add_row(
            record.name,
            f"[{_STYLES.get(status, '')}]{status}[/]",
            _when(record.started_at),
            _took(record),
            "\n".join(record.log),
            record.error or "",
        )
    out.print(table)
    if run.wait:
        out.print(
            f"waiting at step {run.wait['step']!r}: {run.wait['reason']}; "
            f"resume after {run.wait['retry_at'][:19].replace('T', ' ')} UTC with "
            f"`shipyard pipeline resume {run.run_id}`"
        )
    if run.error:
        out.print(f"[bold red]{run.error}[/]")


def _show_step(record: StepRecord) -> None:
    if str(record.status) != "running":
        status = str(record.status)
        console().print(f"  {record.name}: [{_STYLES.get(status, '')}]{status}[/] {_took(record)}")


def _finish(run: PipelineRun, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(run.to_dict(), indent=2))
    else:
        _print_run(run)
    if str(run.status) == "failed":
        raise SystemExit(1)


@click.group()
def pipeline() -> None:
    """Lifecycle pipelines: step graphs, cached steps, durable runs, triggers."""


@pipeline.command()
@click.argument("reference")
@_PARAM
@click.option("--resume", is_flag=True, help="Resume the pipeline's unfinished run if it can be.")
@click.option("--actor", default=None, help="Who (default: the current user).")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.pass_context
def run(
    ctx: click.Context,
    reference: str,
    pairs: tuple[str, ...],
    resume: bool,
    actor: str | None,
    as_json: bool,
) -> None:
    """Run the pipeline REFERENCE (package.module:factory) now; exit 1 if it fails."""
    from shipyard.pipelines.runs import run_pipeline

    ws = open_workspace(ctx)
    built = _load(reference, pairs)
    done = run_pipeline(
        ws,
        built,
        trigger={"kind": "command", "reason": "shipyard pipeline run"},
        actor=actor,
        on_step=None if as_json else _show_step,
        resume=resume,
    )
    _finish(done, as_json)


@pipeline.command()
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.pass_context
def status(ctx: click.Context, run_id: str | None, as_json: bool) -> None:
    """The steps of RUN_ID (default: the latest run): status, times, log lines, error."""
    from shipyard.pipelines.runs import get_run, list_runs

    ws = open_workspace(ctx)
    if run_id is None:
        latest = list_runs(ws, limit=1)
        if not latest:
            console().print("no pipeline run yet: start one with `shipyard pipeline run REF`")
            return
        found = latest[0]
    else:
        found = get_run(ws, run_id)
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=2))
    else:
        _print_run(found)


@pipeline.command("list")
@click.option("--pipeline", "name", default=None, help="Only runs of this pipeline (its name).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@click.pass_context
def list_(ctx: click.Context, name: str | None, limit: int, as_json: bool) -> None:
    """Pipeline runs, newest first."""
    from rich.table import Table

    from shipyard.pipelines.runs import list_runs

    runs = list_runs(open_workspace(ctx), name, limit=limit)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in runs], indent=2))
        return
    if not runs:
        console().print("no pipeline run yet")
        return
    table = Table(
        "run", "pipeline", "status", "trigger", "started (UTC)", "finished (UTC)", "steps"
    )
    for found in runs:
        counts: dict[str, int] = {}
        for record in found.steps.values():
            counts[str(record.status)] = counts.get(str(record.status), 0) + 1
        status_text = str(found.status)
        table.add_row(
            found.run_id,
            found.pipeline,
            f"[{_STYLES.get(status_text, '')}]{status_text}[/]",
            str(found.trigger.get("kind", "")),
            _when(found.started_at),
            _when(found.finished_at),
            ", ".join(f"{n} {s}" for s, n in counts.items()),
        )
    console().print(table)


@pipeline.command()
@click.argument("run_id")
@click.option("--force", is_flag=True, help="Take over a run that looks alive (its process?).")
@click.option("--ref", "reference", default=None, help="Import path (default: the run's own).")
@_PARAM
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.pass_context
def resume(
    ctx: click.Context,
    run_id: str,
    force: bool,
    reference: str | None,
    pairs: tuple[str, ...],
    as_json: bool,
) -> None:
    """Continue RUN_ID from its first unfinished step (waiting, failed, or its process died);
    a run that still looks alive only with --force."""
    from shipyard.errors import PipelineError
    from shipyard.pipelines.graph import load_pipeline
    from shipyard.pipelines.runs import get_run, resume_run

    ws = open_workspace(ctx)
    stored = get_run(ws, run_id)
    source = stored.graph.get("source")
    if reference is not None:
        built = _load(reference, pairs)
    elif source is None:
        raise PipelineError(
            f"Run {run_id} of {stored.pipeline!r} was started from Python, not from an import "
            "path: pass --ref package.module:factory (and its --param), or call resume_run."
        )
    else:
        built = load_pipeline(source["ref"], **{**source["params"], **_params(pairs)})
    done = resume_run(ws, built, run_id, force=force, on_step=None if as_json else _show_step)
    _finish(done, as_json)


@pipeline.command()
@click.argument("reference")
@_PARAM
@click.option("--json", "as_json", is_flag=True, help="Print the graph as JSON.")
def graph(reference: str, pairs: tuple[str, ...], as_json: bool) -> None:
    """Validate the pipeline REFERENCE and show its steps in run order."""
    from rich.table import Table

    described = _load(reference, pairs).describe()
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    table = Table("#", "step", "reads", "params", "cache", "version", "function")
    for i, step in enumerate(described["steps"], 1):
        table.add_row(
            str(i),
            step["name"],
            ", ".join(step["inputs"]),
            json.dumps(step["params"]) if step["params"] else "",
            "yes" if step["cache"] else "no",
            step["version"],
            step["fn"],
        )
    out = console()
    out.print(f"pipeline {described['name']!r}: {len(described['steps'])} steps, graph valid")
    out.print(table)


@pipeline.command()
@click.argument("reference")
@_PARAM
@click.option("--every", default=None, help="Run when the last run started this long ago (7D).")
@click.option("--on-alert", "endpoints", multiple=True, help="Run on a new open alert (repeat).")
@click.option("--rule", "rules", multiple=True, help="Only alerts of this rule (repeatable).")
@click.option("--poll", "poll_every", default="30s", show_default=True, help="How often to look.")
@click.option("--once", is_flag=True, help="Look once, act, and exit.")
@click.pass_context
def watch(
    ctx: click.Context,
    reference: str,
    pairs: tuple[str, ...],
    every: str | None,
    endpoints: tuple[str, ...],
    rules: tuple[str, ...],
    poll_every: str,
    once: bool,
) -> None:
    """Start REFERENCE when due (--every, --on-alert); resume its waiting runs when their
    retry time comes. Never two runs of it at once."""
    from shipyard.pipelines.triggers import (
        OnAlert,
        Schedule,
        Trigger,
        WatchEvent,
        WatchSpec,
        parse_duration,
    )
    from shipyard.pipelines.triggers import watch as watch_loop

    triggers: list[Trigger] = [Schedule(every)] if every else []
    triggers += [OnAlert(endpoint, tuple(rules)) for endpoint in endpoints]
    if not triggers:
        raise click.UsageError("give --every, --on-alert, or both")
    spec = WatchSpec(_load(reference, pairs), tuple(triggers))
    poll_s = parse_duration(poll_every, "--poll", "shipyard pipeline watch").total_seconds()
    ws = open_workspace(ctx)
    out = console()

    def show(event: WatchEvent) -> None:
        out.print(f"{_when(datetime.now(UTC))} UTC {event.pipeline}: {event.message}")

    if not once:
        out.print(f"watching {spec.pipeline.name!r} every {poll_every} (Ctrl-C to stop)")
    events = watch_loop(ws, [spec], poll_s=poll_s, once=once, on_event=show)
    if once and not events:
        out.print(f"{spec.pipeline.name}: nothing due")
