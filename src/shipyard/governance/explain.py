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

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from shipyard.errors import ShipyardError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from shipyard.registry.card import CardSection

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
        or a bare LightGBM/XGBoost booster or scikit-learn estimator (its columns are the
        names it was fitted with from a DataFrame, else ``features``, else ``x0, x1 ...``).
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
    booster = _booster(model)
    return booster, _fitted_names(model, booster)


def _fitted_names(model: Any, booster: Any) -> list[str] | None:
    """The column names a bare estimator was fitted with (from a DataFrame), if any."""
    fitted = getattr(model, "feature_names_in_", None)
    if fitted is not None:
        return [str(n) for n in fitted]
    module = type(booster).__module__
    if module.startswith("lightgbm") and hasattr(booster, "feature_name"):
        found = [str(n) for n in booster.feature_name()]
        generic = all(n == f"Column_{j}" for j, n in enumerate(found))
        return None if generic else found
    if module.startswith("xgboost"):
        named = getattr(booster, "feature_names", None)
        return None if named is None else [str(n) for n in named]
    return None


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
        matrix = xgboost.DMatrix(data, nthread=1, feature_names=booster.feature_names)
        out = booster.predict(matrix, pred_contribs=True)
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


def _import_shap(estimator: Any) -> Any:
    """shap (the ``governance`` extra), or UnexplainableModelError saying how to install it."""
    import warnings

    try:
        with warnings.catch_warnings():
            # shap's plotting modules warn about matplotlib on import: not the user's concern
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            import shap  # type: ignore[import-untyped]
    except ImportError:
        raise UnexplainableModelError(
            f"Explaining a {_type_name(estimator)} needs shap: pip install 'shipyard[governance]'"
        ) from None
    return shap


def _sklearn_trees(
    estimator: Any,
) -> Callable[[NDArray[np.float64]], tuple[NDArray[np.float64], float]]:
    import numpy as np

    shap = _import_shap(estimator)
    explainer = shap.TreeExplainer(estimator)
    expected = np.ravel(np.asarray(explainer.expected_value, dtype=np.float64))
    base = float(expected[-1])

    def compute(data: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
        values = np.asarray(explainer.shap_values(data, check_additivity=False), dtype=np.float64)
        if values.ndim == 3:  # (rows, features, classes): the positive class
            values = values[:, :, -1]
        return np.ascontiguousarray(values), base

    return compute


# -- global explanations (the model card) --------------------------------------------------

GLOBAL_EXPLANATION_TITLE = "Global explanations"
NATIVE_ROWS = 500
"""Rows a card's global explanation uses when the model explains itself (boosters, linear):
enough for a stable mean |SHAP|; a 500-tree, 31-leaf LightGBM takes about 4 ms a row."""
SHAP_ROWS = 200
"""Rows it uses when the ``shap`` library does the work (slower: scikit-learn trees)."""


def global_explanation(
    model: Any,
    X: Any,
    folder: Path,
    *,
    title: str,
    max_rows: int | None = None,
    top: int = 3,
    seed: int = 0,
) -> CardSection:
    """The model card's global explanation of evaluation rows ``X``: mean |SHAP| per feature
    (table and bar plot) and dependence plots of the ``top`` features, written to ``folder``.

    At most ``max_rows`` rows, drawn at random with ``seed`` (default :data:`NATIVE_ROWS`,
    :data:`SHAP_ROWS` when shap computes): registration stays fast and the card says so.
    A model that cannot be explained gets a section saying why, not an error.
    """
    import numpy as np

    from shipyard.errors import invalid_parameter
    from shipyard.registry.card import CardSection, embedded_figure
    from shipyard.registry.plots import explanation_plots

    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise invalid_parameter("top", "global_explanation", "an int >= 0", top)
    try:
        explainer = Explainer.of(model)
    except UnexplainableModelError as exc:
        text = f"No global explanation: {exc}"
        return CardSection(GLOBAL_EXPLANATION_TITLE, text, f"<p>{html.escape(text)}</p>")
    matrix = _matrix(X, explainer.features)
    native = explainer.output_space == "log-odds"
    limit = max_rows if max_rows is not None else NATIVE_ROWS if native else SHAP_ROWS
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise invalid_parameter("max_rows", "global_explanation", "an int >= 1", max_rows)
    if len(matrix) == 0:
        raise invalid_parameter("X", "global_explanation", "at least one row", "0 rows")
    if len(matrix) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(len(matrix), limit, replace=False))
        matrix = matrix[rows]
    explanation = explainer(matrix)
    plots = explanation_plots(explanation, folder, title, top)
    importance = explanation.mean_abs()
    space = explanation.output_space
    drawn = (
        f"{len(matrix):,} rows drawn at random (seed {seed}) from the {len(X):,} evaluation rows"
        if len(X) > len(matrix)
        else f"all {len(matrix):,} evaluation rows given"
    )
    how = (
        "exact TreeSHAP of the model itself"
        if explainer.model_type.startswith(("lightgbm", "xgboost"))
        else "exact linear SHAP (standardized features)"
        if native
        else "shap.TreeExplainer"
    )
    intro = (
        f"Mean |SHAP| per feature over {drawn}; {how}, in {space} (base value "
        f"{explanation.base_value:.4f}: the model's average output before any feature). A "
        "larger mean moves decisions more; the dependence plots show how the top features' "
        "values push the output up (toward label 1) or down. Each decision's own reasons are "
        "served with explain=true."
    )
    rows_md = "\n".join(f"| {name} | {value:.4f} |" for name, value in importance.items())
    images_md = "\n".join(f"![{p.stem}](plots/{p.name})" for p in plots)
    markdown = (
        f"{intro}\n\n| feature | mean \\|SHAP\\| ({space}) |\n|---|---|\n{rows_md}\n\n{images_md}"
    )
    esc = html.escape
    rows_html = "".join(
        f"<tr><td>{esc(name)}</td><td>{value:.4f}</td></tr>" for name, value in importance.items()
    )
    body = (
        f"<p>{esc(intro)}</p><table><tr><th>feature</th><th>mean |SHAP| ({esc(space)})</th>"
        f"</tr>{rows_html}</table>" + "".join(embedded_figure(p.stem, p) for p in plots)
    )
    return CardSection(GLOBAL_EXPLANATION_TITLE, markdown, body)
