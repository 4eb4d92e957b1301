"""``shipyard optimize``: ONNX export, int8 quantization, pruning, distillation of a text model."""

from __future__ import annotations

from pathlib import Path

import click

from shipyard.cli._common import console, open_workspace
from shipyard.cli.models import _split_ref
from shipyard.optimize.runner import TARGET_ORDER, TRANSFORMS


@click.command()
@click.argument("model")
@click.option(
    "--transform",
    "transforms",
    multiple=True,
    help=f"Transform to try (repeatable): {', '.join(TRANSFORMS)}. "
    "Default: onnx and dynamic-int8, or with --target-latency-ms the sequence "
    f"{', '.join(TARGET_ORDER)}.",
)
@click.option(
    "--target-latency-ms",
    type=float,
    default=None,
    help="Stop at the first transform whose one-review p50 latency at 1 thread is at most "
    "this many milliseconds (within the accuracy budget); only that one is registered.",
)
@click.option(
    "--accuracy-budget",
    type=float,
    default=0.01,
    show_default=True,
    help="Largest drop of validation accuracy a lossy transform may cause (0.01 = 1 point).",
)
@click.option("--sparsity", type=float, default=0.5, show_default=True, help="Pruning's share.")
@click.option(
    "--student-layers", type=int, default=2, show_default=True, help="Distilled student's layers."
)
@click.option(
    "--requests",
    type=int,
    default=100,
    show_default=True,
    help="Single-review calls timed per model and thread count.",
)
@click.option(
    "--batches",
    type=int,
    default=8,
    show_default=True,
    help="Batches of 32 reviews timed per model and thread count (throughput).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for report.md and report.json (default: print only).",
)
@click.pass_context
def optimize(
    ctx: click.Context,
    model: str,
    transforms: tuple[str, ...],
    target_latency_ms: float | None,
    accuracy_budget: float,
    sparsity: float,
    student_layers: int,
    requests: int,
    batches: int,
    out: Path | None,
) -> None:
    """Optimize MODEL@VERSION (a torch-text classifier); each transform within tolerance
    becomes a new registered version, with its report.

    Example: shipyard optimize sentiment@3 --transform onnx --transform dynamic-int8 --out opt/
    """
    from rich.markdown import Markdown

    from shipyard.optimize import Settings
    from shipyard.optimize import optimize as run

    ws = open_workspace(ctx)
    name, ref = _split_ref(model)
    screen = console()
    settings = Settings(
        sparsity=sparsity, student_layers=student_layers, requests=requests, batches=batches
    )
    with screen.status("Optimizing") as status:
        result = run(
            ws,
            name,
            ref,
            transforms=list(transforms) or None,
            target_latency_ms=target_latency_ms,
            accuracy_budget=accuracy_budget,
            settings=settings,
            out=out,
            progress=lambda step: status.update(f"Optimizing: {step}"),
        )
    screen.print(Markdown(result.markdown()))
    screen.print(result.summary())
    if out is not None:
        screen.print(f"Report written to {out / 'report.md'} and {out / 'report.json'}")
