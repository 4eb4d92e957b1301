"""PyTorch model families: a feed-forward network and a GRU sequence model (framework ``torch``).

Both train the same way: features are imputed (each non-finite value becomes its column's
median over the training rows; nothing else is added) and standardized with the training
rows' mean and standard deviation, all three stored with the model; AdamW minimizes
``BCEWithLogitsLoss`` with the ``pos_weight`` parameter for class imbalance; the last
``validation_fraction`` of the rows, in the order given (time order), is held out for early
stopping on its loss, and the weights of the best epoch are kept. Training is seeded by
``random_state`` and reproducible: the same seed and thread count give identical scores.
Each epoch's training loss, validation loss and validation average precision are kept in
``model.estimator.history`` (:class:`EpochRecord`), for logging per epoch.

The native format ``torch`` is one file, ``model.pt``: a dict of tensors and a JSON
description written by ``torch.save`` and read back with ``torch.load(weights_only=True)``
(no pickled code), after its SHA-256 was checked. Scoring runs in float64.

PyTorch is imported inside functions only: importing this module is cheap, and it registers
its model types and format with :mod:`shipyard.training.trainers` (which imports it on first
need).

Example::

    model = make_config("feedforward", width=128, depth=2, max_epochs=20).fit(X, y)
    for epoch in model.estimator.history:
        print(epoch.metrics())
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from shipyard.errors import IntegrityError, TrainingError, invalid_parameter
from shipyard.training.sequences import sequence_layout
from shipyard.training.trainers import (
    ModelConfig,
    NativeFormat,
    TrainedModel,
    check_labels,
    register_format,
    register_model_type,
)
from shipyard.types import Schema

if TYPE_CHECKING:
    import numpy as np
    import optuna
    import pandas as pd
    import torch
    from numpy.typing import NDArray

FORMAT_VERSION = "shipyard.torch/1"
_CHUNK = 65_536  # rows scored at once: bounds memory on large frames
_IMPORTANCE_ROWS = 4_096


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number(check: Callable[[float], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and check(float(v))


_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "width": (_int_at_least(1), "an int >= 1"),
    "depth": (_int_at_least(0), "an int >= 0"),
    "dropout": (_number(lambda v: 0 <= v < 1), "a float in [0, 1)"),
    "learning_rate": (_number(lambda v: v > 0), "a float > 0"),
    "weight_decay": (_number(lambda v: v >= 0), "a float >= 0"),
    "batch_size": (_int_at_least(1), "an int >= 1"),
    "max_epochs": (_int_at_least(1), "an int >= 1"),
    "patience": (_int_at_least(1), "an int >= 1"),
    "validation_fraction": (_number(lambda v: 0 <= v <= 0.5), "a float in [0, 0.5]"),
    "pos_weight": (_number(lambda v: v > 0 and math.isfinite(v)), "a finite float > 0"),
    "n_jobs": (_int_at_least(1), "an int >= 1"),
    "random_state": (_int_at_least(0), "an int >= 0"),
    "gru_hidden": (_int_at_least(1), "an int >= 1"),
}


@dataclass(frozen=True)
class EpochRecord:
    """One training epoch: mean training loss, validation loss and average precision.

    The validation values are NaN without a validation slice (and the average precision
    when that slice holds no positive).
    """

    epoch: int
    train_loss: float
    validation_loss: float
    validation_average_precision: float

    def metrics(self) -> dict[str, float]:
        """The values as MLflow metric names (log them with ``step=epoch``)."""
        return {k: v for k, v in asdict(self).items() if k != "epoch"}


class TorchConfig(ModelConfig):
    """What the PyTorch families share: parameter rules, the training loop, the native format."""

    framework = "torch"
    shared: ClassVar[dict[str, Any]] = {
        "width": 64,
        "depth": 2,
        "dropout": 0.1,
        "learning_rate": 1e-3,
        "weight_decay": 1e-4,
        "batch_size": 1024,
        "max_epochs": 30,
        "patience": 3,
        "validation_fraction": 0.1,
        "pos_weight": 1.0,
        "n_jobs": 1,  # these networks are small: on a busy machine 2 threads ran 15x slower
        "random_state": 0,
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        for name, value in self.params.items():
            check, expected = _RULES[name]
            if not check(value):
                raise invalid_parameter(name, type(self).__name__, expected, value)

    def architecture(self, features: list[str]) -> dict[str, Any]:
        """The JSON-able description of the network for these input columns."""
        raise NotImplementedError

    def hidden(self) -> list[int]:
        """The hidden layers' sizes: ``depth`` layers of ``width``, halving (at least 4 units)."""
        return [max(self.params["width"] >> i, 4) for i in range(self.params["depth"])]

    def build(self) -> Any:
        """Not used: a PyTorch model needs its input columns; call :meth:`fit`."""
        raise TrainingError(f"{type(self).__name__} builds its network in fit(X, y).")

    @staticmethod
    def search_space(trial: optuna.Trial) -> dict[str, Any]:
        """Width 32..256, depth 1..3, dropout, AdamW's rates, batch size, ``pos_weight``."""
        return {
            "width": trial.suggest_categorical("width", [32, 64, 128, 256]),
            "depth": trial.suggest_int("depth", 1, 3),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [256, 512, 1024, 2048]),
            "pos_weight": trial.suggest_float("pos_weight", 1.0, 30.0, log=True),
        }

    def fit(self, X: pd.DataFrame, y: Any) -> TrainedModel:
        """Train on ``X`` (rows in time order; the last ones validate) and binary labels ``y``."""
        import numpy as np

        labels = np.asarray(y, dtype=np.float64)
        if len(labels) != len(X):
            raise TrainingError(
                f"{self!r}: {len(X):,} rows of features but {len(labels):,} labels."
            )
        n_validation = int(len(labels) * self.params["validation_fraction"])
        n_train = len(labels) - n_validation
        for part, rows in (("training window", labels), ("training slice", labels[:n_train])):
            check_labels(self, rows, part)
        features = [str(c) for c in X.columns]
        matrix = X.to_numpy(dtype=np.float64)
        classifier = TorchClassifier.train(
            self.architecture(features), self.params, matrix, labels, n_train
        )
        return TrainedModel(self, classifier, Schema.from_frame(X.astype(float)))


