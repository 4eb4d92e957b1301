"""Per-prediction explanations: how much each feature moved one model output.

:func:`explain` returns an :class:`Explanation`: one SHAP attribution per row and feature,
the base value they start from, the feature names and the space they add up in. Gradient
boosted trees (LightGBM, XGBoost) are explained exactly by their own TreeSHAP
(``pred_contrib=True`` / ``pred_contribs=True``) in raw log-odds: cheap enough to serve.
A scikit-learn logistic regression on standardized features is explained exactly in
log-odds too (its attribution is ``coefficient * standardized value``: the scaler's means
are the training means, the background SHAP needs), and scikit-learn trees and forests
through ``shap.TreeExplainer`` (the ``governance`` extra, imported only then) in
probability. Anything else raises :class:`UnexplainableModelError` naming its type.

Reference: Lundberg et al., "From local explanations to global understanding with
explainable AI for trees", Nature Machine Intelligence 2 (2020).

Example::

    explanation = explain(model, X_test)          # a TrainedModel, a loaded version ...
    explanation.values.shape                      # (rows, features)
    explanation.raw_output()                      # base value + attributions, per row
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from shipyard.errors import ShipyardError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

OutputSpace = Literal["log-odds", "probability"]


class UnexplainableModelError(ShipyardError, TypeError):
    """Attributions were asked of a model type Shipyard cannot explain."""


@dataclass(frozen=True)
class Explanation:
    """SHAP attributions of rows: ``base_value + values[i].sum()`` is row i's raw output.

    ``values`` has one row per explained row and one column per feature (``features``, in
    the model's order); ``data`` holds the explained rows themselves; ``output_space`` says
    what the sum is: ``"log-odds"`` (boosted trees, logistic regression: the probability
    is its logistic) or ``"probability"`` (scikit-learn trees and forests).
    """

    values: NDArray[np.float64]
    base_value: float
    features: tuple[str, ...]
    output_space: OutputSpace
    data: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def raw_output(self) -> NDArray[np.float64]:
        """The model's output per row in :attr:`output_space` (base value + attributions)."""
        import numpy as np

        return np.asarray(self.values.sum(axis=1) + self.base_value, dtype=np.float64)

    def probability(self) -> NDArray[np.float64]:
        """The probability of the positive class per row, from the attributions."""
        import numpy as np

        raw = self.raw_output()
        if self.output_space == "probability":
            return raw
        return np.asarray(1.0 / (1.0 + np.exp(-raw)), dtype=np.float64)

    def mean_abs(self) -> dict[str, float]:
        """Mean |attribution| per feature (global importance), largest first."""
        import numpy as np

        means = np.abs(self.values).mean(axis=0) if len(self) else np.zeros(len(self.features))
        order = sorted(range(len(self.features)), key=lambda j: (-means[j], j))
        return {self.features[j]: float(means[j]) for j in order}

    def row(self, i: int) -> dict[str, float]:
        """Row ``i``'s attributions by feature name."""
        return {name: float(v) for name, v in zip(self.features, self.values[i], strict=True)}


class Explainer:
    """Explains rows of one model: built once (at load), called per request.

    ``Explainer.of(model)`` accepts what :func:`explain` accepts; ``explainer(matrix)``
    takes a 2-D float array in the model's feature order.
    """

    def __init__(
        self,
        compute: Callable[[NDArray[np.float64]], tuple[NDArray[np.float64], float]],
        features: Sequence[str],
        output_space: OutputSpace,
        model_type: str,
    ) -> None:
        self._compute = compute
        self.features = tuple(features)
        self.output_space: OutputSpace = output_space
        self.model_type = model_type

    @classmethod
    def of(cls, model: Any, features: Sequence[str] | None = None) -> Explainer:
        """The explainer of ``model``; UnexplainableModelError naming its type otherwise.

        ``model``: a :class:`~shipyard.training.trainers.TrainedModel`, a loaded version
        (:class:`~shipyard.training.trainers.NativePredictor`, from ``ModelRegistry.load``),
        or a bare LightGBM/XGBoost booster or scikit-learn estimator (then ``features``
        names its columns, else ``x0, x1 ...``).
        """
        estimator, names = _unwrap(model)
        names = list(features) if features is not None else names
        compute, space = _backend(estimator, model)
        n = _n_features(estimator)
        if names is None:
            names = [f"x{j}" for j in range(n)] if n is not None else None
        if names is None:
            raise UnexplainableModelError(
                f"{type(model).__name__}: its feature count is unknown; pass features=[...]"
            )
        if n is not None and n != len(names):
            from shipyard.errors import invalid_parameter

            raise invalid_parameter(
                "features", "Explainer.of", f"{n} names (the model's inputs)", list(names)
            )
        return cls(compute, names, space, _type_name(estimator))

    def __call__(self, matrix: NDArray[np.float64]) -> Explanation:
        """The explanation of ``matrix``'s rows (columns in the model's feature order)."""
        import numpy as np

        data = np.asarray(matrix, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != len(self.features):
            from shipyard.errors import invalid_parameter

            raise invalid_parameter(
                "X",
                "explain",
                f"a 2-D array of {len(self.features)} columns ({', '.join(self.features)})",
                f"an array of shape {list(data.shape)}",
            )
        values, base = self._compute(data)
        return Explanation(values, base, self.features, self.output_space, data)


def explain(model: Any, X: Any, *, features: Sequence[str] | None = None) -> Explanation:
    """Attribute each row's output to the features (exact TreeSHAP for boosted trees).

    ``X``: a DataFrame (its model columns are taken by name) or a 2-D array in the
    model's order. See :meth:`Explainer.of` for what ``model`` may be.
    """
    explainer = Explainer.of(model, features)
    return explainer(_matrix(X, explainer.features))


# -- internals -----------------------------------------------------------------------------


def _matrix(X: Any, features: tuple[str, ...]) -> NDArray[np.float64]:
    import numpy as np

    if hasattr(X, "columns"):
        missing = [name for name in features if name not in X.columns]
        if missing:
            from shipyard.errors import SchemaError

            raise SchemaError(f"explain: the data lacks the model's feature(s) {missing}")
        return np.asarray(X[list(features)].to_numpy(dtype=np.float64))
    return np.asarray(X, dtype=np.float64)


def _unwrap(model: Any) -> tuple[Any, list[str] | None]:
    """The estimator or booster inside ``model``, and its feature names when known."""
    from shipyard.training.trainers import NativePredictor, TrainedModel

    if isinstance(model, TrainedModel):
        return _booster(model.estimator), list(model.features)
    if isinstance(model, NativePredictor):
        return model.model, list(model.input_schema.names)
    return _booster(model), None


def _booster(estimator: Any) -> Any:
    """A fitted LightGBM/XGBoost scikit-learn wrapper's booster; anything else unchanged."""
    module = type(estimator).__module__
    if module.startswith("lightgbm") and hasattr(estimator, "booster_"):
        return estimator.booster_
    if module.startswith("xgboost") and hasattr(estimator, "get_booster"):
        return estimator.get_booster()
    return estimator


def _type_name(estimator: Any) -> str:
    return f"{type(estimator).__module__}.{type(estimator).__qualname__}"


def _n_features(estimator: Any) -> int | None:
    module = type(estimator).__module__
    if module.startswith("lightgbm"):
        return int(estimator.num_feature())
    if module.startswith("xgboost"):
        return int(estimator.num_features())
    n = getattr(estimator, "n_features_in_", None)
    return int(n) if n is not None else None


def _backend(
    estimator: Any, original: Any
) -> tuple[Callable[[NDArray[np.float64]], tuple[NDArray[np.float64], float]], OutputSpace]:
    module = type(estimator).__module__
    if module.startswith("lightgbm") and type(estimator).__name__ == "Booster":
        return _lightgbm(estimator), "log-odds"
    if module.startswith("xgboost") and type(estimator).__name__ == "Booster":
        return _xgboost(estimator), "log-odds"
    linear = _standardized_logistic(estimator)
    if linear is not None:
        return linear, "log-odds"
    if module.startswith("sklearn") and (
        hasattr(estimator, "tree_") or hasattr(estimator, "estimators_")
    ):
        return _sklearn_trees(estimator), "probability"
    raise UnexplainableModelError(
        f"Cannot explain a model of type {_type_name(original)}: Shipyard explains LightGBM "
        "and XGBoost boosters, scikit-learn decision trees and random forests, and "
        "StandardScaler + LogisticRegression pipelines."
    )


def _lightgbm(booster: Any) -> Callable[[NDArray[np.float64]], tuple[NDArray[np.float64], float]]:
    import numpy as np

    def compute(data: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
        # one thread: a served request is a few rows, and workers scale by process
        out = np.asarray(booster.predict(data, pred_contrib=True, num_threads=1), dtype=np.float64)
        return _split(out, data)

    return compute


def _xgboost(booster: Any) -> Callable[[NDArray[np.float64]], tuple[NDArray[np.float64], float]]:
    import numpy as np
    import xgboost

    def compute(data: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
        out = booster.predict(xgboost.DMatrix(data, nthread=1), pred_contribs=True)
        return _split(np.asarray(out, dtype=np.float64), data)

    return compute


def _split(
    out: NDArray[np.float64], data: NDArray[np.float64]
) -> tuple[NDArray[np.float64], float]:
    """Native contribution output (features, then the bias column) as (values, base)."""
    import numpy as np

    if out.ndim != 2 or out.shape[1] != data.shape[1] + 1:
        raise UnexplainableModelError(
            f"the booster's contribution output has shape {list(out.shape)}; a binary "
            f"classifier of {data.shape[1]} features gives [n, {data.shape[1] + 1}]"
        )
    base = float(out[0, -1]) if len(out) else 0.0
    return np.ascontiguousarray(out[:, :-1]), base


def _standardized_logistic(
    estimator: Any,
) -> Callable[[NDArray[np.float64]], tuple[NDArray[np.float64], float]] | None:
    """Exact linear SHAP of ``make_pipeline(StandardScaler(), LogisticRegression())``."""
    import numpy as np

    steps = getattr(estimator, "steps", None)
    if not steps or len(steps) != 2:
        return None
    scaler, linear = steps[0][1], steps[1][1]
    if type(scaler).__name__ != "StandardScaler" or type(linear).__name__ != "LogisticRegression":
        return None
    coef = np.ravel(linear.coef_).astype(np.float64)
    if coef.size != np.ravel(scaler.mean_).size:
        return None
    base = float(np.ravel(linear.intercept_)[0])

    def compute(data: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
        standardized = scaler.transform(data)
        return np.asarray(standardized * coef, dtype=np.float64), base

    return compute


def _sklearn_trees(
    estimator: Any,
) -> Callable[[NDArray[np.float64]], tuple[NDArray[np.float64], float]]:
    import numpy as np

    try:
        import shap  # type: ignore[import-untyped]
    except ImportError:
        raise UnexplainableModelError(
            f"Explaining a {_type_name(estimator)} needs shap: pip install 'shipyard[governance]'"
        ) from None
    explainer = shap.TreeExplainer(estimator)
    expected = np.ravel(np.asarray(explainer.expected_value, dtype=np.float64))
    base = float(expected[-1])

    def compute(data: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
        values = np.asarray(explainer.shap_values(data, check_additivity=False), dtype=np.float64)
        if values.ndim == 3:  # (rows, features, classes): the positive class
            values = values[:, :, -1]
        return np.ascontiguousarray(values), base

    return compute
