"""Knowledge distillation: a MiniLM student with fewer layers learns the teacher's probabilities.

The student keeps the first ``layers`` of MiniLM's 6 layers (pretrained weights, a fresh
head) and is trained on the teacher's soft probabilities over the training reviews of the
teacher's own data set: binary cross-entropy between the student's logit and the teacher's
probability (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015, with one
output and temperature 1). The embeddings stay frozen (most of the weights, little to gain
on a few thousand reviews); the encoder layers train at ``encoder_learning_rate`` and the head
at ``learning_rate`` with AdamW. Seeded: the same seed and thread count give the same student.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    from shipyard.training.text import TextClassifier


def distill(
    teacher: TextClassifier,
    texts: Sequence[str],
    *,
    layers: int = 2,
    epochs: int = 3,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    encoder_learning_rate: float = 1e-4,
    random_state: int = 0,
    progress: Callable[[str], None] | None = None,
) -> TextClassifier:
    """A student of ``layers`` MiniLM layers trained on ``teacher``'s probabilities of ``texts``.

    Example::

        student = distill(teacher, train_reviews, layers=2, epochs=3)
        student.predict_proba(["A warm, funny film."])
    """
    import numpy as np
    import torch

    from shipyard.training.text import TextClassifier, build_encoder, minilm_config

    if not isinstance(layers, int) or not 1 <= layers <= 6:
        raise invalid_parameter("layers", "distill", "an int in [1, 6]", layers)
    if not isinstance(epochs, int) or epochs < 1:
        raise invalid_parameter("epochs", "distill", "an int >= 1", epochs)
    if not texts:
        raise invalid_parameter("texts", "distill", "at least one training review", "none")
    texts = list(texts)
    say = progress or (lambda _: None)
    say(f"distill: the teacher scores {len(texts):,} training reviews")
    targets = torch.from_numpy(teacher.predict_proba(texts).astype(np.float32))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        student = build_encoder(minilm_config(layers), float(teacher.module.dropout.p))
        student.load_pretrained()
        for p in student.bert.embeddings.parameters():
            p.requires_grad_(False)
        optimizer = torch.optim.AdamW(
            [
                {"params": student.bert.encoder.parameters(), "lr": encoder_learning_rate},
                {"params": student.head.parameters(), "lr": learning_rate},
            ],
            weight_decay=0.01,
        )
        loss_fn = torch.nn.BCEWithLogitsLoss()
        order = np.random.default_rng(random_state)
        student.train()
        for epoch in range(1, epochs + 1):
            losses = []
            for rows in np.array_split(order.permutation(len(texts)), _batches(texts, batch_size)):
                ids, mask = teacher.tokenizer.encode([texts[i] for i in rows])
                logits = student.logits(torch.from_numpy(ids), torch.from_numpy(mask))
                loss = loss_fn(logits, targets[torch.from_numpy(rows)])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            say(f"distill: epoch {epoch}/{epochs}, loss {np.mean(losses):.4f}")
        student.eval()
        for p in student.parameters():
            p.requires_grad_(True)
    return TextClassifier(student, teacher.tokenizer)


def _batches(texts: Sequence[str], batch_size: int) -> int:
    return max(1, -(-len(texts) // batch_size))
