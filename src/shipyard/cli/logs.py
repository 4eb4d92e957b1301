"""``shipyard logs``: query the prediction log with SQL (DuckDB)."""

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
    """Run SQL over ENDPOINT's prediction log (a view named `predictions`)."""
    from rich.table import Table

    from shipyard.serving.predlog import query as run

    frame = run(open_workspace(ctx), endpoint, sql)
    table = Table(*map(str, frame.columns), title=f"{endpoint}: {len(frame):,} row(s)")
    for row in frame.head(200).itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    console().print(table)
