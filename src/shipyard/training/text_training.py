"""The training loop of ``minilm-classifier`` (see :mod:`shipyard.training.text`).

AdamW minimizes ``BCEWithLogitsLoss``. With ``fine_tune_layers=0`` the encoder is frozen:
each text's pooled embedding is computed once (texts sorted by length, so each batch pads
little) and only dropout and the head train on them; the embeddings of the last few sets of
texts are remembered in the process, so fitting several head configurations on the same
reviews (a grid search) embeds them once. With ``fine_tune_layers=k`` the top
``k`` encoder layers train too (at ``encoder_learning_rate``; the layers below stay frozen
and in evaluation mode), tokenizing each shuffled batch and padding it to its longest text.

Validation rows (a seeded random ``validation_fraction`` of the training rows, or the
caller's ``validation=(X, y)``) are scored after every epoch; training stops after
``patience`` epochs without a lower validation loss and the best epoch's weights are kept.
Without validation rows every epoch runs and the last one is kept. Training is seeded by
``random_state`` on ``n_jobs`` threads: the same seed and thread count give identical
probabilities.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from shipyard.training.neural import _training_context
from shipyard.training.text import TextClassifier, TextEpochRecord, TextTokenizer
from shipyard.training.trainers import ModelConfig, check_labels

if TYPE_CHECKING:
    import numpy as np
    import torch
    from numpy.typing import NDArray

logger = logging.getLogger(__name__)

_EMBED_BATCH = 64  # texts embedded at once by the frozen encoder
_CACHED_SETS = (
    4  # sets of texts whose frozen-encoder embeddings are remembered (training, validation)
)
_EMBEDDINGS: OrderedDict[tuple[int, int, int, str], torch.Tensor] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def train_classifier(
    config: ModelConfig,
    texts: list[str],
    labels: NDArray[Any],
    held: tuple[list[str], NDArray[Any]] | None,
) -> TextClassifier:
    """Fit ``config``'s encoder classifier on ``texts``; ``held`` = explicit validation rows."""
    import numpy as np

    p = config.params
    labels = np.array(labels, dtype=np.float32)  # a writable copy: torch.from_numpy needs one
    if held is None:
        order = np.random.default_rng(p["random_state"]).permutation(len(texts))
        n_valid = int(len(texts) * p["validation_fraction"])
        valid_rows, train_rows = np.sort(order[:n_valid]), np.sort(order[n_valid:])
        train = ([texts[i] for i in train_rows], labels[train_rows])
        valid = ([texts[i] for i in valid_rows], labels[valid_rows])
        check_labels(config, train[1], "training slice (after the validation slice)")
    else:
        train, valid = (texts, labels), (held[0], np.array(held[1], dtype=np.float32))
    tokenizer = TextTokenizer.pretrained(p["max_tokens"])
    with _training_context(p["n_jobs"], p["random_state"]):
        module = config.build()
        if p["fine_tune_layers"] == 0:
            history, best_epoch = _train_head(module, tokenizer, p, train, valid)
        else:
            history, best_epoch = _fine_tune(module, tokenizer, p, train, valid)
    return TextClassifier(module, tokenizer, history, best_epoch)


