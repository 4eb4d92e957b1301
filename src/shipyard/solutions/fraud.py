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

if TYPE_CHECKING:
    from shipyard.data.catalog import Dataset
    from shipyard.data.fraud_simulator import Mode
    from shipyard.registry.gate import GateResult
    from shipyard.registry.models import ModelVersion
    from shipyard.training.evaluation import Evaluation
    from shipyard.workspace import Workspace

ProgressCallback = Callable[[str, int, int], None]
FEATURES_REF = "shipyard.features.fraud:BASELINE_VIEWS"
EXPERIMENT = "fraud-baseline"
MODEL_NAME = "fraud"
SELECTION_METRIC = "average_precision"


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
    """Dates of the handbook's validation and test protocols."""

    start_date_training: str = "2018-07-25"
    n_folds: int = 4
    delta_train: int = 7
    delta_delay: int = 7
    delta_test: int = 7

    def validation_start(self) -> str:
        """Training start of validation fold 0: two weeks before the reference date."""
        start = date.fromisoformat(self.start_date_training)
        return (start - timedelta(days=self.delta_delay + self.delta_test)).isoformat()

    def test_start(self) -> str:
        """Training start of test fold 0: (n_folds - 1) test periods after the reference date."""
        start = date.fromisoformat(self.start_date_training)
        return (start + timedelta(days=(self.n_folds - 1) * self.delta_test)).isoformat()

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
    from shipyard.features.definitions import definitions_hash, load_views
    from shipyard.registry.gate import PromotionGate
    from shipyard.registry.models import ModelRegistry
    from shipyard.registry.tracking import Tracker
    from shipyard.training.evaluation import evaluate
    from shipyard.training.frames import Window, load_frame
    from shipyard.training.search import search
    from shipyard.training.splits import PrequentialSplit
    from shipyard.training.trainers import BASELINE_SUITE, make_config

    protocol = protocol or Protocol()
    model_types = list(model_types or BASELINE_SUITE)
    for model_type in model_types:
        make_config(model_type)  # an unknown type fails before any work
    clock = _Clock()
    report = BaselineReport(dataset=dataset, tracking_uri=workspace.mlflow_tracking_uri)
    views = load_views(FEATURES_REF)
    features = [name for view in views for name in view.feature_names]
    features_hash = definitions_hash(views)

    split_args = (protocol.n_folds, protocol.delta_train, protocol.delta_delay, protocol.delta_test)
    validation = PrequentialSplit(protocol.validation_start(), *split_args)
    test = PrequentialSplit(protocol.test_start(), *split_args)
    earliest = date.fromisoformat(validation.start_date_training) - timedelta(
        days=(protocol.n_folds - 1) * protocol.delta_test
    )
    latest = date.fromisoformat(test.start_date_training) + timedelta(
        days=protocol.delta_train + protocol.delta_delay + protocol.delta_test - 1
    )
    window = Window(
        dataset.name, dataset.version, earliest.isoformat(), latest.isoformat(), FEATURES_REF
    )
    frame = load_frame(workspace, window)
    y = frame["TX_FRAUD"].to_numpy()
    clock.lap(report, "training frame")

    tracker = Tracker(workspace)
    tags = {
        "shipyard.dataset": dataset.name,
        "shipyard.dataset_version": str(dataset.version),
        "shipyard.dataset_hash": dataset.content_hash,
        "shipyard.dataset_time_range": f"{dataset.time_min} .. {dataset.time_max}",
        "shipyard.features": FEATURES_REF,
        "shipyard.features_hash": features_hash,
    }
    for i, model_type in enumerate(model_types):
        started = time.perf_counter()
        params: dict[str, Any] = dict((model_params or {}).get(model_type, {}))
        extra: dict[str, float] = {}
        if n_trials > 0:
            tuned = search(
                frame,
                features,
                model_type,
                validation,
                n_trials=n_trials,
                metric=SELECTION_METRIC,
                progress=progress,
            )
            params = {**params, **tuned.best_params}
            extra["search.best_validation_value"] = tuned.best_value
        config = make_config(model_type, **params)
        val = evaluate(frame, features, config, validation, n_boot=0)
        tst = evaluate(frame, features, config, test, n_boot=n_boot, keep_models=True)
        run_id = tracker.log_evaluation(
            EXPERIMENT,
            model_type,
            tst,
            y,
            params={
                "split.validation": validation.get_params(),
                "split.test": test.get_params(),
                "selection_metric": SELECTION_METRIC,
                "search.n_trials": n_trials,
                "features": ",".join(features),
            },
            tags={**tags, "shipyard.model_type": model_type},
            extra_metrics={**extra, **{f"validation.{k}": v for k, v in val.summary().items()}},
        )
        report.models.append(
            ModelReport(model_type, val, tst, run_id, time.perf_counter() - started)
        )
        if progress is not None:
            progress("models", i + 1, len(model_types))
    clock.lap(report, "training")

    best = max(report.models, key=lambda r: r.validation.mean(SELECTION_METRIC))
    report.best = best.model_type
    if not register:
        return report
    newest = best.test.folds[0]  # fold 0: the most recent training window
    if newest.model is None:  # keep_models=True above; a guard for type checkers
        raise RuntimeError("the most recent fold kept no model")
    registry = ModelRegistry(workspace, tracker)
    fold = newest.fold
    train_window = Window(
        dataset.name,
        dataset.version,
        fold.train_start.isoformat(),
        fold.train_end.isoformat(),
        FEATURES_REF,
    )
    eval_window = Window(
        dataset.name,
        dataset.version,
        fold.test_start.isoformat(),
        fold.test_end.isoformat(),
        FEATURES_REF,
    )
    version = registry.register(
        MODEL_NAME,
        newest.model,
        run_id=best.run_id,
        evaluation=best.test,
        y=y,
        dataset=dataset,
        features_ref=FEATURES_REF,
        features_hash=features_hash,
        train_window=train_window,
        eval_window=eval_window,
        protocol=protocol.describe(),
        sample=frame.iloc[fold.test[:1000]],
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
    clock.lap(report, "registry")
    return report


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
