"""The credit-risk reference solution on real data, built only from Shipyard's public API.

:func:`train_credit` is the job behind ``shipyard quickstart credit``, run once per data set
(German credit, HMDA mortgage denials; see :mod:`shipyard.data.credit`): store the data in
the catalog, materialize its feature views, compare models by seeded stratified k-fold
cross-validation with bootstrap intervals, refit the best on every development row, measure
it on the held-out rows, register it with a model card and promote it through the gate.

Protocol (``docs/decisions/0007-credit-without-time.md``): the data have no time, so the
synthetic ``application_date`` is the row's rank in a seeded shuffle. The last 30% of rows
by that rank (a random sample) are held out: the registered model's evaluation window, what
the promotion gate and the monitoring reference read. Model choice uses only the first 70%:
5-fold stratified cross-validation, seeded.

Sensitive attributes (sex, age group, foreign worker; ``afam`` for HMDA) are kept in the
data set for the fairness assessment; sex, marital status, foreign-worker status and race
are not model inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.data.credit import DATE_COLUMN, GERMAN, HMDA, ID_COLUMN, CreditData
from shipyard.errors import PromotionRefusedError, invalid_parameter
from shipyard.features.definitions import FeatureView, RowFeature
from shipyard.registry.card import CardNotes, CardSection
from shipyard.types import COUNT, FLAG, NON_NEGATIVE, ColumnRoles, Lineage

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.data.catalog import Dataset
    from shipyard.governance.explain import Explanation
    from shipyard.governance.fairness import FairnessReport
    from shipyard.governance.mitigation import TradeOff
    from shipyard.governance.reasons import Reason
    from shipyard.registry.gate import FairnessGateResult, GateResult
    from shipyard.registry.models import ModelVersion
    from shipyard.training.evaluation import Evaluation
    from shipyard.training.trainers import TrainedModel
    from shipyard.workspace import Workspace

ProgressCallback = Callable[[str, int, int], None]
GOVERNANCE_STEPS = 5
EXPERIMENT = "credit-risk"
SELECTION_METRIC = "roc_auc"
MODEL_TYPES = ("logistic_regression", "lightgbm")
"""The models compared by default: a scorecard-like linear model and gradient boosting."""


def _number(name: str, column: str, description: str, constraint: Any = NON_NEGATIVE) -> RowFeature:
    return RowFeature(
        name, f'CAST("{column}" AS DOUBLE)', (column,), description, constraint=constraint
    )


def _flag(name: str, column: str, value: str, description: str) -> RowFeature:
    literal = value.replace("'", "''")
    return RowFeature(
        name,
        f"CASE WHEN \"{column}\" = '{literal}' THEN 1 ELSE 0 END",
        (column,),
        description,
        constraint=FLAG,
    )


def _one_hot(column: str, what: str, levels: Sequence[tuple[str, str]]) -> list[RowFeature]:
    return [_flag(name, column, value, f"{what}: {value}") for value, name in levels]


GERMAN_FEATURES = (
    _number("duration_months", "duration_in_month", "loan duration (months)"),
    _number("credit_amount_dm", "credit_amount", "credit amount (DM)"),
    _number(
        "installment_rate",
        "installment_rate_in_percentage_of_disposable_income",
        "installment rate (% of disposable income, 1-4)",
    ),
    _number("residence_years", "present_residence_since", "present residence since (1-4)"),
    _number("age_years", "age_in_years", "age (years)"),
    _number(
        "existing_credits",
        "number_of_existing_credits_at_this_bank",
        "existing credits at this bank",
        COUNT,
    ),
    _number(
        "dependents",
        "number_of_people_being_liable_to_provide_maintenance_for",
        "people liable to provide maintenance for",
        COUNT,
    ),
    *_one_hot(
        "status_of_existing_checking_account",
        "checking account",
        (
            ("... < 0 DM", "checking_negative"),
            ("0 <= ... < 200 DM", "checking_under_200"),
            ("... >= 200 DM / salary assignments for at least 1 year", "checking_200_plus"),
            ("no checking account", "checking_none"),
        ),
    ),
    *_one_hot(
        "credit_history",
        "credit history",
        (
            ("no credits taken/ all credits paid back duly", "history_no_credits"),
            ("all credits at this bank paid back duly", "history_paid_this_bank"),
            ("existing credits paid back duly till now", "history_paid_so_far"),
            ("delay in paying off in the past", "history_delay"),
            ("critical account/ other credits existing (not at this bank)", "history_critical"),
        ),
    ),
    *_one_hot(
        "purpose",
        "purpose",
        (
            ("car (new)", "purpose_new_car"),
            ("car (used)", "purpose_used_car"),
            ("furniture/equipment", "purpose_furniture"),
            ("radio/television", "purpose_radio_tv"),
            ("domestic appliances", "purpose_appliances"),
            ("repairs", "purpose_repairs"),
            ("education", "purpose_education"),
            ("retraining", "purpose_retraining"),
            ("business", "purpose_business"),
            ("others", "purpose_other"),
        ),
    ),
    *_one_hot(
        "savings_account_and_bonds",
        "savings",
        (
            ("... < 100 DM", "savings_under_100"),
            ("100 <= ... < 500 DM", "savings_100_500"),
            ("500 <= ... < 1000 DM", "savings_500_1000"),
            ("... >= 1000 DM", "savings_1000_plus"),
            ("unknown/ no savings account", "savings_none"),
        ),
    ),
    *_one_hot(
        "present_employment_since",
        "employed",
        (
            ("unemployed", "employed_none"),
            ("... < 1 year", "employed_under_1y"),
            ("1 <= ... < 4 years", "employed_1_4y"),
            ("4 <= ... < 7 years", "employed_4_7y"),
            ("... >= 7 years", "employed_7y_plus"),
        ),
    ),
    *_one_hot(
        "other_debtors_or_guarantors",
        "other debtors",
        (("guarantor", "debtor_guarantor"), ("co-applicant", "debtor_co_applicant")),
    ),
    *_one_hot(
        "property",
        "property",
        (
            ("real estate", "property_real_estate"),
            ("building society savings agreement/ life insurance", "property_savings"),
            ("car or other, not in attribute Savings account/bonds", "property_car_other"),
            ("unknown / no property", "property_none"),
        ),
    ),
    *_one_hot(
        "other_installment_plans",
        "other installment plans",
        (("bank", "installments_bank"), ("stores", "installments_stores")),
    ),
    *_one_hot(
        "housing",
        "housing",
        (("rent", "housing_rent"), ("own", "housing_own"), ("for free", "housing_free")),
    ),
    *_one_hot(
        "job",
        "job",
        (
            ("unemployed/ unskilled - non-resident", "job_unskilled_nonresident"),
            ("unskilled - resident", "job_unskilled_resident"),
            ("skilled employee / official", "job_skilled"),
            ("management/ self-employed/ highly qualified employee/ officer", "job_management"),
        ),
    ),
    _flag(
        "telephone",
        "telephone",
        "yes, registered under the customers name",
        "telephone registered in the applicant's name",
    ),
)
GERMAN_VIEWS = (
    FeatureView(
        name="german_application",
        entity=ID_COLUMN,
        timestamp=DATE_COLUMN,
        source=GERMAN.name,
        description=(
            "What a German credit application states, one-hot encoded; sex, marital status "
            "and foreign-worker status are left out (kept only for the fairness assessment)."
        ),
        features=GERMAN_FEATURES,
    ),
)
HMDA_VIEWS = (
    FeatureView(
        name="hmda_application",
        entity=ID_COLUMN,
        timestamp=DATE_COLUMN,
        source=HMDA.name,
        description="What a mortgage application states; the applicant's race is left out.",
        features=(
            _number("payments_to_income", "pirat", "debt payments to total income ratio"),
            _number("housing_to_income", "hirat", "housing expenses to income ratio"),
            _number("loan_to_value", "lvrat", "loan to assessed property value ratio"),
            _number("consumer_credit_score", "chist", "consumer credit score (1 best - 6)"),
            _number("mortgage_credit_score", "mhist", "mortgage credit score (1 best - 4)"),
            _flag("public_bad_record", "phist", "yes", "public bad credit record"),
            _number("industry_unemployment", "unemp", "unemployment rate in the industry (%)"),
            _flag("self_employed", "selfemp", "yes", "self-employed"),
            _flag("insurance_denied", "insurance", "yes", "denied mortgage insurance"),
            _flag("condominium", "condomin", "yes", "the unit is a condominium"),
            _flag("single", "single", "yes", "applicant is single"),
            _flag("high_school", "hschool", "yes", "applicant has a high-school diploma"),
        ),
    ),
)


@dataclass(frozen=True)
class CreditSolution:
    """One credit data set as a solution: columns, feature views, registry name, card notes."""

    data: CreditData
    views_ref: str
    adverse: str
    """What the positive label means for the applicant, in words ("bad risk", "denied")."""
    notes: CardNotes
    threshold: float
    """Decision threshold on the calibrated probability: at or above it, the adverse decision."""
    mitigate: tuple[str, str]
    """The sensitive attribute the mitigated variants protect, and its group coded 1."""
    fairness_gate: tuple[str, str, float]
    """(attribute, disparity, bound) that promotion requires (point estimate)."""

    @property
    def name(self) -> str:
        """The data set's and the registered model's name."""
        return self.data.name

    @property
    def columns(self) -> ColumnRoles:
        """Label, (synthetic) time and entity columns: what the lineage records."""
        return ColumnRoles(label=self.data.label, time=DATE_COLUMN, entity=ID_COLUMN)

    @property
    def views(self) -> list[FeatureView]:
        """The solution's feature views."""
        from shipyard.features.definitions import load_views

        return load_views(self.views_ref)

    @property
    def features(self) -> list[str]:
        """Model inputs, in order."""
        return [name for view in self.views for name in view.feature_names]


