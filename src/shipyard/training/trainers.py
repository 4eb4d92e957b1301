"""Trainers for LightGBM, XGBoost and scikit-learn behind one small contract.

A model configuration stores its keyword arguments and nothing else (cheap to clone,
compare, log and search over) and declares its hyper-parameter search space;
``fit(X, y)`` does the work and returns a :class:`TrainedModel`, which scores with
``predict_proba`` and saves itself in its framework's native format (LightGBM text,
XGBoost JSON, scikit-learn pickle), each file recorded with its SHA-256 so it is verified
before it is ever loaded again. :class:`NativePredictor` scores a loaded native file
behind the :class:`~shipyard.types.Predictor` contract.

Everything one framework needs lives here: its configuration (parameters, search space,
estimator) and its :class:`NativeFormat` (save, load, score). Adding a framework touches
this module only.

Example::

    config = make_config("lightgbm", n_estimators=200)
    model = config.fit(X_train, y_train)
    scores = model.predict_proba(X_test)
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from shipyard.errors import ParameterError, TrainingError
from shipyard.integrity import file_sha256, verify_sha256
from shipyard.types import ColumnSpec, Schema

if TYPE_CHECKING:
    import numpy as np
    import optuna
    import pandas as pd
    from numpy.typing import NDArray

PROBABILITY = Schema((ColumnSpec("probability", "float"),))
"""The output schema of every binary classifier here: probability of the positive class."""


class ModelConfig:
    """Base of every model configuration: parameters in, a trained model out of ``fit``."""

    model_type: ClassVar[str]
    framework: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ParameterError(
                f"{type(self).__name__} has no parameter {unknown[0]!r}; "
                f"its parameters are {', '.join(sorted(self.defaults))}."
            )
        self.params = {**self.defaults, **params}

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.params.items() if self.defaults.get(k) != v}
        args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ModelConfig)
            and type(other) is type(self)
            and other.params == self.params
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(map(repr, self.params.items())))))

    def get_params(self) -> dict[str, Any]:
        """A copy of the parameters."""
        return dict(self.params)

    def set_params(self, **params: Any) -> ModelConfig:
        """A new configuration with ``params`` changed (the original is untouched)."""
        return type(self)(**{**self.params, **params})

    def build(self) -> Any:
        """A fresh, unfitted estimator."""
        raise NotImplementedError

    @staticmethod
    def search_space(trial: optuna.Trial) -> dict[str, Any]:
        """Parameters for one Optuna trial (what :func:`~shipyard.training.search.search` tunes)."""
        raise NotImplementedError

    def fit(self, X: pd.DataFrame, y: Any) -> TrainedModel:
        """Train on ``X`` (features as columns) and binary labels ``y``."""
        import numpy as np

        labels = np.asarray(y)
        check_labels(self, labels)
        estimator = self.build()
        estimator.fit(X.to_numpy(dtype=np.float64), labels)
        return TrainedModel(self, estimator, Schema.from_frame(X.astype(float)))


def check_labels(config: ModelConfig, labels: Any, part: str = "training window") -> None:
    """TrainingError naming ``config`` and ``part`` if ``labels`` are empty or one class."""
    n = len(labels)
    if n == 0:
        raise TrainingError(f"{config!r}: the {part} holds no rows.")
    positives = int((labels == 1).sum())
    if positives == 0 or positives == n:
        kind = "no positive" if positives == 0 else "only positive"
        raise TrainingError(
            f"{config!r}: the {part} holds {kind} labels among {n:,} rows; "
            "choose a window that contains both classes."
        )


class LogisticRegressionConfig(ModelConfig):
    """Logistic regression on standardized features (scikit-learn)."""

    model_type = "logistic_regression"
    framework = "sklearn"
    defaults: ClassVar[dict[str, Any]] = {"C": 0.1, "max_iter": 1000, "random_state": 0}

    def build(self) -> Any:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(**self.params))

    @staticmethod
    def search_space(trial: optuna.Trial) -> dict[str, Any]:
        """Inverse regularization strength, log-uniform in [1e-3, 10]."""
        return {"C": trial.suggest_float("C", 1e-3, 10.0, log=True)}


class DecisionTreeConfig(ModelConfig):
    """A single decision tree (scikit-learn)."""

    model_type = "decision_tree"
    framework = "sklearn"
    defaults: ClassVar[dict[str, Any]] = {"max_depth": 6, "min_samples_leaf": 1, "random_state": 0}

    def build(self) -> Any:
        from sklearn.tree import DecisionTreeClassifier

        return DecisionTreeClassifier(**self.params)

    @staticmethod
    def search_space(trial: optuna.Trial) -> dict[str, Any]:
        """Depth in [2, 20], leaf size log-uniform in [1, 50]."""
        return {
            "max_depth": trial.suggest_int("max_depth", 2, 20),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 50, log=True),
        }


class RandomForestConfig(ModelConfig):
    """A random forest (scikit-learn)."""

    model_type = "random_forest"
    framework = "sklearn"
    defaults: ClassVar[dict[str, Any]] = {
        "n_estimators": 100,
        "max_depth": 20,
        "min_samples_leaf": 1,
        "n_jobs": -1,
        "random_state": 0,
    }

    def build(self) -> Any:
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(**self.params)

    def fit(self, X: pd.DataFrame, y: Any) -> TrainedModel:
        """Fit on ``n_jobs`` threads, then predict on one: scikit-learn's threaded
        ``predict_proba`` adds the trees' probabilities in whatever order its threads finish,
        so the same model scored the same rows differently in the last bits (on every engine)."""
        model = super().fit(X, y)
        model.estimator.set_params(n_jobs=1)
        return model

    @staticmethod
    def search_space(trial: optuna.Trial) -> dict[str, Any]:
        """Trees in 25..150, depth in [5, 30], leaf size log-uniform in [1, 20]."""
        return {
            "n_estimators": trial.suggest_int("n_estimators", 25, 150, step=25),
            "max_depth": trial.suggest_int("max_depth", 5, 30),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20, log=True),
        }


class XGBoostConfig(ModelConfig):
    """Gradient-boosted trees (XGBoost, ``hist`` method, base score 0.5 fixed).

    ``scale_pos_weight`` weighs each positive row (e.g. negatives / positives to balance
    the classes; its scores then overstate the probability: calibrate them with
    ``CalibratedConfig``); ``max_bin`` is the number of histogram bins per feature (more
    bins let a split fall on an exact amount).
    """

    model_type = "xgboost"
    framework = "xgboost"
    defaults: ClassVar[dict[str, Any]] = {
        "n_estimators": 100,
        "max_depth": 3,
        "learning_rate": 0.1,
        "tree_method": "hist",
        "base_score": 0.5,
        "scale_pos_weight": 1.0,
        "max_bin": 256,
        "n_jobs": 2,
        "random_state": 0,
    }

    def build(self) -> Any:
        from xgboost import XGBClassifier

        return XGBClassifier(**self.params, eval_metric="logloss")

    @staticmethod
    def search_space(trial: optuna.Trial) -> dict[str, Any]:
        """Trees in 25..300, depth in [2, 8], learning rate log-uniform in [0.01, 0.5],
        positive weight log-uniform in [1, 20], 256 or 1024 histogram bins."""
        return {
            "n_estimators": trial.suggest_int("n_estimators", 25, 300, step=25),
            "max_depth": trial.suggest_int("max_depth", 2, 8),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.5, log=True),
            "scale_pos_weight": trial.suggest_float("scale_pos_weight", 1.0, 20.0, log=True),
            "max_bin": trial.suggest_categorical("max_bin", [256, 1024]),
        }


class LightGBMConfig(ModelConfig):
    """Gradient-boosted trees (LightGBM).

    ``scale_pos_weight`` weighs each positive row; ``max_bin`` is the number of histogram
    bins per feature (as for :class:`XGBoostConfig`).
    """

    model_type = "lightgbm"
    framework = "lightgbm"
    defaults: ClassVar[dict[str, Any]] = {
        "n_estimators": 200,
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_child_samples": 20,
        "scale_pos_weight": 1.0,
        "max_bin": 255,
        "n_jobs": 2,
        "random_state": 0,
        "verbose": -1,
    }

    def build(self) -> Any:
        from lightgbm import LGBMClassifier

        return LGBMClassifier(**self.params)

    @staticmethod
    def search_space(trial: optuna.Trial) -> dict[str, Any]:
        """Trees in 50..400, leaves in [7, 63], learning rate and leaf size log-uniform,
        positive weight log-uniform in [1, 20], 256 or 1024 histogram bins."""
        return {
            "n_estimators": trial.suggest_int("n_estimators", 50, 400, step=50),
            "num_leaves": trial.suggest_int("num_leaves", 7, 63),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 5, 100, log=True),
            "scale_pos_weight": trial.suggest_float("scale_pos_weight", 1.0, 20.0, log=True),
            "max_bin": trial.suggest_categorical("max_bin", [256, 1024]),
        }


MODEL_TYPES: dict[str, type[ModelConfig]] = {
    cls.model_type: cls
    for cls in (
        LogisticRegressionConfig,
        DecisionTreeConfig,
        RandomForestConfig,
        XGBoostConfig,
        LightGBMConfig,
    )
}
BASELINE_SUITE = tuple(MODEL_TYPES)
FAMILY_MODULES = (
    "shipyard.training.ensembles",
    "shipyard.training.neural",
    "shipyard.training.text",  # MiniLM classifiers and TF-IDF baselines over raw text
    "shipyard.training.entities",  # the spaCy entity pipelines (English, French)
    "shipyard.training.recommend_format",  # the served recommender's one-file format
    "shipyard.optimize.formats",  # optimized text models (ONNX Runtime, int8)
    "shipyard.scenarios.faults",  # the packaged unit bug of the bad-deploy scenario
    "shipyard.llm.format",  # language models (a GGUF file by reference)
)
"""Modules that add model families (configurations and native formats) when first needed:
each calls :func:`register_model_type` / :func:`register_format` at import and imports its
heavy framework (PyTorch ...) only inside its functions."""
_families_loaded = False


def register_model_type(cls: type[ModelConfig]) -> type[ModelConfig]:
    """Make ``cls`` known to :func:`make_config` under its ``model_type`` (a class decorator)."""
    MODEL_TYPES[cls.model_type] = cls
    return cls


def register_format(framework: str, native: NativeFormat) -> None:
    """Make ``native`` the format of ``framework`` models (save, verified load, scoring)."""
    FORMATS[framework] = native
    NATIVE_FILES[framework] = native.file


def load_families() -> None:
    """Import the modules of :data:`FAMILY_MODULES` once, so their model types are known."""
    global _families_loaded
    if _families_loaded:
        return
    import importlib

    _families_loaded = True
    for module in FAMILY_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module exists but something it imports is missing
                raise


def make_config(model_type: str, **params: Any) -> ModelConfig:
    """The configuration of ``model_type`` (one of :data:`MODEL_TYPES`) with ``params``."""
    if model_type not in MODEL_TYPES:
        load_families()
    cls = MODEL_TYPES.get(model_type)
    if cls is None:
        raise ParameterError(f"Unknown model type {model_type!r}; known: {', '.join(MODEL_TYPES)}.")
    return cls(**params)


class NativeFormat:
    """How one framework's models are saved, loaded and scored in its own file format."""

    file: ClassVar[str]
    mlflow_by_reference: ClassVar[bool] = False
    """True: the registry logs to MLflow a pointer to the native file (its path and SHA-256)
    instead of a copy (a multi-GB recommender); False: MLflow holds its own copy."""

    def save(self, estimator: Any, path: Path) -> None:
        """Write a fitted estimator to ``path``."""
        raise NotImplementedError

    def load(self, path: Path) -> Any:
        """Read back what :meth:`save` wrote (only after its SHA-256 was checked)."""
        raise NotImplementedError

    def predict(self, model: Any, batch: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probability of the positive class for each row, with a model :meth:`load` returned."""
        raise NotImplementedError


class LightGBMFormat(NativeFormat):
    """LightGBM's text model file, scored by a ``lightgbm.Booster``."""

    file = "model.txt"

    def save(self, estimator: Any, path: Path) -> None:
        estimator.booster_.save_model(str(path))

    def load(self, path: Path) -> Any:
        import lightgbm

        return lightgbm.Booster(model_file=str(path))

    def predict(self, model: Any, batch: NDArray[np.float64]) -> NDArray[np.float64]:
        import numpy as np

        return np.asarray(model.predict(batch), dtype=np.float64)


class XGBoostFormat(NativeFormat):
    """XGBoost's JSON model file, scored by an ``xgboost.Booster``."""

    file = "model.json"

    def save(self, estimator: Any, path: Path) -> None:
        estimator.get_booster().save_model(str(path))

    def load(self, path: Path) -> Any:
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(path))
        return booster

    def predict(self, model: Any, batch: NDArray[np.float64]) -> NDArray[np.float64]:
        import numpy as np
        import xgboost

        return np.asarray(model.predict(xgboost.DMatrix(batch)), dtype=np.float64)


