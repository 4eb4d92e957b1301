"""The registry on real components: MLflow's SQLite store, the workspace database, files."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from shipyard.data.catalog import Dataset
from shipyard.errors import IntegrityError, ModelNotFoundError, PromotionRefusedError
from shipyard.features.definitions import definitions_hash
from shipyard.features.fraud import BASELINE_FEATURES, BASELINE_VIEWS
from shipyard.registry.gate import PromotionGate
from shipyard.registry.models import ModelRegistry, ModelVersion
from shipyard.solutions.fraud import COLUMNS, FEATURES_REF, Protocol, train_suite
from shipyard.training.evaluation import evaluate
from shipyard.training.frames import Window, load_frame
from shipyard.training.splits import PrequentialSplit
from shipyard.training.trainers import NativePredictor, make_config
from shipyard.types import COUNT, FLAG, NON_NEGATIVE, RATE, Lineage, Predictor, Schema
from shipyard.workspace import Workspace
from tests.conftest import SMALL

PROTOCOL = Protocol(start_date_training="2018-05-06", n_folds=2)


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, database: str
) -> Iterator[tuple[Workspace, Dataset]]:
    """A workspace (on ``database``) whose suite run registered and promoted a LightGBM model
    as fraud v1."""
    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset

    ws = Workspace.init(tmp_path_factory.mktemp("registry") / "ws")
    dataset = simulate_fraud_dataset(ws, FraudSimulator(**SMALL))  # type: ignore[arg-type]
    from shipyard.features.offline import OfflineStore

    OfflineStore(ws).materialize(BASELINE_VIEWS)
    report = train_suite(
        ws,
        dataset,
        model_types=["lightgbm"],
        protocol=PROTOCOL,
        n_boot=100,
        gate_boot=200,
        promote=True,
    )
    assert report.promoted and report.registered is not None and report.registered.version == 1
    yield ws, dataset
    ws.close()


def _register(
    ws: Workspace, dataset: Dataset, config_type: str, features: list[str], **params: object
) -> ModelVersion:
    """Register a model of the given configuration the way train_suite does."""
    lineage = PROTOCOL.lineage(dataset)
    frame = load_frame(ws, Window.of(lineage, "2018-04-01", "2018-06-30"))
    split = PrequentialSplit(PROTOCOL.test_start(), n_folds=2, columns=COLUMNS)
    evaluation = evaluate(
        frame, features, make_config(config_type, **params), split, n_boot=100, keep_models=True
    )
    fold = evaluation.folds[0]
    assert fold.model is not None
    f = fold.fold
    return ModelRegistry(ws).register(
        "fraud",
        fold.model,
        lineage=lineage.with_windows(
            train=(str(f.train_start), str(f.train_end)),
            evaluation=(str(f.test_start), str(f.test_end)),
        ),
        evaluation=evaluation,
        run_id=_run(ws),
        sample=frame.iloc[fold.fold.test[:200]],
        reason="test",
        actor="tester",
    )


def _run(ws: Workspace) -> str:
    registry = ModelRegistry(ws)
    client = registry.tracker.client
    run = client.create_run(registry.tracker.experiment_id("tests"))
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def test_suite_run_is_in_mlflow_with_metrics_plots_and_lineage(
    trained: tuple[Workspace, Dataset],
) -> None:
    ws, dataset = trained
    client = MlflowClient(tracking_uri=ws.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name("fraud-baseline")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["shipyard.dataset_hash"] == dataset.content_hash
    assert run.data.tags["shipyard.features_hash"] == definitions_hash(BASELINE_VIEWS)
    assert "env.lightgbm" in run.data.tags
    assert 0.5 < run.data.metrics["roc_auc_mean"] <= 1
    assert "card_precision_at_100_ci_low" in run.data.metrics
    assert "validation.average_precision_mean" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "average_precision")
    assert sorted(m.step for m in history) == [0, 1]  # one value per fold
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {
        "plots/roc.png",
        "plots/pr.png",
        "plots/calibration.png",
        "plots/importance.png",
    } <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model_card")} == {
        "model_card/model_card.md",
        "model_card/model_card.html",
    }


def test_registered_version_carries_signature_lineage_and_card(
    trained: tuple[Workspace, Dataset],
) -> None:
    ws, dataset = trained
    version = ModelRegistry(ws).get("fraud", 1)
    assert version.model_type == "lightgbm"
    assert version.input_schema.names == list(BASELINE_FEATURES)
    lineage = version.lineage
    assert (lineage.dataset, lineage.dataset_version, lineage.dataset_hash) == (
        dataset.name,
        dataset.version,
        dataset.content_hash,
    )
    assert lineage.views == FEATURES_REF
    assert lineage.view_hashes == {v.name: v.definition_hash for v in BASELINE_VIEWS}
    assert lineage.features_hash == definitions_hash(BASELINE_VIEWS)
    assert lineage.columns == COLUMNS
    assert lineage.protocol == PROTOCOL.describe()
    start = date.fromisoformat(PROTOCOL.test_start())  # fold 0: the most recent
    train = (str(start), str(start + timedelta(days=6)))  # 7 training days
    test = (str(start + timedelta(days=14)), str(start + timedelta(days=20)))  # 7 delay days
    assert (lineage.train_window, lineage.eval_window) == (train, test)
    assert version.train_window["start"] == train[0]
    # the windows the registry hands out rebuild frames with the lineage's columns
    window = Window.from_dict(version.eval_window)
    assert window == Window.of(lineage, *test)
    assert window.columns == ("TX_DATETIME", "CUSTOMER_ID", "TX_FRAUD")
    assert Window.from_dict(window.to_dict()) == window
    card = version.card_path.read_text()
    assert "Intended use" in card and "Limitations" in card and "average_precision" in card
    assert "Rank card transactions by fraud risk" in card  # the fraud solution's notes
    assert "label TX_FRAUD, time TX_DATETIME, entity CUSTOMER_ID" in card
    assert f"Trained on: {train[0]} .. {train[1]}" in card
    assert "![ROC curve](plots/roc.png)" in card
    assert (version.card_path.parent / "plots" / "roc.png").is_file()
    assert "data:image/png;base64," in version.card_html.read_text()
    mlflow_version = MlflowClient(
        registry_uri=ws.mlflow_tracking_uri, tracking_uri=ws.mlflow_tracking_uri
    ).get_model_version("fraud", "1")
    assert mlflow_version.run_id == version.run_id


def test_the_champion_loads_natively_and_matches_the_trained_scores(
    trained: tuple[Workspace, Dataset],
) -> None:
    ws, dataset = trained
    registry = ModelRegistry(ws)
    predictor = registry.load("fraud", "champion")
    frame = load_frame(
        ws, Window(dataset.name, dataset.version, "2018-06-01", "2018-06-03", FEATURES_REF)
    )
    assert isinstance(predictor, NativePredictor) and isinstance(predictor, Predictor)
    assert predictor.input_schema == registry.get("fraud", "champion").input_schema
    scores = predictor.predict(frame[predictor.input_schema.names].to_numpy(dtype=float))
    assert scores.shape == (len(frame),)
    assert ((scores >= 0) & (scores <= 1)).all()
    import mlflow.pyfunc

    mlflow.set_tracking_uri(ws.mlflow_tracking_uri)  # MLflow's own client, as users load it
    pyfunc = mlflow.pyfunc.load_model("models:/fraud@champion")
    theirs = np.asarray(pyfunc.predict(frame[predictor.input_schema.names].astype(float)))[:, 1]
    np.testing.assert_allclose(theirs, scores, rtol=1e-6)


def test_a_worse_challenger_is_refused_and_nothing_changes(
    trained: tuple[Workspace, Dataset],
) -> None:
    ws, dataset = trained
    registry = ModelRegistry(ws)
    weak = _register(ws, dataset, "decision_tree", list(BASELINE_FEATURES), max_depth=1)
    assert registry.aliases("fraud")["challenger"] == weak.version
    champion = registry.aliases("fraud")["champion"]
    with pytest.raises(PromotionRefusedError, match="does not exceed 0"):
        registry.promote(
            "fraud", weak.version, reason="try", gate=PromotionGate(n_boot=200), actor="tester"
        )
    assert registry.aliases("fraud")["champion"] == champion
    refusal = registry.history("fraud")[-1]
    assert (refusal.action, refusal.version, refusal.actor, refusal.reason) == (
        "refuse",
        weak.version,
        "tester",
        "try",
    )
    assert refusal.details["passed"] is False


def test_promotion_and_rollback_are_recorded(trained: tuple[Workspace, Dataset]) -> None:
    ws, dataset = trained
    registry = ModelRegistry(ws)
    before = registry.aliases("fraud")["champion"]
    other = _register(ws, dataset, "logistic_regression", list(BASELINE_FEATURES))
    registry.promote("fraud", other.version, reason="manual override", actor="alice")
    assert registry.aliases("fraud")["champion"] == other.version
    assert "challenger" not in registry.aliases("fraud")
    restored = registry.rollback("fraud", reason="paged at night", actor="bob")
    assert restored.version == before
    assert registry.aliases("fraud")["champion"] == before
    last = registry.history("fraud")[-1]
    assert (last.action, last.version, last.previous_version, last.actor) == (
        "rollback",
        before,
        other.version,
        "bob",
    )


def test_an_incompatible_schema_is_refused(trained: tuple[Workspace, Dataset]) -> None:
    ws, dataset = trained
    registry = ModelRegistry(ws)
    champion = registry.aliases("fraud")["champion"]
    narrow = _register(ws, dataset, "decision_tree", list(BASELINE_FEATURES)[:5])
    with pytest.raises(PromotionRefusedError, match=r"input schema differs.*missing"):
        registry.promote("fraud", narrow.version, reason="fewer features", actor="tester")
    assert registry.aliases("fraud")["champion"] == champion
    assert registry.history("fraud")[-1].action == "refuse"


def test_a_tampered_artifact_is_not_loaded(trained: tuple[Workspace, Dataset]) -> None:
    ws, _ = trained
    registry = ModelRegistry(ws)
    version = registry.get("fraud", 1)
    original = version.native_path.read_bytes()
    try:
        version.native_path.write_bytes(original.replace(b"tree", b"TREE", 1))
        with pytest.raises(IntegrityError, match="does not match the recorded"):
            registry.load("fraud", 1)
    finally:
        version.native_path.write_bytes(original)
    restored = registry.load("fraud", 1)
    assert restored.framework == "lightgbm"
    assert restored.input_schema.names == list(BASELINE_FEATURES)


def test_unknown_names_and_aliases(trained: tuple[Workspace, Dataset]) -> None:
    ws, _ = trained
    registry = ModelRegistry(ws)
    with pytest.raises(ModelNotFoundError, match="has no alias 'staging'"):
        registry.get("fraud", "staging")
    with pytest.raises(KeyError, match="No registered model 'fraud' version 99"):
        registry.get("fraud", 99)
    assert registry.get("fraud", "latest").version == max(
        v.version for v in registry.versions("fraud")
    )


def test_schema_compatibility_rules() -> None:
    a = Schema.from_dict([{"name": "x", "dtype": "float"}, {"name": "y", "dtype": "float"}])
    a.check_compatible(
        Schema.from_dict([{"name": "x", "dtype": "int"}, {"name": "y", "dtype": "float"}]), "w"
    )
    with pytest.raises(ValueError, match="same columns in a different order"):
        a.check_compatible(
            Schema.from_dict([{"name": "y", "dtype": "float"}, {"name": "x", "dtype": "float"}]),
            "w",
        )
    with pytest.raises(ValueError, match="column 'x' must be float, got string"):
        a.check_compatible(
            Schema.from_dict([{"name": "x", "dtype": "string"}, {"name": "y", "dtype": "float"}]),
            "w",
        )


def test_mlflow_store_is_inside_the_workspace_or_on_its_database_server(
    trained: tuple[Workspace, Dataset], database: str
) -> None:
    ws, _ = trained
    if database == "sqlite":
        assert Path(ws.mlflow_tracking_uri.removeprefix("sqlite:///")).is_relative_to(ws.root)
    else:  # the setting's server, and no SQLite store left in the folder
        assert ws.mlflow_tracking_uri == ws.settings.mlflow_tracking_uri
        assert ws.mlflow_tracking_uri.startswith("postgresql+psycopg://")
        assert MlflowClient(ws.mlflow_tracking_uri).get_registered_model("fraud").aliases
        assert not list(ws.root.rglob("*.db"))
    assert (ws.artifact_root / "mlruns").is_dir()  # artifacts stay in the artifact root


def test_registered_schema_carries_declared_constraints_and_training_ranges(
    trained: tuple[Workspace, Dataset],
) -> None:
    ws, _ = trained
    version = ModelRegistry(ws).get("fraud", 1)
    columns = {c.name: c for c in version.input_schema.columns}
    assert columns["CUSTOMER_ID_NB_TX_1DAY_WINDOW"].constraint == COUNT
    assert columns["TERMINAL_ID_NB_TX_30DAY_WINDOW"].constraint == COUNT
    assert columns["TX_DURING_NIGHT"].constraint == FLAG
    assert columns["TERMINAL_ID_RISK_7DAY_WINDOW"].constraint == RATE
    assert columns["TX_AMOUNT"].constraint == NON_NEGATIVE
    assert all(c.constraint is not None for c in columns.values())
    # observed ranges are those of the training window's rows
    lineage = version.lineage
    assert lineage.train_window is not None
    train = load_frame(ws, Window.of(lineage, *lineage.train_window))
    for name in ("CUSTOMER_ID_NB_TX_1DAY_WINDOW", "TX_AMOUNT", "TERMINAL_ID_RISK_7DAY_WINDOW"):
        assert columns[name].observed == (float(train[name].min()), float(train[name].max()))
    low, high = columns["CUSTOMER_ID_NB_TX_1DAY_WINDOW"].observed or (None, None)
    assert low is not None and high is not None and 1 <= low < high
    # the served predictor sees the same schema
    assert ModelRegistry(ws).load("fraud", 1).input_schema == version.input_schema


def test_a_lineage_without_windows_is_refused(trained: tuple[Workspace, Dataset]) -> None:
    ws, dataset = trained
    registry = ModelRegistry(ws)
    before = registry.versions("fraud")
    frame = load_frame(ws, Window.of(PROTOCOL.lineage(dataset), "2018-05-13", "2018-06-02"))
    evaluation = evaluate(
        frame,
        list(BASELINE_FEATURES),
        make_config("decision_tree", max_depth=2),
        PrequentialSplit("2018-05-13", n_folds=1, columns=COLUMNS),
        n_boot=0,
        keep_models=True,
    )
    fitted = evaluation.folds[0].model
    assert fitted is not None
    with pytest.raises(ValueError, match="must record its training and evaluation windows"):
        registry.register(
            "fraud",
            fitted,
            lineage=PROTOCOL.lineage(dataset),
            evaluation=evaluation,
            run_id=_run(ws),
            sample=frame.head(50),
        )
    assert [v.version for v in registry.versions("fraud")] == [v.version for v in before]


def test_lineage_round_trips_through_its_dict(trained: tuple[Workspace, Dataset]) -> None:
    _, dataset = trained
    lineage = PROTOCOL.lineage(dataset).with_windows(
        ("2018-05-20", "2018-05-26"), ("2018-06-03", "2018-06-09")
    )
    assert Lineage.from_dict(lineage.to_dict()) == lineage
    assert Lineage.from_dict(PROTOCOL.lineage(dataset).to_dict()).eval_window is None