_COMMON_LIMITS = (
    "The data have no application dates: the held-out rows are a random 30% sample, so "
    "the held-out metrics say nothing about performance on later applicants.",
    "Not a lending model: a reference of the platform on a public data set. Decisions about "
    "people need a validated model, a legal review and human oversight.",
    "The 'time' windows above are synthetic dates (2000-01-01 + the row's rank in a seeded "
    "shuffle), one application per day.",
)
SOLUTIONS = {
    GERMAN.name: CreditSolution(
        data=GERMAN,
        views_ref="shipyard.solutions.credit:GERMAN_VIEWS",
        adverse="bad risk",
        # Statlog's cost matrix: accepting a bad risk costs 5, rejecting a good one 1
        threshold=1 / 6,
        mitigate=("age_group", "under 25"),
        fairness_gate=("age_group", "equalized_odds_difference", 0.2),
        notes=CardNotes(
            intended_use=(
                "Estimate the probability that a consumer-credit applicant is a bad risk, to "
                "rank applications for a credit officer's review and to explain each adverse "
                "decision with reason codes."
            ),
            limitations=(
                "German credit (Statlog): 1,000 applications from a German bank in the 1970s; "
                "labels were oversampled to 30% bad risks, so probabilities are not today's "
                "default rates.",
                "Sex is derived from a combined personal-status field and is not a model input; "
                "age is an input (the fairness section assesses age groups).",
                *_COMMON_LIMITS,
            ),
        ),
    ),
    HMDA.name: CreditSolution(
        data=HMDA,
        views_ref="shipyard.solutions.credit:HMDA_VIEWS",
        adverse="denied",
        threshold=0.5,
        mitigate=("afam", "yes"),
        fairness_gate=("afam", "equalized_odds_difference", 0.2),
        notes=CardNotes(
            intended_use=(
                "Estimate the probability that a mortgage application is denied, to study "
                "and explain denial decisions and their disparities between groups."
            ),
            limitations=(
                "HMDA (Boston, 1990): 2,380 applications; it models past underwriting "
                "decisions, not repayment, and may reproduce their biases.",
                "Race (afam) is not a model input; other inputs may still proxy for it.",
                *_COMMON_LIMITS,
            ),
        ),
    ),
}
"""The two credit solutions by name (``german_credit``, ``hmda``)."""


