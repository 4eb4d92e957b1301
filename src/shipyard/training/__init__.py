"""Training: model configurations, time-aware splits, metrics, evaluation and search."""

from shipyard.training.evaluation import Evaluation, evaluate
from shipyard.training.splits import Fold, HoldoutSplit, PrequentialSplit
from shipyard.training.trainers import (
    BASELINE_SUITE,
    MODEL_TYPES,
    ModelConfig,
    TrainedModel,
    make_config,
)

__all__ = [
    "BASELINE_SUITE",
    "MODEL_TYPES",
    "Evaluation",
    "Fold",
    "HoldoutSplit",
    "ModelConfig",
    "PrequentialSplit",
    "TrainedModel",
    "evaluate",
    "make_config",
]
