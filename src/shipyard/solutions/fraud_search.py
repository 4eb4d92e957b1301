"""The fraud solution's full search: feature sets, training windows and model families.

:func:`run_search` answers, on the handbook's prequential protocol and with every choice
made on the *validation* folds, three questions in order:

1. **Ablation** — which feature set and training window: a reference model (XGBoost with
   fine histogram bins) on each feature set of :data:`~shipyard.features.fraud.FEATURE_SETS`
   and each training window of the plan (7 and 28 days by default);
2. **Families** — which model on the chosen features and window: each family of the plan,
   tuned with Optuna on the validation folds (the stated budget: ``n_trials`` per family),
   through the workspace's engine;
3. **Champion** — the best validation average precision among the *servable* candidates (a
   sequence model reads lag columns that no feature view serves yet, so it is compared but
   not chosen).

Every candidate is then measured once on the test folds with day-bootstrap intervals and
logged to MLflow. :func:`visibility` measures what no causal feature can see — scenario-2
frauds on terminals whose compromise has no known label yet — and the metrics a model would
reach if it ranked every *visible* fraud first: the ceiling a causal model cannot pass. The
simulator's scenario column is read there for the analysis only; no feature reads it (the
leakage audit checks that).

:func:`render_markdown` writes the results table, the ablation table and the ceiling (what
``shipyard fraud search --out docs/fraud-results.md`` writes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from shipyard.errors import ParameterError
from shipyard.features.fraud import FEATURE_SETS
from shipyard.solutions.fraud import (
    EXPERIMENT,
    SELECTION_METRIC,
    Candidate,
    Protocol,
    candidate_features,
    check_candidates,
    frame_window,
)

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.data.catalog import Dataset
    from shipyard.engines import Engine
    from shipyard.registry.tracking import Tracker
    from shipyard.training.evaluation import Evaluation
    from shipyard.workspace import Workspace

ProgressCallback = Callable[[str, int, int], None]
METRICS = ("roc_auc", "average_precision", "card_precision@100")
REFERENCE = Candidate("xgboost", {"max_bin": 1024})
"""The model of the ablation: XGBoost with the defaults of its configuration and 1,024
histogram bins (finer bins find the exact amount threshold of the first fraud scenario)."""
SEQUENCE_LENGTH = 5
"""How many of the card's previous transactions the sequence model reads."""
UNSERVABLE = frozenset({"sequence"})
"""Families whose inputs no feature view serves yet: compared, never chosen."""
SCENARIO = "TX_FRAUD_SCENARIO"
"""The simulator's scenario of each fraud: read by :func:`visibility` only, never a feature."""
GOALS = {"roc_auc": 0.885, "average_precision": 0.76, "card_precision@100": 0.315}
"""The issue's goals for the mean over the four test folds."""


