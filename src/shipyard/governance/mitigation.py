"""Fairness mitigation: model variants that trade a little accuracy for smaller disparities.

Two fairlearn methods, each behind a :class:`MitigatedConfig` (a model configuration like
any other: ``fit(X, y)`` returns a :class:`MitigatedModel`, a ``TrainedModel`` saved as a
scikit-learn pickle with its SHA-256, registered, loaded hash-verified and scored by the
registry's ``NativePredictor`` like every model):

* ``method="reductions"``: ``fairlearn.reductions.ExponentiatedGradient`` retrains the base
  model under a constraint (``EqualizedOdds`` or ``DemographicParity``). The sensitive
  attribute is needed **only in training**: the variant's inputs are the base features, so
  it is served like any model, with no sensitive data in the request.
* ``method="thresholds"``: ``fairlearn.postprocessing.ThresholdOptimizer`` picks a decision
  threshold per group on the base model's scores. It needs the group **at prediction
  time**: the attribute column becomes the variant's last input, and every request must
  carry it (a numeric group code, e.g. ``is_female`` 0/1). Where the law forbids using the
  attribute in the decision itself (e.g. sex or race in US credit decisions), use the
  reductions variant; the threshold variant is then for analysis and batch scoring only.

The attribute is a column of the training frame named by ``attribute``; it is never a
feature of the base model. Both variants score the probability of a positive *decision*
(the methods randomize between classifiers or thresholds; the score is that probability,
deterministic), so their decisions are ``score >= 0.5``.

:func:`tradeoff` puts the base model and its variants side by side: AUC, accuracy and the
equalized-odds and demographic-parity differences with intervals, as a table and a plot.

Example::

    config = MitigatedConfig(base="lightgbm", method="reductions", attribute="is_female")
    variant = config.fit(frame[[*features, "is_female"]], frame["bad_risk"])
    table = tradeoff({"base": base, "reductions": variant}, X_test, y_test, data, "sex")
    table.plot(folder / "tradeoff.png")
"""

from __future__ import annotations

import contextlib
import html
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from shipyard.errors import DataValidationError, TrainingError, invalid_parameter
from shipyard.governance.fairness import assess_fairness
from shipyard.training.metrics import Interval
from shipyard.training.trainers import MODEL_TYPES, ModelConfig, TrainedModel
from shipyard.types import ColumnSpec, Schema

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.registry.card import CardSection

METHODS = ("reductions", "thresholds")
CONSTRAINTS = ("equalized_odds", "demographic_parity")
VARIANT_THRESHOLD = 0.5
"""A mitigated variant's decision threshold (its score is the probability of deciding 1)."""


