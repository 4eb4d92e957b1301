"""``shipyard audit``: read the workspace's audit trail and verify its hash chain.

``audit log`` lists entries (a table, or JSON with ``--json``); ``audit verify`` recomputes
the chain and exits 1 naming the first edited, removed, inserted or reordered entry.
"""

from __future__ import annotations

import json
from typing import Any

import click

from shipyard.cli._common import console, open_workspace


@click.group()
def audit() -> None:
    """The audit trail: who changed what, when and why, hash-chained so tampering shows."""


def _change(before: Any, after: Any) -> str:
    """``v1 -> v2`` for alias changes, the policies' one-line descriptions, else JSON."""

    def short(state: Any) -> str:
        if state is None:
            return "—"
        if isinstance(state, dict) and "describe" in state:
            return f"r{state.get('revision')} {state['describe']}"
        if isinstance(state, dict) and set(state) <= {"alias", "version"}:
            return "—" if state.get("version") is None else f"v{state['version']}"
        if isinstance(state, dict) and len(state) == 1:
            return str(next(iter(state.values())))
        return json.dumps(state, sort_keys=True)

    if before is None and after is None:
        return ""
    return f"{short(before)} -> {short(after)}"


def _verdict(details: dict[str, Any]) -> str:
    """`` gate passed`` / `` fairness failed`` ...: the gates' results an entry carries."""
    parts = []
    if "passed" in details:
        parts.append("gate passed" if details["passed"] else "gate failed")
    fairness = details.get("fairness")
    if isinstance(fairness, list) and fairness:
        passed = all(isinstance(r, dict) and r.get("passed") for r in fairness)
        parts.append("fairness passed" if passed else "fairness failed")
    return "".join(f" {p}" for p in parts)


@audit.command("log")
@click.option("--subject", help="only entries about this model or endpoint name")
@click.option("--kind", help="only this kind of subject: model, endpoint, predictions")
@click.option("--action", help="only this action: register, promote, policy.set, gate ...")
@click.option("--json", "as_json", is_flag=True, help="print the entries as JSON")
@click.pass_context
def log(
    ctx: click.Context, subject: str | None, kind: str | None, action: str | None, as_json: bool
) -> None:
    """List the audit trail, oldest first: sequence, when, who, what, before -> after, why."""
    from rich.table import Table

    from shipyard.governance.audit import entries

    found = entries(open_workspace(ctx), kind=kind, name=subject, action=action)
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in found], indent=2))
        return
    table = Table("#", "when (UTC)", "who", "action", "subject", "version", "change", "why")
    for e in found:
        table.add_row(
            str(e.sequence),
            f"{e.at:%Y-%m-%d %H:%M:%S}",
            e.actor,
            e.action,
            f"{e.kind} {e.name}" + (f"@{e.alias}" if e.alias else ""),
            "" if e.version is None else f"v{e.version}",
            (_change(e.before, e.after) + _verdict(e.details)).strip(),
            e.reason,
        )
    console().print(table)
    if not found:
        console().print("No entries" + (" match." if subject or kind or action else "."))


@audit.command()
@click.option(
    "--expect-head",
    metavar="HASH",
    help="a head hash printed by an earlier verify: the trail must still contain it",
)
@click.option(
    "--logs",
    is_flag=True,
    help="also check every compacted prediction-log part against its recorded SHA-256",
)
@click.option(
    "--state",
    is_flag=True,
    help="also check that the live aliases and traffic policies are the ones the trail explains",
)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_context
def verify(
    ctx: click.Context, expect_head: str | None, logs: bool, state: bool, as_json: bool
) -> None:
    """Recompute the hash chain; exit 1 naming the first edited, removed, inserted or
    reordered entry. Keep the printed head hash elsewhere to detect a rewritten chain."""
    from shipyard.governance.audit import verify as verify_trail
    from shipyard.governance.audit import verify_prediction_logs, verify_state

    workspace = open_workspace(ctx)
    report = verify_trail(workspace, expected_head=expect_head)
    parts = verify_prediction_logs(workspace) if logs else None
    live = verify_state(workspace) if state else None
    ok = report.ok and (parts is None or parts.ok) and (live is None or live.ok)
    if as_json:
        problem = report.problem
        out: dict[str, Any] = {
            "ok": ok,
            "entries": report.entries,
            "head": report.head,
            "problem": None
            if problem is None
            else {
                "sequence": problem.sequence,
                "tampering": problem.tampering.value,
                "message": problem.message,
            },
        }
        if parts is not None:
            out["logs"] = {"parts_checked": parts.parts_checked, "problems": list(parts.problems)}
        if live is not None:
            out["state"] = {"problems": list(live.problems)}
        click.echo(json.dumps(out, indent=2))
    else:
        out_console = console()
        colour = "green" if report.ok else "red"
        out_console.print(f"[{colour}]{report.describe()}[/]", soft_wrap=True)
        if parts is not None and parts.ok:
            out_console.print(
                f"[green]prediction logs intact: {parts.parts_checked} Parquet part(s) match "
                "their recorded SHA-256[/]"
            )
        for line in parts.problems if parts is not None else ():
            out_console.print(f"[red]prediction log: {line}[/]")
        if live is not None and live.ok:
            out_console.print("[green]live state explained: aliases and traffic policies[/]")
        for line in live.problems if live is not None else ():
            out_console.print(f"[red]live state: {line}[/]")
    if not ok:
        ctx.exit(1)
