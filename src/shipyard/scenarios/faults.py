"""A broken feature transformation packaged with a model: amounts in cents instead of units.

The realistic bug of a bad deploy: the model is right, the code packaged around it is not.
:class:`UnitScaledClassifier` wraps a base model and a per-column unit scale
(``{"TX_AMOUNT": 100.0}``: amounts converted to cents before the model sees them, while
it learned on units); :meth:`~UnitScaledClassifier.preprocess` returns the inputs the core
model sees, and the score is ``base(preprocess(rows))``. With every factor 1 it is the
fixed version: the same package with the conversion removed.

It is a model family like any other (``make_config("unit_scaled", base="lightgbm",
scale={"TX_AMOUNT": 100.0})``: ``fit`` trains the base on the inputs as given, and scoring
rescales them first), saved as a hash-verified scikit-learn pickle (``framework =
"sklearn"``, as :mod:`shipyard.training.ensembles` does): loading the file imports this
module, so ``shipyard serve`` scores it with the native backend (no ONNX converter knows it).
:func:`register_unit_fault` wraps an already registered version (the champion) and
registers the package as a new version of the same model, with its input schema and lineage.

Example::

    broken = register_unit_fault(ws, "fraud", champion.version, scale={"TX_AMOUNT": 100.0})
    fixed = register_unit_fault(ws, "fraud", champion.version, scale={"TX_AMOUNT": 1.0})
    registry.load("fraud", broken.version).model.preprocess(rows)  # what the model saw
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from shipyard.errors import invalid_parameter
from shipyard.training.trainers import (
    ModelConfig,
    NativePredictor,
    TrainedModel,
    make_config,
    register_model_type,
)
from shipyard.types import Schema

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.registry.models import ModelVersion
    from shipyard.training.evaluation import Evaluation
    from shipyard.workspace import Workspace

CENTS = {"TX_AMOUNT": 100.0}
"""The bug: amounts converted to cents, for a model that learned on units."""
EXPERIMENT = "faults"
"""The MLflow experiment of the wrapped versions' evaluation runs."""


def check_scale(scale: Any, columns: Sequence[str], owner: str) -> dict[str, float]:
    """``scale`` as ``{column: factor}``; ParameterError naming what is wrong otherwise.

    Each column must be one of ``columns``, each factor a finite number > 0.
    """
    if not isinstance(scale, Mapping) or not scale:
        raise invalid_parameter("scale", owner, "a non-empty {column: factor} mapping", scale)
    checked: dict[str, float] = {}
    for column, factor in scale.items():
        if column not in columns:
            raise invalid_parameter(
                "scale", owner, f"columns among the model's inputs ({', '.join(columns)})", column
            )
        if (
            isinstance(factor, bool)
            or not isinstance(factor, int | float)
            or not math.isfinite(factor)
            or factor <= 0
        ):
            raise invalid_parameter("scale", owner, f"a finite factor > 0 for {column}", factor)
        checked[str(column)] = float(factor)
    return checked


class UnitScaledClassifier:
    """A base model behind a per-column unit conversion: ``base(preprocess(rows))``.

    ``base`` is a :class:`~shipyard.training.trainers.TrainedModel` (the family's ``fit``)
    or a loaded :class:`~shipyard.training.trainers.NativePredictor` (a registered version
    wrapped by :func:`register_unit_fault`); ``columns`` are the model's inputs in order.
    """

    def __init__(
        self, base: TrainedModel | NativePredictor, columns: Sequence[str], scale: Mapping[str, Any]
    ) -> None:
        self.base = base
        self.columns = tuple(columns)
        self.scale = check_scale(scale, self.columns, type(self).__name__)

    def preprocess(self, matrix: NDArray[np.float64]) -> NDArray[np.float64]:
        """The inputs the core model sees: a new array, each scaled column times its factor."""
        import numpy as np

        rows = np.array(matrix, dtype=np.float64)  # a copy: the caller's rows stay as they were
        if rows.ndim != 2 or rows.shape[1] != len(self.columns):
            raise invalid_parameter(
                "matrix",
                "UnitScaledClassifier.preprocess",
                f"a 2-D array of {len(self.columns)} columns",
                f"an array of shape {list(rows.shape)}",
            )
        for column, factor in self.scale.items():
            rows[:, self.columns.index(column)] *= factor
        return rows

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """``[1 - p, p]`` per row, ``p`` the base model's score of the preprocessed rows."""
        import numpy as np

        rows = self.preprocess(np.asarray(X, dtype=np.float64))
        if isinstance(self.base, TrainedModel):
            p = self.base.predict_proba(rows)
        else:
            p = self.base.predict(rows)
        return np.column_stack([1.0 - p, p])

    def feature_importance(self) -> dict[str, float]:
        """The base model's importances (a unit conversion reorders no feature)."""
        if isinstance(self.base, TrainedModel):
            return self.base.feature_importance()
        return _booster_importance(self.base)


def _booster_importance(predictor: NativePredictor) -> dict[str, float]:
    """Gain importance of a loaded LightGBM or XGBoost booster, summing to 1 (else equal)."""
    import numpy as np

    names = predictor.input_schema.names
    booster = predictor.model
    if predictor.framework == "lightgbm":
        values = np.asarray(booster.feature_importance(importance_type="gain"), dtype=float)
    elif predictor.framework == "xgboost":
        gains = booster.get_score(importance_type="gain")
        keys = booster.feature_names or [f"f{j}" for j in range(len(names))]
        values = np.array([gains.get(k, 0.0) for k in keys], dtype=float)
    else:
        values = np.ones(len(names))
    total = values.sum() or 1.0
    return {name: float(v / total) for name, v in zip(names, values, strict=True)}


