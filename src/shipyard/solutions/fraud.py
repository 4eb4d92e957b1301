"""The fraud-detection reference system, built only from Shipyard's public API.

:func:`train_baseline` is the main job behind ``shipyard quickstart``: simulate (or reuse)
the fraud data, materialize the 15 baseline features, evaluate the baseline suite on the
handbook's prequential protocol, log every model to MLflow, register the best as a
challenger with its model card and promote it to champion through the promotion gate.

The protocol (Fraud Detection Handbook, chapter 5): 7 training days, 7 delay days, 7 test
days; 4 folds shifted one week apart. *Validation* folds start training on 2018-07-11 and
choose the model; *test* folds start on 2018-08-15 (3 weeks later, so no test day was seen
during selection) and give the reported metrics. Cards known to be compromised are removed
from each test day.

Beyond the handbook, a :class:`Candidate` names a model, its feature set (the baseline views
or the extended ones of :mod:`shipyard.features.fraud`) and its training window: a longer
window (28 days) ends where the protocol's 7 days end, so the delay, the test days and the
known-compromised cards stay exactly those of the protocol. The quickstart evaluates the five
baselines and :data:`EXTENDED_CHAMPION`, the champion of the full search
(:mod:`shipyard.solutions.fraud_search`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from shipyard.errors import ParameterError, PromotionRefusedError
from shipyard.features.fraud import BASELINE_VIEWS_REF, FEATURE_SETS
from shipyard.registry.card import GENERIC_LIMITATIONS, CardNotes
from shipyard.types import ColumnRoles, Lineage

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.data.catalog import Dataset
    from shipyard.data.fraud_simulator import Mode
    from shipyard.engines import Engine
    from shipyard.registry.gate import GateResult
    from shipyard.registry.models import ModelVersion
    from shipyard.registry.tracking import Tracker
    from shipyard.training.evaluation import Evaluation
    from shipyard.training.frames import Window
    from shipyard.training.splits import PrequentialSplit
    from shipyard.workspace import Workspace

ProgressCallback = Callable[[str, int, int], None]
FEATURES_REF = BASELINE_VIEWS_REF
EXPERIMENT = "fraud-baseline"
MODEL_NAME = "fraud"
SELECTION_METRIC = "average_precision"
COLUMNS = ColumnRoles(label="TX_FRAUD", time="TX_DATETIME", entity="CUSTOMER_ID")
"""The fraud data's label, time and entity (card) columns: what its lineage records."""
CARD_NOTES = CardNotes(
    intended_use=(
        "Rank card transactions by fraud risk so that investigators review the riskiest cards "
        "first (an alert budget of about 100 cards a day). Scores are probabilities estimated "
        "on recent labelled data; use them to rank, and recalibrate before reading them as "
        "absolute fraud rates."
    ),
    limitations=(
        "Trained on simulated transactions (the Fraud Detection Handbook's generator); "
        "real fraud patterns differ and drift.",
        "Labels of the last 7 days before scoring are assumed unknown (delay period); "
        "terminal risk features use only labels older than 7 days.",
        "Metrics exclude cards already known to be compromised on each test day.",
        *GENERIC_LIMITATIONS,
        "No fairness assessment: the data set has no protected attributes.",
    ),
)
"""What the fraud model cards say about intended use and limitations."""


