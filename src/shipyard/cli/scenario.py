"""``shipyard scenario``: end-to-end scenarios that show the platform at work, one command each.

A thin layer over :mod:`shipyard.scenarios`: ``drift`` runs the fraud drift scenario and
prints what monitoring found, window by window, and where the HTML report is;
``bad-deploy`` deploys a broken version under live traffic and prints how the endpoint
caught it, rolled back and took the fix by canary; ``retrain`` replays weeks of traffic with
weekly retraining and prints each week's decision (champion kept or challenger promoted).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from shipyard.cli._common import console, progress_bars

if TYPE_CHECKING:
    from rich.console import Console

    from shipyard.scenarios.bad_deploy import BadDeployResult
    from shipyard.scenarios.drift import DriftScenarioResult
    from shipyard.workspace import Workspace


@click.group()
def scenario() -> None:
    """End-to-end scenarios: serve, replay traffic, monitor."""


@scenario.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for report.html and the server's log (default: WORKSPACE/scenario-drift).",
)
@click.option("--endpoint", default="fraud-drift", show_default=True, help="Endpoint to serve.")
@click.option(
    "--drift",
    "kind",
    type=click.Choice(["amounts", "mix"]),
    default="amounts",
    show_default=True,
    help="amounts: a share of customers' amounts multiplied; mix: a segment of the traffic "
    "(small terminals with recent fraud) grows, no row changes.",
)
@click.option(
    "--share",
    type=float,
    default=None,
    help="amounts: share of customers drifted (0.25); mix: the segment's share of week 3 (0.3).",
)
@click.option("--factor", type=float, default=None, help="amounts: their multiplier (3).")
@click.option("--seed", default=0, show_default=True, help="Seed of the drift's draw.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def drift(
    ctx: click.Context,
    out: str | None,
    endpoint: str,
    kind: str,
    share: float | None,
    factor: float | None,
    seed: int,
    as_json: bool,
) -> None:
    """Serve the fraud champion, replay three weeks with a drifted third, and monitor it.

    Uses the workspace's fraud champion, or trains one on a small simulated data set when
    there is none (-w DIR creates the workspace DIR if needed). The third week multiplies
    the amounts of a share of customers (--drift amounts), or grows a segment of the
    traffic where the model is less sure (--drift mix); monitoring runs once with the labels
    of weeks 1-2, again with all of them. Replaces the endpoint's prediction log and labels.
    Exits with 1 when monitoring did not catch the drift (none found in the drifted week, or
    some before).
    """
    from shipyard.scenarios.drift import AmountDrift, run_drift_scenario
    from shipyard.scenarios.mix import MixDrift

    chosen: AmountDrift | MixDrift
    if kind == "mix":
        if factor is not None:
            raise click.UsageError("--factor applies to --drift amounts only")
        chosen = MixDrift(0.3 if share is None else share, seed)
    else:
        chosen = AmountDrift(
            0.25 if share is None else share, 3.0 if factor is None else factor, seed
        )
    chosen.check()  # a bad option fails before the workspace is touched
    ws = _workspace(ctx)
    screen = console()
    folder = Path(out) if out else ws.root / "scenario-drift"
    if as_json:
        result = run_drift_scenario(ws, out=folder, endpoint=endpoint, drift=chosen)
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        screen.print(f"[bold]Fraud drift scenario[/] in workspace {ws.root}")
        with progress_bars(screen) as progress:
            result = run_drift_scenario(
                ws,
                out=folder,
                progress=progress,
                endpoint=endpoint,
                drift=chosen,
            )
        print_result(screen, result)
    if not result.caught:
        ctx.exit(1)


@scenario.command("bad-deploy")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the RCA (HTML, text) and the server's log "
    "(default: WORKSPACE/scenario-bad-deploy).",
)
@click.option(
    "--endpoint", default="fraud-bad-deploy", show_default=True, help="Endpoint to serve."
)
@click.option(
    "--scale",
    "scales",
    multiple=True,
    metavar="COLUMN=FACTOR",
    help="The broken unit conversion packaged with the deployed version (repeatable; "
    "default TX_AMOUNT=100: amounts in cents).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=500.0,
    show_default=True,
    help="Requests per second of the live traffic (one transaction each).",
)
@click.option("--workers", default=2, show_default=True, help="Server worker processes.")
@click.option(
    "--min-requests",
    default=200,
    show_default=True,
    help="Requests the canary needs at each step before it judges the fix.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def bad_deploy(
    ctx: click.Context,
    out: str | None,
    endpoint: str,
    scales: tuple[str, ...],
    rate: float,
    workers: int,
    min_requests: int,
    as_json: bool,
) -> None:
    """Deploy a broken version under live traffic; watch the guardrails roll it back.

    Serves the fraud champion (trained on a small simulated data set when the workspace has
    none), sends it one transaction per request, deploys the champion packaged with amounts
    in cents at 100 %, waits for the server's guardrails to roll it back, writes the root
    cause report, and rolls the fixed version out by canary (5 %, 25 %, 100 %). Replaces the
    endpoint's prediction log and stored guardrails. Exits with 1 unless the rollback was
    automatic, no request failed, the report named the broken column first and the fix was
    promoted.
    """
    from shipyard.scenarios.bad_deploy import run_bad_deploy_scenario

    scale = _scales(scales)
    ws = _workspace(ctx)
    screen = console()
    folder = Path(out) if out else ws.root / "scenario-bad-deploy"
    options: dict[str, Any] = {
        "out": folder,
        "endpoint": endpoint,
        "scale": scale,
        "rate": rate,
        "workers": workers,
        "min_requests": min_requests,
    }
    if as_json:
        result = run_bad_deploy_scenario(ws, **options)
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        screen.print(f"[bold]Bad-deploy scenario[/] in workspace {ws.root}")
        with progress_bars(screen) as progress:
            result = run_bad_deploy_scenario(ws, progress=progress, **options)
        print_bad_deploy(screen, result)
    if not result.ok:
        ctx.exit(1)


def _scales(given: tuple[str, ...]) -> dict[str, float] | None:
    """``COLUMN=FACTOR`` options as a mapping; UsageError naming the bad one."""
    scale: dict[str, float] = {}
    for text in given:
        column, sep, factor = text.partition("=")
        try:
            value = float(factor)
        except ValueError:
            value = float("nan")
        if not sep or not column or not value > 0 or value == float("inf"):
            raise click.UsageError(
                "--scale must be COLUMN=FACTOR with a finite factor > 0 (e.g. "
                f"TX_AMOUNT=100); got {text!r}"
            )
        scale[column] = value
    return scale or None


def _workspace(ctx: click.Context) -> Workspace:
    """The -w workspace, created when the folder has none; else the usual lookup."""
    from shipyard.cli._common import open_workspace
    from shipyard.logs import configure_logging
    from shipyard.workspace import Workspace

    given = (ctx.find_root().obj or {}).get("workspace")
    if given is not None and not (Path(given) / "shipyard.toml").is_file():
        workspace = Workspace.init(given)
        configure_logging(workspace.settings)
        return workspace
    return open_workspace(ctx)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_result(out: Console, result: DriftScenarioResult) -> None:
    """The window table, the drift's onset, the alerts and where the report is."""
    from rich import box
    from rich.table import Table

    from shipyard.scenarios.drift import AmountDrift

    drift = result.drift
    if isinstance(drift, AmountDrift):
        change = (
            f"TX_AMOUNT x{drift.factor:g} for {result.segment_size:,} customers "
            f"({drift.share:.0%}), labels unchanged ({result.dataset} v{result.drifted_version})"
        )
    else:
        change = (
            f"the segment {drift.describe()} grows to {drift.share:.0%} of the week "
            f"({result.segment_size:,} rows, copies of its own rows with their labels)"
        )
    out.print(
        f"{result.model} v{result.version} served as endpoint {result.endpoint}: "
        f"{result.rows:,} transactions in {result.requests:,} requests, "
        f"{result.replay_start} .. {result.replay_end} (event time). From {result.drift_start}, "
        f"{change}."
    )
    table = Table(
        title="Weekly windows: estimated by CBPE (no labels), realized from joined labels",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
    )
    headers = ("week from", "drifted", "est AUC", "est prec", "alerts", "AUC", "AP", "prec")
    for name in headers:
        left = name == "week from"
        # at least a number's width: a narrow terminal wraps headers, never drops a digit
        table.add_column(name, justify="left" if left else "right", min_width=9 if left else 6)
    ref = result.reference
    table.add_row(
        "reference", "", "", "", _number(ref["alert_rate"]), _number(ref["roc_auc"]), "",
        _number(ref["precision"]),
    )  # fmt: skip
    for n, w in enumerate(result.windows, 1):
        late = w.realized_before_labels["roc_auc"] is None and w.realized["roc_auc"] is not None
        table.add_row(
            f"{n}: {w.start:%m-%d}",
            str(len(w.drifted_columns)) if w.drifted_columns else "none",
            _number(w.estimated["roc_auc"]),
            _number(w.estimated["precision"]),
            _number(w.alert_rate),
            _number(w.realized["roc_auc"]) + ("*" if late else ""),
            _number(w.realized["average_precision"]),
            _number(w.realized["precision"]),
        )
    out.print(table)
    rows = ", ".join(f"{w.rows:,}" for w in result.windows)
    out.print(f"Rows per week: {rows}")
    for n, w in enumerate(result.windows, 1):
        if w.drifted_columns:
            out.print(f"Week {n} drifted: {', '.join(w.drifted_columns)}")
    out.print(
        "alerts: share of scores >= 0.5; prec: precision at 0.5; *: known only once the drifted "
        "week's labels were joined (the second monitoring run)"
    )
    if result.first_drift_day is not None:
        out.print(
            f"Drift found from [bold]{result.first_drift_day}[/] (daily windows): "
            f"{', '.join(result.onset_columns)}."
        )
    else:
        out.print("[bold red]No drift found in the drifted week.[/]")
    if result.background_columns:
        out.print(
            "Daily windows before the drift flagged "
            f"{', '.join(result.background_columns)} too: the reference is a whole week, "
            "which one day (a weekend) does not look like; weekly windows do not flag it."
        )
    out.print(f"Alerts before the drifted week's labels: {len(result.alerts_before_labels)}")
    for line in result.alerts_before_labels:
        out.print(f"  {line}")
    out.print(f"Alerts with every label joined: {len(result.alerts)}")
    for line in result.alerts:
        out.print(f"  {line}")
    out.print(f"Report: [bold]{result.report}[/] (open it in a browser)")
    if not result.caught:
        weeks = ", ".join(str(w.start) for w in result.false_alarm_windows)
        found = f"false alarms in the weeks of {weeks}" if weeks else "no drift in the drifted week"
        out.print(f"[bold red]Monitoring did not catch the drift cleanly: {found}.[/]")


