"""``shipyard quickstart [fraud|credit|nlp|recsys] [DIRECTORY]``: a reference solution end to
end on embedded defaults (fraud, the default: the main job; credit: German credit and HMDA;
nlp: review sentiment and English/French entities; recsys: MovieLens recommendations)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

import click

from shipyard.cli._common import console, progress_bars

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from shipyard.data.fraud_simulator import Mode
    from shipyard.registry.models import ModelVersion
    from shipyard.solutions.credit import CreditReport
    from shipyard.solutions.fraud import BaselineReport
    from shipyard.solutions.nlp import SentimentReport
    from shipyard.solutions.recsys.pipeline import RecsysReport
    from shipyard.training.evaluation import Evaluation
    from shipyard.workspace import Workspace

SOLUTIONS = ("fraud", "credit", "nlp", "recsys")
NLP_MINILM_TRAIN = 4000
"""MiniLM's training reviews in the nlp quickstart (embedding them is most of its time)."""
DEFAULT_DIRECTORY = "shipyard-workspace"


def parse_arguments(arguments: tuple[str, ...]) -> tuple[str, str]:
    """``[SOLUTION] [DIRECTORY]`` -> (solution, directory); a lone word that is not a
    solution is the directory (``shipyard quickstart ws`` runs fraud in ``ws``)."""
    if len(arguments) > 2:
        raise click.UsageError(
            f"Expected [fraud|credit|nlp|recsys] [DIRECTORY]. Got {len(arguments)} arguments: "
            f"{' '.join(arguments)}."
        )
    if arguments and arguments[0] in SOLUTIONS:
        return arguments[0], arguments[1] if len(arguments) == 2 else DEFAULT_DIRECTORY
    if len(arguments) == 2:
        raise click.UsageError(
            f"The solution must be one of {', '.join(SOLUTIONS)}. Got {arguments[0]!r} instead."
        )
    return "fraud", arguments[0] if arguments else DEFAULT_DIRECTORY


@click.command()
@click.argument("arguments", nargs=-1, metavar="[fraud|credit|nlp|recsys] [DIRECTORY]")
@click.option(
    "--mode",
    type=click.Choice(["reference", "fast"]),
    default="reference",
    show_default=True,
    help="Simulator mode for the fraud data set.",
)
@click.option("--bootstrap", default=500, show_default=True, help="Bootstrap draws for the CIs.")
@click.option(
    "--users",
    type=click.IntRange(min=10),
    default=None,
    help="recsys only: keep this many users (a quick look at the flow; not the data set's "
    "numbers).",
)
def quickstart(arguments: tuple[str, ...], mode: str, bootstrap: int, users: int | None) -> None:
    """Run a reference solution end to end in the workspace DIRECTORY (default
    shipyard-workspace; created, or reused: unchanged data and features are reused).

    fraud (the default): data, features, five models, MLflow runs, champion, model card.
    credit: German credit and HMDA mortgage denials: cross-validated models, explanations,
    fairness assessment and mitigation, champion with reason codes, audit trail.
    nlp: Rotten Tomatoes reviews split by movie, a TF-IDF baseline against MiniLM with test
    intervals, both registered as 'sentiment' (the better one champion), and the English
    and French entity pipelines registered as 'entities'.
    recsys: MovieLens on a per-user temporal split, five tuned baselines against our
    two-stage and sequence models with intervals, the served recommender (ALS factors, HNSW,
    session state) registered as 'movies', and a replay of what sessions add.
    """
    from pathlib import Path

    from shipyard.workspace import Workspace

    solution, directory = parse_arguments(arguments)
    if solution != "fraud" and mode != "reference":
        raise click.BadParameter(
            f"applies to the fraud data set only. Got {mode!r} with {solution}.",
            param_hint="--mode",
        )
    if solution in ("credit", "nlp", "recsys") and bootstrap < 100:
        raise click.BadParameter(
            f"must be at least 100 for {solution}. Got {bootstrap} instead.",
            param_hint="--bootstrap",
        )
    if users is not None and solution != "recsys":
        raise click.BadParameter(
            f"applies to the recsys solution only. Got --users with {solution}.",
            param_hint="--users",
        )
    out = console()
    started = time.perf_counter()
    root = Path(directory)
    ws = Workspace.open(root) if (root / "shipyard.toml").is_file() else Workspace.init(root)
    out.print(f"[bold]Shipyard quickstart {solution}[/] in workspace {ws.root}")
    if solution == "credit":
        from shipyard.solutions.credit import SOLUTIONS as CREDIT
        from shipyard.solutions.credit import train_credit

        with progress_bars(out) as progress:
            reports = [train_credit(ws, n, n_boot=bootstrap, progress=progress) for n in CREDIT]
        print_credit_report(out, reports, time.perf_counter() - started)
        return
    if solution == "nlp":
        run_nlp(out, ws, bootstrap, started)
        return
    if solution == "recsys":
        from shipyard.solutions.recsys.pipeline import run_recsys

        out.print(
            "Recommendations: five baselines and our two models tuned on validation, tested "
            "once (about 2 minutes on 2 cores)."
        )
        recsys = run_recsys(
            ws, users=users, n_boot=bootstrap, progress=lambda line: out.print(f"  {line}")
        )
        print_recsys_report(out, recsys, time.perf_counter() - started)
        return
    from shipyard.solutions.fraud import train_baseline

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