class SklearnFormat(NativeFormat):
    """A pickled scikit-learn estimator (loaded only after its SHA-256 matched)."""

    file = "model.pkl"

    def save(self, estimator: Any, path: Path) -> None:
        with path.open("wb") as fh:
            pickle.dump(estimator, fh, protocol=5)

    def load(self, path: Path) -> Any:
        with path.open("rb") as fh:
            return pickle.load(fh)

    def predict(self, model: Any, batch: NDArray[np.float64]) -> NDArray[np.float64]:
        import numpy as np

        return np.asarray(model.predict_proba(batch)[:, 1], dtype=np.float64)


FORMATS: dict[str, NativeFormat] = {
    "lightgbm": LightGBMFormat(),
    "xgboost": XGBoostFormat(),
    "sklearn": SklearnFormat(),
}
"""The native format of each framework a configuration names."""
NATIVE_FILES = {framework: f.file for framework, f in FORMATS.items()}


def native_format(framework: str) -> NativeFormat:
    """The native format of ``framework``; ParameterError naming the known ones otherwise."""
    if framework not in FORMATS:
        load_families()
    found = FORMATS.get(framework)
    if found is None:
        raise ParameterError(
            f"No native format for framework {framework!r}; known: {', '.join(FORMATS)}."
        )
    return found


