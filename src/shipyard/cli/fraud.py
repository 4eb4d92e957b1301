"""``shipyard fraud search``: the fraud solution's full search (features, windows, families)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from shipyard.cli._common import console, open_workspace, progress_bars


@click.group()
def fraud() -> None:
    """The fraud-detection solution beyond the quickstart."""


@fraud.command()
@click.option("--dataset", default="fraud", show_default=True, help="Registered data set.")
@click.option("--version", "version", type=int, default=None, help="Data set version (latest).")
@click.option(
    "--start-date",
    default="2018-07-25",
    show_default=True,
    help="Reference date of the protocol: validation folds start 2 weeks before, test folds "
    "(folds - 1) weeks after.",
)
@click.option("--folds", default=4, show_default=True, help="Prequential folds.")
@click.option(
    "--feature-set",
    "feature_sets",
    multiple=True,
    help="Feature set of the ablation (repeatable): baseline, customer_history, "
    "terminal_history, extended. Default: all four.",
)
@click.option(
    "--train-days",
    "train_days",
    multiple=True,
    type=int,
    help="Training window in days (repeatable). Default: 7 and 28.",
)
@click.option(
    "--family",
    "families",
    multiple=True,
    help="Model family (repeatable), e.g. xgboost, lightgbm, balanced_bagging, calibrated, "
    "feedforward, sequence. Default: all of them.",
)
@click.option(
    "--trials",
    default=8,
    show_default=True,
    help="Optuna trials per tree family on the validation folds (neural: a quarter).",
)
@click.option("--bootstrap", default=500, show_default=True, help="Bootstrap draws for the CIs.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the Markdown report here (e.g. docs/fraud-results.md).",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the results as JSON here.",
)
@click.pass_context
def search(
    ctx: click.Context,
    dataset: str,
    version: int | None,
    start_date: str,
    folds: int,
    feature_sets: tuple[str, ...],
    train_days: tuple[int, ...],
    families: tuple[str, ...],
    trials: int,
    bootstrap: int,
    out: Path | None,
    json_out: Path | None,
) -> None:
    """Ablation of feature sets and training windows, then every model family tuned on the
    validation folds; the champion, the results table and what no causal feature can see."""
    from shipyard.data.catalog import get_dataset
    from shipyard.features.definitions import load_views
    from shipyard.features.fraud import FEATURE_SETS
    from shipyard.features.offline import OfflineStore
    from shipyard.solutions.fraud import Protocol
    from shipyard.solutions.fraud_search import (
        SearchPlan,
        families_known,
        render_markdown,
        run_search,
        to_json,
    )

    defaults = SearchPlan()
    plan = SearchPlan(
        feature_sets=feature_sets or defaults.feature_sets,
        train_days=train_days or defaults.train_days,
        families=families or defaults.families,
        n_trials=trials,
        n_boot=bootstrap,
    )
    families_known(plan.families)
    ws = open_workspace(ctx)
    console_out = console()
    started = time.perf_counter()
    data = get_dataset(ws, dataset, version)
    with progress_bars(console_out) as progress:
        views = {v.name: v for s in plan.feature_sets for v in load_views(FEATURE_SETS[s])}
        OfflineStore(ws).materialize(list(views.values()), data.version, progress=progress)
        protocol = Protocol(start_date_training=start_date, n_folds=folds)
        result = run_search(ws, data, plan, protocol=protocol, progress=progress)
    report = render_markdown(result)
    console_out.print(report, markup=False, highlight=False)
    if out is not None:
        out.write_text(report)
        console_out.print(f"Report written to {out}")
    if json_out is not None:
        json_out.write_text(json.dumps(to_json(result), indent=2, default=str) + "\n")
        console_out.print(f"Results written to {json_out}")
    console_out.print(f"Done in {time.perf_counter() - started:.0f} s.")