def print_credit_report(out: Console, reports: list[CreditReport], seconds: float) -> None:
    """The credit summary: models per data set, the registered model, fairness, next steps."""
    from rich.table import Table

    from shipyard.solutions.credit import SELECTION_METRIC
    from shipyard.solutions.fraud import headline

    folds = reports[0].protocol.n_splits if reports else 0
    table = Table(
        title=f"Credit risk: {folds}-fold stratified CV on development rows (mean ± std, "
        "95% CI); held out: the registered model",
        caption=f"model selected on cross-validated {SELECTION_METRIC}; * = registered",
    )
    for column in ("data set", "model", "AUC", "average precision", "Brier score"):
        table.add_column(column, justify="left" if column in ("data set", "model") else "right")

    def cells(evaluation: Evaluation) -> list[str]:
        out_cells = []
        for metric in ("roc_auc", "average_precision", "brier"):
            h = headline(evaluation, metric)
            out_cells.append(f"{h['mean']:.3f} ± {h['std']:.3f}\n[{h['low']:.3f}, {h['high']:.3f}]")
        return out_cells

    for report in reports:
        ds = report.dataset
        label = f"{ds.name} v{ds.version}\n{ds.n_rows:,} rows, {ds.n_positives or 0:,} positive"
        for i, model in enumerate(report.models):
            mark = " *" if model.model_type == report.best else ""
            table.add_row(label if i == 0 else "", model.model_type + mark, *cells(model.crossval))
        if report.holdout is not None:
            n = len(report.holdout.folds[0].labels)
            table.add_row("", f"held out ({n:,} rows)", *cells(report.holdout), end_section=True)
    out.print(table)
    for report in reports:
        _print_credit_outcome(out, report)
    stages: dict[str, float] = {}
    for report in reports:
        for stage, value in report.seconds.items():
            stages[stage] = stages.get(stage, 0.0) + value
    out.print(
        f"Done in {seconds:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in stages.items())})."
    )
    out.print("Next:")
    name = reports[0].solution.name if reports else "german_credit"
    out.print(f"  shipyard serve {name}@champion   (then POST /invocations?explain=true)")
    out.print("  shipyard audit verify   |   shipyard models show " + f"{name}@champion")


