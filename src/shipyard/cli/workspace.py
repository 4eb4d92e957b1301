"""``shipyard init`` and ``shipyard info``."""

from __future__ import annotations

import click

from shipyard.cli._common import console, open_workspace


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
def init(directory: str) -> None:
    """Create a workspace in DIRECTORY: settings, metadata database, data and artifact roots."""
    from shipyard.workspace import Workspace, hide_password

    ws = Workspace.init(directory)
    out = console()
    out.print(f"[green]Created workspace[/] {ws.root}")
    out.print(f"  settings        {ws.root / 'shipyard.toml'}")
    out.print(f"  metadata db     {hide_password(ws.database_url)}")
    out.print(f"  data root       {ws.data_root}")
    out.print(f"  artifact root   {ws.artifact_root}")
    out.print("Next: [bold]shipyard data simulate[/] to create the fraud data set.")


@click.command()
@click.pass_context
def info(ctx: click.Context) -> None:
    """Show the current workspace's settings and what it holds."""
    from rich.table import Table

    from shipyard.data.catalog import list_datasets
    from shipyard.workspace import hide_password

    ws = open_workspace(ctx)
    table = Table(title=f"Workspace {ws.root}", show_header=False)
    for name in type(ws.settings).model_fields:
        value = getattr(ws.settings, name)
        secret = name.endswith(("_token", "_password")) and value is not None
        shown = hide_password(value) if name.endswith(("_url", "_uri")) and value else value
        table.add_row(name, "(set, hidden)" if secret else str(shown))
    table.add_row("resolved database", hide_password(ws.database_url))
    table.add_row("data sets", str(len(list_datasets(ws))))
    console().print(table)
