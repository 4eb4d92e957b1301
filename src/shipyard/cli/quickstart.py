"""``shipyard quickstart``: the main job, end to end on embedded defaults."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

import click

from shipyard.cli._common import console, progress_bars

if TYPE_CHECKING:
    from shipyard.data.fraud_simulator import Mode


@click.command()
@click.argument("directory", default="shipyard-workspace", type=click.Path(file_okay=False))
@click.option(
    "--mode",
    type=click.Choice(["reference", "fast"]),
    default="reference",
    show_default=True,
    help="Simulator mode for the fraud data set.",
)
def quickstart(directory: str, mode: str) -> None:
    """Create (or reuse) a workspace, simulate the fraud data and compute its features.

    Training, the registry and the model card are added to this job as they land.
    """
    from pathlib import Path

    from rich.table import Table

    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
    from shipyard.features.fraud import BASELINE_VIEWS
    from shipyard.features.offline import OfflineStore
    from shipyard.workspace import Workspace

    out = console()
    started = time.perf_counter()
    root = Path(directory)
    ws = Workspace.open(root) if (root / "shipyard.toml").is_file() else Workspace.init(root)
    out.print(f"[bold]Shipyard quickstart[/] in workspace {ws.root}")
    with progress_bars(out) as progress:
        dataset = simulate_fraud_dataset(
            ws,
            FraudSimulator(mode=cast("Mode", mode)),
            progress=progress,
        )
        store = OfflineStore(ws)
        materialized = store.materialize(BASELINE_VIEWS, dataset.version, progress=progress)

    summary = Table(title="Quickstart", show_header=False)
    summary.add_row("data set", f"{dataset.name} v{dataset.version} ({mode} mode)")
    summary.add_row("transactions", f"{dataset.n_rows:,}")
    summary.add_row("frauds", f"{dataset.n_positives:,}")
    summary.add_row("time range", f"{dataset.time_min} .. {dataset.time_max}")
    summary.add_row(
        "feature views", ", ".join(f"{m.view} ({m.n_rows:,} rows)" for m in materialized)
    )
    summary.add_row("wall time", f"{time.perf_counter() - started:.1f} s")
    out.print(summary)
    out.print(
        "Next: [bold]shipyard -w " + str(ws.root) + " data list[/], "
        "[bold]shipyard features list[/]; docs/quickstart.md explains each step."
    )
