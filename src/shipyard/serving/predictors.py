"""Predictors over native model files: no MLflow pyfunc, no pandas on the hot path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shipyard.types import ColumnSpec, Schema

PROBABILITY = Schema((ColumnSpec("probability", "float"),))

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


class NativePredictor:
    """Scores with a LightGBM Booster, an XGBoost Booster or a scikit-learn estimator.

    Load one with ``ModelRegistry.load(name, "champion")``: the file is verified against
    its recorded SHA-256 first.
    """

    def __init__(self, framework: str, model: Any, input_schema: Schema) -> None:
        self.framework = framework
        self.model = model
        self.input_schema = input_schema
        self.output_schema = PROBABILITY

    def predict(self, batch: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probability of the positive class for each row of a 2-D float array."""
        import numpy as np

        if self.framework == "lightgbm":
            return np.asarray(self.model.predict(batch), dtype=np.float64)
        if self.framework == "xgboost":
            import xgboost

            return np.asarray(self.model.predict(xgboost.DMatrix(batch)), dtype=np.float64)
        return np.asarray(self.model.predict_proba(batch)[:, 1], dtype=np.float64)