def solution(name: str) -> CreditSolution:
    """The credit solution called ``name``; ParameterError naming the known ones otherwise."""
    found = SOLUTIONS.get(name)
    if found is None:
        raise invalid_parameter("name", "credit solution", f"one of {', '.join(SOLUTIONS)}", name)
    return found


@dataclass(frozen=True)
class CreditProtocol:
    """Hold out the last ``holdout`` share of rows; compare models by stratified k-fold."""

    holdout: float = 0.3
    n_splits: int = 5
    seed: int = 0

    def validate(self) -> None:
        """Refuse a bad parameter, naming it (ParameterError)."""
        owner = type(self).__name__
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise invalid_parameter("seed", owner, "an int >= 0", self.seed)
        if not isinstance(self.holdout, float) or not 0.05 <= self.holdout <= 0.5:
            raise invalid_parameter("holdout", owner, "a float in [0.05, 0.5]", self.holdout)
        if isinstance(self.n_splits, bool) or not isinstance(self.n_splits, int):
            raise invalid_parameter("n_splits", owner, "an int >= 2", self.n_splits)
        if self.n_splits < 2:
            raise invalid_parameter("n_splits", owner, "an int >= 2", self.n_splits)

    def n_development(self, n_rows: int) -> int:
        """How many of ``n_rows`` rows (the first by synthetic date) are for development."""
        self.validate()
        return n_rows - round(n_rows * self.holdout)

    def windows(self, dataset: Dataset) -> tuple[tuple[str, str], tuple[str, str]]:
        """The development and the held-out window (ISO dates of the synthetic date)."""
        from datetime import date, timedelta

        from shipyard.data.credit import FIRST_DATE

        first = date.fromisoformat(FIRST_DATE)
        n_dev = self.n_development(dataset.n_rows)

        def day(i: int) -> str:
            return (first + timedelta(days=i)).isoformat()

        return (day(0), day(n_dev - 1)), (day(n_dev), day(dataset.n_rows - 1))

    def describe(self) -> str:
        """One line for model cards and logs."""
        return (
            f"no time in the data: the last {self.holdout:.0%} of rows (synthetic dates, a "
            "seeded shuffle) held out "
            f"for the registered model; models compared by {self.n_splits}-fold stratified "
            f"cross-validation (seed {self.seed}) on the rest"
        )


