"""``shipyard monitor``: drift of an endpoint's traffic, its labels and realized performance.

A thin layer over :mod:`shipyard.monitoring` (see docs/monitoring.md): ``drift`` compares a
window of the prediction log with each version's reference profile, ``labels`` stores a
batch of late labels, ``performance`` gives the realized metrics of the labelled
predictions per window. Each prints a table, or JSON with ``--json``. For incidents (see
docs/incidents.md): ``rca`` writes the root-cause report of a version, ``threshold``
recalibrates a version's decision threshold (or lists them with ``--history``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import click

from shipyard.cli._common import console, open_workspace

_SPANS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


@click.group()
def monitor() -> None:
    """Drift, labels and realized performance of serving endpoints."""


def _since(value: str | None) -> datetime | None:
    """``7d`` / ``12h`` / ``2w`` before now (UTC, naive), or None."""
    if value is None:
        return None
    number, unit = value[:-1], value[-1:].lower()
    if not number.isdigit() or unit not in _SPANS:
        raise click.BadParameter(
            f"expected a number and a unit h, d or w (like 7d); got {value!r}", param_hint="--since"
        )
    return datetime.now(UTC).replace(tzinfo=None) - int(number) * _SPANS[unit]


def _window(since: str | None, start: str | None, end: str | None) -> tuple[Any, Any]:
    if since is not None and start is not None:
        raise click.UsageError("give --since or --start, not both")
    return (_since(since) if since is not None else start), end


_window_options = [
    click.option("--since", help="only the last 7d / 12h / 2w of traffic"),
    click.option("--start", help="window start (ISO date or time, UTC)"),
    click.option("--end", help="window end (ISO date or time, UTC)"),
]


def _with_options(options: list[Any]) -> Callable[[Any], Any]:
    """A decorator applying ``options`` (click options) in their listed order."""

    def apply(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


_with_window = _with_options(_window_options)


@monitor.command()
@click.argument("endpoint")
@_with_window
@click.option("--by", type=click.Choice(["version", "arm"]), default="version", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.pass_context
def drift(
    ctx: click.Context,
    endpoint: str,
    since: str | None,
    start: str | None,
    end: str | None,
    by: str,
    as_json: bool,
) -> None:
    """Drift of ENDPOINT's inputs and scores against each version's reference profile.

    A column drifts when its test is significant after Benjamini–Hochberg across columns
    and its Jensen–Shannon distance reaches the effect-size floor (docs/monitoring.md).
    Exits with 1 when a group drifted.
    """
    from rich.table import Table

    from shipyard.monitoring.reference import drift_report

    first, last = _window(since, start, end)
    grouping = cast(Literal["version", "arm"], by)
    report = drift_report(open_workspace(ctx), endpoint, first, last, by=grouping)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        out = console()
        if not report.groups:
            out.print(f"{endpoint}: no prediction in the window")
        for group in report.groups:
            result = group.report
            table = Table(
                "column", "test", "p (adjusted)", "distance", "floor", "verdict",
                title=f"{endpoint} {group.group.label()}: {result.verdict.value} "
                f"({group.n_records:,} requests, {result.n_current:,} rows; reference "
                f"{result.n_reference:,} rows)",
            )  # fmt: skip
            for column in result.columns:
                adjusted = column.adjusted_p_value
                table.add_row(
                    column.column,
                    column.test.test,
                    "—" if adjusted is None else f"{adjusted:.3g}",
                    f"{column.distance.statistic:.4f}",
                    f"{column.distance.threshold:g}",
                    column.verdict.value,
                    style="bold red" if column.verdict.value == "drift" else None,
                )
            out.print(table)
    if any(g.report.verdict.value == "drift" for g in report.groups):
        ctx.exit(1)


@monitor.command()
@click.argument("endpoint")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--key", "keys", multiple=True, default=("request_id",), show_default=True,
    help="key column(s): request_id, or event columns such as TRANSACTION_ID (repeatable)",
)  # fmt: skip
@click.option("--label", default="label", show_default=True, help="the 0/1 label column")
@click.pass_context
def labels(ctx: click.Context, endpoint: str, file: str, keys: tuple[str, ...], label: str) -> None:
    """Store the labels of FILE (CSV or Parquet) for ENDPOINT's predictions.

    Labels whose key matches no logged prediction are stored all the same (the prediction
    may not be logged yet) and reported.
    """
    from shipyard.monitoring.labels import ingest_labels

    key: str | list[str] = keys[0] if len(keys) == 1 else list(keys)
    result = ingest_labels(open_workspace(ctx), endpoint, file, key=key, label=label)
    console().print(f"{endpoint}: {result}; stored in {result.path}")


@monitor.command()
@click.argument("endpoint")
@click.option("--threshold", type=float, required=True, help="the serving decision threshold")
@click.option("--window", type=click.Choice(["1D", "7D"]), default="1D", show_default=True)
@_with_window
@click.option("--by", type=click.Choice(["version", "arm"]), default=None)
@click.option("--entity", help="an event column (e.g. CUSTOMER_ID) for card precision@k")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
@click.pass_context
def performance(
    ctx: click.Context,
    endpoint: str,
    threshold: float,
    window: str,
    since: str | None,
    start: str | None,
    end: str | None,
    by: str | None,
    entity: str | None,
    as_json: bool,
) -> None:
    """Realized metrics of ENDPOINT's labelled predictions per window, with intervals."""
    from rich.table import Table

    from shipyard.monitoring.labels import realized_performance

    first, last = _window(since, start, end)
    result = realized_performance(
        open_workspace(ctx),
        endpoint,
        threshold=threshold,
        window=window,
        start=_time(first),
        end=_time(last),
        by=by,
        entity=entity,
    )
    if as_json:
        document = {
            group: {
                "metrics": report.to_dict(),
                "coverage": {
                    w: {"records": c.records, "labelled": c.labelled}
                    for w, c in result.coverage.get(group, {}).items()
                },
            }
            for group, report in result.reports.items()
        }
        click.echo(json.dumps(document, indent=2, default=str))
        return
    out = console()
    if not result.reports:
        out.print(f"{endpoint}: no labelled prediction in the window")
    for group, report in result.reports.items():
        # one row per (window, metric): readable at any terminal width
        table = Table(
            "window", "labelled", "metric", "value [interval]", title=f"{endpoint} {group}"
        )
        for row in report.windows:
            cover = result.coverage.get(group, {}).get(row.window)
            labelled = f"{row.n:,}" if cover is None else f"{cover.labelled:,}/{cover.records:,}"
            for i, (name, metric) in enumerate(row.metrics.items()):
                first_row = i == 0
                table.add_row(
                    row.window if first_row else "",
                    labelled if first_row else "",
                    name,
                    _cell(metric),
                    end_section=i == len(row.metrics) - 1,
                )
        out.print(table)


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise click.BadParameter(f"expected an ISO date or time; got {value!r}") from None


