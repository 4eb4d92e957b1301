"""``shipyard train``: evaluate, tune, log and register models on the fraud protocol."""

from __future__ import annotations

import time

import click

from shipyard.cli._common import console, open_workspace, progress_bars


@click.command()
@click.option(
    "--model",
    "model_types",
    multiple=True,
    help="Model type (repeatable): logistic_regression, decision_tree, random_forest, xgboost, "
    "lightgbm (the default: all five), balanced_bagging, calibrated, feedforward (the neural "
    "extra).",
)
@click.option("--dataset", default="fraud", show_default=True, help="Registered data set.")
@click.option("--version", "version", type=int, default=None, help="Data set version (latest).")
@click.option(
    "--start-date",
    default="2018-07-25",
    show_default=True,
    help="Reference date of the protocol: validation folds start 2 weeks before, test folds "
    "(n_folds - 1) weeks after.",
)
@click.option("--folds", default=4, show_default=True, help="Prequential folds.")
@click.option(
    "--param",
    "params",
    multiple=True,
    help="Model parameter NAME=VALUE for every --model (repeatable), e.g. n_estimators=500.",
)
@click.option("--search", "n_trials", default=0, show_default=True, help="Optuna trials per model.")
@click.option("--bootstrap", default=500, show_default=True, help="Bootstrap draws for the CIs.")
@click.option(
    "--register/--no-register",
    default=True,
    show_default=True,
    help="Register the best model as challenger.",
)
@click.option("--promote", is_flag=True, help="Then promote it to champion through the gate.")
@click.pass_context
def train(
    ctx: click.Context,
    model_types: tuple[str, ...],
    dataset: str,
    version: int | None,
    start_date: str,
    folds: int,
    params: tuple[str, ...],
    n_trials: int,
    bootstrap: int,
    register: bool,
    promote: bool,
) -> None:
    """Train and compare models on the prequential protocol; log to MLflow; register the best."""
    from shipyard.cli.quickstart import print_report
    from shipyard.data.catalog import get_dataset
    from shipyard.solutions.fraud import Protocol, train_suite
    from shipyard.training.trainers import BASELINE_SUITE

    ws = open_workspace(ctx)
    out = console()
    started = time.perf_counter()
    data = get_dataset(ws, dataset, version)
    overrides = dict(_parse_param(p) for p in params)
    with progress_bars(out) as progress:
        report = train_suite(
            ws,
            data,
            model_types=list(model_types) or None,
            protocol=Protocol(start_date_training=start_date, n_folds=folds),
            n_trials=n_trials,
            model_params=dict.fromkeys(model_types or BASELINE_SUITE, overrides)
            if overrides
            else None,
            n_boot=bootstrap,
            register=register,
            promote=promote,
            progress=progress,
        )
    print_report(out, report, time.perf_counter() - started)


def _parse_param(text: str) -> tuple[str, object]:
    """``n_estimators=500`` into ("n_estimators", 500): ints, floats, booleans, else text."""
    import json

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"expected NAME=VALUE, got {text!r}", param_hint="--param")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value
