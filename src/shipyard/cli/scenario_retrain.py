"""``shipyard scenario retrain``: weeks of replayed fraud traffic with weekly retraining.

A thin layer over :func:`shipyard.scenarios.retrain.run_retrain_scenario`: it prints the
week-by-week table (champion, challenger against it with the interval, decision, why).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from shipyard.cli._common import console, progress_bars

if TYPE_CHECKING:
    from shipyard.workspace import Workspace


@click.command("retrain")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the server's log and result.json (default: WORKSPACE/scenario-retrain).",
)
@click.option("--endpoint", default="fraud-retrain", show_default=True, help="Endpoint to serve.")
@click.option(
    "--weeks", type=click.IntRange(1, 10), default=7, show_default=True, help="Weeks replayed."
)
@click.option(
    "--pattern-week",
    type=int,
    default=3,
    show_default=True,
    help="First week whose traffic holds the new fraud pattern (night bursts).",
)
@click.option(
    "--n-boot", default=1000, show_default=True, help="Bootstrap draws of the metric's interval."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def retrain(
    ctx: click.Context,
    out: str | None,
    endpoint: str,
    weeks: int,
    pattern_week: int,
    n_boot: int,
    as_json: bool,
) -> None:
    """Replay weeks of fraud traffic, retrain weekly, promote only a significantly better model.

    Needs a workspace without a fraud model (-w DIR creates DIR if needed): it simulates a
    small data set, trains and serves a champion, and from --pattern-week adds a new fraud
    pattern as a new data set version. At each week's end the retraining pipeline runs on
    the labels known by then (7-day delay); a challenger that passes its gates goes out by
    canary on the next week's traffic. Exits with 1 unless the champion was kept every week
    before the pattern and a challenger was promoted after it.
    """
    from shipyard.scenarios.retrain import run_retrain_scenario

    if not 2 <= pattern_week <= weeks:
        raise click.BadParameter(f"must be in [2, {weeks}] (--weeks)", param_hint="--pattern-week")
    ws = _workspace(ctx)
    folder = Path(out) if out else ws.root / "scenario-retrain"
    options = {"out": folder, "weeks": weeks, "pattern_week": pattern_week, "endpoint": endpoint}
    if as_json:
        result = run_retrain_scenario(ws, n_boot=n_boot, **options)  # type: ignore[arg-type]
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        screen = console()
        screen.print(f"[bold]Retraining scenario[/] in workspace {ws.root}")
        with progress_bars(screen) as progress:
            result = run_retrain_scenario(
                ws,
                n_boot=n_boot,
                progress=progress,
                **options,  # type: ignore[arg-type]
            )
        screen.print(result.table(), markup=False, soft_wrap=True)
        screen.print(
            f"\n{result.rows:,} transactions replayed, {result.labels:,} labels ingested; "
            f"the pattern added {result.pattern_frauds:,} frauds (data set v"
            f"{result.pattern_version}); champion v{result.champion_before} -> "
            f"v{result.champion_after}."
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    if not result.shown:
        ctx.exit(1)


def _workspace(ctx: click.Context) -> Workspace:
    """The -w workspace, created when the folder has none; else the usual lookup."""
    from shipyard.cli._common import open_workspace
    from shipyard.logs import configure_logging
    from shipyard.workspace import Workspace

    given = (ctx.find_root().obj or {}).get("workspace")
    if given is not None and not (Path(given) / "shipyard.toml").is_file():
        workspace = Workspace.init(given)
        configure_logging(workspace.settings)
        return workspace
    return open_workspace(ctx)