@dataclass
class TrainedModel:
    """A fitted model with its configuration and input schema."""

    config: ModelConfig
    estimator: Any
    input_schema: Schema

    output_schema: ClassVar[Schema] = PROBABILITY

    @property
    def features(self) -> list[str]:
        """Input feature names, in order."""
        return self.input_schema.names

    def _matrix(self, X: Any) -> NDArray[np.float64]:
        import numpy as np

        if hasattr(X, "columns"):
            missing = [c for c in self.features if c not in X.columns]
            if missing:
                raise TrainingError(
                    f"The data lacks feature(s) {missing} that the model was trained on."
                )
            return np.asarray(X[self.features].to_numpy(dtype=np.float64))
        return np.asarray(X, dtype=np.float64)

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """Probability of the positive class for each row."""
        import numpy as np

        return np.asarray(self.estimator.predict_proba(self._matrix(X))[:, 1], dtype=np.float64)

    def feature_importance(self) -> dict[str, float]:
        """Importance per feature (gain or impurity; |coefficient| for linear models), sums to 1."""
        import numpy as np

        estimator = self.estimator
        if hasattr(estimator, "steps"):
            estimator = estimator.steps[-1][1]
        if hasattr(estimator, "booster_"):  # LightGBM: gain is more telling than split counts
            values = estimator.booster_.feature_importance(importance_type="gain")
        elif hasattr(estimator, "feature_importances_"):
            values = estimator.feature_importances_
        else:
            values = np.abs(np.ravel(estimator.coef_))
        values = np.asarray(values, dtype=float)
        total = values.sum() or 1.0
        return {name: float(v / total) for name, v in zip(self.features, values, strict=True)}

    def save_native(self, folder: Path) -> tuple[Path, str]:
        """Write the model in its framework's native format; return (path, SHA-256)."""
        folder.mkdir(parents=True, exist_ok=True)
        native = native_format(self.config.framework)
        path = folder / native.file
        native.save(self.estimator, path)
        return path, file_sha256(path)

    def clone_config(self) -> ModelConfig:
        """A copy of the configuration this model was trained with."""
        return copy.deepcopy(self.config)


def load_native(framework: str, path: Path, sha256: str) -> Any:
    """Load a native model file after checking its SHA-256; raise IntegrityError if it differs."""
    native = native_format(framework)
    verify_sha256(path, sha256)
    return native.load(path)


class NativePredictor:
    """Scores a native model file (LightGBM, XGBoost, scikit-learn) as a Predictor.

    No MLflow pyfunc and no pandas on the scoring path. Load one with
    ``ModelRegistry.load(name, "champion")``: the file is verified against its recorded
    SHA-256 first.
    """

    def __init__(self, framework: str, model: Any, input_schema: Schema) -> None:
        self.framework = framework
        self.model = model
        self.input_schema = input_schema
        self.output_schema = PROBABILITY
        self._format = native_format(framework)

    def predict(self, batch: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probability of the positive class for each row of a 2-D float array."""
        return self._format.predict(self.model, batch)
