"""Model families for rare positives: balanced bagging, and calibration of any model's scores.

Both are model configurations like any other (``make_config("balanced_bagging")``,
``make_config("calibrated", base="xgboost", base_params={...})``): ``fit(X, y)`` returns an
:class:`EnsembleModel`, a ``TrainedModel`` saved as a hash-verified scikit-learn pickle
(``framework = "sklearn"``), registered, loaded and scored by the registry's
``NativePredictor`` like every model.

* :class:`BalancedBaggingConfig` trains ``n_bags`` models of a base type, each on every
  positive row and a seeded random draw of ``ratio`` negatives per positive, and averages
  their scores. Each member sees a balanced problem, so the average ranks the rare class
  well but overstates its probability (calibrate it to read scores as probabilities).
* :class:`CalibratedConfig` fits a base model on the first rows of the training window and
  maps its scores to probabilities with an isotonic or Platt calibrator fitted on the last
  ``calibration_fraction`` of the rows. Rows arrive in time order and are never shuffled:
  the calibrator learns how the base model's scores relate to outcomes on days it did not
  train on, as it will be used. Nothing is refitted afterwards.

Example::

    config = make_config(
        "calibrated", base="xgboost", base_params={"scale_pos_weight": 20}, method="isotonic"
    )
    model = config.fit(X_train, y_train)  # rows in time order
    probabilities = model.predict_proba(X_test)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from shipyard.errors import ParameterError, TrainingError, invalid_parameter
from shipyard.training.trainers import (
    BASELINE_SUITE,
    ModelConfig,
    TrainedModel,
    check_labels,
    make_config,
    register_model_type,
)
from shipyard.types import Schema

if TYPE_CHECKING:
    import numpy as np
    import optuna
    import pandas as pd
    from numpy.typing import NDArray

BAGGING_BASES = BASELINE_SUITE
"""The model types balanced bagging can bag (the five built-in single models)."""
CALIBRATION_METHODS = ("isotonic", "platt")


def _labels(config: ModelConfig, y: Any) -> NDArray[Any]:
    """The labels as an array; TrainingError if there are none or a single class."""
    import numpy as np

    labels = np.asarray(y)
    check_labels(config, labels)
    return labels


class _WrapperConfig(ModelConfig):
    """A configuration that wraps a base model type given by ``base`` and ``base_params``."""

    allowed_bases: ClassVar[tuple[str, ...] | None] = None
    """The base types it accepts (None: every registered type but its own)."""

    def base_config(self) -> ModelConfig:
        """The base model's configuration: ``base``, ``base_params`` and our ``random_state``."""
        owner = type(self).__name__
        base, params = self.params["base"], self.params["base_params"]
        allowed = self.allowed_bases
        if base == self.model_type or (allowed is not None and base not in allowed):
            expected = "a model type other than " + repr(self.model_type)
            if allowed is not None:
                expected = f"one of {', '.join(allowed)}"
            raise invalid_parameter("base", owner, expected, base)
        if not isinstance(params, dict) or "random_state" in params:
            raise invalid_parameter(
                "base_params",
                owner,
                f"a dict of the base's parameters without random_state (set {owner}'s own)",
                params,
            )
        seed = self.params["random_state"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise invalid_parameter("random_state", owner, "an int", seed)
        try:
            config = make_config(base, **params)
        except ParameterError as exc:  # an unknown type or parameter: say whose it is
            raise ParameterError(f"The base model of {owner}: {exc}") from None
        if "random_state" in config.defaults:
            config = config.set_params(random_state=seed)
        return config

    def build(self) -> Any:
        """Not used: the ensemble is assembled by ``fit`` from fitted base models."""
        raise TrainingError(f"{type(self).__name__} is trained with fit(X, y), not build().")


@register_model_type
class BalancedBaggingConfig(_WrapperConfig):
    """``n_bags`` base models (LightGBM by default), each trained on every positive and a
    seeded draw of ``ratio`` negatives per positive; the score is their mean.

    ``base`` is one of :data:`BAGGING_BASES`, ``base_params`` its parameters (less
    ``random_state``); ``random_state`` seeds the draws, and member ``i`` trains with
    ``random_state + i``.
    """

    model_type = "balanced_bagging"
    framework = "sklearn"
    allowed_bases = BAGGING_BASES
    defaults: ClassVar[dict[str, Any]] = {
        "base": "lightgbm",
        "base_params": {},
        "n_bags": 5,
        "ratio": 5.0,
        "random_state": 0,
    }

    def _validate(self) -> ModelConfig:
        owner = type(self).__name__
        p = self.params
        n_bags, ratio = p["n_bags"], p["ratio"]
        if isinstance(n_bags, bool) or not isinstance(n_bags, int) or n_bags < 1:
            raise invalid_parameter("n_bags", owner, "an int >= 1", n_bags)
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not ratio > 0:
            raise invalid_parameter("ratio", owner, "a number > 0 (negatives per positive)", ratio)
        return self.base_config()

    @staticmethod
    def search_space(trial: optuna.Trial) -> dict[str, Any]:
        """Negatives per positive log-uniform in [1, 50], 3 to 10 bags."""
        return {
            "ratio": trial.suggest_float("ratio", 1.0, 50.0, log=True),
            "n_bags": trial.suggest_int("n_bags", 3, 10),
        }

    def fit(self, X: pd.DataFrame, y: Any) -> EnsembleModel:
        """Train the members on their balanced draws (rows keep their order in each)."""
        import numpy as np

        base = self._validate()
        labels = _labels(self, y)
        positives = np.flatnonzero(labels == 1)
        negatives = np.flatnonzero(labels != 1)
        draw = min(len(negatives), max(1, round(float(self.params["ratio"]) * len(positives))))
        seed = int(self.params["random_state"])
        rng = np.random.default_rng(seed)
        members = []
        for i in range(int(self.params["n_bags"])):
            chosen = rng.choice(negatives, size=draw, replace=False)
            rows = np.sort(np.concatenate([positives, chosen]))
            member = base.set_params(random_state=seed + i)
            members.append(member.fit(X.iloc[rows], labels[rows]))
        return EnsembleModel(self, BaggedClassifier(members), Schema.from_frame(X.astype(float)))


@register_model_type
class CalibratedConfig(_WrapperConfig):
    """A base model whose scores are mapped to probabilities by an isotonic or Platt
    calibrator fitted on the last ``calibration_fraction`` of the training rows.

    The rows must come in time order (a solution's frames do): the base model trains on
    the first rows, the calibrator on the most recent ones; nothing is shuffled or refitted.
    ``base`` is any model type but ``calibrated`` (``balanced_bagging`` included),
    ``base_params`` its parameters (its ``random_state`` is this configuration's),
    ``method`` ``isotonic`` (monotone steps, needs a few
    hundred calibration rows with positives among them) or ``platt`` (a logistic curve on
    the score's log-odds, two parameters).
    """

    model_type = "calibrated"
    framework = "sklearn"
    defaults: ClassVar[dict[str, Any]] = {
        "base": "xgboost",
        "base_params": {},
        "method": "isotonic",
        "calibration_fraction": 0.2,
        "random_state": 0,
    }

    def _validate(self) -> ModelConfig:
        owner = type(self).__name__
        p = self.params
        if p["method"] not in CALIBRATION_METHODS:
            raise invalid_parameter(
                "method", owner, f"one of {', '.join(CALIBRATION_METHODS)}", p["method"]
            )
        share = p["calibration_fraction"]
        if (
            isinstance(share, bool)
            or not isinstance(share, int | float)
            or not 0.05 <= share <= 0.5
        ):
            raise invalid_parameter(
                "calibration_fraction", owner, "a share of the rows in [0.05, 0.5]", share
            )
        return self.base_config()

    @staticmethod
    def search_space(trial: optuna.Trial) -> dict[str, Any]:
        """Isotonic or Platt, calibration share in [0.1, 0.4]."""
        return {
            "method": trial.suggest_categorical("method", list(CALIBRATION_METHODS)),
            "calibration_fraction": trial.suggest_float("calibration_fraction", 0.1, 0.4),
        }

    def fit(self, X: pd.DataFrame, y: Any) -> EnsembleModel:
        """Fit the base on the first rows and the calibrator on the last share (time order)."""
        import numpy as np

        base = self._validate()
        labels = _labels(self, y)
        n = len(labels)
        cut = n - round(float(self.params["calibration_fraction"]) * n)
        for part, rows in (("first", labels[:cut]), ("last", labels[cut:])):
            if len(np.unique(rows)) < 2:
                raise TrainingError(
                    f"{self!r}: the {part} part of the training window (split at row {cut:,} "
                    f"of {n:,}: the base model trains before it, the calibrator after) holds "
                    "a single class; train on a longer window or change calibration_fraction."
                )
        fitted = base.fit(X.iloc[:cut], labels[:cut])
        scores = fitted.predict_proba(X.iloc[cut:])
        estimator = CalibratedClassifier.fit(fitted, scores, labels[cut:], self.params["method"])
        return EnsembleModel(self, estimator, Schema.from_frame(X.astype(float)))


@dataclass
class EnsembleModel(TrainedModel):
    """A trained ensemble or calibrated model: scores, saves and registers like any model."""

    def feature_importance(self) -> dict[str, float]:
        """The members' importances, averaged (a calibrated model: its base model's)."""
        importances: dict[str, float] = self.estimator.feature_importance()
        return {name: importances[name] for name in self.features}


class BaggedClassifier:
    """Fitted members whose mean score is the ensemble's; pickled as one estimator."""

    def __init__(self, members: list[TrainedModel]) -> None:
        self.members = members

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """``[1 - p, p]`` per row, ``p`` the mean of the members' scores."""
        import numpy as np

        rows = np.asarray(X, dtype=np.float64)
        p = np.mean([member.predict_proba(rows) for member in self.members], axis=0)
        return np.column_stack([1.0 - p, p])

    def feature_importance(self) -> dict[str, float]:
        """The mean of the members' importances (each sums to 1, so the mean does)."""
        total: dict[str, float] = {}
        for member in self.members:
            for name, value in member.feature_importance().items():
                total[name] = total.get(name, 0.0) + value / len(self.members)
        return total


class CalibratedClassifier:
    """A fitted base model and the monotone map from its scores to probabilities."""

    def __init__(self, base: TrainedModel, method: str, calibrator: Any) -> None:
        self.base = base
        self.method = method
        self.calibrator = calibrator

    @classmethod
    def fit(
        cls, base: TrainedModel, scores: NDArray[np.float64], labels: Any, method: str
    ) -> CalibratedClassifier:
        """Fit the ``method`` calibrator on the base model's ``scores`` of labelled rows."""
        import numpy as np

        y = np.asarray(labels, dtype=np.float64)
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            calibrator: Any = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            calibrator.fit(scores, y)
        else:
            from sklearn.linear_model import LogisticRegression

            calibrator = LogisticRegression(C=1e6, max_iter=1000)
            calibrator.fit(_log_odds(scores), y.astype(int))
        return cls(base, method, calibrator)

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """``[1 - p, p]`` per row, ``p`` the calibrated probability of the base score."""
        import numpy as np

        scores = self.base.predict_proba(np.asarray(X, dtype=np.float64))
        if self.method == "isotonic":
            p = np.asarray(self.calibrator.predict(scores), dtype=np.float64)
        else:
            p = np.asarray(self.calibrator.predict_proba(_log_odds(scores))[:, 1])
        return np.column_stack([1.0 - p, p])

    def feature_importance(self) -> dict[str, float]:
        """The base model's importances (calibration is monotone: it reorders no rows)."""
        return self.base.feature_importance()


def _log_odds(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """The scores' log-odds as one column (clipped away from 0 and 1)."""
    import numpy as np

    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p)).reshape(-1, 1)