@dataclass(frozen=True)
class Candidate:
    """One configuration to evaluate: model type and parameters, feature set, training days.

    ``features`` is a name of :data:`~shipyard.features.fraud.FEATURE_SETS` (``baseline``,
    ``customer_history``, ``terminal_history``, ``extended``); ``train_days`` the length of
    the training window, which ends where the protocol's ends.
    """

    model_type: str
    params: dict[str, Any] = field(default_factory=dict)
    features: str = "baseline"
    train_days: int = 7
    label: str = ""

    def __post_init__(self) -> None:
        if self.features not in FEATURE_SETS:
            raise ParameterError(
                f"Candidate {self.model_type!r}: features must be one of "
                f"{', '.join(FEATURE_SETS)}. Got {self.features!r} instead."
            )
        if not isinstance(self.train_days, int) or self.train_days < 1:
            raise ParameterError(
                f"Candidate {self.model_type!r}: train_days must be an int >= 1. "
                f"Got {self.train_days!r} instead."
            )

    @property
    def name(self) -> str:
        """How tables and MLflow runs name it: the label, else type, features and window."""
        if self.label:
            return self.label
        if self.features == "baseline" and self.train_days == 7:
            return self.model_type
        return f"{self.model_type}/{self.features}/{self.train_days}d"

    @property
    def views_ref(self) -> str:
        """The ``module:attribute`` of its feature views (what its lineage records)."""
        return FEATURE_SETS[self.features]


EXTENDED_CHAMPION = Candidate(
    "balanced_bagging",
    {"n_bags": 8, "ratio": 8.558894657793088},
    features="extended",
    train_days=28,
    label="balanced_bagging/extended/28d",
)
"""The champion of the full search (docs/fraud-results.md: the best validation average
precision, 0.748): eight LightGBM models, each on every fraud and 8.56 legitimate
transactions per fraud, on the extended views and 28 training days. What the quickstart
adds to the five baselines."""


@dataclass
class ModelReport:
    """One model of the suite: its validation and test evaluations and MLflow run."""

    model_type: str
    validation: Evaluation
    test: Evaluation
    run_id: str
    seconds: float
    candidate: Candidate | None = None


@dataclass
class BaselineReport:
    """What the main job did, for printing and for the closing note of a run."""

    dataset: Dataset
    models: list[ModelReport] = field(default_factory=list)
    best: str = ""
    registered: ModelVersion | None = None
    promoted: bool = False
    gate: GateResult | None = None
    gate_message: str = ""
    tracking_uri: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Protocol:
    """Dates of the handbook's validation and test protocols, and the columns they read."""

    start_date_training: str = "2018-07-25"
    n_folds: int = 4
    delta_train: int = 7
    delta_delay: int = 7
    delta_test: int = 7
    columns: ColumnRoles = COLUMNS

    def validation_start(self) -> str:
        """Training start of validation fold 0: two weeks before the reference date."""
        start = date.fromisoformat(self.start_date_training)
        return (start - timedelta(days=self.delta_delay + self.delta_test)).isoformat()

    def test_start(self) -> str:
        """Training start of test fold 0: (n_folds - 1) test periods after the reference date."""
        start = date.fromisoformat(self.start_date_training)
        return (start + timedelta(days=(self.n_folds - 1) * self.delta_test)).isoformat()

    def splits(self, train_days: int | None = None) -> tuple[PrequentialSplit, PrequentialSplit]:
        """The validation and the test folds (training on ``train_days``, default 7, that end
        where the protocol's training days end; test days and known cards unchanged)."""
        from shipyard.training.splits import PrequentialSplit

        args = (self.n_folds, self.delta_train, self.delta_delay, self.delta_test)
        longer = train_days not in (None, self.delta_train)
        extra: dict[str, Any] = {"train_days": train_days} if longer else {}
        return (
            PrequentialSplit(self.validation_start(), *args, columns=self.columns, **extra),
            PrequentialSplit(self.test_start(), *args, columns=self.columns, **extra),
        )

    def lineage(
        self, dataset: Dataset, views: str = FEATURES_REF, train_days: int | None = None
    ) -> Lineage:
        """The lineage of models trained on ``dataset`` with this protocol (no windows yet)."""
        return Lineage.of(dataset, views, columns=self.columns, protocol=self.describe(train_days))

    def window(self, dataset: Dataset, views: str = FEATURES_REF, train_days: int = 7) -> Window:
        """The days both protocols use: the first validation training day (of a
        ``train_days`` window) to the last test day."""
        earliest = date.fromisoformat(self.validation_start()) - timedelta(
            days=(self.n_folds - 1) * self.delta_test + max(0, train_days - self.delta_train)
        )
        latest = date.fromisoformat(self.test_start()) + timedelta(
            days=self.delta_train + self.delta_delay + self.delta_test - 1
        )
        return _window(self.lineage(dataset, views), earliest, latest)

    def describe(self, train_days: int | None = None) -> str:
        """One line for model cards and logs."""
        trained = (
            ""
            if train_days in (None, self.delta_train)
            else f" (models trained on the {train_days} days ending with the training days)"
        )
        return (
            f"prequential, {self.n_folds} folds of {self.delta_train} training{trained}, "
            f"{self.delta_delay} delay and {self.delta_test} test days, one week apart; test "
            f"folds start training on {self.test_start()} (selection on validation folds from "
            f"{self.validation_start()}); known compromised cards removed from test days"
        )


