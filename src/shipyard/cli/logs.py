"""``shipyard logs``: query the prediction log with SQL (DuckDB), compact it into Parquet."""

from __future__ import annotations

import click

from shipyard.cli._common import console, open_workspace


@click.group()
def logs() -> None:
    """The prediction log of serving endpoints."""


@logs.command()
@click.argument("endpoint")
@click.argument(
    "sql",
    default="SELECT version, arm, count(*) AS n, avg(latency_ms) AS mean_ms "
    "FROM predictions GROUP BY ALL ORDER BY ALL",
)
@click.pass_context
def query(ctx: click.Context, endpoint: str, sql: str) -> None:
    """Run SQL over ENDPOINT's prediction log (a view named `predictions`: the compacted
    Parquet partitions and the live segments, each record once)."""
    from rich.table import Table

    from shipyard.monitoring.logstore import query as run

    frame = run(open_workspace(ctx), endpoint, sql)
    table = Table(*map(str, frame.columns), title=f"{endpoint}: {len(frame):,} row(s)")
    for row in frame.head(200).itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    console().print(table)


@logs.command()
@click.argument("endpoint", required=False)
@click.option(
    "--batch-mb", type=click.IntRange(min=1), default=256, show_default=True,
    help="MiB of JSON moved per atomic batch",
)  # fmt: skip
@click.pass_context
def compact(ctx: click.Context, endpoint: str | None, batch_mb: int) -> None:
    """Move the closed segments of ENDPOINT's log (every endpoint's without one) into Parquet
    partitions by day; crash-safe, each record stays readable exactly once."""
    from shipyard.monitoring.logstore import compact as run

    result = run(open_workspace(ctx), endpoint, batch_bytes=batch_mb << 20)
    console().print(
        f"Compacted {result.segments:,} segment(s): {result.records:,} record(s) into "
        f"{len(result.parts):,} Parquet part(s); {result.skipped_lines:,} torn line(s) "
        f"skipped; {result.recovered:,} interrupted batch(es) finished."
    )