@dataclass(frozen=True)
class PlattScaling:
    """Calibrated probability ``sigmoid(slope * logit(score) + intercept)`` (Platt, 1999).

    Fitted on out-of-fold scores, so it corrects the model as it scores unseen rows. It is
    monotone: the registered model keeps serving its own score, and a decision threshold on
    the calibrated probability becomes one on the score (:meth:`raw_threshold`).
    """

    slope: float
    intercept: float

    @classmethod
    def fit(cls, labels: Any, scores: Any) -> PlattScaling:
        """Fit on binary ``labels`` and the model's ``scores`` of the same rows."""
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        z = _logit(np.asarray(scores, dtype=np.float64)).reshape(-1, 1)
        fitted = LogisticRegression(C=1e6, max_iter=1000).fit(z, np.asarray(labels))
        return cls(float(fitted.coef_[0, 0]), float(fitted.intercept_[0]))

    def __call__(self, scores: Any) -> NDArray[np.float64]:
        """The calibrated probabilities of ``scores``."""
        import numpy as np

        z = self.slope * _logit(np.asarray(scores, dtype=np.float64)) + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    def raw_threshold(self, probability: float) -> float:
        """The score whose calibrated probability is ``probability`` (same decisions).

        A non-increasing fit (slope <= 0: the scores rank nothing) keeps ``probability``.
        """
        import math

        if self.slope <= 0:
            return probability
        z = (math.log(probability / (1 - probability)) - self.intercept) / self.slope
        return 1.0 / (1.0 + math.exp(-z))


def _logit(p: NDArray[np.float64]) -> NDArray[np.float64]:
    import numpy as np

    clipped = np.clip(p, 1e-9, 1 - 1e-9)
    return np.asarray(np.log(clipped / (1 - clipped)), dtype=np.float64)


@dataclass
class CreditModelReport:
    """One model type: its cross-validated evaluation and its MLflow run."""

    model_type: str
    crossval: Evaluation
    run_id: str
    seconds: float


@dataclass
class CreditReport:
    """What :func:`train_credit` did for one data set, for printing and for tests."""

    solution: CreditSolution
    dataset: Dataset
    protocol: CreditProtocol
    models: list[CreditModelReport] = field(default_factory=list)
    best: str = ""
    holdout: Evaluation | None = None
    """The registered model on the held-out rows."""
    registered: ModelVersion | None = None
    promoted: bool = False
    gate: GateResult | None = None
    gate_message: str = ""
    sections: list[CardSection] = field(default_factory=list)
    calibration: PlattScaling | None = None
    """The Platt scaling fitted on the chosen model's out-of-fold scores."""
    threshold: float = 0.5
    """The registered model's decision threshold on its own score: the score whose
    calibrated probability is the solution's threshold."""
    explanation: Explanation | None = None
    """SHAP attributions of the registered model on the held-out rows."""
    reasons: list[tuple[Reason, ...]] = field(default_factory=list)
    """Reason codes of each held-out row (aligned with the held-out rows)."""
    fairness: FairnessReport | None = None
    fairness_gates: list[FairnessGateResult] = field(default_factory=list)
    tradeoff: TradeOff | None = None
    variant: ModelVersion | None = None
    """The fairness-mitigated variant (reductions), registered beside the model."""
    seconds: dict[str, float] = field(default_factory=dict)


def prepare_credit_data(
    workspace: Workspace, name: str, progress: ProgressCallback | None = None
) -> Dataset:
    """Store (or reuse, if unchanged) the credit data set ``name``; materialize its views."""
    from shipyard.data.credit import write_credit_dataset
    from shipyard.features.offline import OfflineStore

    sol = solution(name)
    dataset = write_credit_dataset(workspace, sol.name, progress=progress)
    OfflineStore(workspace).materialize(sol.views, dataset.version, progress=progress)
    return dataset