def _print_credit_outcome(out: Console, report: CreditReport) -> None:
    sol = report.solution
    version = report.registered
    out.print(
        f"[bold]{sol.name}[/]: decision '{sol.adverse}' at calibrated probability >= "
        f"{sol.threshold:.3g}, i.e. score >= {report.threshold:.3g}"
    )
    if version is not None:
        state = "promoted to [bold green]champion[/]" if report.promoted else "kept as challenger"
        out.print(f"  registered {version.name} v{version.version} ({version.model_type}), {state}")
        if report.gate is not None:
            out.print(f"  gate: {report.gate.reason}")
        if report.gate_message:
            out.print(f"  [yellow]{report.gate_message}[/]")
    for result in report.fairness_gates:
        mark = "[green]passed[/]" if result.passed else "[red]failed[/]"
        out.print(f"  fairness gate {result.describe()}: {mark} — {result.reason}")
    if report.fairness is not None:
        for assessed in report.fairness.attributes:
            eod = assessed.equalized_odds_difference
            text = "not assessable (groups too small)" if eod is None else str(eod)
            small = (
                f"; too small: {', '.join(assessed.insufficient)}" if assessed.insufficient else ""
            )
            out.print(f"  {assessed.attribute}: equalized-odds difference {text}{small}")
    if report.variant is not None and report.tradeoff is not None:
        out.print(f"  mitigated variant: {report.variant.name} v{report.variant.version}")
        out.print(report.tradeoff.table())
    if report.reasons and report.holdout is not None:
        scores = report.holdout.folds[0].scores
        riskiest = int(scores.argmax())
        reasons = "; ".join(r.description for r in report.reasons[riskiest]) or "none"
        out.print(f"  riskiest held-out applicant ({scores[riskiest]:.2f}): {reasons}")
    if version is not None:
        out.print(f"  model card: {version.card_path}  (HTML: {version.card_html})")


def run_nlp(out: Console, ws: Workspace, bootstrap: int, started: float) -> None:
    """The nlp quickstart: sentiment models compared and registered, entities registered."""
    from shipyard.solutions.nlp import run_sentiment
    from shipyard.training.entities import register_entities

    out.print(
        "Sentiment: TF-IDF + logistic regression against MiniLM (frozen encoder, trained "
        f"head on {NLP_MINILM_TRAIN:,} training reviews); embedding the reviews takes a few "
        "minutes on 2 cores."
    )
    with progress_bars(out) as progress:
        report = run_sentiment(
            ws, n_boot=bootstrap, minilm_train=NLP_MINILM_TRAIN, progress=progress
        )
    out.print("Registering the English and French entity pipelines ...")
    entities_started = time.perf_counter()
    entities = register_entities(ws)
    report.seconds["entities"] = time.perf_counter() - entities_started
    print_nlp_report(out, report, entities, time.perf_counter() - started)


def print_nlp_report(
    out: Console, report: SentimentReport, entities: ModelVersion, seconds: float
) -> None:
    """The sentiment table with intervals, what was registered, and how to serve both."""
    from shipyard.solutions.nlp_report import (
        METRIC_NAMES,
        UNITS,
        model_summary,
        serving_instructions,
    )

    out.print(sentiment_table(report))
    for model in report.models:
        out.print(f"  {model.model_type}: {model_summary(model)}")
    for d in report.differences:
        out.print(
            f"  {report.models[1].model_type} − {report.models[0].model_type}, "
            f"{METRIC_NAMES[d.metric]}: {d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}] "
            f"(paired, resampling {UNITS[d.unit]})"
        )
    champion = report.champion.version if report.champion is not None else None
    for model in report.models:
        if model.version is not None:
            number = model.version.version
            state = (
                "[bold green]champion[/] (better on validation ROC AUC)"
                if number == champion
                else "challenger"
            )
            out.print(f"Registered sentiment v{number} ({model.model_type}), {state}")
            out.print(f"  model card: {model.version.card_path}")
    languages = ", ".join(entities.params.get("languages", []))
    out.print(
        f"Registered {entities.name} v{entities.version} (spaCy pipelines {languages}), "
        f"[bold green]champion[/]; model card: {entities.card_path}"
    )
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items())
    out.print(f"Done in {seconds:.0f} s ({stages}).")
    out.print("Serve them (one terminal each) and ask in English and French:")
    for line in serving_instructions():
        out.print(line, markup=False, highlight=False, soft_wrap=True)


