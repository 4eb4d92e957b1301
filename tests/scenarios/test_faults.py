"""The unit-conversion fault: a model packaged with amounts in cents instead of units."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.errors import IntegrityError, ParameterError
from shipyard.features.fraud import BASELINE_FEATURES
from shipyard.registry.models import ModelRegistry, ModelVersion
from shipyard.scenarios.faults import (
    UnitScaledClassifier,
    UnitScaledConfig,
    register_unit_fault,
)
from shipyard.training.trainers import NativePredictor, load_native, make_config
from shipyard.workspace import Workspace
from tests.conftest import small_fraud_models

FEATURES = list(BASELINE_FEATURES)
AMOUNT = FEATURES.index("TX_AMOUNT")


@pytest.fixture(scope="module")
def data(small_frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    train = small_frame.iloc[:15_000]
    return train[FEATURES], train["TX_FRAUD"].to_numpy(), small_frame.iloc[15_000:16_000][FEATURES]


def test_the_package_scores_the_base_model_on_the_rescaled_inputs(
    data: tuple[pd.DataFrame, np.ndarray, pd.DataFrame],
) -> None:
    X, y, X_new = data
    package = make_config("unit_scaled", base_params={"n_estimators": 30}).fit(X, y)
    base = make_config("lightgbm", n_estimators=30).fit(X, y)  # same seed, same data
    before = X_new.copy()
    cents = X_new.assign(TX_AMOUNT=X_new["TX_AMOUNT"] * 100)
    np.testing.assert_allclose(package.predict_proba(X_new), base.predict_proba(cents))
    pd.testing.assert_frame_equal(X_new, before)  # scoring does not mutate its input
    seen = package.estimator.preprocess(X_new.to_numpy())
    np.testing.assert_allclose(seen[:, AMOUNT], X_new["TX_AMOUNT"] * 100)
    np.testing.assert_array_equal(np.delete(seen, AMOUNT, axis=1), np.delete(X_new, AMOUNT, 1))
    fixed = UnitScaledConfig(base_params={"n_estimators": 30}, scale={"TX_AMOUNT": 1.0}).fit(X, y)
    np.testing.assert_allclose(fixed.predict_proba(X_new), base.predict_proba(X_new))
    assert package.feature_importance() == base.feature_importance()


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        ({"AMOUNT_IN_CENTS": 100.0}, "columns among the model's inputs"),
        ({"TX_AMOUNT": 0.0}, "a finite factor > 0 for TX_AMOUNT"),
        ({"TX_AMOUNT": float("inf")}, "a finite factor > 0 for TX_AMOUNT"),
        ({}, "a non-empty"),
        ([100.0], "a non-empty"),
    ],
)
def test_a_bad_scale_is_refused_naming_the_parameter(
    data: tuple[pd.DataFrame, np.ndarray, pd.DataFrame], scale: object, message: str
) -> None:
    X, y, _ = data
    with pytest.raises(ParameterError, match=f"'scale' parameter of UnitScaledConfig.*{message}"):
        UnitScaledConfig(scale=scale).fit(X, y)


def test_the_native_file_is_verified_before_it_is_loaded(
    data: tuple[pd.DataFrame, np.ndarray, pd.DataFrame], tmp_path: Path
) -> None:
    X, y, X_new = data
    package = make_config("unit_scaled", base_params={"n_estimators": 30}).fit(X, y)
    path, sha = package.save_native(tmp_path)
    loaded = load_native("sklearn", path, sha)
    assert isinstance(loaded, UnitScaledClassifier)
    predictor = NativePredictor("sklearn", loaded, package.input_schema)
    np.testing.assert_allclose(
        predictor.predict(X_new.to_numpy(dtype=float)), package.predict_proba(X_new)
    )
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(IntegrityError, match="Refusing to load"):
        load_native("sklearn", path, sha)


# -- a registered champion, wrapped, registered and served ----------------------------------


@pytest.fixture(scope="module")
def champion_workspace(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Workspace, Dataset]]:
    """fraud v1: one LightGBM champion on the small data set."""
    ws, dataset = small_fraud_models(tmp_path_factory.mktemp("faults") / "ws", n_folds=1)
    yield ws, dataset
    ws.close()


@pytest.fixture(scope="module")
def broken(champion_workspace: tuple[Workspace, Dataset]) -> ModelVersion:
    ws, _ = champion_workspace
    return register_unit_fault(ws, "fraud", 1, scale={"TX_AMOUNT": 100.0})


def test_the_wrapped_version_keeps_the_champions_inputs_and_lineage(
    champion_workspace: tuple[Workspace, Dataset], broken: ModelVersion
) -> None:
    ws, _ = champion_workspace
    registry = ModelRegistry(ws)
    champion = registry.get("fraud", 1)
    assert broken.version == 2
    assert (broken.model_type, broken.framework) == ("unit_scaled", "sklearn")
    assert broken.params["scale"] == {"TX_AMOUNT": 100.0}
    assert broken.params["base"] == champion.model_type
    assert broken.input_schema.names == champion.input_schema.names
    assert broken.lineage == champion.lineage
    assert "challenger" in broken.aliases and registry.aliases("fraud")["champion"] == 1
    rows = _rows(ws, champion)
    loaded = registry.load("fraud", 2)  # hash-verified
    assert isinstance(loaded.model, UnitScaledClassifier)
    np.testing.assert_allclose(loaded.model.preprocess(rows)[:, AMOUNT], rows[:, AMOUNT] * 100)
    cents = rows.copy()
    cents[:, AMOUNT] *= 100
    np.testing.assert_allclose(loaded.predict(rows), registry.load("fraud", 1).predict(cents))
    assert registry.history("fraud")[-1].action == "register"


def test_a_tampered_registered_file_is_refused(
    champion_workspace: tuple[Workspace, Dataset], tmp_path: Path
) -> None:
    ws, _ = champion_workspace
    fixed = register_unit_fault(ws, "fraud", 1, scale={"TX_AMOUNT": 1.0})
    fixed.native_path.write_bytes(fixed.native_path.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match="Refusing to load"):
        ModelRegistry(ws).load("fraud", fixed.version)


def test_register_refuses_a_scale_on_a_column_the_model_does_not_take(
    champion_workspace: tuple[Workspace, Dataset],
) -> None:
    ws, _ = champion_workspace
    before = len(ModelRegistry(ws).versions("fraud"))
    with pytest.raises(ParameterError, match="'scale' parameter of register_unit_fault"):
        register_unit_fault(ws, "fraud", 1, scale={"AMOUNT": 100.0})
    assert len(ModelRegistry(ws).versions("fraud")) == before  # nothing half-registered


def test_the_wrapped_version_is_served_natively(
    champion_workspace: tuple[Workspace, Dataset], broken: ModelVersion, tmp_path: Path
) -> None:
    from shipyard.scenarios.replay import LocalServer, _v2_body
    from shipyard.serving.backends import prepare_backends

    ws, _ = champion_workspace
    registry = ModelRegistry(ws)
    report = prepare_backends(registry, "fraud", broken.version)
    assert report.chosen == "native"
    rows = _rows(ws, registry.get("fraud", 1))[:50]
    expected = registry.load("fraud", broken.version).predict(rows)
    with LocalServer(ws, "fraud@2", endpoint="fraud-faults", log=tmp_path / "serve.log") as srv:
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        connection.request(
            "POST",
            "/v2/models/fraud-faults/infer",
            _v2_body("faults-1", rows),
            {"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        answer = json.loads(response.read())
        connection.close()
    assert response.status == 200
    assert answer["model_version"] == "2"
    np.testing.assert_allclose(answer["outputs"][0]["data"], expected, rtol=1e-6)


def _rows(ws: Workspace, version: ModelVersion) -> np.ndarray:
    """The version's evaluation-window inputs, in its column order."""
    from shipyard.training.frames import Window, load_frame

    frame = load_frame(ws, Window.from_dict(version.eval_window))
    return np.ascontiguousarray(frame[version.input_schema.names].to_numpy(dtype=float)[:500])
