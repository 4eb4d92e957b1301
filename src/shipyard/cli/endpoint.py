"""``shipyard endpoint``: traffic policies (A/B, canary, shadow, sticky), rollback, status."""

from __future__ import annotations

import click

from shipyard.cli._common import console, open_workspace


def _arm(text: str) -> tuple[int, float]:
    version, _, weight = text.partition("=")
    try:
        return int(version.lstrip("v")), float(weight or 1)
    except ValueError:
        raise click.BadParameter(f"expected VERSION=WEIGHT such as 2=10, got {text!r}") from None


@click.group()
def endpoint() -> None:
    """Traffic policies of serving endpoints."""


@endpoint.command("set-traffic")
@click.argument("name")
@click.option(
    "--version", "arms", multiple=True, required=True, help="VERSION=WEIGHT (repeatable)."
)
@click.option("--shadow", "shadows", multiple=True, type=int, help="Shadow version (repeatable).")
@click.option(
    "--sticky-key",
    default=None,
    help="Keep each request's routing key in one arm, e.g. customer: the key is read from "
    "the X-Routing-Key header, else the header of that name, else the V2 parameter "
    "routing_key or of that name. Without it, arms are drawn at random per request.",
)
@click.option("--model", default=None, help="Model name (default: the endpoint's current model).")
@click.option("--reason", required=True, help="Why (recorded).")
@click.pass_context
def set_traffic(
    ctx: click.Context,
    name: str,
    arms: tuple[str, ...],
    shadows: tuple[int, ...],
    sticky_key: str | None,
    model: str | None,
    reason: str,
) -> None:
    """Split NAME's traffic, e.g. --version 1=90 --version 2=10 --shadow 3."""
    from shipyard.errors import ModelNotFoundError
    from shipyard.serving.policy import Arm, TrafficPolicy, apply_policy, get_policy

    ws = open_workspace(ctx)
    if model is None:
        try:
            model = get_policy(ws, name).model
        except ModelNotFoundError:
            model = name
    policy = TrafficPolicy(
        name, model, tuple(Arm(*_arm(a)) for a in arms), tuple(shadows), sticky_key
    )
    stored = apply_policy(ws, policy, reason=reason)
    console().print(f"[green]{name} revision {stored.revision}[/]: {stored.describe()}")


@endpoint.command()
@click.argument("name")
@click.option("--reason", required=True, help="Why (recorded).")
@click.pass_context
def rollback(ctx: click.Context, name: str, reason: str) -> None:
    """Re-apply NAME's previous traffic policy."""
    from shipyard.serving.policy import rollback_policy

    stored = rollback_policy(open_workspace(ctx), name, reason=reason)
    console().print(f"[green]{name} revision {stored.revision}[/]: {stored.describe()}")


@endpoint.command()
@click.argument("name")
@click.pass_context
def status(ctx: click.Context, name: str) -> None:
    """NAME's current policy and its history."""
    from rich.table import Table

    from shipyard.serving.policy import policy_history

    table = Table("revision", "when", "traffic", "who", "why", title=f"Endpoint {name}")
    for p in policy_history(open_workspace(ctx), name):
        when = f"{p.created_at:%Y-%m-%d %H:%M:%S}" if p.created_at else ""
        table.add_row(str(p.revision), when, p.describe(), p.actor, p.reason)
    console().print(table)


@endpoint.group()
def guardrails() -> None:
    """Rules a newly deployed version must keep (see docs/guardrails.md)."""


@guardrails.command("add")
@click.argument("name")
@click.argument("guardrail")
@click.option(
    "--metric",
    required=True,
    help="alert_rate, alert_rate_lift, score_shift, error_rate, latency_p99_ms or realized_fpr.",
)
@click.option("--op", required=True, help="What must hold: '<=' or '>='.")
@click.option("--threshold", type=float, required=True, help="The bound.")
@click.option("--min-count", type=int, default=200, show_default=True, help="Observations first.")
@click.option("--window", type=int, default=2000, show_default=True, help="Judged on the last N.")
@click.option("--alert-only", is_flag=True, help="A trip raises an alert, never rolls back.")
@click.pass_context
def guardrails_add(
    ctx: click.Context,
    name: str,
    guardrail: str,
    metric: str,
    op: str,
    threshold: float,
    min_count: int,
    window: int,
    alert_only: bool,
) -> None:
    """Store GUARDRAIL for endpoint NAME: alerts --metric alert_rate --op '<=' --threshold 0.05."""
    from shipyard.monitoring.guardrails import Guardrail, add_guardrail

    rule = Guardrail(guardrail, metric, op, threshold, min_count, window, not alert_only)
    add_guardrail(open_workspace(ctx), name, rule)
    console().print(f"[green]guardrail {guardrail!r} stored for {name}[/]: {rule.describe()}")


