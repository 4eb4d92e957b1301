"""``shipyard experiment``: start, watch and stop an A/B test of two versions on an endpoint.

A thin layer over :mod:`shipyard.experiments.lifecycle` (see ``docs/experiments.md``):
``start`` splits the endpoint's traffic by a sticky key, ``status`` shows the metric per
arm, the always-valid test and the guardrails (and stops the experiment early when a
guardrail says the treatment is worse), ``stop`` sends all traffic to the winner, ``list``
shows every experiment.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import click

from shipyard.cli._common import console, open_workspace

if TYPE_CHECKING:
    from shipyard.experiments.lifecycle import ExperimentStatus
    from shipyard.experiments.metrics import MetricResult
    from shipyard.experiments.sequential import ArmStats


def _split(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        weights = tuple(float(p) for p in parts)
    except ValueError:
        weights = ()
    if len(weights) != 2 or not all(math.isfinite(w) and w > 0 for w in weights):
        raise click.BadParameter(f"expected two positive numbers such as 50,50; got {text!r}")
    return weights[0], weights[1]


def _every(text: str) -> str | int:
    if text == "day":
        return text
    try:
        return int(text)
    except ValueError:
        raise click.BadParameter(f"expected 'day' or a number of units, got {text!r}") from None


@click.group()
def experiment() -> None:
    """Online experiments: A/B tests of two versions, with peeking-safe statistics."""


@experiment.command()
@click.argument("name")
@click.option("--endpoint", required=True, help="The endpoint whose traffic is split.")
@click.option("--control", type=int, required=True, help="The version now serving.")
@click.option("--treatment", type=int, required=True, help="The version tried.")
@click.option("--split", default="50,50", show_default=True, help="CONTROL,TREATMENT weights.")
@click.option("--metric", required=True, help="precision, caught_rate, alert_rate, ...")
@click.option("--guardrail", "guardrails", multiple=True, help="A metric that must not worsen.")
@click.option("--sticky-key", required=True, help="The routing key of a unit, e.g. customer.")
@click.option("--alpha", type=float, default=0.05, show_default=True)
@click.option("--method", type=click.Choice(["msprt", "fixed"]), default="msprt", show_default=True)
@click.option(
    "--planned-units",
    type=int,
    default=None,
    help="Units per arm: the fixed test waits for them; the mSPRT interval is narrowest there "
    "(default 10,000).",
)
@click.option("--mde", type=float, default=None, help="Relative effect to detect, e.g. 0.1.")
@click.option("--power", type=float, default=0.8, show_default=True)
@click.option("--prepare/--no-prepare", default=True, help="Build both versions' backends first.")
@click.option("--reason", required=True, help="Why (recorded).")
@click.option("--actor", default=None, help="Who (default: the current user).")
@click.pass_context
def start(
    ctx: click.Context,
    name: str,
    endpoint: str,
    control: int,
    treatment: int,
    split: str,
    metric: str,
    guardrails: tuple[str, ...],
    sticky_key: str,
    alpha: float,
    method: str,
    planned_units: int | None,
    mde: float | None,
    power: float,
    prepare: bool,
    reason: str,
    actor: str | None,
) -> None:
    """Start experiment NAME: --control 3 --treatment 4 split by --sticky-key customer."""
    from shipyard.experiments.lifecycle import start_experiment

    weights = _split(split)
    ws = open_workspace(ctx)
    if prepare:  # workers then load verified backends as soon as the policy changes
        from shipyard.registry.models import ModelRegistry
        from shipyard.serving.backends import prepare_backends
        from shipyard.serving.policy import get_policy

        model = get_policy(ws, endpoint).model
        registry = ModelRegistry(ws)
        for version in (control, treatment):
            prepare_backends(registry, model, version)
    started = start_experiment(
        ws, name, endpoint, control=control, treatment=treatment, split=weights,
        metric=metric, guardrails=guardrails, alpha=alpha, method=method,
        sticky_key=sticky_key, reason=reason, actor=actor, mde=mde, power=power,
        planned_units=planned_units,
    )  # fmt: skip
    console().print(
        f"[green]experiment {name} started[/] on {endpoint} (policy revision "
        f"{started.revision}): {started.policy().describe()}; {started.metric.describe()}"
    )


@experiment.command()
@click.argument("name")
@click.option("--plot", "plot_path", default=None, help="Write the plot here (.png or .svg).")
@click.option("--every", default="day", show_default=True, help="Plot looks: 'day' or N units.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--no-stop", is_flag=True, help="Report a failing guardrail, do not stop.")
@click.pass_context
def status(
    ctx: click.Context, name: str, plot_path: str | None, every: str, as_json: bool, no_stop: bool
) -> None:
    """NAME's arms, metric, always-valid test, guardrails and decision."""
    from shipyard.experiments.lifecycle import experiment_status

    looks = _every(every)
    ws = open_workspace(ctx)
    found = experiment_status(ws, name, stop_on_guardrail=not no_stop)
    plotted = None
    if plot_path is not None:
        from shipyard.experiments.plots import plot_experiment

        plotted = plot_experiment(ws, name, plot_path, every=looks)
    if as_json:
        out = found.to_dict()
        out["plot"] = None if plotted is None else str(plotted)
        click.echo(json.dumps(out, indent=2))
        return
    _print_status(found)
    if plotted is not None:
        console().print(f"plot: {plotted} (summary: {plotted.with_suffix('.txt')})")


