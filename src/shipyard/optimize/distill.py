"""Knowledge distillation: a student with fewer layers learns the teacher's probabilities.

The student is the teacher's own encoder cut to its first ``layers`` layers (its embeddings,
those layers and its head copied, as DistilBERT starts from its teacher's weights) and is
trained on the teacher's soft probabilities over the training reviews of the teacher's own
data set: binary cross-entropy between the student's logit and the teacher's probability
(Hinton et al., "Distilling the Knowledge in a Neural Network", 2015, with one output and
temperature 1). The embeddings stay frozen (most of the weights, little to gain on a few
thousand reviews); the encoder layers train at ``encoder_learning_rate`` and the head at
``learning_rate`` with AdamW. Reviews of similar length are batched together (the batches
shuffled every epoch), so little time goes to padding. Seeded: the same seed and thread
count give the same student.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    from shipyard.training.text import TextClassifier


def distill(
    teacher: TextClassifier,
    texts: Sequence[str],
    *,
    layers: int = 2,
    epochs: int = 4,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    encoder_learning_rate: float = 3e-4,
    random_state: int = 0,
    progress: Callable[[str], None] | None = None,
) -> TextClassifier:
    """The teacher's first ``layers`` layers, trained on its probabilities of ``texts``.

    Example::

        student = distill(teacher, train_reviews, layers=2, epochs=4)
        student.predict_proba(["A warm, funny film."])
    """
    import numpy as np
    import torch

    from shipyard.training.text import TextClassifier, build_encoder

    deepest = int(teacher.module.config_dict["num_hidden_layers"])
    if not isinstance(layers, int) or not 1 <= layers <= deepest:
        expected = f"an int in [1, {deepest}] (the teacher's layers)"
        raise invalid_parameter("layers", "distill", expected, layers)
    if not isinstance(epochs, int) or epochs < 1:
        raise invalid_parameter("epochs", "distill", "an int >= 1", epochs)
    if not texts:
        raise invalid_parameter("texts", "distill", "at least one training review", "none")
    texts = list(texts)
    say = progress or (lambda _: None)
    say(f"distill: the teacher scores {len(texts):,} training reviews")
    by_length = np.argsort([len(t) for t in texts], kind="stable")
    targets = torch.empty(len(texts))
    targets[torch.from_numpy(by_length)] = torch.from_numpy(
        teacher.predict_proba([texts[i] for i in by_length]).astype(np.float32)
    )
    batches = [by_length[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        config = {**teacher.module.config_dict, "num_hidden_layers": layers}
        student = build_encoder(config, float(teacher.module.dropout.p))
        student.load_state_dict(_first_layers(teacher.module.state_dict(), layers), strict=True)
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
            for b in order.permutation(len(batches)):
                rows = batches[b]
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


def _first_layers(state: dict[str, Any], layers: int) -> dict[str, Any]:
    """The teacher's weights without its encoder layers from ``layers`` on."""
    prefix = "bert.encoder.layer."
    return {
        k: v.detach().clone()
        for k, v in state.items()
        if not k.startswith(prefix) or int(k[len(prefix) :].split(".")[0]) < layers
    }