@guardrails.command("list")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def guardrails_list(ctx: click.Context, name: str, as_json: bool) -> None:
    """The guardrails that apply to endpoint NAME (the defaults when none are stored)."""
    import json

    from rich.table import Table

    from shipyard.monitoring.guardrails import list_guardrails, stored_guardrails

    ws = open_workspace(ctx)
    rules = list_guardrails(ws, name)
    if as_json:
        click.echo(json.dumps([g.to_dict() for g in rules], indent=2))
        return
    source = "stored" if stored_guardrails(ws, name) else "defaults: none stored"
    table = Table("name", "rule", title=f"Guardrails of {name} ({source})")
    for g in rules:
        table.add_row(g.name, g.describe())
    console().print(table)


@guardrails.command("remove")
@click.argument("name")
@click.argument("guardrail")
@click.pass_context
def guardrails_remove(ctx: click.Context, name: str, guardrail: str) -> None:
    """Delete the stored GUARDRAIL of endpoint NAME."""
    from shipyard.monitoring.guardrails import remove_guardrail

    removed = remove_guardrail(open_workspace(ctx), name, guardrail)
    console().print(f"[green]guardrail {guardrail!r} removed from {name}[/]: {removed.describe()}")


@guardrails.command("evaluate")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--since", default=None, help="ISO time (default: when the policy brought it in).")
@click.option("--baseline", type=int, default=None, help="Baseline version (default: previous).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def guardrails_evaluate(
    ctx: click.Context,
    name: str,
    version: int,
    since: str | None,
    baseline: int | None,
    as_json: bool,
) -> None:
    """Judge VERSION's guardrails on endpoint NAME's prediction log (and labels)."""
    import json
    from datetime import datetime

    from rich.table import Table

    from shipyard.monitoring.guardrails import evaluate_guardrails

    start = None
    if since is not None:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            raise click.BadParameter(f"expected an ISO time, got {since!r}") from None
    ws = open_workspace(ctx)
    results = evaluate_guardrails(ws, name, version, since=start, baseline=baseline)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    colours = {"ok": "green", "tripped": "red", "insufficient": "yellow"}
    table = Table("guardrail", "status", "detail", title=f"{name} v{version}")
    for r in results:
        table.add_row(r.guardrail.name, f"[{colours[r.status]}]{r.status}[/]", r.detail)
    console().print(table)


@endpoint.command()
@click.argument("name")
@click.argument("version", type=int)
@click.option("--steps", default="5,25,100", show_default=True, help="Candidate percentages.")
@click.option("--min-requests", type=int, default=200, show_default=True, help="Per step.")
@click.option("--step-timeout", type=float, default=600.0, show_default=True, help="Seconds.")
@click.option("--alias", default="champion", show_default=True, help="Promoted at the end.")
@click.option("--reason", default="", help="Why (recorded).")
@click.pass_context
def canary(
    ctx: click.Context,
    name: str,
    version: int,
    steps: str,
    min_requests: int,
    step_timeout: float,
    alias: str,
    reason: str,
) -> None:
    """Roll VERSION out on NAME step by step (5% -> 25% -> 100%), judged by guardrails."""
    from shipyard.pipelines.canary import CanaryStep, run_canary

    try:
        percents = tuple(float(p) for p in steps.split(","))
    except ValueError:
        raise click.BadParameter(f"expected percentages such as 5,25,100, got {steps!r}") from None
    out = console()

    def shown(step: CanaryStep) -> None:
        seconds = (step.ended_at - step.started_at).total_seconds()
        out.print(
            f"  {step.percent:g}% (revision {step.revision}): [bold]{step.decision}[/] after "
            f"{seconds:.1f} s, {step.requests} requests"
        )
        for r in step.results:
            out.print(f"    {r.guardrail.name}: {r.status} — {r.detail}")

    out.print(f"Canary of v{version} on {name}: steps {steps}")
    result = run_canary(
        open_workspace(ctx),
        name,
        version,
        steps=percents,
        min_requests=min_requests,
        step_timeout_s=step_timeout,
        promote_alias=alias,
        reason=reason,
        on_step=shown,
    )
    colour = "green" if result.outcome == "promoted" else "red"
    out.print(f"[{colour}]{result.outcome}[/]: {result.reason}")
    if result.outcome != "promoted":
        ctx.exit(1)