def _cell(metric: Any) -> str:
    if metric.value is None:
        return "insufficient data"
    if metric.low is None or metric.high is None:
        return f"{metric.value:.3f}"
    return f"{metric.value:.3f} [{metric.low:.3f}, {metric.high:.3f}]"


def _attach_alerts() -> None:
    from shipyard.cli.alerts import alerts

    monitor.add_command(alerts)


_attach_alerts()

_run_options = [
    click.option(
        "--window", default="1D", show_default=True, help="window length: 1D, 6h, 1W ..."
    ),
    click.option(
        "--threshold", type=float, default=None,
        help="the decision threshold for alert rate, precision, recall, FPR (default: each "
        "version's own, `shipyard monitor threshold ENDPOINT --history`; 0.5 if never set)",
    ),
    click.option(
        "--by", type=click.Choice(["version", "arm"]), default="version", show_default=True
    ),
    click.option(
        "--time", "moment", type=click.Choice(["event", "log"]), default="event",
        show_default=True,
        help="window by the requests' event time (X-Event-Time; log time when absent) or log time",
    ),
]  # fmt: skip


_with_run_options = _with_options(_run_options)


@monitor.command()
@click.argument("endpoint")
@_with_window
@_with_run_options
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    help="also write the HTML report here",
)
@click.option("--no-post", is_flag=True, help="store alerts without posting their webhooks")
@click.option("--json", "as_json", is_flag=True, help="print the run as JSON")
@click.pass_context
def run(
    ctx: click.Context,
    endpoint: str,
    since: str | None,
    start: str | None,
    end: str | None,
    window: str,
    threshold: float | None,
    by: str,
    moment: str,
    report_path: str | None,
    no_post: bool,
    as_json: bool,
) -> None:
    """Compute and store every monitored quantity of ENDPOINT per window; evaluate alerts.

    Per model version (or arm) and window: volume, score mean, alert rate, drift of every
    input and of the score, CBPE-estimated performance and, where labels were joined, the
    realized metrics. A window computed again replaces its numbers. Exits with 1 while an
    alert is open (for cron or CI).
    """
    from shipyard.monitoring.run import run_monitor

    ws = open_workspace(ctx)
    first, last = _window(since, start, end)
    result = run_monitor(
        ws, endpoint, start=first, end=last, window=window, threshold=threshold, by=by,
        time=moment, post=not no_post,
    )  # fmt: skip
    if report_path is not None:
        _write_report(ws, result, report_path)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        out = console()
        _print_run(out, result)
        if report_path is not None:
            out.print(f"report: {report_path}")
    if any(getattr(a, "status", None) == "open" for a in result.alerts):
        ctx.exit(1)