def prepare_data(
    workspace: Workspace,
    mode: Mode = "reference",
    progress: ProgressCallback | None = None,
    features: str = "extended",
) -> Dataset:
    """Simulate (or reuse, if unchanged) the fraud data set and materialize a feature set
    (a name of :data:`~shipyard.features.fraud.FEATURE_SETS`; unchanged views are reused)."""
    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
    from shipyard.features.definitions import load_views
    from shipyard.features.offline import OfflineStore

    views = load_views(Candidate("feature_set_check", features=features).views_ref)
    dataset = simulate_fraud_dataset(workspace, FraudSimulator(mode=mode), progress=progress)
    OfflineStore(workspace).materialize(views, dataset.version, progress=progress)
    return dataset


def quickstart_candidates() -> list[Candidate]:
    """What the quickstart evaluates: the handbook's five baselines and the extended champion."""
    from shipyard.training.trainers import BASELINE_SUITE

    return [*(Candidate(model_type) for model_type in BASELINE_SUITE), EXTENDED_CHAMPION]


def train_baseline(
    workspace: Workspace,
    *,
    mode: Mode = "reference",
    n_boot: int = 500,
    gate_boot: int = 1000,
    progress: ProgressCallback | None = None,
) -> BaselineReport:
    """The main job: prepare the data, then :func:`train_suite` of the quickstart candidates
    (five baselines and the extended champion) with registration and promotion."""
    started = time.perf_counter()
    dataset = prepare_data(workspace, mode, progress)
    prepared = time.perf_counter() - started
    report = train_suite(
        workspace,
        dataset,
        candidates=quickstart_candidates(),
        n_boot=n_boot,
        gate_boot=gate_boot,
        promote=True,
        progress=progress,
    )
    report.seconds = {"data and features": prepared, **report.seconds}
    return report


def train_suite(
    workspace: Workspace,
    dataset: Dataset,
    *,
    model_types: Sequence[str] | None = None,
    candidates: Sequence[Candidate] | None = None,
    protocol: Protocol | None = None,
    n_trials: int = 0,
    model_params: dict[str, dict[str, Any]] | None = None,
    n_boot: int = 500,
    register: bool = True,
    promote: bool = False,
    gate_boot: int = 1000,
    progress: ProgressCallback | None = None,
) -> BaselineReport:
    """Evaluate models on the protocol, log them to MLflow, register (and promote) the best.

    Either ``model_types`` (on the baseline features and the protocol's 7 training days;
    ``model_params`` overrides defaults per type, e.g. ``{"lightgbm": {"n_estimators": 500}}``)
    or ``candidates`` (each with its feature set and training window). With ``n_trials`` > 0
    each candidate is first tuned with Optuna on the validation folds. The best candidate on
    validation is registered as ``challenger`` with the lineage of its own feature views;
    with ``promote`` it is then promoted to ``champion`` through the promotion gate.
    """
    from shipyard.engines import get_engine
    from shipyard.registry.tracking import Tracker
    from shipyard.training.frames import load_frame
    from shipyard.training.trainers import BASELINE_SUITE

    if candidates is not None and model_types is not None:
        raise ParameterError("train_suite takes model_types or candidates, not both.")
    if candidates is None:
        candidates = [
            Candidate(t, dict((model_params or {}).get(t, {})))
            for t in (model_types or BASELINE_SUITE)
        ]
    if not candidates:
        raise ParameterError("train_suite needs at least one candidate.")
    check_candidates(candidates)
    protocol = protocol or Protocol()
    clock = _Clock()
    report = BaselineReport(dataset=dataset, tracking_uri=workspace.mlflow_tracking_uri)
    run = _SuiteRun(
        frame=load_frame(workspace, frame_window(protocol, dataset, candidates)),
        protocol=protocol,
        tracker=Tracker(workspace),
        dataset=dataset,
        engine=get_engine(workspace),
    )
    clock.lap(report, "training frame")
    for i, candidate in enumerate(candidates):
        report.models.append(run.evaluate(candidate, n_trials, n_boot, progress))
        if progress is not None:
            progress("models", i + 1, len(candidates))
    clock.lap(report, "training")

    best = max(report.models, key=lambda r: r.validation.mean(SELECTION_METRIC))
    report.best = best.model_type
    if register:
        names = [c.name for c in candidates]
        run.register_best(workspace, report, best, promote, gate_boot, names)
        clock.lap(report, "registry")
    return report


