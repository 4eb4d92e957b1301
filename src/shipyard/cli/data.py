"""``shipyard data``: simulate, list, show and verify data sets."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

import click

from shipyard.cli._common import console, open_workspace, progress_bars

if TYPE_CHECKING:
    from shipyard.data.fraud_simulator import Mode


@click.group()
def data() -> None:
    """Create and inspect the workspace's data sets."""


@data.command()
@click.option(
    "--mode",
    type=click.Choice(["reference", "fast"]),
    default="reference",
    show_default=True,
    help="reference: the published draws (exactly 1,754,155 transactions at the defaults); "
    "fast: same distributions, vectorized.",
)
@click.option("--customers", default=5_000, show_default=True, help="Number of customers.")
@click.option("--terminals", default=10_000, show_default=True, help="Number of terminals.")
@click.option("--days", default=183, show_default=True, help="Number of days.")
@click.option("--start-date", default="2018-04-01", show_default=True, help="First day (ISO).")
@click.option("--name", default="fraud", show_default=True, help="Data set name to register.")
@click.option("--jobs", type=int, default=None, help="Worker processes (default: one per core).")
@click.pass_context
def simulate(
    ctx: click.Context,
    mode: str,
    customers: int,
    terminals: int,
    days: int,
    start_date: str,
    name: str,
    jobs: int | None,
) -> None:
    """Simulate the card-fraud transaction data set and register it as daily Parquet."""
    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset

    ws = open_workspace(ctx)
    out = console()
    simulator = FraudSimulator(
        n_customers=customers,
        n_terminals=terminals,
        n_days=days,
        start_date=start_date,
        mode=cast("Mode", mode),  # click.Choice guarantees the literal
        n_jobs=jobs,
    )
    started = time.perf_counter()
    with progress_bars(out) as progress:
        dataset = simulate_fraud_dataset(ws, simulator, name=name, progress=progress)
    elapsed = time.perf_counter() - started
    verb = "Registered" if dataset.created else "Unchanged, already registered as"
    out.print(
        f"[green]{verb}[/] {dataset.name} v{dataset.version} ({mode} mode): "
        f"{dataset.n_rows:,} transactions, {dataset.n_positives:,} frauds, "
        f"{len(dataset.partitions)} daily partitions, {dataset.time_min} .. {dataset.time_max}, "
        f"in {elapsed:.1f} s"
    )
    out.print(f"  content hash {dataset.content_hash}")
    out.print(f"  stored in    {dataset.path}")


@data.command("list")
@click.pass_context
def list_(ctx: click.Context) -> None:
    """List registered data sets and their versions."""
    from rich.table import Table

    from shipyard.data.catalog import list_datasets

    table = Table(title="Data sets")
    for column in ("name", "version", "rows", "positives", "from", "to", "hash", "created"):
        table.add_column(column, justify="right" if column in ("rows", "positives") else "left")
    for ds in list_datasets(open_workspace(ctx)):
        table.add_row(
            ds.name,
            f"v{ds.version}",
            f"{ds.n_rows:,}",
            "" if ds.n_positives is None else f"{ds.n_positives:,}",
            str(ds.time_min),
            str(ds.time_max),
            ds.content_hash[:12],
            f"{ds.created_at:%Y-%m-%d %H:%M}" if ds.created_at else "",
        )
    console().print(table)


@data.command()
@click.argument("name")
@click.option("--version", "version", type=int, default=None, help="Version (default: latest).")
@click.pass_context
def show(ctx: click.Context, name: str, version: int | None) -> None:
    """Show one data set: schema, time range, partitions and how it was produced."""
    from rich.table import Table

    from shipyard.data.catalog import get_dataset

    ds = get_dataset(open_workspace(ctx), name, version)
    out = console()
    out.print(f"[bold]{ds.name} v{ds.version}[/]  {ds.n_rows:,} rows, hash {ds.content_hash}")
    out.print(f"time {ds.time_min} .. {ds.time_max}; {len(ds.partitions)} partitions in {ds.path}")
    out.print(f"produced by {ds.params}")
    schema = Table("column", "type", title="Schema")
    for column in ds.schema:
        schema.add_row(column["name"], column["type"])
    out.print(schema)


@data.command()
@click.argument("name")
@click.option("--version", "version", type=int, default=None, help="Version (default: latest).")
@click.pass_context
def verify(ctx: click.Context, name: str, version: int | None) -> None:
    """Check every partition of a data set against its recorded SHA-256."""
    from shipyard.data.catalog import get_dataset

    ds = get_dataset(open_workspace(ctx), name, version)
    ds.verify()
    console().print(f"[green]OK[/] {ds.name} v{ds.version}: {len(ds.partitions)} partitions intact")
