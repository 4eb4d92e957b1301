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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from shipyard.errors import PromotionRefusedError
from shipyard.features.fraud import BASELINE_VIEWS_REF
from shipyard.registry.card import GENERIC_LIMITATIONS, CardNotes
from shipyard.types import ColumnRoles, Lineage

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.data.catalog import Dataset
    from shipyard.data.fraud_simulator import Mode
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


@dataclass
class ModelReport:
    """One model of the suite: its validation and test evaluations and MLflow run."""

    model_type: str
    validation: Evaluation
    test: Evaluation
    run_id: str
    seconds: float


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

    def splits(self) -> tuple[PrequentialSplit, PrequentialSplit]:
        """The validation and the test folds."""
        from shipyard.training.splits import PrequentialSplit

        args = (self.n_folds, self.delta_train, self.delta_delay, self.delta_test)
        return (
            PrequentialSplit(self.validation_start(), *args, columns=self.columns),
            PrequentialSplit(self.test_start(), *args, columns=self.columns),
        )

    def lineage(self, dataset: Dataset) -> Lineage:
        """The lineage of models trained on ``dataset`` with this protocol (no windows yet)."""
        return Lineage.of(dataset, FEATURES_REF, columns=self.columns, protocol=self.describe())

    def window(self, dataset: Dataset) -> Window:
        """The days both protocols use: the first validation training day to the last test day."""
        earliest = date.fromisoformat(self.validation_start()) - timedelta(
            days=(self.n_folds - 1) * self.delta_test
        )
        latest = date.fromisoformat(self.test_start()) + timedelta(
            days=self.delta_train + self.delta_delay + self.delta_test - 1
        )
        return _window(self.lineage(dataset), earliest, latest)

    def describe(self) -> str:
        """One line for model cards and logs."""
        return (
            f"prequential, {self.n_folds} folds of {self.delta_train} training, "
            f"{self.delta_delay} delay and {self.delta_test} test days, one week apart; test "
            f"folds start training on {self.test_start()} (selection on validation folds from "
            f"{self.validation_start()}); known compromised cards removed from test days"
        )


def prepare_data(
    workspace: Workspace, mode: Mode = "reference", progress: ProgressCallback | None = None
) -> Dataset:
    """Simulate (or reuse, if unchanged) the fraud data set and materialize its features."""
    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
    from shipyard.features.definitions import load_views
    from shipyard.features.offline import OfflineStore

    dataset = simulate_fraud_dataset(workspace, FraudSimulator(mode=mode), progress=progress)
    OfflineStore(workspace).materialize(
        load_views(FEATURES_REF), dataset.version, progress=progress
    )
    return dataset


def train_baseline(
    workspace: Workspace,
    *,
    mode: Mode = "reference",
    n_boot: int = 500,
    gate_boot: int = 1000,
    progress: ProgressCallback | None = None,
) -> BaselineReport:
    """The main job: prepare the data, then :func:`train_suite` with registration and promotion."""
    started = time.perf_counter()
    dataset = prepare_data(workspace, mode, progress)
    prepared = time.perf_counter() - started
    report = train_suite(
        workspace, dataset, n_boot=n_boot, gate_boot=gate_boot, promote=True, progress=progress
    )
    report.seconds = {"data and features": prepared, **report.seconds}
    return report


