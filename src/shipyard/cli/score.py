"""``shipyard score``: batch-score a data set with a registered model, on either engine."""

from __future__ import annotations

import click

from shipyard.cli._common import console, open_workspace, progress_bars


@click.command()
@click.argument("model")
@click.option(
    "--data",
    required=True,
    help="A registered data set (NAME or NAME@VERSION) or a Parquet file or folder.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder: part-NNNNN.parquet per input partition and _manifest.json.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default=None,
    help="Where the tasks run (default: the workspace's engine setting).",
)
@click.option(
    "--keep",
    multiple=True,
    help="Data column copied to the output (repeatable; default: the id and time columns).",
)
@click.option(
    "--partition-rows",
    default=500_000,
    show_default=True,
    help="Rows per task when a Parquet file is split by row groups.",
)
@click.option("--overwrite", is_flag=True, help="Replace an earlier scoring output in --out.")
@click.pass_context
def score(
    ctx: click.Context,
    model: str,
    data: str,
    out: str,
    engine: str | None,
    keep: tuple[str, ...],
    partition_rows: int,
    overwrite: bool,
) -> None:
    """Score DATA with MODEL (NAME@ALIAS, NAME@VERSION or NAME for the latest version).

    Example: shipyard score fraud@champion --data fraud --out scores/ --engine ray
    """
    from shipyard.engines import Engine, LocalEngine, get_engine
    from shipyard.serving.batch import score_dataset

    ws = open_workspace(ctx)
    runner: Engine
    if engine == "local":
        runner = LocalEngine()
    elif engine == "ray":
        from shipyard.engines.ray import RayEngine

        runner = RayEngine.connect(ws.settings.ray_address, ws.settings.ray_num_cpus)
    else:
        runner = get_engine(ws)
    screen = console()
    with progress_bars(screen) as bars:
        result = score_dataset(
            ws,
            model,
            data,
            out,
            engine=runner,
            partition_rows=partition_rows,
            keep=list(keep) or None,
            overwrite=overwrite,
            progress=lambda done, total: bars("Scoring partitions", done, total),
        )
    screen.print(
        f"[green]Scored {result.rows:,} rows in {result.partitions} parts[/] with "
        f"{result.model} v{result.version} (sha256 {result.sha256[:12]}) on the "
        f"{result.engine} engine in {result.seconds:.1f} s ({result.rows_per_second:,.0f} rows/s)"
        f" -> {result.out}"
    )
