"""``shipyard monitor alerts``: alert rules on monitored quantities, and the alerts raised.

A thin layer over :mod:`shipyard.monitoring.alerts`: ``add`` / ``rules`` / ``remove`` manage
an endpoint's rules, ``evaluate`` applies them to the stored points (``shipyard monitor
run`` does it after each run), ``list`` shows the alerts and ``ack`` acknowledges one.
Lists print a table, or JSON with ``--json``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from shipyard.cli._common import console, open_workspace

if TYPE_CHECKING:
    from shipyard.monitoring.alerts import Alert

_STATUSES = ("open", "acknowledged", "resolved", "all")


@click.group()
def alerts() -> None:
    """Alert rules on monitored quantities, and the alerts they raise."""


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M")


def _print_alerts(found: list[Alert], title: str) -> None:
    from rich.table import Table

    out = console()
    if not found:
        out.print(f"{title}: none")
        return
    table = Table(
        "id", "status", "endpoint", "rule", "alert", "raised (UTC)", "webhook", title=title
    )
    for alert in found:
        status = str(alert.status)
        if alert.acknowledged_by:
            status += f" by {alert.acknowledged_by}"
        message = alert.message + (f"\nnote: {alert.note}" if alert.note else "")
        table.add_row(
            str(alert.id),
            status,
            alert.endpoint,
            alert.rule,
            message,
            _when(alert.raised_at),
            alert.delivery or "",
            style="bold red" if str(alert.status) == "open" else None,
        )
    out.print(table)


@alerts.command()
@click.argument("endpoint")
@click.argument("name")
@click.option(
    "--metric", required=True, help="a metric name, or a prefix such as 'drift.distance.*'"
)
@click.option("--op", type=click.Choice([">", ">=", "<", "<="]), required=True)
@click.option("--threshold", type=float, required=True)
@click.option("--windows", type=int, default=1, show_default=True, help="consecutive windows")
@click.option("--group", help="only this group (e.g. 'fraud v3'); default: every group")
@click.option("--webhook", help="http(s) URL the alerts are posted to as JSON")
@click.option("--description", default="", help="what the rule is for")
@click.option("--disabled", is_flag=True, help="store the rule without evaluating it")
@click.option("--replace", is_flag=True, help="replace a rule of the same name")
@click.option("--actor", default=None, help="Who (default: the current user).")
@click.pass_context
def add(
    ctx: click.Context,
    endpoint: str,
    name: str,
    metric: str,
    op: str,
    threshold: float,
    windows: int,
    group: str | None,
    webhook: str | None,
    description: str,
    disabled: bool,
    replace: bool,
    actor: str | None,
) -> None:
    """Add the rule NAME to ENDPOINT: METRIC compared with THRESHOLD over N windows."""
    from shipyard.monitoring.alerts import AlertRule, add_rule

    rule = AlertRule(
        name=name,
        endpoint=endpoint,
        metric=metric,
        op=op,
        threshold=threshold,
        windows=windows,
        group=group,
        webhook=webhook,
        description=description,
        enabled=not disabled,
    )
    add_rule(open_workspace(ctx), rule, replace=replace, actor=actor)
    console().print(f"{endpoint}: rule {name!r} stored: {rule.describe()}")


@alerts.command()
@click.argument("endpoint", required=False)
@click.option("--json", "as_json", is_flag=True, help="print the rules as JSON")
@click.pass_context
def rules(ctx: click.Context, endpoint: str | None, as_json: bool) -> None:
    """The alert rules of ENDPOINT (default: of every endpoint)."""
    from rich.table import Table

    from shipyard.monitoring.alerts import list_rules

    found = list_rules(open_workspace(ctx), endpoint)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in found], indent=2))
        return
    out = console()
    if not found:
        out.print("no alert rule")
        return
    table = Table("endpoint", "name", "rule", "group", "webhook", "enabled", "description")
    for rule in found:
        # the host only: a webhook's path often carries its secret
        host = "" if rule.webhook is None else urlsplit(rule.webhook).hostname or ""
        table.add_row(
            rule.endpoint,
            rule.name,
            rule.describe(),
            rule.group or "every group",
            host,
            "yes" if rule.enabled else "no",
            rule.description,
        )
    out.print(table)


@alerts.command()
@click.argument("endpoint")
@click.argument("name")
@click.pass_context
def remove(ctx: click.Context, endpoint: str, name: str) -> None:
    """Remove ENDPOINT's rule NAME; its open alerts are resolved."""
    from shipyard.monitoring.alerts import remove_rule

    remove_rule(open_workspace(ctx), endpoint, name)
    console().print(f"{endpoint}: rule {name!r} removed")


@alerts.command()
@click.argument("endpoint")
@click.option("--no-post", is_flag=True, help="store the alerts without posting webhooks")
@click.option("--json", "as_json", is_flag=True, help="print the alerts as JSON")
@click.pass_context
def evaluate(ctx: click.Context, endpoint: str, no_post: bool, as_json: bool) -> None:
    """Apply ENDPOINT's rules to its stored points; print the open alerts."""
    from shipyard.monitoring.alerts import evaluate_rules

    found = evaluate_rules(open_workspace(ctx), endpoint, post=not no_post)
    if as_json:
        click.echo(json.dumps([a.to_dict() for a in found], indent=2))
    else:
        _print_alerts(found, f"{endpoint}: alerts")


@alerts.command("list")
@click.argument("endpoint", required=False)
@click.option(
    "--status",
    type=click.Choice(_STATUSES),
    default=None,
    help="only alerts of this status; default: open and acknowledged",
)
@click.option("--json", "as_json", is_flag=True, help="print the alerts as JSON")
@click.pass_context
def list_(ctx: click.Context, endpoint: str | None, status: str | None, as_json: bool) -> None:
    """The alerts of ENDPOINT (default: of every endpoint), oldest first."""
    from shipyard.monitoring.alerts import ACTIVE, list_alerts

    wanted = ACTIVE if status is None else status
    found = list_alerts(open_workspace(ctx), endpoint, status=wanted)
    if as_json:
        click.echo(json.dumps([a.to_dict() for a in found], indent=2))
    else:
        kind = status or "open and acknowledged"
        _print_alerts(found, f"{endpoint or 'every endpoint'}: {kind} alerts")


@alerts.command()
@click.argument("alert_id", metavar="ID", type=int)
@click.option("--note", default="", help="what was seen or done")
@click.option("--actor", default=None, help="Who (default: the current user).")
@click.pass_context
def ack(ctx: click.Context, alert_id: int, note: str, actor: str | None) -> None:
    """Acknowledge alert ID (it still resolves on its own)."""
    from shipyard.monitoring.alerts import acknowledge

    alert = acknowledge(open_workspace(ctx), alert_id, actor=actor, note=note)
    console().print(f"alert {alert.id} acknowledged by {alert.acknowledged_by}: {alert.message}")