def train_suite(
    workspace: Workspace,
    dataset: Dataset,
    *,
    model_types: Sequence[str] | None = None,
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

    ``model_params`` overrides defaults per model type (``{"lightgbm": {"n_estimators": 500}}``).
    With ``n_trials`` > 0 each model type is first tuned with Optuna on the validation
    folds. The best model on validation is registered as ``challenger``; with ``promote`` it
    is then promoted to ``champion`` through the promotion gate (directly if there is none).
    """
    from shipyard.features.definitions import load_views
    from shipyard.registry.tracking import Tracker
    from shipyard.training.frames import load_frame
    from shipyard.training.trainers import BASELINE_SUITE, make_config

    protocol = protocol or Protocol()
    model_types = list(model_types or BASELINE_SUITE)
    for model_type in model_types:
        make_config(model_type)  # an unknown type fails before any work
    clock = _Clock()
    report = BaselineReport(dataset=dataset, tracking_uri=workspace.mlflow_tracking_uri)
    views = load_views(FEATURES_REF)
    run = _SuiteRun(
        frame=load_frame(workspace, protocol.window(dataset)),
        features=[name for view in views for name in view.feature_names],
        lineage=protocol.lineage(dataset),
        protocol=protocol,
        tracker=Tracker(workspace),
        dataset=dataset,
    )
    clock.lap(report, "training frame")
    for i, model_type in enumerate(model_types):
        params = dict((model_params or {}).get(model_type, {}))
        report.models.append(run.evaluate(model_type, params, n_trials, n_boot, progress))
        if progress is not None:
            progress("models", i + 1, len(model_types))
    clock.lap(report, "training")

    best = max(report.models, key=lambda r: r.validation.mean(SELECTION_METRIC))
    report.best = best.model_type
    if register:
        run.register_best(workspace, report, best, promote, gate_boot, model_types)
        clock.lap(report, "registry")
    return report


@dataclass
class _SuiteRun:
    """What the models of one suite run share: frame, features, splits, tracker."""

    frame: pd.DataFrame
    features: list[str]
    lineage: Lineage
    protocol: Protocol
    tracker: Tracker
    dataset: Dataset

    def tags(self, model_type: str) -> dict[str, str]:
        ds = self.dataset
        return {
            "shipyard.dataset": ds.name,
            "shipyard.dataset_version": str(ds.version),
            "shipyard.dataset_hash": ds.content_hash,
            "shipyard.dataset_time_range": f"{ds.time_min} .. {ds.time_max}",
            "shipyard.features": self.lineage.views,
            "shipyard.features_hash": self.lineage.features_hash,
            "shipyard.label": self.lineage.columns.label,
            "shipyard.model_type": model_type,
        }

    def evaluate(
        self,
        model_type: str,
        params: dict[str, Any],
        n_trials: int,
        n_boot: int,
        progress: ProgressCallback | None,
    ) -> ModelReport:
        """Tune (optionally), validate, test and log one model type."""
        from shipyard.training.evaluation import evaluate
        from shipyard.training.search import search
        from shipyard.training.trainers import make_config

        started = time.perf_counter()
        validation, test = self.protocol.splits()
        extra: dict[str, float] = {}
        if n_trials > 0:
            tuned = search(
                self.frame,
                self.features,
                model_type,
                validation,
                n_trials=n_trials,
                metric=SELECTION_METRIC,
                progress=progress,
            )
            params = {**params, **tuned.best_params}
            extra["search.best_validation_value"] = tuned.best_value
        config = make_config(model_type, **params)
        val = evaluate(self.frame, self.features, config, validation, n_boot=0)
        tst = evaluate(self.frame, self.features, config, test, n_boot=n_boot, keep_models=True)
        run_id = self.tracker.log_evaluation(
            EXPERIMENT,
            model_type,
            tst,
            params={
                "split.validation": validation.describe(),
                "split.test": test.describe(),
                "selection_metric": SELECTION_METRIC,
                "search.n_trials": n_trials,
                "features": ",".join(self.features),
            },
            tags=self.tags(model_type),
            extra_metrics={**extra, **{f"validation.{k}": v for k, v in val.summary().items()}},
        )
        return ModelReport(model_type, val, tst, run_id, time.perf_counter() - started)

    def register_best(
        self,
        workspace: Workspace,
        report: BaselineReport,
        best: ModelReport,
        promote: bool,
        gate_boot: int,
        model_types: Sequence[str],
    ) -> None:
        """Register the most recent fold's model of ``best``; promote it through the gate."""
        from shipyard.registry.gate import PromotionGate
        from shipyard.registry.models import ModelRegistry

        newest = best.test.folds[0]  # fold 0: the most recent training window
        if newest.model is None:  # evaluate(keep_models=True) keeps it; a guard for typing
            raise RuntimeError("the most recent fold kept no model")
        registry = ModelRegistry(workspace, self.tracker)
        fold = newest.fold
        lineage = self.lineage.with_windows(
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
            reason=f"best {SELECTION_METRIC} on validation folds",
        )
        if promote:
            try:
                report.gate = registry.promote(
                    MODEL_NAME,
                    version.version,
                    reason=f"best of {', '.join(model_types)} on validation {SELECTION_METRIC}",
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