def print_bad_deploy(out: Console, result: BadDeployResult) -> None:
    """What happened, revision by revision, and the numbers: detection, failures, alert rates."""
    from rich import box
    from rich.table import Table

    scale = ", ".join(f"{c} x{f:g}" for c, f in result.scale.items())
    out.print(
        f"{result.model} v{result.champion} served as endpoint {result.endpoint}; "
        f"v{result.broken} = v{result.champion} packaged with {scale} (the bug), "
        f"v{result.fixed} = the same without it (the fix)."
    )
    table = Table(title="Policy revisions", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for name in ("rev", "at (UTC)", "by", "policy", "reason"):
        table.add_column(name, overflow="fold")
    for r in result.revisions:
        table.add_row(str(r.revision), f"{r.at:%H:%M:%S}", r.actor, r.policy, r.reason[:120])
    out.print(table)
    detection = (
        f"[bold]{result.requests_to_detection:,}[/] requests answered by v{result.broken} "
        f"before the rollback revision ({result.seconds_to_detection:.1f} s after the deploy; "
        f"{result.broken_requests:,} in all while the workers switched)"
        if result.detected and result.seconds_to_detection is not None
        else "[bold red]no automatic rollback[/]"
    )
    out.print(f"Detection: {detection}.")
    failed = "bold" if result.failed_requests == 0 else "bold red"
    out.print(
        f"Failed requests: [{failed}]{result.failed_requests}[/] of {result.requests:,} "
        f"(answers by status: {result.statuses}); automatic rollbacks: "
        f"{result.automatic_rollbacks}."
    )
    rates = ", ".join(
        f"{phase} {'-' if v is None else f'{v:.1%}'}" for phase, v in result.alert_rates.items()
    )
    out.print(f"Alert rate (score >= {result.threshold:g}): {rates}.")
    out.print(
        f"Root cause: [bold]{result.rca_top_feature or 'none found'}[/] first "
        f"(seen differently: {', '.join(result.rca_features) or 'none'}); "
        f"{result.rca_html} and {result.rca_text}."
    )
    steps = "; ".join(_canary_step(s) for s in result.canary_steps)
    out.print(
        f"Canary of v{result.fixed}: [bold]{result.canary_outcome}[/] ({result.canary_reason})"
        + (f": {steps}" if steps else "")
    )
    out.print(f"Final policy: {result.final_policy}.")
    out.print(f"Alerts: {len(result.alerts)}")
    for line in result.alerts:
        out.print(f"  {line[:200]}")
    out.print(f"Audit trail of the run: {len(result.audit)} entries")
    for line in result.audit:
        out.print(f"  {line[:200]}")
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    out.print(f"Seconds per stage: {seconds}.")
    if not result.ok:
        out.print("[bold red]The scenario did not go as it should: see above.[/]")


def _canary_step(step: dict[str, Any]) -> str:
    """One canary step in a few words: ``25% advanced after 212 requests``."""
    return f"{step['percent']:g}% {step['decision']} after {step['requests']:,} requests"


@scenario.command("retrain")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the server's log and result.json (default: WORKSPACE/scenario-retrain).",
)
@click.option("--endpoint", default="fraud-retrain", show_default=True, help="Endpoint to serve.")
@click.option(
    "--weeks", type=click.IntRange(1, 10), default=7, show_default=True, help="Weeks replayed."
)
@click.option(
    "--pattern-week",
    type=int,
    default=3,
    show_default=True,
    help="First week whose traffic holds the new fraud pattern (night bursts).",
)
@click.option(
    "--n-boot", default=1000, show_default=True, help="Bootstrap draws of the metric's interval."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def retrain(
    ctx: click.Context,
    out: str | None,
    endpoint: str,
    weeks: int,
    pattern_week: int,
    n_boot: int,
    as_json: bool,
) -> None:
    """Replay weeks of fraud traffic, retrain weekly, promote only a significantly better model.

    Needs a workspace without a fraud model (-w DIR creates DIR if needed): it simulates a
    small data set, trains and serves a champion, and from --pattern-week adds a new fraud
    pattern as a new data set version. At each week's end the retraining pipeline runs on
    the labels known by then (7-day delay); a challenger that passes its gates goes out by
    canary on the next week's traffic. Exits with 1 unless the champion was kept every week
    before the pattern and a challenger was promoted after it.
    """
    from shipyard.scenarios.retrain import run_retrain_scenario

    if not 2 <= pattern_week <= weeks:
        raise click.BadParameter(f"must be in [2, {weeks}] (--weeks)", param_hint="--pattern-week")
    ws = _workspace(ctx)
    folder = Path(out) if out else ws.root / "scenario-retrain"
    options = {"out": folder, "weeks": weeks, "pattern_week": pattern_week, "endpoint": endpoint}
    if as_json:
        result = run_retrain_scenario(ws, n_boot=n_boot, **options)  # type: ignore[arg-type]
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        screen = console()
        screen.print(f"[bold]Retraining scenario[/] in workspace {ws.root}")
        with progress_bars(screen) as progress:
            result = run_retrain_scenario(
                ws,
                n_boot=n_boot,
                progress=progress,
                **options,  # type: ignore[arg-type]
            )
        screen.print(result.table(), markup=False, soft_wrap=True)
        screen.print(
            f"\n{result.rows:,} transactions replayed, {result.labels:,} labels ingested; "
            f"the pattern added {result.pattern_frauds:,} frauds (data set v"
            f"{result.pattern_version}); champion v{result.champion_before} -> "
            f"v{result.champion_after}."
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    if not result.shown:
        ctx.exit(1)