class MitigatedConfig(ModelConfig):
    """A fairness-mitigated variant of a base model type (reductions or group thresholds).

    ``attribute`` names the frame column holding the sensitive group (numeric codes);
    ``base`` and ``base_params`` the base model (one of ``MODEL_TYPES``); ``constraint`` is
    ``equalized_odds`` or ``demographic_parity``; ``eps`` and ``max_iter`` tune the
    reductions, ``grid_size`` the threshold search. The threshold variant fits its base
    model on the training rows less a stratified, seeded ``holdout`` share, and chooses the
    thresholds on that share (thresholds chosen on the rows the base model learned from
    would trust its over-confident training scores).
    """

    model_type = "mitigated"
    framework = "sklearn"
    defaults: ClassVar[dict[str, Any]] = {
        "method": "reductions",
        "constraint": "equalized_odds",
        "attribute": None,
        "base": "logistic_regression",
        "base_params": {},
        "eps": 0.01,
        "max_iter": 50,
        "grid_size": 1000,
        "holdout": 0.3,
        "seed": 0,
    }

    def _validate(self) -> None:
        owner = type(self).__name__
        p = self.params
        if p["method"] not in METHODS:
            raise invalid_parameter("method", owner, f"one of {', '.join(METHODS)}", p["method"])
        if p["constraint"] not in CONSTRAINTS:
            raise invalid_parameter(
                "constraint", owner, f"one of {', '.join(CONSTRAINTS)}", p["constraint"]
            )
        if not isinstance(p["attribute"], str) or not p["attribute"]:
            raise invalid_parameter(
                "attribute", owner, "the name of the sensitive attribute's column", p["attribute"]
            )
        if p["base"] not in MODEL_TYPES:
            raise invalid_parameter("base", owner, f"one of {', '.join(MODEL_TYPES)}", p["base"])
        if not 0 < float(p["eps"]) < 1:
            raise invalid_parameter("eps", owner, "a float in (0, 1)", p["eps"])
        if not 0.05 <= float(p["holdout"]) <= 0.5:
            raise invalid_parameter("holdout", owner, "a share in [0.05, 0.5]", p["holdout"])

    def base_config(self) -> ModelConfig:
        """The base model's configuration."""
        return MODEL_TYPES[self.params["base"]](**self.params["base_params"])

    def build(self) -> Any:
        """Not used: a mitigated model needs the sensitive attribute, which ``fit`` reads."""
        raise TrainingError("MitigatedConfig is trained with fit(X, y), X holding the attribute.")

    def fit(self, X: pd.DataFrame, y: Any) -> MitigatedModel:
        """Train the variant; ``X`` holds the base features and the ``attribute`` column."""
        import numpy as np
        import pandas as pd

        self._validate()
        attribute = self.params["attribute"]
        if attribute not in X.columns:
            raise DataValidationError(
                f"The sensitive attribute {attribute!r} of MitigatedConfig is not a column of "
                f"the training data; its columns are {', '.join(map(str, X.columns))}."
            )
        column = X[attribute]
        if column.isna().any():
            raise DataValidationError(
                f"The sensitive attribute {attribute!r} has {int(column.isna().sum())} missing "
                "value(s) in the training data; give every row a group."
            )
        thresholds = self.params["method"] == "thresholds"
        if thresholds and not pd.api.types.is_numeric_dtype(column):
            raise DataValidationError(
                f"The sensitive attribute {attribute!r} must hold numeric group codes for "
                f"method='thresholds' (it becomes the model's last input); got {column.dtype}."
            )
        base_X = X.drop(columns=[attribute]).astype(float)
        groups = column.to_numpy()
        if len(np.unique(groups)) < 2:
            raise DataValidationError(
                f"The sensitive attribute {attribute!r} has a single group in the training "
                "data; mitigation needs at least two."
            )
        labels = np.asarray(y)
        if len(np.unique(labels)) < 2:
            raise TrainingError(
                f"{self!r}: the training labels hold a single class; mitigation needs both."
            )
        base = self.base_config()
        if thresholds:
            from sklearn.model_selection import train_test_split

            fit_rows, threshold_rows = train_test_split(
                np.arange(len(labels)),
                test_size=float(self.params["holdout"]),
                stratify=labels,
                random_state=int(self.params["seed"]),
            )
            fitted = base.fit(base_X.iloc[fit_rows], labels[fit_rows])
            estimator: Any = GroupThresholdClassifier.fit(
                fitted.estimator,
                base_X.iloc[threshold_rows],
                labels[threshold_rows],
                groups[threshold_rows],
                self.params,
            )
            schema = Schema.from_frame(X[[*base_X.columns, attribute]].astype(float))
        else:
            estimator = ReductionsClassifier.fit(base, base_X, labels, groups, self.params)
            schema = Schema.from_frame(base_X)
        return MitigatedModel(self, estimator, schema)


@dataclass
class MitigatedModel(TrainedModel):
    """A trained mitigated variant: scores, saves and registers like any TrainedModel."""

    def feature_importance(self) -> dict[str, float]:
        """The base model's importances (averaged over the reductions' weighted models);
        a threshold variant's attribute column gets 0: it moves thresholds, not scores."""
        importances: dict[str, float] = self.estimator.feature_importance(self.features)
        return importances


class ReductionsClassifier:
    """An ``ExponentiatedGradient`` model whose ``predict_proba`` is its decision pmf."""

    def __init__(self, mitigator: Any, base: ModelConfig, features: list[str]) -> None:
        self.mitigator = mitigator
        self.base = base
        self.features = features

    @classmethod
    def fit(
        cls, base: ModelConfig, X: pd.DataFrame, y: Any, groups: Any, params: dict[str, Any]
    ) -> ReductionsClassifier:
        """Run the exponentiated-gradient reduction of ``base`` under the constraint."""
        import numpy as np
        from fairlearn.reductions import (  # type: ignore[import-untyped]
            DemographicParity,
            EqualizedOdds,
            ExponentiatedGradient,
        )

        estimator = base.build()
        weight = "sample_weight"
        if hasattr(estimator, "steps"):  # a pipeline routes the weights to its last step
            weight = f"{estimator.steps[-1][0]}__sample_weight"
        moments = {"equalized_odds": EqualizedOdds, "demographic_parity": DemographicParity}
        mitigator = ExponentiatedGradient(
            estimator,
            moments[params["constraint"]](),
            eps=float(params["eps"]),
            max_iter=int(params["max_iter"]),
            sample_weight_name=weight,
        )
        with _quiet_fairlearn():
            mitigator.fit(X.to_numpy(dtype=np.float64), np.asarray(y), sensitive_features=groups)
        return cls(mitigator, base, list(X.columns))

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """``[P(decide 0), P(decide 1)]`` per row (rows hold the base features)."""
        import numpy as np

        return np.asarray(self.mitigator._pmf_predict(np.asarray(X, dtype=np.float64)))

    def feature_importance(self, features: list[str]) -> dict[str, float]:
        """Importances of the ensemble's models, weighted as the ensemble weighs them."""
        total = dict.fromkeys(features, 0.0)
        weights = self.mitigator.weights_
        for weight, predictor in zip(weights, self.mitigator.predictors_, strict=True):
            model = TrainedModel(self.base, predictor, _schema(features))
            for name, value in model.feature_importance().items():
                total[name] += float(weight) * value
        norm = sum(total.values()) or 1.0
        return {k: v / norm for k, v in total.items()}