def check_candidates(candidates: Sequence[Candidate]) -> None:
    """Fail before any work on an unknown model, bad parameters, or a feature set that reads
    labels without the 7-day delay or a column of the simulator's internals (LeakageError)."""
    from shipyard.features.definitions import load_views
    from shipyard.features.leakage import FRAUD_FORBIDDEN, FRAUD_LABEL_DELAY, require_clean_views
    from shipyard.training.trainers import make_config

    for candidate in candidates:
        make_config(candidate.model_type, **candidate.params)
    for ref in dict.fromkeys(c.views_ref for c in candidates):
        require_clean_views(
            load_views(ref),
            label=COLUMNS.label,
            label_delay=FRAUD_LABEL_DELAY,
            forbidden=FRAUD_FORBIDDEN,
        )


def frame_window(protocol: Protocol, dataset: Dataset, candidates: Sequence[Candidate]) -> Window:
    """The frame every candidate can read: the widest feature set, the longest window."""
    order = list(FEATURE_SETS)
    used = {c.features for c in candidates}
    # the extended set holds every other; a single set needs only its own views
    widest = next(iter(used)) if len(used) == 1 else order[-1]
    return protocol.window(dataset, FEATURE_SETS[widest], max(c.train_days for c in candidates))


def candidate_features(candidate: Candidate) -> list[str]:
    """The feature names a candidate's model reads, in view order."""
    from shipyard.features.definitions import load_views

    return [name for view in load_views(candidate.views_ref) for name in view.feature_names]