@dataclass(frozen=True)
class SearchPlan:
    """What the search tries and its budget (trials per family, bootstrap draws)."""

    feature_sets: tuple[str, ...] = tuple(FEATURE_SETS)
    train_days: tuple[int, ...] = (7, 28)
    families: tuple[str, ...] = (
        "xgboost",
        "lightgbm",
        "balanced_bagging",
        "calibrated",
        "feedforward",
        "sequence",
        "random_forest",
    )
    """The families compared (logistic regression is a baseline only: it takes no missing
    values, and a card's first transaction has no past to compare its amount with)."""
    n_trials: int = 8
    """Optuna trials per boosted-tree family (the budget); the costlier families (bagging,
    calibration, random forests, neural networks) get a quarter of it."""
    n_boot: int = 500
    reference: Candidate = REFERENCE

    def __post_init__(self) -> None:
        unknown = [s for s in self.feature_sets if s not in FEATURE_SETS]
        if unknown or not self.feature_sets:
            raise ParameterError(
                f"SearchPlan: feature_sets must be names of {', '.join(FEATURE_SETS)}. "
                f"Got {list(self.feature_sets)!r} instead."
            )
        if not self.train_days or any(not isinstance(d, int) or d < 1 for d in self.train_days):
            raise ParameterError(
                f"SearchPlan: train_days must be ints >= 1. Got {list(self.train_days)!r}."
            )
        if not isinstance(self.n_trials, int) or self.n_trials < 0:
            raise ParameterError(
                f"SearchPlan: n_trials must be an int >= 0. Got {self.n_trials!r} instead."
            )

    def trials_for(self, family: str) -> int:
        """The Optuna trials ``family`` gets (all but single boosted trees cost more per trial)."""
        if family in ("xgboost", "lightgbm", "decision_tree"):
            return self.n_trials
        return self.n_trials // 4

    def describe(self) -> str:
        """One line for the report."""
        return (
            f"feature sets {', '.join(self.feature_sets)}; training windows "
            f"{', '.join(f'{d} days' for d in self.train_days)}; families "
            f"{', '.join(self.families)}; {self.n_trials} Optuna trials per boosted-tree "
            f"family ({self.n_trials // 4} for the others) on the validation folds; "
            f"{self.n_boot} day-bootstrap draws"
        )


@dataclass
class SearchRow:
    """One evaluated candidate: its stage, evaluations, cost and whether it can be served."""

    stage: str
    candidate: Candidate
    validation: Evaluation
    test: Evaluation
    seconds: float
    trials: int = 0
    servable: bool = True
    run_id: str = ""

    def fit_score_seconds(self) -> tuple[float, float]:
        """Mean seconds per test fold to train and to score."""
        return self.test.seconds()


@dataclass
class Visibility:
    """What causal features can see of the test frauds, and the ceiling it sets."""

    frauds: int
    invisible: int
    ceiling: dict[str, float]
    perfect_cp: float

    @property
    def invisible_share(self) -> float:
        """Share of the test frauds that no causal feature can see."""
        return self.invisible / self.frauds if self.frauds else float("nan")


@dataclass
class SearchResult:
    """Everything the search measured, and its choices."""

    plan: SearchPlan
    rows: list[SearchRow] = field(default_factory=list)
    chosen_features: str = ""
    chosen_train_days: int = 0
    champion: SearchRow | None = None
    visibility: Visibility | None = None
    seconds: float = 0.0
    dataset: str = ""


def run_search(
    workspace: Workspace,
    dataset: Dataset,
    plan: SearchPlan | None = None,
    *,
    protocol: Protocol | None = None,
    progress: ProgressCallback | None = None,
) -> SearchResult:
    """Run the ablation, tune and compare the families, choose the champion on validation.

    The data set's features must be materialized for every feature set of the plan
    (:func:`~shipyard.solutions.fraud.prepare_data` with ``features="extended"`` does it).
    """
    from shipyard.engines import get_engine
    from shipyard.registry.tracking import Tracker
    from shipyard.training.frames import load_frame

    plan = plan or SearchPlan()
    protocol = protocol or Protocol()
    started = time.perf_counter()
    grid = [
        replace(plan.reference, features=s, train_days=d, label="")
        for s in plan.feature_sets
        for d in plan.train_days
    ]
    check_candidates(grid)
    window = frame_window(protocol, dataset, grid)
    if SCENARIO in dataset.columns and window.columns is not None:
        # read for the visibility analysis only; no candidate's features include it
        window = replace(window, columns=(*window.columns, SCENARIO))
    frame = load_frame(workspace, window)
    result = SearchResult(plan=plan, dataset=f"{dataset.name} v{dataset.version}")
    search = _Search(frame, protocol, Tracker(workspace), get_engine(workspace), plan, progress)

    for i, candidate in enumerate(grid):
        result.rows.append(search.evaluate("ablation", candidate, n_trials=0))
        _tick(progress, "ablation", i + 1, len(grid))
    ablation = [r for r in result.rows if r.stage == "ablation"]
    best = max(ablation, key=lambda r: r.validation.mean(SELECTION_METRIC)).candidate
    result.chosen_features, result.chosen_train_days = best.features, best.train_days

    for i, family in enumerate(plan.families):
        candidate = Candidate(family, features=best.features, train_days=best.train_days)
        result.rows.append(search.evaluate("family", candidate, plan.trials_for(family)))
        _tick(progress, "families", i + 1, len(plan.families))

    servable = [r for r in result.rows if r.servable]
    result.champion = max(servable, key=lambda r: r.validation.mean(SELECTION_METRIC))
    if SCENARIO in frame.columns:
        result.visibility = visibility(frame, result.champion.test, protocol)
    result.seconds = time.perf_counter() - started
    return result