@dataclass
class UnitScaledModel(TrainedModel):
    """A trained unit-scaled package: scores, saves (pickle, SHA-256) and registers as any model."""

    def feature_importance(self) -> dict[str, float]:
        """The base model's importances."""
        importances: dict[str, float] = self.estimator.feature_importance()
        return {name: importances[name] for name in self.features}


@register_model_type
class UnitScaledConfig(ModelConfig):
    """A ``base`` model type trained on the inputs as given, packaged with a unit conversion
    (``scale``: ``{column: factor}``) applied to the inputs before every score.

    ``base_params`` are the base's parameters (less ``random_state``: this configuration's
    seeds it). ``scale={"TX_AMOUNT": 100.0}`` is the cents bug; factors of 1 change nothing.
    """

    model_type = "unit_scaled"
    framework = "sklearn"
    defaults: ClassVar[dict[str, Any]] = {
        "base": "lightgbm",
        "base_params": {},
        "scale": dict(CENTS),
        "random_state": 0,
    }

    def base_config(self) -> ModelConfig:
        """The base model's configuration, seeded with our ``random_state``."""
        owner = type(self).__name__
        base, params = self.params["base"], self.params["base_params"]
        if base == self.model_type:
            raise invalid_parameter("base", owner, "a model type other than 'unit_scaled'", base)
        if not isinstance(params, dict) or "random_state" in params:
            raise invalid_parameter(
                "base_params", owner, "a dict of the base's parameters without random_state", params
            )
        config = make_config(base, **params)
        if "random_state" in config.defaults:
            config = config.set_params(random_state=self.params["random_state"])
        return config

    def build(self) -> Any:
        """Not used: the package is assembled by ``fit`` around a fitted base model."""
        from shipyard.errors import TrainingError

        raise TrainingError(f"{type(self).__name__} is trained with fit(X, y), not build().")

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Nothing to tune: the unit conversion is a fault, not a hyper-parameter."""
        return {}

    def fit(self, X: pd.DataFrame, y: Any) -> UnitScaledModel:
        """Train the base on ``X`` as given; scoring will rescale the inputs first."""
        columns = [str(c) for c in X.columns]
        check_scale(self.params["scale"], columns, type(self).__name__)
        base = self.base_config().fit(X, y)
        estimator = UnitScaledClassifier(base, columns, self.params["scale"])
        return UnitScaledModel(self, estimator, Schema.from_frame(X.astype(float)))


def register_unit_fault(
    workspace: Workspace,
    model: str,
    version: int,
    *,
    scale: Mapping[str, Any],
    reason: str | None = None,
    actor: str | None = None,
) -> ModelVersion:
    """Register ``model`` v``version`` packaged with the unit ``scale`` as a new version.

    The new version wraps the registered model file (loaded hash-verified), keeps its input
    schema and lineage (same data set, views and windows), and is evaluated on its evaluation
    window in an MLflow run of its own. It gets the ``challenger`` alias, not ``champion``:
    deploy it with a traffic policy. Example::

        register_unit_fault(ws, "fraud", 3, scale={"TX_AMOUNT": 100.0})  # the cents bug
    """
    from shipyard.registry.models import ModelRegistry
    from shipyard.training.frames import Window, load_frame

    registry = ModelRegistry(workspace)
    wrapped = registry.get(model, version)
    names = wrapped.input_schema.names
    checked = check_scale(scale, names, "register_unit_fault")
    base_params = {k: v for k, v in wrapped.params.items() if k != "random_state"}
    config = UnitScaledConfig(
        base=wrapped.model_type,
        base_params=base_params,
        scale=checked,
        random_state=int(wrapped.params.get("random_state", 0)),
    )
    estimator = UnitScaledClassifier(registry.load(model, version), names, checked)
    package = UnitScaledModel(config, estimator, wrapped.input_schema)
    frame = load_frame(workspace, Window.from_dict(wrapped.eval_window))
    evaluation = _evaluation(package, wrapped, frame)
    described = ", ".join(f"{c} x{f:g}" for c, f in checked.items())
    run_id = registry.tracker.log_evaluation(
        EXPERIMENT,
        f"{model}-v{version}-unit-scaled",
        evaluation,
        params={"wraps": f"{model} v{version}", "scale": described},
        tags={"shipyard.wraps": f"{model}:{version}"},
    )
    return registry.register(
        model,
        package,
        lineage=wrapped.lineage,
        evaluation=evaluation,
        run_id=run_id,
        sample=frame[names].head(500),
        actor=actor,
        reason=reason or f"v{version} packaged with the unit conversion {described}",
    )


def _evaluation(package: UnitScaledModel, wrapped: ModelVersion, frame: pd.DataFrame) -> Evaluation:
    """The package on the wrapped version's evaluation window: one fold, no interval."""
    from datetime import date

    import numpy as np

    from shipyard.training.crossval import fold_metrics
    from shipyard.training.evaluation import Evaluation, FoldResult
    from shipyard.training.splits import Fold

    columns = wrapped.lineage.columns
    labels = frame[columns.label].to_numpy()
    scores = package.predict_proba(frame[wrapped.input_schema.names])
    train, test = wrapped.lineage.train_window, wrapped.lineage.eval_window
    assert train is not None and test is not None  # a registered version records both
    fold = Fold(
        0,
        np.arange(0, dtype=np.int64),
        np.arange(len(frame), dtype=np.int64),
        date.fromisoformat(train[0][:10]),
        date.fromisoformat(train[1][:10]),
        date.fromisoformat(test[0][:10]),
        date.fromisoformat(test[1][:10]),
    )
    result = FoldResult(fold, fold_metrics(labels, scores), labels, scores, {}, package)
    return Evaluation(package.config, [result])
