"""What every command group shares: opening the workspace and drawing progress."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rich.console import Console

    from shipyard.workspace import Workspace

STAGE_LABELS = {
    "transactions": "Simulating customers",
    "frauds": "Injecting fraud scenarios",
    "partitions": "Writing daily Parquet partitions",
    "views": "Materializing feature views",
    "models": "Training and evaluating models",
}


def open_workspace(ctx: click.Context) -> Workspace:
    """The workspace named by --workspace / SHIPYARD_WORKSPACE, or found above the cwd."""
    from shipyard.logs import configure_logging
    from shipyard.workspace import Workspace

    path = (ctx.find_root().obj or {}).get("workspace")
    workspace = Workspace.open(path)
    configure_logging(workspace.settings)
    return workspace


def console() -> Console:
    """The rich console commands print to."""
    from rich.console import Console

    return Console(highlight=False)


@contextmanager
def progress_bars(out: Console) -> Iterator[Callable[[str, int, int], None]]:
    """Yield a ``progress(stage, done, total)`` callback that draws one rich bar per stage."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=out,
        transient=False,
    ) as bars:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(STAGE_LABELS.get(stage, stage), total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield update