class GroupThresholdClassifier:
    """A ``ThresholdOptimizer`` over a fitted base model; the group is the last input."""

    def __init__(self, optimizer: Any, base: Any, groups: list[float]) -> None:
        self.optimizer = optimizer
        self.base = base
        self.groups = groups

    @classmethod
    def fit(
        cls, base: Any, X: pd.DataFrame, y: Any, groups: Any, params: dict[str, Any]
    ) -> GroupThresholdClassifier:
        """Choose per-group thresholds on the fitted ``base`` estimator's scores."""
        import numpy as np
        from fairlearn.postprocessing import ThresholdOptimizer  # type: ignore[import-untyped]

        optimizer = ThresholdOptimizer(
            estimator=base,
            constraints=params["constraint"],
            objective="accuracy_score",
            grid_size=int(params["grid_size"]),
            prefit=True,
            predict_method="predict_proba",
        )
        codes = np.asarray(groups, dtype=np.float64)
        with _quiet_fairlearn():
            optimizer.fit(X.to_numpy(dtype=np.float64), np.asarray(y), sensitive_features=codes)
        return cls(optimizer, base, sorted(float(g) for g in np.unique(codes)))

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """``[P(decide 0), P(decide 1)]`` per row; the last column is the group code."""
        import numpy as np

        rows = np.asarray(X, dtype=np.float64)
        codes = rows[:, -1]
        unknown = sorted(set(np.unique(codes).tolist()) - set(self.groups))
        if unknown:
            raise DataValidationError(
                f"The group code(s) {unknown} of the sensitive attribute (the model's last "
                f"input) were not seen in training; known groups: {self.groups}."
            )
        return np.asarray(self.optimizer._pmf_predict(rows[:, :-1], sensitive_features=codes))

    def feature_importance(self, features: list[str]) -> dict[str, float]:
        """The base model's importances; the attribute column (last) gets 0."""
        importance = _base_importance(self.base, features[:-1])
        return {**importance, features[-1]: 0.0}


@contextlib.contextmanager
def _quiet_fairlearn() -> Iterator[None]:
    """Silence the pandas deprecation warnings fairlearn 0.15 raises on pandas 3 (setting
    items in its own frames; the results are unaffected)."""
    import pandas.errors

    category = getattr(pandas.errors, "Pandas4Warning", FutureWarning)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=category, module="pandas")
        warnings.filterwarnings("ignore", category=category, module="fairlearn")
        yield


def _schema(features: list[str]) -> Schema:
    return Schema(tuple(ColumnSpec(name, "float") for name in features))


def _base_importance(estimator: Any, features: list[str]) -> dict[str, float]:
    from shipyard.training.trainers import LogisticRegressionConfig

    model = TrainedModel(LogisticRegressionConfig(), estimator, _schema(features))
    return model.feature_importance()


# -- the trade-off -------------------------------------------------------------------------


@dataclass(frozen=True)
class TradeOffRow:
    """One model's accuracy and fairness on the same rows."""

    model: str
    roc_auc: float
    accuracy: float
    threshold: float
    equalized_odds_difference: Interval | None
    demographic_parity_difference: Interval | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""

        def iv(value: Interval | None) -> dict[str, float] | None:
            if value is None:
                return None
            return {"estimate": value.estimate, "low": value.low, "high": value.high}

        return {
            "model": self.model,
            "roc_auc": self.roc_auc,
            "accuracy": self.accuracy,
            "threshold": self.threshold,
            "equalized_odds_difference": iv(self.equalized_odds_difference),
            "demographic_parity_difference": iv(self.demographic_parity_difference),
        }