def _write_report(ws: Any, result: Any, path: str) -> None:
    from shipyard.monitoring.alerts import list_alerts
    from shipyard.monitoring.html import write_report
    from shipyard.monitoring.points import load_points

    alerts = [a.to_dict() for a in list_alerts(ws, result.endpoint, status="all")]
    write_report(result, path, history=load_points(ws, result.endpoint), alerts=alerts)


def _fmt(point: Any) -> str:
    if point is None:
        return "—"
    if point.value is None:
        return "insufficient data"
    text = f"{point.value:.3f}"
    if point.low is not None and point.high is not None:
        text += f" [{point.low:.3f}, {point.high:.3f}]"
    return text


def _when(moment: Any, width: Any) -> str:
    """A window's start: the date alone for windows of whole days."""
    whole_days = width.total_seconds() % 86_400 == 0
    return f"{moment:%Y-%m-%d}" if whole_days else f"{moment:%Y-%m-%d %H:%M}"


def _length(width: Any) -> str:
    seconds = int(width.total_seconds())
    for unit, size in (("W", 604_800), ("D", 86_400), ("h", 3_600)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _print_run(out: Any, result: Any) -> None:
    """Per group, one row per window: volume, drift, estimated and realized AUC, alert rate;
    then the columns that drifted and the alerts."""
    from rich.table import Column, Table

    if not result.groups:
        out.print(f"{result.endpoint}: no prediction in the span; nothing monitored")
    for group in result.groups:
        table = Table(
            Column("window", no_wrap=True), "records", "drift", "alert rate", "est. AUC",
            "realized AUC", "labelled",
            title=f"{result.endpoint} {group}: {_when(result.start, result.window)} .. "
            f"{_when(result.end, result.window)}, windows of {_length(result.window)}",
        )  # fmt: skip
        by_window: dict[Any, dict[str, Any]] = {}
        for p in result.points:
            if p.group == group:
                by_window.setdefault(p.window_start, {})[p.metric] = p
        drifted = {w.window_start: w.drift.drifted for w in result.windows if w.group == group}
        notes = []
        for start in sorted(by_window):
            row = by_window[start]
            verdict = row.get("drift.verdict")
            if verdict is None or verdict.value is None:
                drift = "insufficient"
            elif verdict.value:
                columns = drifted.get(start, [])
                drift = f"DRIFT ({len(columns)})"
                notes.append(f"{_when(start, result.window)}: {', '.join(columns)}")
            else:
                drift = "no drift"
            records = row.get("records")
            table.add_row(
                _when(start, result.window),
                "0" if records is None or records.value is None else f"{records.value:,.0f}",
                drift,
                _value(row.get("alert_rate")),
                _value(row.get("estimated.roc_auc")),
                _value(row.get("realized.roc_auc")),
                _value(row.get("labelled")),
                style="bold red" if verdict is not None and verdict.value else None,
            )
        out.print(table)
        for note in notes:
            out.print(f"  drifted {note}")
    for alert in result.alerts:
        out.print(f"[bold red]ALERT {alert.id}[/] ({alert.status}): {alert.message}")


def _value(point: Any) -> str:
    """A point's value alone (tables too narrow for intervals); see --json for them."""
    if point is None:
        return "—"
    return "insufficient" if point.value is None else f"{point.value:.3f}"


@monitor.command()
@click.argument("endpoint")
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON")
@click.pass_context
def status(ctx: click.Context, endpoint: str, as_json: bool) -> None:
    """The newest stored window of each group of ENDPOINT and its active alerts.

    Reads what `shipyard monitor run` stored; computes nothing. Exits with 1 while an
    alert is open.
    """
    from rich.table import Table

    from shipyard.monitoring.alerts import list_alerts
    from shipyard.monitoring.points import load_points

    ws = open_workspace(ctx)
    points = load_points(ws, endpoint)
    active = list_alerts(ws, endpoint)
    latest: dict[str, Any] = {}
    for p in points:
        if p.metric == "records":
            latest[p.group] = max(latest.get(p.group, p.window_start), p.window_start)
    if as_json:
        document = {
            "endpoint": endpoint,
            "groups": {
                group: {
                    "window_start": start.isoformat(),
                    "points": {
                        p.metric: p.to_dict()
                        for p in points
                        if p.group == group and p.window_start == start
                    },
                }
                for group, start in latest.items()
            },
            "alerts": [a.to_dict() for a in active],
        }
        click.echo(json.dumps(document, indent=2, default=str))
    else:
        out = console()
        if not latest:
            out.print(f"{endpoint}: nothing stored yet; run `shipyard monitor run {endpoint}`")
        for group, start in sorted(latest.items()):
            mine = {p.metric: p for p in points if p.group == group and p.window_start == start}
            windows = len({p.window_start for p in points if p.group == group})
            table = Table(
                "quantity", "value",
                title=f"{endpoint} {group}: newest window {start:%Y-%m-%d %H:%M} "
                f"({windows} windows stored)",
            )  # fmt: skip
            for metric in (
                "records", "drift.verdict", "drift.columns_drifted", "prediction.mean",
                "alert_rate", "estimated.roc_auc", "estimated.precision", "realized.roc_auc",
                "realized.average_precision", "labelled",
            ):  # fmt: skip
                if metric in mine:
                    table.add_row(metric, _fmt(mine[metric]))
            out.print(table)
        if active:
            for alert in active:
                out.print(f"[bold red]ALERT {alert.id}[/] ({alert.status}): {alert.message}")
        else:
            out.print(f"{endpoint}: no active alert")
    if any(a.status == "open" for a in active):
        ctx.exit(1)


@monitor.command()
@click.argument("endpoint")
@click.option(
    "--out", "out_path", type=click.Path(dir_okay=False), default="monitoring-report.html",
    show_default=True, help="where to write the HTML file",
)  # fmt: skip
@_with_window
@_with_run_options
@click.pass_context
def report(
    ctx: click.Context,
    endpoint: str,
    out_path: str,
    since: str | None,
    start: str | None,
    end: str | None,
    window: str,
    threshold: float | None,
    by: str,
    moment: str,
) -> None:
    """Write ENDPOINT's self-contained HTML monitoring report (opens with no network).

    Recomputes the span's windows (stores nothing, posts nothing) for the distribution
    plots, and adds the stored history and every alert.
    """
    from shipyard.monitoring.run import run_monitor

    ws = open_workspace(ctx)
    first, last = _window(since, start, end)
    result = run_monitor(
        ws, endpoint, start=first, end=last, window=window, threshold=threshold, by=by,
        time=moment, store=False, evaluate_alerts=False,
    )  # fmt: skip
    _write_report(ws, result, out_path)
    console().print(f"{endpoint}: report written to {out_path}")


@monitor.command()
@click.argument("endpoint")
@click.option("--version", "version", type=int, required=True, help="the suspect version")
@click.option("--baseline", type=int, help="compare with this version [default: see below]")
@_with_window
@click.option("--threshold", type=float, help="one threshold for both [default: each version's]")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), default="rca", show_default=True,
    help="folder for rca-ENDPOINT-vVERSION.html and .txt",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.pass_context
