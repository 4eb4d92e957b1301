"""``shipyard features``: list, materialize and retrieve point-in-time features."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING

import click

from shipyard.cli._common import console, open_workspace, progress_bars
from shipyard.features.definitions import load_views
from shipyard.features.fraud import BASELINE_VIEWS_REF

if TYPE_CHECKING:
    from shipyard.features.definitions import FeatureView
    from shipyard.features.leakage import AuditReport, PointInTime
    from shipyard.training.trainers import ModelConfig
    from shipyard.workspace import Workspace

DEFAULT_VIEWS = BASELINE_VIEWS_REF
views_option = click.option(
    "--views",
    "views_ref",
    default=DEFAULT_VIEWS,
    show_default=True,
    help="Feature views to use, as module:attribute (a FeatureView or a sequence of them).",
)


@click.group()
def features() -> None:
    """Feature definitions, materialization and point-in-time retrieval."""


@features.command("list")
@views_option
def list_(views_ref: str) -> None:
    """Show the feature views and their features."""
    from rich.table import Table

    table = Table("view", "entity", "feature", "definition", title=f"Feature views ({views_ref})")
    for view in load_views(views_ref):
        for i, feature in enumerate(view.features):
            table.add_row(
                view.name if i == 0 else "",
                view.entity if i == 0 else "",
                feature.name,
                _describe(feature.to_dict()),
            )
    console().print(table)


def _describe(d: dict[str, object]) -> str:
    if d["kind"] == "row":
        return str(d["expression"])
    if d["kind"] == "derived":
        inputs = d["inputs"]
        assert isinstance(inputs, list)
        return f"{d['function']}({', '.join(str(i) for i in inputs)})"
    days = int(str(d["window_us"])) / 86_400e6
    delay = int(str(d["delay_us"])) / 86_400e6
    column = d["column"] or "*"
    text = f"{d['function']}({column}) over {days:g} day(s)"
    text += " before the row" if d.get("past_only") else ""
    return text + (f", delayed {delay:g} day(s)" if delay else "")


@features.command()
@views_option
@click.option(
    "--version",
    "version",
    type=int,
    default=None,
    help="Version of the source data set to compute the features of (default: the latest).",
)
@click.option("--force", is_flag=True, help="Recompute even if an identical result is stored.")
@click.option(
    "--online",
    is_flag=True,
    help="Then feed the online event state from the data set: delayed (label-based) views "
    "incrementally up to the end of the data, streamed views only while the store has none "
    "(a backfill before serving feeds them live).",
)
@click.pass_context
def materialize(
    ctx: click.Context, views_ref: str, version: int | None, force: bool, online: bool
) -> None:
    """Compute the feature views over their source data set with DuckDB and store them."""
    from rich.table import Table

    from shipyard.features.offline import OfflineStore

    ws = open_workspace(ctx)
    out = console()
    views = load_views(views_ref)
    started = time.perf_counter()
    with progress_bars(out) as progress:
        results = OfflineStore(ws).materialize(views, version, force=force, progress=progress)
    table = Table("view", "data set", "rows", "seconds", "stored", title="Materialized features")
    for m in results:
        table.add_row(
            m.view,
            f"{m.dataset} v{m.dataset_version}",
            f"{m.n_rows:,}",
            f"{m.seconds:.2f}" + (" (reused)" if m.reused else ""),
            str(m.path),
        )
    out.print(table)
    if online:
        _materialize_online(ws, views, version)
    out.print(f"Done in {time.perf_counter() - started:.1f} s")


def _materialize_online(ws: Workspace, views: list[FeatureView], version: int | None) -> None:
    from rich.table import Table

    from shipyard.features.materialize_online import materialize_online

    delayed = {v.name for v in views if v.delayed}
    runs = materialize_online(ws, views, dataset_version=version)
    table = Table(
        "view", "data set", "run", "events fed", "entities written", "entities", "fed until",
        "seconds", title="Online features",
    )  # fmt: skip
    for r in runs:
        if r.skipped is not None:
            kind = f"skipped: {r.skipped}"
        elif r.incremental:
            kind = "incremental"
        else:
            kind = "rebuilt" if r.view in delayed else "backfilled"
        table.add_row(
            r.view,
            f"{r.dataset} v{r.dataset_version}",
            kind,
            f"{r.events_fed:,}",
            f"{r.entities_written:,}",
            f"{r.entities:,}",
            str(r.fed_until),
            f"{r.seconds:.2f}",
        )
    console().print(table)


@features.command()
@views_option
@click.pass_context
def status(ctx: click.Context, views_ref: str) -> None:
    """Freshness of the online features: the last run that fed each view.

    For a delayed view, reads at serving time t are exact while t - delay is at or before
    "fed until", i.e. until "exact until"; serving flags later reads as stale.
    """
    from datetime import UTC, datetime

    from rich.table import Table

    from shipyard.features.materialize_online import online_status

    ws = open_workspace(ctx)
    runs = online_status(ws)
    out = console()
    if not runs:
        out.print("No features fed online yet: shipyard features materialize --online")
        return
    delays = {v.name: _delay(v) for v in load_views(views_ref)}
    now = datetime.now(UTC).replace(tzinfo=None)
    table = Table(
        "view", "definition", "data set", "fed until", "age", "exact until", "entities",
        "last run", "incremental", title="Online feature freshness",
    )  # fmt: skip
    for r in runs:
        age = "-" if r.fed_until is None else _age(now - r.fed_until)
        delay = delays.get(r.view)
        exact = "-" if not delay or r.fed_until is None else str(r.fed_until + delay)
        table.add_row(
            r.view,
            r.definition_hash[:12],
            f"{r.dataset} v{r.dataset_version}",
            str(r.fed_until),
            age,
            exact,
            f"{r.entities:,} ({r.entities_written:,} written)",
            r.run_at.strftime("%Y-%m-%d %H:%M:%S"),
            "yes" if r.incremental else "no (from scratch)",
        )
    out.print(table)


def _delay(view: FeatureView) -> timedelta:
    """The shortest delay of the view's delayed aggregations (zero: none is delayed)."""
    from shipyard.features.definitions import Aggregation

    delays = [f.delay for f in view.features if isinstance(f, Aggregation) and f.delay]
    return min(delays, default=timedelta(0))