def _tick(progress: ProgressCallback | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


@dataclass
class _Search:
    frame: pd.DataFrame
    protocol: Protocol
    tracker: Tracker
    engine: Engine
    plan: SearchPlan
    progress: ProgressCallback | None
    _with_sequences: pd.DataFrame | None = None

    def frame_for(self, family: str) -> tuple[pd.DataFrame, list[str]]:
        """The frame a family reads and the extra (lag) columns it adds to the features."""
        if family != "sequence":
            return self.frame, []
        from shipyard.training.sequences import add_sequence_columns

        if self._with_sequences is None:
            roles = self.protocol.columns
            self._with_sequences = add_sequence_columns(
                self.frame, roles.entity, roles.time, ["TX_AMOUNT"], SEQUENCE_LENGTH
            )
        extra = [c for c in self._with_sequences.columns if c.startswith("SEQ_")]
        return self._with_sequences, extra

    def evaluate(self, stage: str, candidate: Candidate, n_trials: int) -> SearchRow:
        from shipyard.training.evaluation import evaluate
        from shipyard.training.search import search
        from shipyard.training.trainers import make_config

        started = time.perf_counter()
        frame, extra = self.frame_for(candidate.model_type)
        features = [*candidate_features(candidate), *extra]
        validation, test = self.protocol.splits(candidate.train_days)
        params = dict(candidate.params)
        if n_trials > 0:
            tuned = search(
                frame,
                features,
                candidate.model_type,
                validation,
                n_trials=n_trials,
                metric=SELECTION_METRIC,
                engine=self.engine,
                progress=self.progress,
            )
            params = {**params, **tuned.best_params}
        config = make_config(candidate.model_type, **params)
        chosen = replace(candidate, params=params)
        val = evaluate(frame, features, config, validation, n_boot=0, engine=self.engine)
        tst = evaluate(frame, features, config, test, n_boot=self.plan.n_boot, engine=self.engine)
        row = SearchRow(
            stage,
            chosen,
            val,
            tst,
            time.perf_counter() - started,
            trials=n_trials,
            servable=candidate.model_type not in UNSERVABLE,
        )
        row.run_id = self.tracker.log_evaluation(
            EXPERIMENT,
            f"search/{stage}/{chosen.name}",
            tst,
            params={
                "split.validation": validation.describe(),
                "split.test": test.describe(),
                "selection_metric": SELECTION_METRIC,
                "search.n_trials": n_trials,
                "search.stage": stage,
                "feature_set": candidate.features,
                "train_days": candidate.train_days,
            },
            tags={"shipyard.model_type": candidate.model_type, "shipyard.search": stage},
            extra_metrics={f"validation.{k}": v for k, v in val.summary().items()},
        )
        return row


def visibility(frame: pd.DataFrame, test: Evaluation, protocol: Protocol) -> Visibility:
    """The test frauds no causal feature can see, and the metrics of ranking the rest first.

    A fraud is invisible when it is a scenario-2 fraud (a compromised terminal) and the
    terminal has no scenario-2 fraud with a known label — between 35 and 7 days before the
    transaction — yet: nothing observable distinguishes it before the first labels of the
    compromise arrive. The ceiling gives every *visible* fraud a score above every other
    transaction and keeps the model's scores for the rest.
    """
    import numpy as np

    from shipyard.training import metrics as m

    roles = protocol.columns
    times = frame[roles.time].to_numpy()
    terminals = frame["TERMINAL_ID"].to_numpy()
    compromised = frame[SCENARIO].to_numpy() == 2
    known: dict[Any, Any] = {}
    for terminal in np.unique(terminals[compromised]):
        known[terminal] = np.sort(times[compromised & (terminals == terminal)])
    days = times.astype("datetime64[D]")
    cards = frame[roles.entity].to_numpy()
    lower, upper = np.timedelta64(35, "D"), np.timedelta64(7, "D")
    frauds = invisible = 0
    values: list[tuple[float, float, float, float]] = []
    for result in test.folds:
        rows = result.fold.test
        labels = result.labels
        hidden = np.zeros(len(rows), dtype=bool)
        for j in np.flatnonzero(compromised[rows] & (labels == 1)):
            i = rows[j]
            seen = known[terminals[i]]
            lo = np.searchsorted(seen, times[i] - lower, side="right")
            hi = np.searchsorted(seen, times[i] - upper, side="right")
            hidden[j] = hi <= lo
        frauds += int(labels.sum())
        invisible += int(hidden.sum())
        oracle = np.where((labels == 1) & ~hidden, 2.0, result.scores)
        perfect = labels.astype(float) + np.linspace(0, 1e-3, len(labels))
        d, c = days[rows], cards[rows]
        values.append(
            (
                m.roc_auc(labels, oracle),
                m.average_precision(labels, oracle),
                m.card_precision_at_k(d, c, labels, oracle, k=100).mean,
                m.card_precision_at_k(d, c, labels, perfect, k=100).mean,
            )
        )
    mean = np.mean(values, axis=0)
    ceiling = dict(zip(METRICS, (float(v) for v in mean[:3]), strict=True))
    return Visibility(frauds, invisible, ceiling, float(mean[3]))


def _cell(evaluation: Evaluation, metric: str) -> str:
    interval = evaluation.intervals.get(metric)
    text = f"{evaluation.mean(metric):.3f}"
    if interval is not None:
        text += f" [{interval.low:.3f}, {interval.high:.3f}]"
    return text


def _row(row: SearchRow, champion: SearchRow | None) -> str:
    fit, score = row.fit_score_seconds()
    name = row.candidate.name + (" **(champion)**" if row is champion else "")
    if not row.servable:
        name += " (not servable)"
    cells = [
        name,
        *(f"{row.validation.mean(metric):.3f}" for metric in METRICS),
        *(_cell(row.test, metric) for metric in METRICS),
        f"{fit:.1f} s / {score:.2f} s",
        str(row.trials),
    ]
    return "| " + " | ".join(cells) + " |"


_HEADER = (
    "| candidate | val. AUC | val. AP | val. CP@100 | test AUC [95% CI] | test AP [95% CI] "
    "| test CP@100 [95% CI] | fit / score per fold | trials |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def render_markdown(result: SearchResult) -> str:
    """The search's report: champion, results table, ablation table, ceiling, goals."""
    champion = result.champion
    lines = [
        "# Fraud detection beyond the published baselines: search results",
        "",
        f"Written by `shipyard fraud search` on data set {result.dataset} in "
        f"{result.seconds / 60:.1f} minutes. Plan: {result.plan.describe()}.",
        "",
        "Everything is chosen on the 4 validation folds (training from 2018-07-11, one week "
        "apart); the test folds (training from 2018-08-15) are measured once per candidate. "
        "Test metrics are means over the 4 test folds with 95% day-bootstrap intervals; "
        "validation metrics are means over the 4 validation folds. Cards known to be "
        "compromised are removed from each test day, and a longer training window ends where "
        "the protocol's 7 days end (same delay, same test rows).",
        "",
    ]
    if champion is not None:
        lines += [
            "## Champion",
            "",
            f"**{champion.candidate.name}** "
            f"(parameters {champion.candidate.params}): the highest validation average "
            f"precision ({champion.validation.mean(SELECTION_METRIC):.3f}) among servable "
            "candidates. Test: "
            + ", ".join(f"{m} {_cell(champion.test, m)}" for m in METRICS)
            + ".",
            "",
        ]
    lines += ["## Ablation: feature sets and training windows (reference model)", ""]
    lines += [_HEADER, *(_row(r, champion) for r in result.rows if r.stage == "ablation")]
    lines += [
        "",
        f"Chosen on validation: feature set `{result.chosen_features}`, "
        f"{result.chosen_train_days} training days.",
        "",
        "## Model families (on the chosen features and window)",
        "",
        _HEADER,
        *(_row(r, champion) for r in result.rows if r.stage == "family"),
        "",
    ]
    lines += _visibility_lines(result)
    return "\n".join(lines) + "\n"


def _visibility_lines(result: SearchResult) -> list[str]:
    vis, champion = result.visibility, result.champion
    if vis is None or champion is None:
        return []
    lines = [
        "## What no causal feature can see",
        "",
        f"Of the {vis.frauds:,} frauds of the test folds, **{vis.invisible:,} "
        f"({vis.invisible_share:.1%})** are scenario-2 frauds on terminals whose compromise "
        "has no known label yet (no scenario-2 fraud on the terminal between 35 and 7 days "
        "before): a compromised terminal's transactions look like any other until its first "
        "labels arrive 7 days later. Ranking every *visible* fraud above every other "
        "transaction (and keeping the champion's scores for the rest) gives the ceiling of "
        "a causal model; a perfect ranking of every fraud gives a mean CP@100 of "
        f"{vis.perfect_cp:.3f}.",
        "",
        "| metric | goal | champion (test) | ceiling with invisible frauds |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {metric} | {GOALS[metric]:.3f} | {champion.test.mean(metric):.3f} | "
        f"{vis.ceiling[metric]:.3f} |"
        for metric in METRICS
    ]
    return [*lines, ""]


def to_json(result: SearchResult) -> dict[str, Any]:
    """The results as plain data (what ``--json`` writes)."""

    def evaluation(e: Evaluation) -> dict[str, Any]:
        out: dict[str, Any] = {m: e.mean(m) for m in METRICS}
        out["intervals"] = {k: [v.low, v.high] for k, v in e.intervals.items()}
        return out

    return {
        "dataset": result.dataset,
        "plan": result.plan.describe(),
        "seconds": result.seconds,
        "chosen_features": result.chosen_features,
        "chosen_train_days": result.chosen_train_days,
        "champion": result.champion.candidate.name if result.champion else None,
        "rows": [
            {
                "stage": r.stage,
                "candidate": r.candidate.name,
                "model_type": r.candidate.model_type,
                "params": r.candidate.params,
                "features": r.candidate.features,
                "train_days": r.candidate.train_days,
                "servable": r.servable,
                "trials": r.trials,
                "validation": evaluation(r.validation),
                "test": evaluation(r.test),
                "fit_seconds": r.fit_score_seconds()[0],
                "score_seconds": r.fit_score_seconds()[1],
                "run_id": r.run_id,
            }
            for r in result.rows
        ],
        "visibility": None
        if result.visibility is None
        else {
            "frauds": result.visibility.frauds,
            "invisible": result.visibility.invisible,
            "ceiling": result.visibility.ceiling,
            "perfect_cp": result.visibility.perfect_cp,
        },
    }


def families_known(families: Sequence[str]) -> None:
    """Raise ParameterError naming the first unknown family (before any work)."""
    from shipyard.training.trainers import MODEL_TYPES, load_families

    load_families()
    for family in families:
        if family not in MODEL_TYPES:
            raise ParameterError(
                f"Unknown model family {family!r}; known: {', '.join(MODEL_TYPES)}."
            )