@register_model_type
class FeedForwardConfig(TorchConfig):
    """A multi-layer perceptron (ReLU, dropout) on imputed, standardized features (PyTorch)."""

    model_type = "feedforward"
    defaults: ClassVar[dict[str, Any]] = dict(TorchConfig.shared)

    def architecture(self, features: list[str]) -> dict[str, Any]:
        """An MLP over all the columns."""
        return {
            "architecture": "feedforward",
            "features": features,
            "hidden": self.hidden(),
            "dropout": float(self.params["dropout"]),
        }


@register_model_type
class SequenceConfig(TorchConfig):
    """A GRU over the entity's previous transactions plus the current row's features (PyTorch).

    The sequence comes as lag columns ``SEQ_{i}_{column}`` (see
    :func:`~shipyard.training.sequences.add_sequence_columns`); every other column is a
    feature of the current row. The GRU reads the steps oldest first; its last state and the
    current row's features feed an MLP of :meth:`hidden` sizes. The lag columns are an offline
    construction: serving this model needs the entity's recent events online, which the
    streaming state keeps but no feature view exposes yet.
    """

    model_type = "sequence"
    defaults: ClassVar[dict[str, Any]] = {**TorchConfig.shared, "depth": 1, "gru_hidden": 32}

    def architecture(self, features: list[str]) -> dict[str, Any]:
        """A GRU over the lag columns' steps, joined with the other columns by an MLP."""
        layout = sequence_layout(features)
        return {
            "architecture": "sequence",
            "features": features,
            "hidden": self.hidden(),
            "dropout": float(self.params["dropout"]),
            "gru_hidden": int(self.params["gru_hidden"]),
            "steps": [list(step) for step in layout.steps],
            "tabular": list(layout.tabular),
        }

    @staticmethod
    def search_space(trial: optuna.Trial) -> dict[str, Any]:
        """The feed-forward space, plus the GRU's state size in 8..64."""
        return {
            **TorchConfig.search_space(trial),
            "gru_hidden": trial.suggest_categorical("gru_hidden", [8, 16, 32, 64]),
        }


