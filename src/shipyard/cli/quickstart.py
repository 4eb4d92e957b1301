"""``shipyard quickstart``: the main job, end to end on embedded defaults."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

import click

from shipyard.cli._common import console, progress_bars

if TYPE_CHECKING:
    from rich.console import Console

    from shipyard.data.fraud_simulator import Mode
    from shipyard.solutions.fraud import BaselineReport


@click.command()
@click.argument("directory", default="shipyard-workspace", type=click.Path(file_okay=False))
@click.option(
    "--mode",
    type=click.Choice(["reference", "fast"]),
    default="reference",
    show_default=True,
    help="Simulator mode for the fraud data set.",
)
@click.option("--bootstrap", default=500, show_default=True, help="Bootstrap draws for the CIs.")
def quickstart(directory: str, mode: str, bootstrap: int) -> None:
    """Run the fraud main job: data, features, five models, MLflow runs, champion, model card.

    Creates the workspace DIRECTORY (or reuses it: unchanged data and features are reused).
    """
    from pathlib import Path

    from shipyard.solutions.fraud import train_baseline
    from shipyard.workspace import Workspace

    out = console()
    started = time.perf_counter()
    root = Path(directory)
    ws = Workspace.open(root) if (root / "shipyard.toml").is_file() else Workspace.init(root)
    out.print(f"[bold]Shipyard quickstart[/] in workspace {ws.root}")
    with progress_bars(out) as progress:
        report = train_baseline(ws, mode=cast("Mode", mode), n_boot=bootstrap, progress=progress)
    print_report(out, report, time.perf_counter() - started)


def print_report(out: Console, report: BaselineReport, seconds: float) -> None:
    """The summary table and where to look next."""
    from rich.table import Table

    from shipyard.solutions.fraud import SELECTION_METRIC, headline

    ds = report.dataset
    out.print(
        f"Data set {ds.name} v{ds.version}: {ds.n_rows:,} transactions, {ds.n_positives:,} frauds, "
        f"{ds.time_min} .. {ds.time_max}"
    )
    table = Table(
        title="Prequential test folds (mean ± std over 4 folds, 95% day-bootstrap CI)",
        caption=f"model selected on validation {SELECTION_METRIC}; * = selected",
    )
    table.add_column("model")
    for metric in ("AUC ROC", "Average precision", "Card precision@100"):
        table.add_column(metric, justify="right")
    table.add_column("val. AP", justify="right")
    table.add_column("time", justify="right")
    for model in report.models:
        cells = []
        for metric in ("roc_auc", "average_precision", "card_precision@100"):
            h = headline(model.test, metric)
            cells.append(f"{h['mean']:.3f} ± {h['std']:.3f}\n[{h['low']:.3f}, {h['high']:.3f}]")
        mark = " *" if model.model_type == report.best else ""
        table.add_row(
            model.model_type + mark,
            *cells,
            f"{model.validation.mean(SELECTION_METRIC):.3f}",
            f"{model.seconds:.0f} s",
        )
    out.print(table)
    version = report.registered
    if version is not None:
        state = "promoted to [bold green]champion[/]" if report.promoted else "kept as challenger"
        out.print(
            f"Registered [bold]{version.name} v{version.version}[/] "
            f"({version.model_type}), {state}."
        )
        if report.gate is not None:
            out.print(f"  gate: {report.gate.reason}")
        if report.gate_message:
            out.print(f"  [yellow]{report.gate_message}[/]")
        out.print(f"  model card: {version.card_path}  (HTML: {version.card_html})")
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items())
    out.print(f"Done in {seconds:.0f} s ({stages}).")
    out.print("Next:")
    out.print(f"  mlflow ui --backend-store-uri {report.tracking_uri}")
    out.print("  shipyard models list   |   shipyard models show fraud@champion")
