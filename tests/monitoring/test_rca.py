"""``root_cause``: a bad deploy's version, outputs, inputs and segments, on a real workspace.

The small simulated fraud data set; a decision tree registered three times: v1 as trained,
v2 wrapped in a model object whose packaged preprocessing multiplies TX_AMOUNT by 100
(amounts in cents instead of units: the broken transformation of the bad-deploy scenario),
v3 as trained. Records are written by the real PredictionLog with the scores the loaded
versions give; traffic policies and the rollback are real revisions with their audit entries.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray

from shipyard.errors import DataValidationError, ModelNotFoundError, ParameterError
from shipyard.features.fraud import BASELINE_FEATURES
from shipyard.monitoring.rca import root_cause, seen_inputs, write_rca
from shipyard.registry.models import ModelRegistry
from shipyard.serving.policy import Arm, TrafficPolicy, rollback_policy, set_policy
from shipyard.serving.predlog import PredictionLog, log_folder
from shipyard.workspace import Workspace
from tests.conftest import SMALL

FEATURES = list(BASELINE_FEATURES)
AMOUNT = FEATURES.index("TX_AMOUNT")
DRIFTED = "TERMINAL_ID_RISK_7DAY_WINDOW"
ROWS = 20


class CentsModel:
    """A fitted classifier behind a unit conversion that multiplies TX_AMOUNT by 100.

    A model object as a faulty packaging step would ship it: ``preprocess`` is what its
    core sees, ``predict_proba`` scores through it (pickled by reference to this module)."""

    def __init__(self, core: Any) -> None:
        self.core = core

    def preprocess(self, matrix: NDArray[np.float64]) -> NDArray[np.float64]:
        out = np.array(matrix, dtype=np.float64)
        out[:, AMOUNT] *= 100.0
        return out

    def predict_proba(self, matrix: Any) -> NDArray[np.float64]:
        values = matrix.to_numpy(dtype=np.float64) if hasattr(matrix, "columns") else matrix
        return np.asarray(self.core.predict_proba(self.preprocess(values)))


@pytest.fixture(scope="module")
def registered(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Workspace, pd.DataFrame]]:
    """fraud v1 (a decision tree), v2 (the same tree seeing amounts in cents), v3 (= v1)."""
    from dataclasses import replace

    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
    from shipyard.features.fraud import BASELINE_VIEWS
    from shipyard.features.offline import OfflineStore
    from shipyard.solutions.fraud import COLUMNS, Protocol
    from shipyard.training.evaluation import evaluate
    from shipyard.training.frames import Window, load_frame
    from shipyard.training.splits import PrequentialSplit
    from shipyard.training.trainers import make_config

    ws = Workspace.init(tmp_path_factory.mktemp("rca") / "ws")
    dataset = simulate_fraud_dataset(ws, FraudSimulator(**SMALL))  # type: ignore[arg-type]
    OfflineStore(ws).materialize(BASELINE_VIEWS)
    lineage = Protocol(start_date_training="2018-05-06", n_folds=1).lineage(dataset)
    frame = load_frame(ws, Window.of(lineage, "2018-04-01", "2018-06-30"))
    split = PrequentialSplit("2018-05-13", n_folds=1, columns=COLUMNS, train_days=21)
    config = make_config("decision_tree", max_depth=5)
    evaluation = evaluate(frame, FEATURES, config, split, n_boot=0, keep_models=True)
    fold = evaluation.folds[0]
    assert fold.model is not None
    registry = ModelRegistry(ws)
    run_id = registry.tracker.client.create_run(registry.tracker.experiment_id("rca")).info.run_id
    f = fold.fold
    windows = lineage.with_windows(
        train=(str(f.train_start), str(f.train_end)),
        evaluation=(str(f.test_start), str(f.test_end)),
    )
    # shuffled: the first and second half are the same traffic
    test_rows = frame.iloc[f.test].sample(frac=1.0, random_state=0).reset_index(drop=True)
    cents = replace(fold.model, estimator=CentsModel(fold.model.estimator))
    for model in (fold.model, cents, fold.model):
        registry.register(
            "fraud", model, lineage=windows, evaluation=evaluation, run_id=run_id,
            sample=test_rows.iloc[:200], actor="tester",
        )  # fmt: skip
    yield ws, test_rows
    ws.close()


def _log(ws: Workspace, endpoint: str, version: int, rows: pd.DataFrame, start: float) -> None:
    """Log ``rows`` as requests of ROWS rows to ``version``, scored by the loaded version."""
    matrix = rows[FEATURES].to_numpy(dtype=np.float64)
    scores = ModelRegistry(ws).load("fraud", version).predict(matrix)
    log = PredictionLog(log_folder(ws, endpoint), f"w{version}")
    records = [
        {
            "request_id": f"v{version}-{i}",
            "time": start + i,
            "endpoint": endpoint,
            "model": "fraud",
            "version": version,
            "arm": "champion",
            "protocol": "v2",
            "inputs": matrix[i : i + ROWS].tolist(),
            "outputs": scores[i : i + ROWS].tolist(),
            "latency_ms": 1.0,
        }
        for i in range(0, len(matrix), ROWS)
    ]

    async def run() -> None:
        for record in records:
            await log.commit(record)

    asyncio.run(run())
    log.close()


def _deploy(
    ws: Workspace, endpoint: str, suspect: int, before: pd.DataFrame, after: pd.DataFrame
) -> None:
    """v1 serves ``before``; ``suspect`` is deployed and serves ``after``; rolled back."""
    now = time.time()
    policy = TrafficPolicy(endpoint, "fraud", arms=(Arm(1, 100),))
    set_policy(ws, policy, reason="champion", actor="alice")
    _log(ws, endpoint, 1, before, now - 10_000)
    deployed = set_policy(
        ws, TrafficPolicy(endpoint, "fraud", arms=(Arm(suspect, 100),)), reason="deploy",
        actor="bob",
    )  # fmt: skip
    _log(ws, endpoint, suspect, after, now + 1)
    rollback_policy(
        ws, endpoint, reason="guardrail: alert rate", expected_revision=deployed.revision
    )


@pytest.fixture(scope="module")
def bad_deploy(registered: tuple[Workspace, pd.DataFrame]) -> Workspace:
    ws, rows = registered
    half = len(rows) // 2
    _deploy(ws, "cents", 2, rows.iloc[:half], rows.iloc[half:])
    return ws


def test_names_the_feature_a_deploy_transforms(bad_deploy: Workspace, tmp_path: Path) -> None:
    report = root_cause(bad_deploy, "cents", 2)
    d = report.deployment
    assert (d.version, d.baseline, d.baseline_source) == (2, 1, "rolled back to")
    assert d.revision == 2 and d.introduced_by == "bob"
    assert [i.action for i in d.incidents] == ["policy.rollback"]
    assert report.top_feature == "TX_AMOUNT"
    top = report.seen[0]
    assert top.column == "TX_AMOUNT" and top.typical_ratio == pytest.approx(100.0)
    assert top.share_changed > 0.95
    assert all(s.share_changed == 0 for s in report.seen[1:])
    # the traffic did not change: no input drifted between the versions' requests
    assert not [t for t in report.traffic if t.verdict == "drift"]
    assert report.text().splitlines()[0].startswith("Top feature: TX_AMOUNT")
    print(report.text())
    html, text = write_rca(report, tmp_path / "out")
    assert "TX_AMOUNT" in text.read_text()
    assert html.read_text().startswith("<!DOCTYPE html>")


def test_a_traffic_drift_is_named_by_the_traffic_ranking(
    registered: tuple[Workspace, pd.DataFrame],
) -> None:
    ws, rows = registered
    half = len(rows) // 2
    after = rows.iloc[half:].copy()
    after[DRIFTED] = after[DRIFTED] + 0.5  # upstream data changed; v3 is v1's very model
    _deploy(ws, "drifted", 3, rows.iloc[:half], after)
    report = root_cause(ws, "drifted", 3)
    assert report.deployment.baseline == 1
    assert report.traffic[0].column == DRIFTED and report.traffic[0].verdict == "drift"
    assert [t.column for t in report.traffic if t.verdict == "drift"] == [DRIFTED]
    assert all(s.share_changed == 0 for s in report.seen)  # both see the inputs alike
    assert report.top_feature == DRIFTED
    assert report.text().splitlines()[0].startswith(f"Top feature: {DRIFTED}: its traffic")
    # both versions score the same requests alike: no decision differs
    assert report.outputs.paired_flip_rate.value == 0.0


def test_a_given_baseline_and_one_threshold(bad_deploy: Workspace) -> None:
    report = root_cause(bad_deploy, "cents", 2, baseline=3, threshold=0.9)
    assert (report.deployment.baseline, report.deployment.baseline_source) == (3, "given")
    assert report.outputs.suspect_threshold == report.outputs.baseline_threshold == 0.9
    assert report.top_feature == "TX_AMOUNT"
    # v3 has no traffic on this endpoint: no traffic comparison, said so
    assert report.traffic == () and "no logged request of the baseline" in report.traffic_note
    document = json.loads(json.dumps(report.to_dict()))  # what `monitor rca --json` prints
    assert document["top_feature"] == "TX_AMOUNT"
    assert document["outputs"]["suspect_alert_rate"]["status"] == "ok"


def test_bad_input_gets_clear_errors(bad_deploy: Workspace) -> None:
    ws = bad_deploy
    with pytest.raises(ModelNotFoundError, match="'nowhere' has no traffic policy"):
        root_cause(ws, "nowhere", 2)
    with pytest.raises(ModelNotFoundError, match="No registered model 'fraud' version 9"):
        root_cause(ws, "cents", 9)
    with pytest.raises(DataValidationError, match="No logged prediction of fraud v3"):
        root_cause(ws, "cents", 3)
    with pytest.raises(DataValidationError, match="since 2100-01-01"):
        root_cause(ws, "cents", 2, since="2100-01-01")
    with pytest.raises(ParameterError, match="'version' parameter of root_cause"):
        root_cause(ws, "cents", "2")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'since' parameter of root_cause"):
        root_cause(ws, "cents", 2, since="yesterday")
    with pytest.raises(ParameterError, match="a version other than 2"):
        root_cause(ws, "cents", 2, baseline=2)


def test_a_pipelines_transform_stage_is_what_its_model_sees() -> None:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(int)
    scaled = Pipeline([("scale", StandardScaler()), ("tree", DecisionTreeClassifier())]).fit(X, y)
    np.testing.assert_allclose(seen_inputs(scaled, X), scaled[:-1].transform(X))
    widened = Pipeline(
        [
            ("twice", FunctionTransformer(lambda m: np.hstack([m, m]))),
            ("tree", DecisionTreeClassifier()),
        ]
    ).fit(X, y)
    assert seen_inputs(widened, X) is None  # other columns: not comparable column by column
    bare = DecisionTreeClassifier().fit(X, y)
    assert seen_inputs(bare, X) is X


def test_the_html_report_is_self_contained_in_the_order_asked(
    bad_deploy: Workspace, tmp_path: Path
) -> None:
    report = root_cause(bad_deploy, "cents", 2)
    html, text = write_rca(report, tmp_path / "incident")
    assert (html.name, text.name) == ("rca-cents-v2.html", "rca-cents-v2.txt")
    page = html.read_text()
    assert "default-src 'none'" in page and "<script" not in page.lower()
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    order = [page.index(f'id="{a}"') for a in ("version", "outputs", "inputs", "segments")]
    assert order == sorted(order)
    assert page.count("<svg") == 2  # the score distributions, the ranked input shifts
    assert "Top feature: TX_AMOUNT" in page
    assert text.read_text() == report.text() + "\n"


def test_the_rca_command_prints_the_text_and_writes_both_files(
    bad_deploy: Workspace, tmp_path: Path
) -> None:
    """``shipyard monitor rca`` (here to reuse this module's registered versions)."""
    from click.testing import CliRunner

    from shipyard.cli.main import cli

    root = ["--workspace", str(bad_deploy.root), "monitor", "rca", "cents"]
    out = tmp_path / "rca"
    done = CliRunner().invoke(cli, [*root, "--version", "2", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert done.output.startswith("Top feature: TX_AMOUNT")
    assert (out / "rca-cents-v2.html").exists() and (out / "rca-cents-v2.txt").exists()
    missing = CliRunner().invoke(cli, [*root, "--version", "3", "--out", str(out)])
    assert isinstance(missing.exception, DataValidationError)
