"""``shipyard monitor``: drift of an endpoint's traffic, its labels and realized performance.

A thin layer over :mod:`shipyard.monitoring` (see docs/monitoring.md): ``drift`` compares a
window of the prediction log with each version's reference profile, ``labels`` stores a
batch of late labels, ``performance`` gives the realized metrics of the labelled
predictions per window. Each prints a table, or JSON with ``--json``.
"""

from __future__ import annotations

import json
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


def _with_window(command: Any) -> Any:
    for option in reversed(_window_options):
        command = option(command)
    return command


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