def train_credit(
    workspace: Workspace,
    name: str,
    *,
    model_types: Sequence[str] = MODEL_TYPES,
    protocol: CreditProtocol | None = None,
    n_boot: int = 300,
    gate_boot: int = 1000,
    progress: ProgressCallback | None = None,
) -> CreditReport:
    """Prepare the data, compare ``model_types`` by cross-validation, register and promote the best.

    The best model type on mean cross-validated AUC is refit on every development row,
    measured on the held-out rows (row-bootstrap intervals), registered with its model card
    and promoted to champion through the promotion gate (AUC; directly if there is none).
    """
    from shipyard.training.trainers import make_config

    sol = solution(name)
    protocol = protocol or CreditProtocol()
    protocol.validate()
    for model_type in model_types:
        make_config(model_type)  # an unknown type fails before any work

    def scoped(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(f"{name}: {stage}", done, total)

    started = time.perf_counter()
    dataset = prepare_credit_data(workspace, name, scoped)
    report = CreditReport(sol, dataset, protocol)
    report.seconds["data and features"] = time.perf_counter() - started
    run = _CreditRun.start(workspace, report, scoped)
    for i, model_type in enumerate(model_types):
        report.models.append(run.cross_validate(model_type, n_boot))
        scoped("cross-validated models", i + 1, len(model_types))
    report.seconds["cross-validation"] = (
        time.perf_counter() - started - sum(report.seconds.values())
    )
    best = max(report.models, key=lambda r: r.crossval.mean(SELECTION_METRIC))
    report.best = best.model_type
    run.register(best, gate_boot, n_boot)
    report.seconds["registry"] = _since(started, report)
    return report


def _since(started: float, report: CreditReport) -> float:
    """Seconds since ``started`` not yet counted in ``report.seconds``."""
    return time.perf_counter() - started - sum(report.seconds.values())


@dataclass
class _CreditRun:
    """What the steps of one data set's run share: the frames, the lineage, the tracker."""

    workspace: Workspace
    report: CreditReport
    frame: pd.DataFrame
    groups: pd.DataFrame
    """The sensitive attributes of the frame's rows (not model inputs), row by row."""
    n_development: int
    lineage: Lineage
    progress: ProgressCallback

    @classmethod
    def start(
        cls, workspace: Workspace, report: CreditReport, progress: ProgressCallback
    ) -> _CreditRun:
        from shipyard.training.frames import Window, load_frame

        sol, dataset, protocol = report.solution, report.dataset, report.protocol
        lineage = Lineage.of(
            dataset, sol.views_ref, columns=sol.columns, protocol=protocol.describe()
        )
        development, holdout = protocol.windows(dataset)
        frame = load_frame(workspace, Window.of(lineage, development[0], holdout[1]))
        people = dataset.read([ID_COLUMN, *sol.data.sensitive]).set_index(ID_COLUMN)
        groups = people.loc[frame[ID_COLUMN].to_numpy()].reset_index(drop=True)
        return cls(
            workspace,
            report,
            frame,
            groups,
            protocol.n_development(dataset.n_rows),
            lineage.with_windows(train=development, evaluation=holdout),
            progress,
        )

    def step(self, done: int) -> None:
        """Report progress through the :data:`GOVERNANCE_STEPS` of :meth:`register`."""
        self.progress("refit, explain, assess, register", done, GOVERNANCE_STEPS)

    @property
    def development(self) -> pd.DataFrame:
        """The rows models are compared and trained on."""
        return self.frame.iloc[: self.n_development]

    def tags(self, model_type: str) -> dict[str, str]:
        ds = self.report.dataset
        return {
            "shipyard.dataset": ds.name,
            "shipyard.dataset_version": str(ds.version),
            "shipyard.dataset_hash": ds.content_hash,
            "shipyard.features": self.lineage.views,
            "shipyard.features_hash": self.lineage.features_hash,
            "shipyard.label": self.lineage.columns.label,
            "shipyard.model_type": model_type,
        }

    def cross_validate(self, model_type: str, n_boot: int) -> CreditModelReport:
        """Cross-validate one model type on the development rows and log it to MLflow."""
        from shipyard.registry.tracking import Tracker
        from shipyard.training.crossval import StratifiedKFold, cross_validate
        from shipyard.training.trainers import make_config

        started = time.perf_counter()
        protocol, sol = self.report.protocol, self.report.solution
        split = StratifiedKFold(protocol.n_splits, protocol.seed, columns=sol.columns)
        evaluation = cross_validate(
            self.development, sol.features, make_config(model_type), split, n_boot=n_boot
        )
        run_id = Tracker(self.workspace).log_evaluation(
            EXPERIMENT,
            f"{sol.name}-{model_type}",
            evaluation,
            params={
                "split": split.describe(),
                "protocol": protocol.describe(),
                "selection_metric": SELECTION_METRIC,
                "features": ",".join(sol.features),
            },
            tags=self.tags(model_type),
        )
        return CreditModelReport(model_type, evaluation, run_id, time.perf_counter() - started)

    def holdout_evaluation(self, best: CreditModelReport, n_boot: int) -> Evaluation:
        """Refit ``best`` on every development row; measure it on the held-out rows."""
        import numpy as np

        from shipyard.training.crossval import fold_metrics, row_intervals
        from shipyard.training.evaluation import Evaluation, FoldResult
        from shipyard.training.splits import Fold

        sol, frame = self.report.solution, self.frame
        label = sol.columns.label
        train = np.arange(self.n_development, dtype=np.int64)
        test = np.arange(self.n_development, len(frame), dtype=np.int64)
        config = best.crossval.config
        model = config.fit(frame.iloc[train][sol.features], frame[label].to_numpy()[train])
        scores = model.predict_proba(frame.iloc[test])
        labels = frame[label].to_numpy()[test]
        days = frame[sol.columns.time].to_numpy().astype("datetime64[D]")
        fold = Fold(
            0,
            train,
            test,
            days[train].min().item(),
            days[train].max().item(),
            days[test].min().item(),
            days[test].max().item(),
        )
        result = FoldResult(fold, fold_metrics(labels, scores), labels, scores, {}, model)
        evaluation = Evaluation(config, [result])
        if n_boot > 0:
            evaluation.intervals = row_intervals([result], n_boot)
        return evaluation

    def register(self, best: CreditModelReport, gate_boot: int, n_boot: int) -> None:
        """Calibrate the decision threshold, explain, assess and mitigate the refit best
        model; register it and its variant; promote it through the promotion gate and the
        fairness gate (the registry records both in the audit trail)."""
        import numpy as np

        from shipyard.governance import audit
        from shipyard.registry.gate import FairnessGate, PromotionGate
        from shipyard.registry.models import ModelRegistry

        report, sol = self.report, self.report.solution
        holdout = self.holdout_evaluation(best, n_boot)
        report.holdout = holdout
        model = holdout.folds[0].model
        if model is None:  # holdout_evaluation keeps it; a guard for typing
            raise RuntimeError("the held-out evaluation kept no model")
        report.calibration = PlattScaling.fit(
            np.concatenate([f.labels for f in best.crossval.folds]),
            np.concatenate([f.scores for f in best.crossval.folds]),
        )
        report.threshold = report.calibration.raw_threshold(sol.threshold)
        self.step(1)
        self.explain(model)
        self.step(2)
        fairness = self.assess(holdout, max(n_boot, 100))
        attribute, metric, bound = sol.fairness_gate
        # point estimate: with a few hundred held-out rows the interval is too wide to pass
        gate = FairnessGate(
            attribute,
            metric,
            bound,
            threshold=report.threshold,
            require_significance=False,
            n_boot=max(n_boot, 100),
        )
        report.fairness_gates = [gate.decide(fairness)]
        report.fairness = fairness.with_gates(report.fairness_gates)
        self.step(3)
        variant_model, variant_eval = self.mitigate(model, n_boot)
        self.step(4)
        report.sections = [
            comparison_section(report),
            calibration_section(report),
            explanation_section(report),
            report.fairness.card_section(f"Fairness (decision at score >= {report.threshold:.3g})"),
        ]
        if report.tradeoff is not None:
            report.sections.append(report.tradeoff.card_section())
        registry = ModelRegistry(self.workspace)
        version = registry.register(
            sol.name,
            model,
            lineage=self.lineage,
            evaluation=holdout,
            run_id=best.run_id,
            sample=self.held_out,
            notes=self.notes(report.sections),
            reason=f"best cross-validated {SELECTION_METRIC} of {len(report.models)} model types",
        )
        audit.record_threshold_change(
            self.workspace,
            sol.name,
            before=None,
            after=report.threshold,
            version=version.version,
            reason=f"decision threshold of {sol.name} v{version.version}: score >= "
            f"{report.threshold:.4g} (calibrated probability >= {sol.threshold:.4g}) is "
            f"{sol.adverse}",
        )
        try:
            report.gate = registry.promote(
                sol.name,
                version.version,
                reason=f"best cross-validated {SELECTION_METRIC}",
                gate=PromotionGate(metric=SELECTION_METRIC, n_boot=gate_boot),
                fairness=[gate],
            )
            report.promoted = True
        except PromotionRefusedError as refused:
            report.gate_message = str(refused)
        report.registered = registry.get(sol.name, version.version)
        if variant_model is not None and variant_eval is not None:
            variant = registry.register(
                sol.name,
                variant_model,
                lineage=self.lineage,
                evaluation=variant_eval,
                run_id=self.log_variant(variant_eval),
                sample=self.held_out,
                notes=self.notes(
                    [s for s in report.sections if s.title.startswith("Fairness mitigation")]
                ),
                reason=f"fairness-mitigated variant of v{version.version} "
                f"(reductions, equalized odds on {sol.mitigate[0]})",
            )
            report.variant = variant
        self.step(5)

    def log_variant(self, evaluation: Evaluation) -> str:
        """The mitigated variant's own MLflow run (its held-out evaluation); its run id."""
        from shipyard.registry.tracking import Tracker

        sol = self.report.solution
        return Tracker(self.workspace).log_evaluation(
            EXPERIMENT,
            f"{sol.name}-mitigated",
            evaluation,
            params={"protocol": self.report.protocol.describe(), "attribute": sol.mitigate[0]},
            tags=self.tags("mitigated"),
        )

    def notes(self, sections: Sequence[CardSection]) -> CardNotes:
        """The solution's card notes with ``sections``."""
        sol = self.report.solution
        return CardNotes(
            sol.notes.intended_use,
            sol.notes.limitations,
            tuple(sections),
            evaluation=(
                "The metrics below are those of this version (refit on every development "
                "row) on the held-out rows: one test set, so the std column is 0; the model "
                "comparison section gives the cross-validated figures."
            ),
            interval="row bootstrap",
        )

    @property
    def held_out(self) -> pd.DataFrame:
        """The held-out rows (the registered model's evaluation window)."""
        return self.frame.iloc[self.n_development :]

    def explain(self, model: TrainedModel) -> None:
        """SHAP attributions and reason codes of the held-out rows."""
        from shipyard.governance.explain import explain
        from shipyard.governance.reasons import feature_descriptions, reasons

        sol = self.report.solution
        explanation = explain(model, self.held_out)
        self.report.explanation = explanation
        self.report.reasons = reasons(explanation, descriptions=feature_descriptions(sol.views_ref))

    def assess(self, holdout: Evaluation, n_boot: int) -> FairnessReport:
        """Fairness of the held-out decisions across every sensitive attribute."""
        from shipyard.governance.fairness import assess_fairness

        sol = self.report.solution
        result = holdout.folds[0]
        return assess_fairness(
            result.labels,
            result.scores,
            self.groups.iloc[self.n_development :].reset_index(drop=True),
            sol.data.sensitive,
            threshold=self.report.threshold,
            n_boot=n_boot,
        )

    def mitigate(
        self, model: TrainedModel, n_boot: int
    ) -> tuple[TrainedModel | None, Evaluation | None]:
        """Train the reductions variant (equalized odds) on the development rows and
        compare it with ``model`` on the held-out rows (``report.tradeoff``)."""
        import numpy as np

        from shipyard.governance.mitigation import MitigatedConfig, tradeoff
        from shipyard.training.crossval import fold_metrics, row_intervals
        from shipyard.training.evaluation import Evaluation, FoldResult

        report, sol = self.report, self.report.solution
        attribute, group = sol.mitigate
        code = f"{attribute}_code"
        coded = (self.groups[attribute].astype(str) == group).astype(float).to_numpy()
        X = self.frame[sol.features].assign(**{code: coded})
        y = self.frame[sol.columns.label].to_numpy()
        dev = np.arange(self.n_development)
        config = MitigatedConfig(
            method="reductions",
            constraint="equalized_odds",
            attribute=code,
            base=model.config.model_type,
            base_params=model.config.get_params(),
        )
        variant = config.fit(X.iloc[dev], y[dev])
        test = self.held_out
        groups = self.groups.iloc[self.n_development :].reset_index(drop=True)
        labels = y[self.n_development :]
        report.tradeoff = tradeoff(
            {f"{model.config.model_type} (registered)": model, "reductions variant": variant},
            test[sol.features],
            labels,
            groups,
            attribute,
            threshold=report.threshold,
            n_boot=max(n_boot, 100),
        )
        scores = variant.predict_proba(test)
        assert report.holdout is not None
        fold = report.holdout.folds[0].fold
        result = FoldResult(fold, fold_metrics(labels, scores), labels, scores, {}, variant)
        evaluation = Evaluation(config, [result])
        if n_boot > 0:
            evaluation.intervals = row_intervals([result], n_boot)
        return variant, evaluation


Table = tuple[list[str], list[list[str]]]
"""A card table: its header and its rows of cells."""


def card_section(title: str, parts: Sequence[str | Table]) -> CardSection:
    """A card section of paragraphs (``str``) and tables, in Markdown and escaped HTML."""
    import html

    markdown: list[str] = []
    body: list[str] = []
    for part in parts:
        if isinstance(part, str):
            markdown.append(part)
            body.append(f"<p>{html.escape(part)}</p>")
            continue
        header, rows = part
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        markdown.append("\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]))
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        cells = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
        )
        body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
    return CardSection(title, "\n\n".join(markdown), "".join(body))


def comparison_section(report: CreditReport) -> CardSection:
    """The card section comparing the cross-validated model types (mean ± std, 95% CI)."""
    from shipyard.solutions.fraud import headline

    header = ["model", "AUC", "average precision", "Brier score"]
    rows = []
    for model in report.models:
        cells = [model.model_type + (" (registered)" if model.model_type == report.best else "")]
        for metric in ("roc_auc", "average_precision", "brier"):
            h = headline(model.crossval, metric)
            cells.append(f"{h['mean']:.3f} ± {h['std']:.3f} [{h['low']:.3f}, {h['high']:.3f}]")
        rows.append(cells)
    protocol = report.protocol
    intro = (
        f"{protocol.n_splits}-fold stratified cross-validation (seed {protocol.seed}) on the "
        f"{protocol.n_development(report.dataset.n_rows):,} development rows: mean ± std over "
        f"folds [95% row-bootstrap interval]. The registered model is the best on mean "
        f"{SELECTION_METRIC}, refit on every development row; the metrics above are its own, "
        "on the held-out rows."
    )
    return card_section("Model comparison (cross-validation)", [intro, (header, rows)])


EXAMPLES = 3
"""How many held-out applicants the card shows with their reason codes (the riskiest)."""


def explanation_section(report: CreditReport) -> CardSection:
    """Reason codes of the riskiest held-out applicants (the registry's card adds the
    global importance and dependence plots itself)."""
    import numpy as np

    explanation, sol = report.explanation, report.solution
    if explanation is None or report.holdout is None:
        return card_section("Reason codes", ["Not computed."])
    scores = report.holdout.folds[0].scores
    riskiest = np.argsort(-scores, kind="stable")[:EXAMPLES].tolist()
    intro = (
        f"Reason codes of the {EXAMPLES} riskiest of the {len(explanation):,} held-out "
        f"applicants: the features whose SHAP attribution ({explanation.output_space}, exact "
        f"for {report.best}) pushed the decision toward '{sol.adverse}' most, with the "
        "applicant's value, as served with explain=true."
    )
    examples = [
        [
            f"{scores[i]:.3f}",
            "; ".join(
                f"{r.description} = {r.value:g} (+{r.contribution:.3f})" for r in report.reasons[i]
            )
            or "none",
        ]
        for i in riskiest
    ]
    return card_section("Reason codes", [intro, (["score", "reasons (value, push)"], examples)])


CALIBRATION_TITLE = "Calibration and decision threshold"


def calibration_section(report: CreditReport) -> CardSection:
    """Held-out Brier score and calibration error, raw and Platt-calibrated; the threshold."""
    from shipyard.governance.fairness import expected_calibration_error
    from shipyard.training.metrics import brier

    platt, sol = report.calibration, report.solution
    if platt is None or report.holdout is None:
        return card_section(CALIBRATION_TITLE, ["Not computed."])
    result = report.holdout.folds[0]
    y = result.labels
    rows = [
        [name, f"{brier(y, p):.4f}", f"{expected_calibration_error(y, p):.4f}"]
        for name, p in (("model score", result.scores), ("Platt-calibrated", platt(result.scores)))
    ]
    text = (
        f"Platt scaling fitted on the chosen model type's out-of-fold scores: calibrated "
        f"probability = sigmoid({platt.slope:.3f} * logit(score) + {platt.intercept:.3f}). "
        f"The decision '{sol.adverse}' at calibrated probability >= {sol.threshold:.4g} is "
        f"score >= {report.threshold:.4g}: the model serves its own score, the threshold "
        f"carries the calibration (recorded in the audit trail). Held-out rows "
        f"({len(y):,}): Brier score and expected calibration error (10 bins)."
    )
    return card_section(CALIBRATION_TITLE, [text, (["scores", "Brier", "ECE"], rows)])
