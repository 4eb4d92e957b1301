"""The same LightGBM model behind BentoML, for the serving benchmark (not part of Shipyard).

Run with a Python that has BentoML installed::

    SHIPYARD_BENCH_MODEL=path/to/model.txt bentoml serve bento_service:FraudModel --port 3000
"""

from __future__ import annotations

import os

import bentoml
import numpy as np


@bentoml.service(workers=2)
class FraudModel:
    """LightGBM booster, adaptive batching on."""

    def __init__(self) -> None:
        import lightgbm

        self.booster = lightgbm.Booster(model_file=os.environ["SHIPYARD_BENCH_MODEL"])

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=1000)
    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Fraud probability per row."""
        return np.asarray(self.booster.predict(inputs, num_threads=1))