@contextmanager
def _training_context(n_jobs: int, seed: int) -> Iterator[None]:
    """Seeded, deterministic, ``n_jobs`` threads; the process's torch settings come back after."""
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(n_jobs)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic)
            torch.set_num_threads(threads)


@cache
def _sequence_module() -> type[torch.nn.Module]:
    import torch
    from torch import nn

    class SequenceNetwork(nn.Module):
        """GRU over the steps (oldest first), its last state joined with the tabular columns."""

        def __init__(self, spec: dict[str, Any]) -> None:
            super().__init__()
            # column indices, not weights: plain attributes, outside the state dict
            self.steps = torch.tensor(spec["steps"][::-1], dtype=torch.long)  # oldest first
            self.tabular = torch.tensor(spec["tabular"], dtype=torch.long)
            self.gru = nn.GRU(self.steps.shape[1], spec["gru_hidden"], batch_first=True)
            self.head = _mlp(spec["gru_hidden"] + len(spec["tabular"]), spec)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _, last = self.gru(x[:, self.steps])
            return self.head(torch.cat([last[0], x[:, self.tabular]], dim=1))  # type: ignore[no-any-return]

    return SequenceNetwork


def _mlp(n_inputs: int, spec: dict[str, Any]) -> torch.nn.Module:
    from torch import nn

    layers: list[nn.Module] = []
    for width in spec["hidden"]:
        layers += [nn.Linear(n_inputs, width), nn.ReLU(), nn.Dropout(spec["dropout"])]
        n_inputs = width
    layers.append(nn.Linear(n_inputs, 1))
    return nn.Sequential(*layers)


def _network(spec: dict[str, Any]) -> torch.nn.Module:
    if spec["architecture"] == "feedforward":
        return _mlp(len(spec["features"]), spec)
    if spec["architecture"] == "sequence":
        return _sequence_module()(spec)
    raise IntegrityError(f"Unknown network architecture {spec['architecture']!r} in a torch model.")