def _interval(stats: ArmStats) -> str:
    if stats.n < 2:
        return f"{stats.mean:.4g}"
    half = 1.959963984540054 * math.sqrt(stats.variance / stats.n)
    return f"{stats.mean:.4g} [{stats.mean - half:.4g}, {stats.mean + half:.4g}]"


def _test_row(kind: str, result: MetricResult) -> list[str]:
    test = result.test
    if test is None:
        return [kind, result.metric.describe(), "", "", "", result.decision]
    low = "-inf" if not math.isfinite(test.low) else f"{test.low:+.4g}"
    high = "inf" if not math.isfinite(test.high) else f"{test.high:+.4g}"
    relative = "" if test.relative is None else f" ({test.relative:+.1%})"
    return [
        kind,
        result.metric.describe(),
        f"{test.effect:+.4g}{relative}",
        f"[{low}, {high}]",
        f"{test.p_value:.3g}",
        result.decision,
    ]


def _print_status(found: ExperimentStatus) -> None:
    from rich.table import Table

    e = found.experiment
    out = console()
    out.print(
        f"[bold]{e.name}[/] on {e.endpoint}: {e.status} since {e.started_at:%Y-%m-%d %H:%M} "
        f"UTC by {e.started_by} ({e.reason}); {e.method}, alpha {e.alpha}"
    )
    arms = Table("arm", "version", "units", "unlabelled", f"{e.metric.name} (95% interval)")
    for arm in ("control", "treatment"):
        stats = found.primary.arms[arm]
        arms.add_row(
            arm,
            f"v{e.version(arm)}",
            str(found.units[arm]),
            str(found.unlabelled_units[arm]) if e.metric.needs_labels else "",
            _interval(stats),
        )
    out.print(arms)
    tests = Table("", "metric", "effect (t - c)", "always-valid CI", "p", "decision", title="tests")
    tests.add_row(*_test_row("primary", found.primary))
    for check in found.guardrails:
        style = "bold red" if check.treatment_worse else None
        tests.add_row(*_test_row("guardrail", check), style=style)
    out.print(tests)
    out.print(f"decision: [bold]{found.decision}[/]")
    if found.units_needed is not None:
        out.print(f"units per arm still needed for the MDE of {e.mde:.0%}: {found.units_needed}")
    if found.stopped_early:
        out.print(
            f"[bold red]stopped early[/]: guardrail {found.stopped_early} shows the treatment "
            f"worse; traffic returned to control v{e.control}"
        )
    for note in found.notes:
        out.print(f"note: {note}")