def _age(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if abs(seconds) >= 86_400:
        return f"{seconds / 86_400:.1f} d"
    if abs(seconds) >= 3_600:
        return f"{seconds / 3_600:.1f} h"
    return f"{seconds:.0f} s"


@features.command()
@views_option
@click.option(
    "--events", required=True, type=click.Path(exists=True), help="Parquet file of events."
)
@click.option("--out", "out_path", required=True, type=click.Path(), help="Parquet file to write.")
@click.option("--timestamp", default=None, help="Event time column (default: the views').")
@click.option(
    "--version",
    "version",
    type=int,
    default=None,
    help="Source data set version whose features to join (default: the latest).",
)
@click.pass_context
def get(
    ctx: click.Context,
    views_ref: str,
    events: str,
    out_path: str,
    timestamp: str | None,
    version: int | None,
) -> None:
    """Attach point-in-time features to EVENTS (entity keys + timestamp) and write OUT."""
    from shipyard.features.offline import OfflineStore

    ws = open_workspace(ctx)
    started = time.perf_counter()
    result = OfflineStore(ws).get_historical_features(
        events, load_views(views_ref), dataset_version=version, timestamp=timestamp
    )
    path = result.to_parquet(out_path)
    console().print(f"Wrote {path} in {time.perf_counter() - started:.1f} s")


@features.command("parity")
@views_option
@click.option(
    "--from",
    "start",
    required=True,
    help="Start of the replayed range (a date or timestamp, included).",
)
@click.option(
    "--to", "end", required=True, help="End of the replayed range (a date or timestamp, included)."
)
@click.option(
    "--version",
    "version",
    type=int,
    default=None,
    help="Source data set version to replay and compare with (default: the latest).",
)
@click.option(
    "--store",
    type=click.Choice(["sqlite", "redis"]),
    default="sqlite",
    show_default=True,
    help="Online store to replay into: a temporary SQLite file, or the workspace's Redis "
    "under a fresh key space (dropped afterwards).",
)
@click.pass_context
def parity_(
    ctx: click.Context, views_ref: str, start: str, end: str, version: int | None, store: str
) -> None:
    """Replay a time range through the online path and compare with offline retrieval.

    Exits with status 1 when any row differs (or no event was compared).
    """
    from rich.table import Table

    from shipyard.features.parity import parity

    ws = open_workspace(ctx)
    out = console()
    report = parity(
        ws,
        load_views(views_ref),
        start=start,
        end=end,
        dataset_version=version,
        store="redis" if store == "redis" else "sqlite",
    )
    share = 100.0 * report.rows_equal / report.events_compared if report.events_compared else 0.0
    status = "[green]OK[/green]" if report.ok else "[red]FAILED[/red]"
    out.print(f"Parity {report.start} .. {report.end} on {report.store}: {status}")
    out.print(
        f"{report.events_compared:,} events compared, {report.rows_equal:,} rows equal "
        f"({share:.2f}%), {report.features_compared} features, {report.seconds:.2f} s, "
        f"{report.events_per_s:,.0f} events/s"
    )
    out.print(f"Views replayed: {', '.join(report.views) or '(none)'}")
    if report.mismatches:
        table = Table("feature", "rows", "view", "entity", "time", "online", "offline")
        table.title = "Mismatches (up to 5 examples per feature)"
        for feature, count in report.mismatches.items():
            for i, ex in enumerate(report.examples.get(feature, [])):
                table.add_row(
                    feature if i == 0 else "",
                    f"{count:,}" if i == 0 else "",
                    ex.view,
                    str(ex.entity),
                    str(ex.time),
                    repr(ex.online),
                    repr(ex.offline),
                )
        out.print(table)
    if report.events_compared == 0:
        out.print("[red]No event was compared: parity is not shown.[/red]")
    if not report.ok:
        raise SystemExit(1)


@features.command("audit")
@views_option
@click.option(
    "--day",
    "days",
    required=True,
    multiple=True,
    help="Day D (YYYY-MM-DD): the features of days <= D must not change when every later row "
    "is dropped and every label later than D - delay is zeroed. Repeat to audit several days.",
)
@click.option(
    "--dataset",
    "dataset_name",
    default="fraud",
    show_default=True,
    help="Source data set of the views (its label, delay and forbidden columns are known for "
    "fraud; give --label for another).",
)
@click.option(
    "--version",
    "version",
    type=int,
    default=None,
    help="Version of the data set to audit on (default: the latest).",
)
@click.option("--label", default=None, help="Label column (default: the data set's, TX_FRAUD).")
@click.option(
    "--delay-days",
    type=int,
    default=None,
    help="Days before a label is known (default: the data set's, 7 for fraud).",
)
@click.option(
    "--model",
    "model_type",
    default=None,
    help="Also train this model type (seeded) on the 7 days ending at DAY - delay of both "
    "versions and compare its scores of days <= DAY.",
)
@click.pass_context
def audit(
    ctx: click.Context,
    views_ref: str,
    days: tuple[str, ...],
    dataset_name: str,
    version: int | None,
    label: str | None,
    delay_days: int | None,
    model_type: str | None,
) -> None:
    """Audit feature views for leakage: their definitions, then their values of days <= DAY.

    Exits with status 1 when a definition leaks, a feature of days <= DAY changes, or (with
    --model) a score of days <= DAY changes.
    """
    from rich.table import Table

    from shipyard.data.catalog import get_dataset
    from shipyard.features.leakage import KNOWN_RULES, check_views, point_in_time
    from shipyard.training.trainers import make_config

    ws = open_workspace(ctx)
    out = console()
    views = load_views(views_ref)
    dataset = get_dataset(ws, dataset_name, version)
    rules = KNOWN_RULES.get(dataset.name)
    label = label or (rules.label if rules else None)
    if label is None:
        raise click.UsageError(f"Data set {dataset.name!r} has no known label: give --label.")
    time_column = rules.time if rules else (dataset.time_column or views[0].timestamp)
    if delay_days is not None:
        label_delay = timedelta(days=delay_days)
    else:
        label_delay = rules.label_delay if rules else timedelta(days=7)
    forbidden = rules.forbidden if rules else {}
    config = None if model_type is None else make_config(model_type)  # unknown: fails now

    static = check_views(views, label=label, label_delay=label_delay, forbidden=forbidden)
    status = "[green]OK[/green]" if static.ok else "[red]LEAKS[/red]"
    out.print(
        f"Definitions of {views_ref}: {status} ({static.features_checked} features; label "
        f"{label!r} needs a delay >= {label_delay.days} days; {len(forbidden)} forbidden "
        f"column(s){': ' + ', '.join(forbidden) if forbidden else ''})"
    )
    if static.violations:
        table = Table("view", "feature", "column", "why", title="Leaks in the definitions")
        for v in static.violations:
            table.add_row(v.view, v.feature, v.column, v.detail)
        out.print(table)

    clean = static.ok
    for day in days:
        started = time.perf_counter()
        with point_in_time(ws, dataset, views, day, label, time_column, label_delay.days) as pit:
            report = pit.report(seconds_before=time.perf_counter() - started)
            _print_point_in_time(report)
            scores_ok = config is None or _audit_scores(pit, config)
        clean = clean and report.ok and scores_ok
    if not clean:
        raise SystemExit(1)


def _print_point_in_time(report: AuditReport) -> None:
    from rich.table import Table

    out = console()
    status = "[green]OK[/green]" if report.ok else "[red]LEAKS[/red]"
    known = report.day - timedelta(days=report.delay_days)
    out.print(
        f"Point-in-time audit on {report.dataset} v{report.dataset_version}, day {report.day}: "
        f"{status}\n{report.rows_compared:,} rows of days <= {report.day} compared; "
        f"{report.rows_dropped:,} later rows dropped, {report.labels_zeroed:,} positive labels "
        f"after {known} zeroed; {report.seconds:.1f} s"
    )
    changed = {(m.view, m.feature): m for m in report.mismatches}
    table = Table(
        "view", "feature", "rows changed", "first changed (entity, time)", "full data",
        "without the future", title="Features of days <= D, with and without the future",
    )  # fmt: skip
    for view_name, feature in report.features:
        m = changed.get((view_name, feature))
        if m is None:
            table.add_row(view_name, feature, "0", "", "", "")
        else:
            table.add_row(
                view_name, feature, f"[red]{m.rows:,}[/red]", f"{m.entity}, {m.time}",
                repr(m.full), repr(m.truncated),
            )  # fmt: skip
    out.print(table)
    if not report.conclusive:
        out.print(
            "[yellow]Inconclusive: no later row to drop or no positive label to zero; choose "
            "a day with frauds in the week before it and data after it.[/yellow]"
        )


def _audit_scores(pit: PointInTime, config: ModelConfig, train_days: int = 7) -> bool:
    """Train ``config`` on both versions; print whether the scores of days <= day agree."""
    from shipyard.features.leakage import audit_scores

    full, truncated = pit.frames()
    train_end = pit.day - timedelta(days=pit.delay_days)
    scores = audit_scores(
        full,
        truncated,
        [n for v in pit.views for n in v.feature_names],
        config,
        train_start=train_end - timedelta(days=train_days - 1),
        train_end=train_end,
        day=pit.day,
        label=pit.label,
        time=pit.time,
        delay_days=pit.delay_days,
        keys=[pit.views[0].entity],
    )
    status = "[green]OK[/green]" if scores.ok else "[red]LEAKS[/red]"
    first = scores.describe_first()
    console().print(
        f"Scores of {config.model_type} trained on {scores.train[0]} .. {scores.train[1]}: "
        f"{status}\n{scores.rows_different:,} of {scores.rows_scored:,} scores of days <= "
        f"{pit.day} differ"
        + (
            f" (largest difference {scores.max_abs_difference:.3g}; first: {first})"
            if not scores.ok
            else ""
        )
    )
    return scores.ok