@dataclass
class _SuiteRun:
    """What the models of one suite run share: frame, splits, tracker, engine.

    Folds (and search trials) run on the engine; MLflow logging and registration stay here,
    on the driver."""

    frame: pd.DataFrame
    protocol: Protocol
    tracker: Tracker
    dataset: Dataset
    engine: Engine

    def lineage(self, candidate: Candidate) -> Lineage:
        return self.protocol.lineage(self.dataset, candidate.views_ref, candidate.train_days)

    def tags(self, candidate: Candidate) -> dict[str, str]:
        ds = self.dataset
        lineage = self.lineage(candidate)
        return {
            "shipyard.dataset": ds.name,
            "shipyard.dataset_version": str(ds.version),
            "shipyard.dataset_hash": ds.content_hash,
            "shipyard.dataset_time_range": f"{ds.time_min} .. {ds.time_max}",
            "shipyard.features": lineage.views,
            "shipyard.features_hash": lineage.features_hash,
            "shipyard.label": lineage.columns.label,
            "shipyard.model_type": candidate.model_type,
            "shipyard.candidate": candidate.name,
        }

    def evaluate(
        self,
        candidate: Candidate,
        n_trials: int,
        n_boot: int,
        progress: ProgressCallback | None,
    ) -> ModelReport:
        """Tune (optionally), validate, test and log one candidate."""
        from shipyard.training.evaluation import evaluate
        from shipyard.training.search import search
        from shipyard.training.trainers import make_config

        started = time.perf_counter()
        features = candidate_features(candidate)
        validation, test = self.protocol.splits(candidate.train_days)
        params = dict(candidate.params)
        extra: dict[str, float] = {}
        if n_trials > 0:
            tuned = search(
                self.frame,
                features,
                candidate.model_type,
                validation,
                n_trials=n_trials,
                metric=SELECTION_METRIC,
                engine=self.engine,
                progress=progress,
            )
            params = {**params, **tuned.best_params}
            extra["search.best_validation_value"] = tuned.best_value
        config = make_config(candidate.model_type, **params)
        val = evaluate(self.frame, features, config, validation, n_boot=0, engine=self.engine)
        tst = evaluate(
            self.frame, features, config, test, n_boot=n_boot, keep_models=True, engine=self.engine
        )
        run_id = self.tracker.log_evaluation(
            EXPERIMENT,
            candidate.name,
            tst,
            params={
                "split.validation": validation.describe(),
                "split.test": test.describe(),
                "selection_metric": SELECTION_METRIC,
                "search.n_trials": n_trials,
                "feature_set": candidate.features,
                "train_days": candidate.train_days,
                "features": ",".join(features),
            },
            tags=self.tags(candidate),
            extra_metrics={**extra, **{f"validation.{k}": v for k, v in val.summary().items()}},
        )
        seconds = time.perf_counter() - started
        return ModelReport(candidate.name, val, tst, run_id, seconds, candidate)

    def register_best(
        self,
        workspace: Workspace,
        report: BaselineReport,
        best: ModelReport,
        promote: bool,
        gate_boot: int,
        names: Sequence[str],
    ) -> None:
        """Register the most recent fold's model of ``best``; promote it through the gate."""
        from shipyard.registry.gate import PromotionGate
        from shipyard.registry.models import ModelRegistry

        newest = best.test.folds[0]  # fold 0: the most recent training window
        if newest.model is None or best.candidate is None:  # keep_models=True keeps it
            raise RuntimeError("the most recent fold kept no model")
        registry = ModelRegistry(workspace, self.tracker)
        fold = newest.fold
        lineage = self.lineage(best.candidate).with_windows(
            train=(fold.train_start.isoformat(), fold.train_end.isoformat()),
            evaluation=(fold.test_start.isoformat(), fold.test_end.isoformat()),
        )
        version = registry.register(
            MODEL_NAME,
            newest.model,
            lineage=lineage,
            evaluation=best.test,
            run_id=best.run_id,
            sample=self.frame.iloc[fold.test[:1000]],
            notes=CARD_NOTES,
            reason=f"best {SELECTION_METRIC} on validation folds ({best.model_type})",
        )
        if promote:
            try:
                report.gate = registry.promote(
                    MODEL_NAME,
                    version.version,
                    reason=f"best of {', '.join(names)} on validation {SELECTION_METRIC}",
                    gate=PromotionGate(metric=SELECTION_METRIC, n_boot=gate_boot),
                )
                report.promoted = True
            except PromotionRefusedError as refused:
                report.gate_message = str(refused)
        report.registered = registry.get(MODEL_NAME, version.version)


def _window(lineage: Lineage, start: date, end: date) -> Window:
    from shipyard.training.frames import Window

    return Window.of(lineage, start.isoformat(), end.isoformat())


class _Clock:
    def __init__(self) -> None:
        self.last = time.perf_counter()

    def lap(self, report: BaselineReport, stage: str) -> None:
        now = time.perf_counter()
        report.seconds[stage] = now - self.last
        self.last = now


def headline(evaluation: Evaluation, metric: str) -> dict[str, Any]:
    """Mean, std and interval of ``metric`` (for tables)."""
    interval = evaluation.intervals.get(metric)
    return {
        "mean": evaluation.mean(metric),
        "std": evaluation.std(metric),
        "low": interval.low if interval else float("nan"),
        "high": interval.high if interval else float("nan"),
    }