def sentiment_table(report: SentimentReport) -> Table:
    """Test metrics with 95% intervals per model, its choice on validation, its time."""
    from rich.table import Table

    from shipyard.solutions.nlp_report import METRIC_NAMES

    table = Table(
        title=f"Sentiment on {report.n_test:,} test reviews of movies unseen in training "
        "(95% review-bootstrap CI)",
        caption="chosen on validation ROC AUC; * = champion",
    )
    table.add_column("model")
    metrics = ("accuracy", "roc_auc", "average_precision", "f1")
    for metric in metrics:
        table.add_column(METRIC_NAMES[metric], justify="right")
    table.add_column("val. AUC", justify="right")
    table.add_column("time", justify="right")
    champion = report.champion.version if report.champion is not None else None
    for model in report.models:
        cells = []
        for metric in metrics:
            found = model.evaluation.intervals.get(metric)
            value = f"{model.evaluation.mean(metric):.3f}"
            cells.append(f"{value}\n[{found.low:.3f}, {found.high:.3f}]" if found else value)
        held = model.version is not None and model.version.version == champion
        table.add_row(
            f"{model.model_type}{' *' if held else ''}",
            *cells,
            f"{model.validation['roc_auc']:.3f}",
            f"{model.seconds:.0f} s",
        )
    return table


def print_recsys_report(out: Console, report: RecsysReport, seconds: float) -> None:
    """The results against the best baseline, the session replay, what was registered."""
    from shipyard.solutions.recsys.metrics import K

    out.print(recsys_table(report))
    for c in report.comparisons.values():
        relative = c.relative
        out.print(
            f"  {c.model} against {c.baseline} (the best baseline on validation): test "
            f"NDCG@{K} {relative.estimate:+.1%} [{relative.low:+.1%}, {relative.high:+.1%}] "
            f"paired over users; +10% goal {'met' if c.goal_met else 'not met'}, intervals "
            f"{'overlap' if c.overlap else 'do not overlap'}",
            highlight=False,
        )
    if report.replay is not None:
        out.print(report.replay.describe(), markup=False, highlight=False)
    out.print(f"Report: {report.report_path}")
    version = report.version
    factors = ", ".join(
        f"{k} {v}" for k, v in report.served_params.items() if k != "session_weight"
    )
    if version is not None:
        quoted = version.metrics.get("test_ndcg_at_10")
        measured = f"; test NDCG@{K} {quoted:.4f} without a session" if quoted else ""
        out.print(
            f"Registered {version.name} v{version.version} (ALS {factors or 'defaults'}, "
            f"HNSW, session weight {version.params.get('session_weight')}), "
            f"[bold green]champion[/]{measured}; model card: {version.card_path}"
        )
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items())
    out.print(f"Done in {seconds:.0f} s ({stages}).")
    out.print("Serve it and ask for a user's next movies, then again with a session:")
    for line in (
        f"  shipyard -w {report.report_path.parents[2]} serve movies --port 8080",
        "  curl -s localhost:8080/invocations -H 'Content-Type: application/json' -d "
        """'{"dataframe_records": [{"user": "15", "k": "5"}]}'""",
        "  curl -s localhost:8080/invocations -H 'Content-Type: application/json' -d "
        """'{"dataframe_records": [{"user": "15", "session": "1 2 3", "k": "5", "genre": """
        """"Animation"}]}'""",
    ):
        out.print(line, markup=False, highlight=False, soft_wrap=True)


def recsys_table(report: RecsysReport) -> Table:
    """Validation and test NDCG@10 (95% user-bootstrap CI) and test recall@10 per model."""
    from rich.table import Table

    from shipyard.solutions.recsys.metrics import K

    table = Table(
        title=f"MovieLens, each user's last 20% of interactions: test on "
        f"{len(report.split.truth('test')):,} users (95% user-bootstrap CI)",
        caption=f"tuned on validation, refit on train + validation; best baseline: "
        f"{report.best_baseline}",
    )
    for column in ("model", f"val. NDCG@{K}", f"test NDCG@{K}", f"test recall@{K}", "fit"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, tuned in report.tuned.items():
        ndcg, recall = tuned.test.interval("ndcg"), tuned.test.interval("recall")
        kind = "baseline" if name in report.baselines else "ours"
        table.add_row(
            f"{name} ({kind})",
            f"{tuned.validation.ndcg.mean():.4f}",
            f"{ndcg.estimate:.4f}\n[{ndcg.low:.4f}, {ndcg.high:.4f}]",
            f"{recall.estimate:.4f}\n[{recall.low:.4f}, {recall.high:.4f}]",
            f"{tuned.test.fit_seconds:.0f} s",
        )
    return table