def rca(
    ctx: click.Context,
    endpoint: str,
    version: int,
    baseline: int | None,
    since: str | None,
    start: str | None,
    end: str | None,
    threshold: float | None,
    out_dir: str,
    as_json: bool,
) -> None:
    """Root-cause report of ENDPOINT's VERSION: since when, outputs, inputs, segments.

    The baseline defaults to the version the endpoint returned to after VERSION (a
    rollback), else the main arm of the revision before it. Prints the text and writes it
    with a self-contained HTML page into --out.
    """
    from shipyard.monitoring.rca import root_cause, write_rca

    first, last = _window(since, start, end)
    report = root_cause(
        open_workspace(ctx), endpoint, version, baseline=baseline, since=_time(first),
        until=_time(last), threshold=threshold,
    )  # fmt: skip
    html_path, text_path = write_rca(report, out_dir)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    out = console()
    out.print(report.text(), markup=False, highlight=False)
    out.print(f"written: {html_path} and {text_path}", markup=False)


@monitor.command()
@click.argument("endpoint")
@click.option("--version", "version", type=int, help="the version whose threshold moves")
@click.option("--target-fpr", type=float, help="the false-positive rate to meet, e.g. 0.01")
@click.option("--alert-budget", type=float, help="the share of traffic alerted, e.g. 0.005")
@_with_window
@click.option("--dry-run", is_flag=True, help="show the effect, record nothing")
@click.option("--reason", help="why the threshold moves (recorded in the audit trail)")
@click.option("--history", is_flag=True, help="list the thresholds recorded, oldest first")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="write the HTML page")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_context
def threshold(
    ctx: click.Context,
    endpoint: str,
    version: int | None,
    target_fpr: float | None,
    alert_budget: float | None,
    since: str | None,
    start: str | None,
    end: str | None,
    dry_run: bool,
    reason: str | None,
    history: bool,
    out_path: str | None,
    as_json: bool,
) -> None:
    """Recalibrate ENDPOINT's decision threshold for a target FPR or an alert budget.

    Chosen on the window's labelled predictions of --version and recorded as the version's
    threshold (monitoring and the guardrails read it), unless --dry-run. With --history,
    list the thresholds recorded for the endpoint's model instead.
    """
    from shipyard.monitoring.thresholds import (
        endpoint_model,
        recalibrate_threshold,
        threshold_history,
    )

    ws = open_workspace(ctx)
    if history:
        settings = threshold_history(ws, endpoint_model(ws, endpoint, version), version)
        _print_history(endpoint, settings, as_json)
        return
    if version is None:
        raise click.UsageError("give --version (or --history)")
    if (target_fpr is None) == (alert_budget is None):
        raise click.UsageError("give --target-fpr or --alert-budget (exactly one)")
    if not reason and not dry_run:
        raise click.UsageError("give --reason: it is recorded with the new threshold")
    first, last = _window(since, start, end)
    result = recalibrate_threshold(
        ws, endpoint, version, target_fpr=target_fpr, alert_budget=alert_budget,
        start=_time(first), end=_time(last), register=not dry_run, reason=reason or "dry run",
    )  # fmt: skip
    if out_path is not None:
        from shipyard.monitoring.rca_html import render_recalibration, write_page

        write_page(render_recalibration(result), out_path)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    console().print(result.text(), markup=False, highlight=False)
    if out_path is not None:
        console().print(f"written: {out_path}", markup=False)


def _print_history(endpoint: str, settings: list[Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in settings], indent=2, default=str))
        return
    from rich.table import Table

    table = Table("at (UTC)", "version", "threshold", "previous", "actor", "reason")
    for s in settings:
        table.add_row(
            f"{s.at:%Y-%m-%d %H:%M}", "all" if s.version is None else str(s.version),
            f"{s.threshold:.4g}", "—" if s.previous is None else f"{s.previous:.4g}",
            s.actor, s.reason,
        )  # fmt: skip
    out = console()
    out.print(table if settings else f"{endpoint}: no threshold recorded (the default is 0.5)")
