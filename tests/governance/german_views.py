"""Feature views over the German credit data set (``shipyard.data.credit``) for the tests
that train, register and promote mitigated variants. ``is_female`` is the sensitive
attribute as a 0/1 code: an input of the group-threshold variant only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shipyard.features.definitions import FeatureView, RowFeature
from shipyard.types import NON_NEGATIVE, ColumnRoles, Lineage
from shipyard.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.data.catalog import Dataset
    from shipyard.registry.card import CardNotes
    from shipyard.registry.models import ModelVersion
    from shipyard.training.evaluation import Evaluation
    from shipyard.training.trainers import ModelConfig, TrainedModel

DATASET = "german_credit"
COLUMNS = ColumnRoles(label="bad_risk", time="application_date", entity="application_id")
VIEWS_REF = "tests.governance.german_views:VIEWS"

APPLICATION = FeatureView(
    name="german_application",
    entity="application_id",
    timestamp="application_date",
    source=DATASET,
    description="What a German credit application says (no sensitive attribute).",
    features=(
        RowFeature(
            "duration_months", 'CAST("duration_in_month" AS DOUBLE)', inputs=("duration_in_month",)
        ),
        RowFeature(
            "amount_k",
            '"credit_amount" / 1000.0',
            inputs=("credit_amount",),
            constraint=NON_NEGATIVE,
        ),
        RowFeature(
            "installment_rate",
            'CAST("installment_rate_in_percentage_of_disposable_income" AS DOUBLE)',
            inputs=("installment_rate_in_percentage_of_disposable_income",),
        ),
        RowFeature(
            "no_checking",
            "CASE WHEN \"status_of_existing_checking_account\" LIKE 'no checking%' "
            "THEN 1.0::DOUBLE ELSE 0.0::DOUBLE END",
            inputs=("status_of_existing_checking_account",),
        ),
        RowFeature(
            "overdrawn",
            "CASE WHEN \"status_of_existing_checking_account\" LIKE '... < 0%' "
            "THEN 1.0::DOUBLE ELSE 0.0::DOUBLE END",
            inputs=("status_of_existing_checking_account",),
        ),
        RowFeature(
            "critical_history",
            "CASE WHEN \"credit_history\" LIKE 'critical%' THEN 1.0::DOUBLE ELSE 0.0::DOUBLE END",
            inputs=("credit_history",),
        ),
    ),
)

SENSITIVE = FeatureView(
    name="german_sensitive",
    entity="application_id",
    timestamp="application_date",
    source=DATASET,
    description="The applicant's sex as a code, for the group-threshold variant only.",
    features=(
        RowFeature(
            "is_female",
            "CASE WHEN \"sex\" = 'female' THEN 1.0::DOUBLE ELSE 0.0::DOUBLE END",
            ("sex",),
        ),
    ),
)

VIEWS = (APPLICATION, SENSITIVE)
FEATURES = list(APPLICATION.feature_names)


def german_workspace(path: Path) -> tuple[Workspace, Dataset]:
    """A workspace holding German credit (``shipyard.data.credit``) with these views."""
    from shipyard.data.credit import write_credit_dataset
    from shipyard.features.offline import OfflineStore

    ws = Workspace.init(path)
    dataset = write_credit_dataset(ws, DATASET)
    OfflineStore(ws).materialize(VIEWS)
    return ws, dataset


SPLIT_DAYS = 700
"""Rows 0..699 (dates 2000-01-01 + 0..699 days) train; rows 700..999 evaluate."""


@dataclass(frozen=True)
class Trained:
    """A configuration trained on the first 700 rows and evaluated on the last 300."""

    evaluation: Evaluation
    lineage: Lineage
    run_id: str
    frame: pd.DataFrame

    @property
    def model(self) -> TrainedModel:
        """The trained model."""
        model = self.evaluation.folds[0].model
        assert model is not None
        return model

    @property
    def test(self) -> pd.DataFrame:
        """The evaluation rows."""
        return self.frame.iloc[self.evaluation.folds[0].fold.test]


def train(ws: Workspace, dataset: Dataset, config: ModelConfig, features: list[str]) -> Trained:
    """Train ``config`` on the first 700 rows, evaluate it on the last 300, log the run."""
    from shipyard.registry.tracking import Tracker
    from shipyard.training.evaluation import evaluate
    from shipyard.training.frames import Window, load_frame
    from shipyard.training.splits import HoldoutSplit

    lineage = Lineage.of(dataset, VIEWS_REF, columns=COLUMNS, protocol="first 700 rows / last 300")
    frame = load_frame(ws, Window.of(lineage, "2000-01-01", "2003-12-31"))
    split = HoldoutSplit(
        "2000-01-01",
        delta_train=SPLIT_DAYS,
        delta_delay=0,
        delta_test=len(frame) - SPLIT_DAYS,
        remove_known_compromised=False,
        columns=COLUMNS,
    )
    evaluation = evaluate(frame, features, config, split, n_boot=100, keep_models=True)
    run_id = Tracker(ws).log_evaluation(
        "german-fairness", config.model_type, evaluation, params={}, tags={}
    )
    fold = evaluation.folds[0].fold
    lineage = lineage.with_windows(
        train=(str(fold.train_start), str(fold.train_end)),
        evaluation=(str(fold.test_start), str(fold.test_end)),
    )
    return Trained(evaluation, lineage, run_id, frame)


def register(ws: Workspace, trained: Trained, notes: CardNotes | None = None) -> ModelVersion:
    """Register a trained configuration as a new version of ``german_credit``."""
    from shipyard.registry.models import ModelRegistry

    return ModelRegistry(ws).register(
        DATASET,
        trained.model,
        lineage=trained.lineage,
        evaluation=trained.evaluation,
        run_id=trained.run_id,
        sample=trained.test.head(100),
        notes=notes,
        actor="tester",
    )
