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
