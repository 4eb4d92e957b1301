"""What the NLP solution shows a person: the paired comparison of two sentiment models on the
same test reviews, its Markdown table, and how to serve the registered models.

The paired difference (challenger minus baseline) resamples the same rows for both models
in every bootstrap draw, so the noise both share (hard reviews, easy reviews) cancels. It is
drawn twice: over reviews (what the brief's intervals use) and over movies (a cluster
bootstrap: a movie's reviews stay together, which the split by movie makes the honest unit
when reviews of one movie are correlated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.solutions.nlp import SentimentModel, SentimentReport
    from shipyard.training.metrics import Statistic

DIFFERENCE_METRICS = ("accuracy", "roc_auc")
UNITS = {"review": "reviews", "movie": "movies (cluster)"}
METRIC_NAMES = {
    "accuracy": "accuracy",
    "roc_auc": "ROC AUC",
    "average_precision": "average precision",
    "f1": "F1",
    "brier": "Brier score",
}


@dataclass(frozen=True)
class PairedDifference:
    """``challenger - baseline`` on one metric, with a paired 95% bootstrap interval."""

    metric: str
    unit: str
    """``review`` or ``movie``: what each bootstrap draw resamples."""
    estimate: float
    low: float
    high: float
    n_boot: int

    def describe(self) -> str:
        """``'ROC AUC +0.012 [-0.004, 0.027] (paired, 1000 draws of reviews)'``."""
        return (
            f"{METRIC_NAMES.get(self.metric, self.metric)} {self.estimate:+.3f} "
            f"[{self.low:+.3f}, {self.high:+.3f}] (paired, {self.n_boot} draws of "
            f"{UNITS[self.unit]})"
        )


def _statistic(metric: str, y: NDArray[np.float64], a: Any, b: Any) -> Statistic:
    """The difference b - a of ``metric`` under bootstrap weights (one per row)."""
    from shipyard.training import metrics as m

    if metric == "accuracy":
        right_a = ((a >= 0.5) == (y == 1)).astype(float)
        right_b = ((b >= 0.5) == (y == 1)).astype(float)

        def accuracy(w: NDArray[np.float64]) -> float:
            return float(w @ (right_b - right_a)) / float(w.sum())

        return accuracy
    ranked_a, ranked_b = m.RankedScores(y, a), m.RankedScores(y, b)

    def auc(w: NDArray[np.float64]) -> float:
        return ranked_b.roc_auc(w) - ranked_a.roc_auc(w)

    return auc


def paired_differences(
    baseline: SentimentModel, challenger: SentimentModel, test: pd.DataFrame, *, n_boot: int
) -> list[PairedDifference]:
    """``challenger - baseline`` in accuracy and ROC AUC over the same test reviews, each
    resampled by review and by movie (0 draws: no differences)."""
    import numpy as np

    from shipyard.training import metrics as m

    if n_boot == 0:
        return []
    y = test["label"].to_numpy(dtype=np.float64)
    a = baseline.evaluation.folds[0].scores
    b = challenger.evaluation.folds[0].scores
    units = {"review": np.arange(len(test)), "movie": test["movie_name"].to_numpy()}
    out = []
    for metric in DIFFERENCE_METRICS:
        statistic = _statistic(metric, y, a, b)
        for unit, groups in units.items():
            # day_bootstrap resamples whole groups: a review alone, or a movie's reviews
            estimate, replicates = m.day_bootstrap(groups, statistic, n_boot, seed=0)
            found = m.interval(estimate, replicates)
            out.append(PairedDifference(metric, unit, estimate, found.low, found.high, n_boot))
    return out


def _cell(model: SentimentModel, metric: str) -> str:
    interval = model.evaluation.intervals.get(metric)
    value = model.evaluation.mean(metric)
    if interval is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def model_summary(model: SentimentModel) -> str:
    """The parameters chosen on validation, the best epoch and the training reviews."""
    keys = {
        "tfidf-logreg": ("C", "ngram_max"),
        "minilm-classifier": ("num_layers", "fine_tune_layers", "learning_rate"),
    }.get(model.model_type, ())
    shown = [f"{k}={model.params[k]}" for k in keys if k in model.params]
    history = getattr(model.model.estimator, "history", None)
    if history:
        shown.append(f"best epoch {model.model.estimator.best_epoch}/{len(history)}")
    return ", ".join(shown) + f"; {model.n_train:,} training reviews"


def results_table(report: SentimentReport) -> str:
    """The comparison as Markdown: test metrics with 95% CIs, then paired differences."""
    test_movies = "" if report.n_test == 0 else " (movies unseen in training)"
    lines = [
        f"Data set {report.dataset.name} v{report.dataset.version}: {report.n_train:,} "
        f"training, {report.n_validation:,} validation and {report.n_test:,} test "
        f"reviews{test_movies}; 95% intervals from a bootstrap of the test reviews.",
        "",
        "| model | chosen on validation | validation ROC AUC | test accuracy | test ROC AUC "
        "| test average precision | test F1 | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    champion = report.champion.version if report.champion is not None else None
    for model in report.models:
        name = model.model_type
        if model.version is not None:
            held = ", champion" if model.version.version == champion else ""
            name += f" (v{model.version.version}{held})"
        cells = [_cell(model, m) for m in ("accuracy", "roc_auc", "average_precision", "f1")]
        lines.append(
            f"| {name} | {model_summary(model)} | {model.validation['roc_auc']:.3f} | "
            f"{' | '.join(cells)} | {model.seconds:.0f} s |"
        )
    if report.differences:
        a, b = report.models[0].model_type, report.models[1].model_type
        lines += [
            "",
            f"| {b} − {a} | resampled | difference | 95% CI |",
            "|---|---|---|---|",
        ]
        for d in report.differences:
            lines.append(
                f"| {METRIC_NAMES[d.metric]} | {UNITS[d.unit]} | {d.estimate:+.3f} | "
                f"[{d.low:+.3f}, {d.high:+.3f}] |"
            )
    return "\n".join(lines)


SERVE_EXAMPLES = {
    "sentiment": (
        "A gorgeous, heartfelt film with a superb cast.",
        "Un film magnifique, porté par des acteurs formidables.",
    ),
    "entities": (
        "Tim Cook visited Paris with Apple engineers on Monday.",
        "Emmanuel Macron a visité Marseille avec Airbus.",
    ),
}


def serving_instructions(ports: tuple[int, int] = (8080, 8081)) -> list[str]:
    """How to serve both models (one port each) and a curl line for each in English and
    French."""
    import json

    lines = []
    for (name, texts), port in zip(SERVE_EXAMPLES.items(), ports, strict=True):
        lines.append(f"shipyard serve {name} --port {port}")
        for text in texts:
            body = {"dataframe_split": {"columns": ["text"], "data": [[text]]}}
            lines.append(
                f"  curl -s localhost:{port}/invocations -H 'Content-Type: application/json' "
                f"-d '{json.dumps(body, ensure_ascii=False)}'"
            )
            if name == "sentiment" and text != texts[0]:
                lines.append(
                    "  # 422: the sentiment models were trained on English reviews only "
                    "(their languages parameter); a French review is refused, not scored"
                )
    return lines