@experiment.command()
@click.argument("name")
@click.option("--reason", required=True, help="Why (recorded).")
@click.option("--winner", type=int, default=None, help="Version to keep (default: control).")
@click.option("--actor", default=None, help="Who (default: the current user).")
@click.pass_context
def stop(ctx: click.Context, name: str, reason: str, winner: int | None, actor: str | None) -> None:
    """Stop NAME: record the result and send all traffic to the winner."""
    from shipyard.experiments.lifecycle import stop_experiment

    stopped = stop_experiment(open_workspace(ctx), name, reason=reason, actor=actor, winner=winner)
    result = stopped.result or {}
    console().print(
        f"[green]experiment {name} stopped[/]: {result.get('decision')}; all traffic to "
        f"v{result.get('winner')} (policy revision {result.get('revision')})"
    )


@experiment.command("list")
@click.option("--endpoint", default=None, help="Only this endpoint's experiments.")
@click.option("--status", "state", type=click.Choice(["running", "stopped"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_(ctx: click.Context, endpoint: str | None, state: str | None, as_json: bool) -> None:
    """Every experiment, oldest first."""
    from rich.table import Table

    from shipyard.experiments.lifecycle import list_experiments

    found = list_experiments(open_workspace(ctx), endpoint, state)
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in found], indent=2))
        return
    out = console()
    if not found:
        out.print("no experiment")
        return
    table = Table("name", "endpoint", "arms", "metric", "status", "started (UTC)", "decision")
    for e in found:
        decision = "" if e.result is None else str(e.result.get("decision"))
        if e.result is not None and e.result.get("stopped_early"):
            decision += f" (stopped early: {e.result['stopped_early']})"
        table.add_row(
            e.name,
            e.endpoint,
            f"v{e.control} vs v{e.treatment} ({e.split[0]:g}/{e.split[1]:g})",
            e.metric.name,
            e.status,
            f"{e.started_at:%Y-%m-%d %H:%M}",
            decision,
        )
    out.print(table)


@experiment.command()
@click.option("--baseline", type=float, required=True, help="Control rate (or mean with --sd).")
@click.option("--mde", type=float, required=True, help="Smallest effect worth detecting.")
@click.option("--relative", is_flag=True, help="Read --mde as a fraction of --baseline.")
@click.option("--sd", type=float, default=None, help="Standard deviation of a mean metric.")
@click.option("--alpha", type=float, default=0.05, show_default=True)
@click.option("--power", "target", type=float, default=0.8, show_default=True)
@click.option("--units", type=int, default=None, help="Units per arm you have: show the power.")
def size(
    baseline: float,
    mde: float,
    relative: bool,
    sd: float | None,
    alpha: float,
    target: float,
    units: int | None,
) -> None:
    """Units per arm to detect --mde with --power (or the power of --units per arm).

    Example: ``shipyard experiment size --baseline 0.02 --mde 0.1 --relative`` (a 2 % alert
    rate, +10 %): 80,638 units per arm for a fixed-horizon test at 80 % power.
    """
    from shipyard.experiments.fixed import power, sample_size

    what = f"{mde:g} ({'relative' if relative else 'absolute'}) on baseline {baseline:g}"
    if units is not None:
        found = power(units, baseline, mde, alpha=alpha, sd=sd, relative=relative)
        click.echo(f"power {found:.3f} to detect {what} with {units:,} units per arm")
        return
    n = sample_size(baseline, mde, alpha=alpha, power=target, sd=sd, relative=relative)
    click.echo(
        f"{n:,} units per arm to detect {what} at alpha {alpha:g} with power {target:g} "
        "(fixed horizon; the always-valid mSPRT needs more in the worst case and stops "
        "earlier when the effect is larger: docs/experiments-statistics.md)"
    )