@dataclass(frozen=True)
class TradeOff:
    """The base model and its variants side by side on one attribute."""

    attribute: str
    rows: tuple[TradeOffRow, ...]
    n_rows: int

    HEADER: ClassVar[list[str]] = [
        "model",
        "threshold",
        "AUC",
        "accuracy",
        "equalized-odds diff [CI]",
        "demographic-parity diff [CI]",
    ]

    def row(self, model: str) -> TradeOffRow:
        """The row of one model by its name."""
        for found in self.rows:
            if found.model == model:
                return found
        names = [r.model for r in self.rows]
        raise invalid_parameter("model", "TradeOff.row", f"one of {names}", model)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return {
            "attribute": self.attribute,
            "n_rows": self.n_rows,
            "rows": [r.to_dict() for r in self.rows],
        }

    def _cells(self) -> list[list[str]]:
        def iv(value: Interval | None) -> str:
            return "insufficient groups" if value is None else str(value)

        return [
            [
                r.model,
                f"{r.threshold:g}",
                f"{r.roc_auc:.3f}",
                f"{r.accuracy:.3f}",
                iv(r.equalized_odds_difference),
                iv(r.demographic_parity_difference),
            ]
            for r in self.rows
        ]

    def table(self) -> str:
        """A plain-text table."""
        from shipyard.governance.fairness import _text_table

        return _text_table(self.HEADER, self._cells())

    def markdown(self) -> str:
        """A Markdown table."""
        from shipyard.governance.fairness import _md_table

        return _md_table(self.HEADER, self._cells())

    def plot(self, path: Path) -> Path:
        """AUC and accuracy against the equalized-odds difference, one point per model."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
        for ax, metric, label in ((axes[0], "roc_auc", "AUC"), (axes[1], "accuracy", "accuracy")):
            for r in self.rows:
                eo = r.equalized_odds_difference
                if eo is None:
                    continue
                value = getattr(r, metric)
                ax.errorbar(
                    eo.estimate,
                    value,
                    xerr=[[eo.estimate - eo.low], [eo.high - eo.estimate]],
                    fmt="o",
                    capsize=3,
                    label=r.model,
                )
            ax.set(xlabel=f"equalized-odds difference ({self.attribute})", ylabel=label)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"Accuracy / fairness trade-off on {self.n_rows:,} rows")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def card_section(
        self, plot: Path | None = None, title: str = "Fairness mitigation"
    ) -> CardSection:
        """The table (and the plot, embedded) as a model card section."""
        import base64

        from shipyard.governance.fairness import _html_table
        from shipyard.registry.card import CardSection

        intro = (
            f"The base model and its mitigated variants on the same {self.n_rows:,} rows; "
            f"disparities between the groups of {self.attribute!r}, 95% bootstrap intervals. "
            "Variants decide at score >= 0.5 (their score is the probability of deciding 1)."
        )
        markdown = f"{intro}\n\n{self.markdown()}"
        body = f"<p>{html.escape(intro)}</p>{_html_table(self.HEADER, self._cells())}"
        if plot is not None:
            markdown += f"\n\n![trade-off]({plot.name})"
            data = base64.b64encode(plot.read_bytes()).decode()
            body += f'<img alt="trade-off" src="data:image/png;base64,{data}">'
        return CardSection(title, markdown, body)


def tradeoff(
    models: Mapping[str, Any],
    X: pd.DataFrame,
    y: Any,
    data: pd.DataFrame,
    attribute: str,
    *,
    threshold: float = 0.5,
    n_boot: int = 300,
    seed: int = 0,
) -> TradeOff:
    """Measure each model (name -> TrainedModel) on the same rows: AUC, accuracy, disparities.

    ``X`` holds every model's inputs (a threshold variant's attribute column included),
    ``data[attribute]`` the groups the disparities compare. Plain models decide at
    ``threshold``; mitigated variants at 0.5.
    """
    import numpy as np

    from shipyard.training import metrics as m

    labels = np.asarray(y)
    rows = []
    for name, model in models.items():
        scores = model.predict_proba(X)
        cut = VARIANT_THRESHOLD if isinstance(model, MitigatedModel) else threshold
        report = assess_fairness(
            labels, scores, data, [attribute], threshold=cut, n_boot=n_boot, seed=seed
        )
        assessed = report.attribute(attribute)
        rows.append(
            TradeOffRow(
                name,
                m.roc_auc(labels, scores),
                float(((scores >= cut).astype(int) == labels).mean()),
                cut,
                assessed.equalized_odds_difference,
                assessed.demographic_parity_difference,
            )
        )
    return TradeOff(attribute, tuple(rows), len(labels))