class TorchClassifier:
    """A trained network with its input preparation: what ``model.pt`` holds.

    ``predict_proba`` imputes and standardizes a float64 batch with the stored statistics
    and scores it in float64. ``feature_importances_`` is the mean |gradient x input| of the
    logit over up to 4,096 training rows, inputs standardized (so 0 is the training mean): a
    first-order attribution, not a permutation test; it ignores interactions.
    """

    def __init__(
        self,
        spec: dict[str, Any],
        state: dict[str, torch.Tensor],
        statistics: dict[str, NDArray[np.float64]],
        history: list[EpochRecord],
        best_epoch: int,
    ) -> None:
        self.spec = spec
        self.state = state
        self.median = statistics["median"]
        self.mean = statistics["mean"]
        self.scale = statistics["scale"]
        self.feature_importances_ = statistics["importance"]
        self.history = history
        self.best_epoch = best_epoch
        import torch

        with torch.random.fork_rng(devices=[]):  # building draws initial weights: not ours to move
            network = _network(spec)
        network.load_state_dict(state)
        self._network = network.double().eval()

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as what ``model.pt`` holds (MLflow's flavour pickles the estimator)."""
        return (TorchClassifier.from_payload, (self.to_payload(),))

    @property
    def features(self) -> list[str]:
        """The input columns, in order."""
        return list(self.spec["features"])

    def prepare(self, batch: NDArray[np.float64]) -> NDArray[np.float64]:
        """Impute non-finite values with the training medians, then standardize (a copy)."""
        return _prepare(batch, self.median, self.mean, self.scale)

    def decision_function(self, batch: NDArray[np.float64]) -> NDArray[np.float64]:
        """The logit of each row."""
        import numpy as np
        import torch

        prepared = self.prepare(batch)
        out = np.empty(len(prepared), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(prepared), _CHUNK):
                chunk = torch.from_numpy(prepared[start : start + _CHUNK])
                out[start : start + _CHUNK] = self._network(chunk)[:, 0].numpy()
        return out

    def predict_proba(self, batch: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probabilities of the negative and positive class, one row per input row."""
        import numpy as np

        positive = 1.0 / (1.0 + np.exp(-self.decision_function(batch)))
        return np.column_stack([1.0 - positive, positive])

    @classmethod
    def train(
        cls,
        spec: dict[str, Any],
        params: dict[str, Any],
        matrix: NDArray[np.float64],
        labels: NDArray[np.float64],
        n_train: int,
    ) -> TorchClassifier:
        """Fit a network of ``spec`` on the first ``n_train`` rows; the rest validate."""
        import numpy as np
        import torch

        from shipyard.training.metrics import average_precision

        statistics = _statistics(matrix[:n_train])
        prepared = _prepare(matrix, statistics["median"], statistics["mean"], statistics["scale"])
        x = torch.from_numpy(prepared.astype(np.float32))
        target = torch.from_numpy(labels.astype(np.float32))
        x_train, y_train, x_valid, y_valid = (
            x[:n_train],
            target[:n_train],
            x[n_train:],
            target[n_train:],
        )
        validate = len(y_valid) > 0
        has_positive = bool(y_valid.sum() > 0)
        history: list[EpochRecord] = []
        with _training_context(params["n_jobs"], params["random_state"]):
            network = _network(spec)
            optimizer = torch.optim.AdamW(
                network.parameters(),
                lr=params["learning_rate"],
                weight_decay=params["weight_decay"],
            )
            loss = torch.nn.BCEWithLogitsLoss(
                pos_weight=torch.tensor([float(params["pos_weight"])])
            )
            order = torch.Generator().manual_seed(params["random_state"])
            best_loss, best_epoch, waited = math.inf, 0, 0
            best_state = _copy_state(network)
            batch_size = params["batch_size"]
            for epoch in range(1, params["max_epochs"] + 1):
                network.train()
                total = 0.0
                for rows in torch.split(torch.randperm(n_train, generator=order), batch_size):
                    optimizer.zero_grad()
                    value = loss(network(x_train[rows])[:, 0], y_train[rows])
                    value.backward()
                    optimizer.step()
                    total += float(value.detach()) * len(rows)
                valid_loss = valid_ap = math.nan
                if validate:
                    network.eval()
                    with torch.inference_mode():
                        logits = torch.cat([network(c)[:, 0] for c in torch.split(x_valid, _CHUNK)])
                        valid_loss = float(loss(logits, y_valid))
                    if has_positive:
                        valid_ap = average_precision(y_valid.numpy(), logits.numpy())
                history.append(EpochRecord(epoch, total / n_train, valid_loss, valid_ap))
                if not validate or valid_loss < best_loss:
                    best_loss, best_epoch, waited = valid_loss, epoch, 0
                    best_state = _copy_state(network)
                else:
                    waited += 1
                    if waited >= params["patience"]:
                        break
        trained = cls(spec, best_state, statistics, history, best_epoch)
        trained.feature_importances_ = trained.gradient_x_input(prepared[:n_train])
        return trained

    def gradient_x_input(self, prepared: NDArray[np.float64]) -> NDArray[np.float64]:
        """Mean |d logit / d x * x| per column over up to 4,096 evenly spaced prepared rows."""
        import numpy as np
        import torch

        rows = np.linspace(0, len(prepared) - 1, min(len(prepared), _IMPORTANCE_ROWS)).astype(int)
        x = torch.from_numpy(prepared[rows]).requires_grad_(True)
        self._network(x)[:, 0].sum().backward()
        assert x.grad is not None
        return np.asarray((x.grad * x).abs().mean(dim=0).detach().numpy(), dtype=np.float64)

    def to_payload(self) -> dict[str, Any]:
        """What ``model.pt`` stores: tensors and one JSON string (``torch.load``-safe)."""
        import torch

        return {
            "format": FORMAT_VERSION,
            "spec": json.dumps(
                {
                    **self.spec,
                    "best_epoch": self.best_epoch,
                    "history": [asdict(e) for e in self.history],
                }
            ),
            "state": self.state,
            "median": torch.from_numpy(self.median),
            "mean": torch.from_numpy(self.mean),
            "scale": torch.from_numpy(self.scale),
            "importance": torch.from_numpy(self.feature_importances_),
        }

    @classmethod
    def from_payload(cls, payload: Any) -> TorchClassifier:
        """Rebuild a classifier from what :meth:`to_payload` returned."""
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
            raise IntegrityError(f"Not a {FORMAT_VERSION} model file.")
        spec = json.loads(payload["spec"])
        history = [EpochRecord(**e) for e in spec.pop("history")]
        best_epoch = spec.pop("best_epoch")
        statistics = {
            k: payload[k].numpy().astype("float64")
            for k in ("median", "mean", "scale", "importance")
        }
        return cls(spec, payload["state"], statistics, history, best_epoch)


def _prepare(
    batch: NDArray[np.float64],
    median: NDArray[np.float64],
    mean: NDArray[np.float64],
    scale: NDArray[np.float64],
) -> NDArray[np.float64]:
    import numpy as np

    matrix = np.array(batch, dtype=np.float64)  # a copy: the caller's batch is untouched
    if matrix.ndim != 2 or matrix.shape[1] != len(median):
        raise TrainingError(
            f"The torch model expects a 2-D batch of {len(median)} feature columns; "
            f"got shape {matrix.shape}."
        )
    bad = ~np.isfinite(matrix)
    if bad.any():
        matrix[bad] = median[np.nonzero(bad)[1]]
    matrix -= mean
    matrix /= scale
    return matrix


def _copy_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def _statistics(matrix: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
    """Median (of finite values; 0 for a column without any), then mean and scale after imputing."""
    import numpy as np

    finite = np.isfinite(matrix)
    median = np.zeros(matrix.shape[1])
    for j in range(matrix.shape[1]):
        values = matrix[finite[:, j], j]
        if len(values):
            median[j] = np.median(values)
    imputed = np.where(finite, matrix, median)
    mean = imputed.mean(axis=0)
    scale = imputed.std(axis=0)
    scale[~(scale > 0)] = 1.0
    return {"median": median, "mean": mean, "scale": scale, "importance": np.zeros_like(median)}


class TorchFormat(NativeFormat):
    """One ``model.pt`` file of tensors and JSON, read with ``torch.load(weights_only=True)``."""

    file = "model.pt"

    def save(self, estimator: Any, path: Path) -> None:
        import torch

        torch.save(estimator.to_payload(), path)

    def load(self, path: Path) -> Any:
        import torch

        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except (
            Exception
        ) as exc:  # a truncated or foreign file; its hash matched, so it was saved so
            raise IntegrityError(f"Cannot read torch model {path}: {exc}") from exc
        return TorchClassifier.from_payload(payload)

    def predict(self, model: Any, batch: NDArray[np.float64]) -> NDArray[np.float64]:
        import numpy as np

        return np.asarray(model.predict_proba(batch)[:, 1], dtype=np.float64)


register_format("torch", TorchFormat())