def embed_texts(module: Any, tokenizer: TextTokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Pooled embeddings ``[n, hidden]`` of ``texts`` (no gradient; batches sorted by length)."""
    import numpy as np
    import torch

    pieces = tokenizer.pieces(texts)
    order = np.argsort([len(p) for p in pieces], kind="stable")
    out = torch.empty((len(texts), int(module.config_dict["hidden_size"])), dtype=torch.float32)
    module.eval()
    with torch.no_grad():
        for start in range(0, len(texts), _EMBED_BATCH):
            rows = order[start : start + _EMBED_BATCH]
            ids, mask = tokenizer.pad([pieces[i] for i in rows])
            out[torch.from_numpy(rows)] = module.embed(
                torch.from_numpy(ids), torch.from_numpy(mask)
            )
    return out


def _pretrained_embeddings(
    module: Any, tokenizer: TextTokenizer, texts: Sequence[str]
) -> torch.Tensor:
    """:func:`embed_texts` of MiniLM's own (frozen) layers, remembered for the last few sets
    of texts: a search over head parameters embeds its training texts once, not per point.

    The key is everything the embeddings depend on: the layers kept, the token limit, the
    thread count (float sums differ in the last bits between thread counts) and the texts.
    """
    import hashlib

    import torch

    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    key = (
        int(module.config_dict["num_hidden_layers"]),
        tokenizer.max_tokens,
        torch.get_num_threads(),
        digest.hexdigest(),
    )
    with _CACHE_LOCK:
        found = _EMBEDDINGS.get(key)
        if found is not None:
            _EMBEDDINGS.move_to_end(key)
            return found
    embeddings = embed_texts(module, tokenizer, texts)
    with _CACHE_LOCK:
        _EMBEDDINGS[key] = embeddings
        while len(_EMBEDDINGS) > _CACHED_SETS:
            _EMBEDDINGS.popitem(last=False)
    return embeddings


def _train_head(
    module: Any,
    tokenizer: TextTokenizer,
    params: dict[str, Any],
    train: tuple[list[str], NDArray[np.float32]],
    valid: tuple[list[str], NDArray[np.float32]],
) -> tuple[list[TextEpochRecord], int]:
    """Train dropout and the head on embeddings of the frozen encoder, computed once."""
    for parameter in module.bert.parameters():
        parameter.requires_grad_(False)
    x_train = _pretrained_embeddings(module, tokenizer, train[0])
    x_valid = _pretrained_embeddings(module, tokenizer, valid[0])

    def train_logits(rows: torch.Tensor) -> torch.Tensor:
        return module.classify(x_train[rows])  # type: ignore[no-any-return]

    def valid_logits() -> torch.Tensor:
        return module.classify(x_valid)  # type: ignore[no-any-return]

    def train_mode() -> None:
        module.eval()
        module.dropout.train()

    groups = [{"params": list(module.head.parameters()), "lr": params["learning_rate"]}]
    return _loop(module, params, groups, train[1], valid[1], train_logits, valid_logits, train_mode)


def _fine_tune(
    module: Any,
    tokenizer: TextTokenizer,
    params: dict[str, Any],
    train: tuple[list[str], NDArray[np.float32]],
    valid: tuple[list[str], NDArray[np.float32]],
) -> tuple[list[TextEpochRecord], int]:
    """Train the top ``fine_tune_layers`` encoder layers and the head on tokenized batches."""
    import numpy as np
    import torch

    layers = list(module.bert.encoder.layer)[-params["fine_tune_layers"] :]
    for parameter in module.bert.parameters():
        parameter.requires_grad_(False)
    for layer in layers:
        for parameter in layer.parameters():
            parameter.requires_grad_(True)
    texts = train[0]

    def encoded(batch: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = tokenizer.encode(batch)
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def train_logits(rows: torch.Tensor) -> torch.Tensor:
        return module.logits(*encoded([texts[i] for i in rows.tolist()]))  # type: ignore[no-any-return]

    valid_pieces = tokenizer.pieces(valid[0])
    valid_order = np.argsort([len(p) for p in valid_pieces], kind="stable")

    def valid_logits() -> torch.Tensor:
        out = torch.empty(len(valid_pieces), dtype=torch.float32)
        for start in range(0, len(valid_order), _EMBED_BATCH):
            rows = valid_order[start : start + _EMBED_BATCH]
            ids, mask = tokenizer.pad([valid_pieces[i] for i in rows])
            out[torch.from_numpy(rows)] = module.logits(
                torch.from_numpy(ids), torch.from_numpy(mask)
            )
        return out

    def train_mode() -> None:
        module.eval()  # frozen layers: no dropout noise in what they pass on
        for layer in layers:
            layer.train()
        module.dropout.train()

    groups = [
        {"params": list(module.head.parameters()), "lr": params["learning_rate"]},
        {
            "params": [q for layer in layers for q in layer.parameters()],
            "lr": params["encoder_learning_rate"],
        },
    ]
    return _loop(module, params, groups, train[1], valid[1], train_logits, valid_logits, train_mode)


def _loop(
    module: Any,
    params: dict[str, Any],
    groups: list[dict[str, Any]],
    y_train: NDArray[np.float32],
    y_valid: NDArray[np.float32],
    train_logits: Callable[[torch.Tensor], torch.Tensor],
    valid_logits: Callable[[], torch.Tensor],
    train_mode: Callable[[], None],
) -> tuple[list[TextEpochRecord], int]:
    """Epochs of shuffled mini-batches with early stopping on the validation loss."""
    import torch

    optimizer = torch.optim.AdamW(groups, weight_decay=params["weight_decay"])
    loss = torch.nn.BCEWithLogitsLoss()
    target, valid_target = torch.from_numpy(y_train), torch.from_numpy(y_valid)
    shuffle = torch.Generator().manual_seed(params["random_state"])
    trainable = [name for name, q in module.named_parameters() if q.requires_grad]
    best = _copy(module, trainable)
    best_loss, best_epoch, waited = math.inf, 0, 0
    history: list[TextEpochRecord] = []
    for epoch in range(1, params["max_epochs"] + 1):
        train_mode()
        total = 0.0
        for rows in torch.split(
            torch.randperm(len(target), generator=shuffle), params["batch_size"]
        ):
            optimizer.zero_grad()
            value = loss(train_logits(rows), target[rows])
            value.backward()
            optimizer.step()
            total += float(value.detach()) * len(rows)
        record = _validate(epoch, total / len(target), module, valid_logits, valid_target, loss)
        history.append(record)
        logger.info("epoch %d: %s", epoch, record.metrics())
        if len(valid_target) == 0 or record.validation_loss < best_loss:
            best_loss, best_epoch, waited = record.validation_loss, epoch, 0
            best = _copy(module, trainable)
        else:
            waited += 1
            if waited >= params["patience"]:
                break
    module.load_state_dict(best, strict=False)
    module.eval()
    return history, best_epoch


def _validate(
    epoch: int,
    train_loss: float,
    module: Any,
    valid_logits: Callable[[], torch.Tensor],
    target: torch.Tensor,
    loss: torch.nn.Module,
) -> TextEpochRecord:
    import torch

    from shipyard.training.metrics import average_precision

    if len(target) == 0:
        return TextEpochRecord(epoch, train_loss, math.nan, math.nan, math.nan)
    module.eval()
    with torch.no_grad():
        logits = valid_logits()
        valid_loss = float(loss(logits, target))
    accuracy = float(((logits > 0).float() == target).float().mean())
    has_both = 0 < float(target.sum()) < len(target)
    ap = average_precision(target.numpy(), logits.numpy()) if has_both else math.nan
    return TextEpochRecord(epoch, train_loss, valid_loss, accuracy, ap)


def _copy(module: Any, names: list[str]) -> dict[str, torch.Tensor]:
    state = module.state_dict()
    return {name: state[name].detach().clone() for name in names}
