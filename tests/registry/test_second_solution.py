"""A second tabular solution (credit risk) goes through train -> register -> gate -> load.

Its label, time and entity columns are ``default``, ``application_date`` and
``applicant_id``: no fraud name is involved anywhere, so this fails if a generic layer
still names one solution's columns.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from shipyard.data.catalog import Dataset, write_dataset
from shipyard.errors import DataValidationError
from shipyard.features.offline import OfflineStore
from shipyard.registry import CardNotes, CardSection, ModelRegistry, ModelVersion, PromotionGate
from shipyard.registry.tracking import Tracker
from shipyard.serving.backends import prepare_backends
from shipyard.training.evaluation import evaluate
from shipyard.training.frames import Window, load_frame
from shipyard.training.splits import PrequentialSplit
from shipyard.training.trainers import make_config
from shipyard.types import COUNT, NON_NEGATIVE, ColumnRoles, Lineage
from shipyard.workspace import Workspace
from tests.registry.credit import COLUMNS, DATASET, FEATURES, VIEWS, VIEWS_REF, applications

FRAUD_NAMES = ("TX_FRAUD", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TRANSACTION_ID")
NOTES = CardNotes(
    intended_use="Rank loan applications by default risk for a manual review.",
    limitations=("Synthetic applications: a test of the platform, not a credit model.",),
    sections=(
        CardSection("Reviewer notes", "Checked by **risk**.", "<p>Checked by <b>risk</b>.</p>"),
    ),
)


@pytest.fixture(scope="module")
def credit(
    tmp_path_factory: pytest.TempPathFactory, database: str
) -> Iterator[tuple[Workspace, Dataset]]:
    """A workspace (on ``database``) holding the credit data set with its two feature views
    materialized."""
    ws = Workspace.init(tmp_path_factory.mktemp("credit") / "ws")
    dataset = write_dataset(
        ws, DATASET, applications(), time_column="application_date", label_column="default"
    )
    OfflineStore(ws).materialize(VIEWS)
    yield ws, dataset
    ws.close()


def _lineage(dataset: Dataset) -> Lineage:
    return Lineage.of(dataset, VIEWS_REF, columns=COLUMNS, protocol="2 prequential folds")


def _register(
    ws: Workspace, dataset: Dataset, model_type: str, **params: object
) -> tuple[ModelVersion, np.ndarray]:
    """Train ``model_type`` on two prequential folds, log the run, register fold 0's model.

    Returns the version and the trained model's scores of its evaluation window.
    """
    lineage = _lineage(dataset)
    frame = load_frame(ws, Window.of(lineage, "2021-01-01", "2021-03-01"))
    split = PrequentialSplit(
        "2021-02-01", n_folds=2, delta_train=14, remove_known_compromised=False, columns=COLUMNS
    )
    evaluation = evaluate(
        frame, FEATURES, make_config(model_type, **params), split, n_boot=100, keep_models=True
    )
    run_id = Tracker(ws).log_evaluation(
        "credit-tests", model_type, evaluation, params={"split": split.describe()}, tags={}
    )
    newest = evaluation.folds[0]
    assert newest.model is not None
    fold = newest.fold
    version = ModelRegistry(ws).register(
        DATASET,
        newest.model,
        lineage=lineage.with_windows(
            train=(str(fold.train_start), str(fold.train_end)),
            evaluation=(str(fold.test_start), str(fold.test_end)),
        ),
        evaluation=evaluation,
        run_id=run_id,
        sample=frame.iloc[fold.test[:200]],
        notes=NOTES,
        actor="tester",
    )
    window = load_frame(ws, Window.from_dict(version.eval_window))
    return version, newest.model.predict_proba(window)


def test_a_credit_model_is_trained_registered_promoted_through_the_gate_and_loaded(
    credit: tuple[Workspace, Dataset],
) -> None:
    ws, dataset = credit
    registry = ModelRegistry(ws)
    weak, _ = _register(ws, dataset, "decision_tree", max_depth=1)
    registry.promote(DATASET, weak.version, reason="first credit model", actor="tester")
    strong, trained_scores = _register(ws, dataset, "logistic_regression")

    result = registry.promote(
        DATASET, strong.version, reason="better AP", gate=PromotionGate(n_boot=200)
    )
    assert result is not None and result.passed
    assert result.challenger > result.champion
    assert result.n_days == 7  # the challenger's evaluation window, read from its lineage
    assert registry.aliases(DATASET)["champion"] == strong.version

    # the lineage names the credit columns; the frames the registry rebuilds carry them
    assert strong.lineage.columns == COLUMNS
    assert strong.lineage.view_hashes == {v.name: v.definition_hash for v in VIEWS}
    frame = load_frame(ws, Window.from_dict(strong.eval_window))
    assert set(frame.columns) == {
        "application_id",
        "application_date",
        "applicant_id",
        "default",
        *FEATURES,
    }
    assert result.n_rows == len(frame)

    # the champion loads natively and scores as the trained model did
    predictor = registry.load(DATASET, "champion")
    scores = predictor.predict(frame[predictor.input_schema.names].to_numpy(dtype=float))
    np.testing.assert_allclose(scores, trained_scores, rtol=1e-9)

    # its schema carries the credit views' declared constraints and the training ranges
    columns = {c.name: c for c in strong.input_schema.columns}
    assert columns["applications_90d"].constraint == COUNT
    assert columns["debt_to_income"].constraint == NON_NEGATIVE
    low, high = columns["debt_to_income"].observed or (-1.0, -1.0)
    assert 0 <= low < high <= 1.2

    # the card says what the credit solution supplied, in its own names
    card = strong.card_path.read_text()
    assert "label default, time application_date, entity applicant_id" in card
    assert NOTES.intended_use in card
    assert "## Reviewer notes\nChecked by **risk**." in card  # a solution's own section
    assert "<h2>Reviewer notes</h2><p>Checked by <b>risk</b>.</p>" in strong.card_html.read_text()
    stored = json.dumps([strong.lineage.to_dict(), strong.eval_window, strong.train_window])
    for name in FRAUD_NAMES:
        assert name not in card and name not in stored

    # serving prepares its backends from the same lineage (no fraud name either)
    report = prepare_backends(registry, DATASET, strong.version, force=True)
    assert report.candidates["native"].max_abs_diff == 0.0
    assert report.chosen in report.candidates


def test_a_lineage_naming_a_column_the_data_set_lacks_is_refused(
    credit: tuple[Workspace, Dataset],
) -> None:
    _, dataset = credit
    wrong = ColumnRoles(label="TX_FRAUD", time="application_date", entity="applicant_id")
    with pytest.raises(DataValidationError, match="label column 'TX_FRAUD' is not in data set"):
        Lineage.of(dataset, VIEWS_REF, columns=wrong)
