"""A sequence-aware recommender: SASRec-style causal self-attention over the user's recent items.

After Kang & McAuley, *Self-Attentive Sequential Recommendation* (ICDM 2018): each user's
fitting interactions in time order are a sequence of item ids; a few causal self-attention
blocks (pre-norm Transformer layers, learned positions, item embeddings shared with the
output layer) read the last ``max_len`` items and predict the next one at every position,
trained with a sampled softmax: the next item against ``negatives`` items drawn uniformly
for each batch (``negatives=0``: a full softmax over the catalogue, about 9 times slower
on MovieLens' 9,066 items).

Long histories are cut into consecutive windows of ``max_len + 1`` items, so every
interaction is a training target once. **Early stopping** uses the fitting data only: each
user's last ``holdout`` share of fitting interactions (at least one, users with 3 or more)
is held back, the model trained on the rest is scored after every epoch (NDCG@10 of the
held-back items, seen items excluded) and the best epoch is kept; training stops after
``patience`` epochs without improvement. With ``refit`` the model is then trained again from
the same seed on every fitting interaction for that many epochs. ``score(users)`` is the
next-item scores after the user's whole fitting history.

Seeded (``torch.manual_seed``) and run on ``threads`` CPU threads: the same data, seed and
threads give the same scores.

**Measured** on MovieLens "all" (tuned over ``models.GRIDS``): validation NDCG@10 0.088,
test 0.074, below most popular (0.099 / 0.083). Early stopping keeps an epoch near 15, when
about 900 sampled-softmax steps have run; ratings entered in one sitting have an arbitrary
order, and the model does not see when the user is, only what they rated last. It is kept
as a model of its own, not a ranker feature.

Example::

    model = SequenceRecommender(dim=64, blocks=2, max_len=100)
    model.fit(split.fitting("validation"))
    scores = model.score(np.array([0, 1, 2]))
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    import numpy as np
    import torch
    from numpy.typing import NDArray

    from shipyard.solutions.recsys.data import FitData

__all__ = ["SequenceRecommender"]

logger = logging.getLogger(__name__)


def _network(n_items: int, dim: int, blocks: int, heads: int, max_len: int, dropout: float) -> Any:
    """The SASRec network (item 0 is padding; items are shifted by one)."""
    import torch
    from torch import nn

    class SASRec(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
            self.positions = nn.Embedding(max_len, dim)
            self.dropout = nn.Dropout(dropout)
            layer = nn.TransformerEncoderLayer(
                dim, heads, dim_feedforward=dim, dropout=dropout, batch_first=True, norm_first=True
            )
            self.blocks = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(dim)

        def forward(self, sequences: torch.Tensor) -> torch.Tensor:
            length = sequences.shape[1]
            positions = torch.arange(length, device=sequences.device)
            hidden = self.items(sequences) * dim**0.5 + self.positions(positions)
            hidden = self.dropout(hidden)
            # causal, and never a padding key (each position still sees itself, so no row is
            # empty: padding rows give garbage that no loss or score reads)
            future = torch.ones(length, length, dtype=torch.bool).triu(1)
            blocked = future.unsqueeze(0) | (sequences == 0).unsqueeze(1)
            blocked = blocked & ~torch.eye(length, dtype=torch.bool).unsqueeze(0)
            mask = blocked.repeat_interleave(heads, dim=0)
            out: torch.Tensor = self.norm(self.blocks(hidden, mask=mask))
            return out

        def logits(self, hidden: torch.Tensor) -> torch.Tensor:
            return hidden @ self.items.weight[1:].T

    return SASRec()


class SequenceRecommender:
    """Next-item scores from a SASRec-style model of each user's recent items (module doc)."""

    def __init__(
        self,
        *,
        dim: int = 64,
        blocks: int = 2,
        heads: int = 1,
        max_len: int = 100,
        dropout: float = 0.2,
        learning_rate: float = 3e-3,
        batch_size: int = 32,
        negatives: int = 1024,
        max_epochs: int = 40,
        patience: int = 3,
        holdout: float = 0.1,
        refit: bool = False,
        seed: int = 0,
        threads: int = 1,
    ) -> None:
        self.dim = dim
        self.blocks = blocks
        self.heads = heads
        self.max_len = max_len
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.negatives = negatives
        self.max_epochs = max_epochs
        self.patience = patience
        self.holdout = holdout
        self.refit = refit
        self.seed = seed
        self.threads = threads

    def _check(self) -> None:
        for name in ("dim", "blocks", "heads", "max_len", "batch_size", "max_epochs", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise invalid_parameter(name, "SequenceRecommender", "an int >= 1", value)
        if self.dim % self.heads:
            raise invalid_parameter("heads", "SequenceRecommender", "a divisor of dim", self.heads)
        if isinstance(self.negatives, bool) or not isinstance(self.negatives, int):
            raise invalid_parameter(
                "negatives", "SequenceRecommender", "an int (0: full softmax)", self.negatives
            )
        if self.negatives < 0:
            raise invalid_parameter(
                "negatives", "SequenceRecommender", "an int >= 0 (0: full softmax)", self.negatives
            )
        if not 0.0 <= self.dropout < 1.0:
            raise invalid_parameter(
                "dropout", "SequenceRecommender", "a float in [0, 1)", self.dropout
            )
        if not 0.0 < self.holdout < 1.0:
            raise invalid_parameter(
                "holdout", "SequenceRecommender", "a float in (0, 1)", self.holdout
            )

    def fit(self, data: FitData) -> None:
        """Train on ``data``'s sequences, stopping early on their last ``holdout`` share."""
        import torch

        self._check()
        torch.set_num_threads(self.threads)
        sequences = _sequences(data)
        prefixes, targets = _hold_back(sequences, self.holdout)
        network, best_epochs, self.best_ndcg_ = self._train(prefixes, data.n_items, targets)
        if self.refit:
            network, _, _ = self._train(sequences, data.n_items, None, epochs=best_epochs)
        self.epochs_ = best_epochs
        self.network_ = network
        self.sequences_ = sequences
        self.n_items_ = data.n_items

    def _train(
        self,
        sequences: list[NDArray[np.int64]],
        n_items: int,
        targets: dict[int, NDArray[np.int64]] | None,
        epochs: int | None = None,
    ) -> tuple[Any, int, float]:
        """Train a fresh network; with ``targets``, keep the epoch that scores them best."""
        import copy

        import torch

        torch.manual_seed(self.seed)
        network = _network(n_items, self.dim, self.blocks, self.heads, self.max_len, self.dropout)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.learning_rate)
        windows = torch.from_numpy(_windows(sequences, self.max_len + 1))
        generator = torch.Generator().manual_seed(self.seed)
        best: tuple[float, int, dict[str, Any] | None] = (-1.0, 0, None)
        for epoch in range(1, (epochs or self.max_epochs) + 1):
            network.train()
            order = torch.randperm(len(windows), generator=generator)
            for start in range(0, len(windows), self.batch_size):
                batch = windows[order[start : start + self.batch_size]]
                inputs, wanted = batch[:, :-1], batch[:, 1:]
                keep = (inputs > 0) & (wanted > 0)
                hidden = network(inputs)[keep]
                loss = self._loss(network, hidden, wanted[keep] - 1, n_items, generator)
                optimizer.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
            if targets is None:
                continue
            ndcg = _ndcg(self._scores(network, sequences, sorted(targets)), sequences, targets)
            logger.info("sequence epoch %d: early-stopping ndcg@10 %.4f", epoch, ndcg)
            if ndcg > best[0]:
                best = (ndcg, epoch, copy.deepcopy(network.state_dict()))
            elif epoch - best[1] >= self.patience:
                break
        if best[2] is not None:
            network.load_state_dict(best[2])
        network.eval()
        return network, best[1] or (epochs or self.max_epochs), best[0]

    def _loss(
        self,
        network: Any,
        hidden: torch.Tensor,
        wanted: torch.Tensor,
        n_items: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Cross-entropy of the next item: over every item, or over it and ``negatives``
        items drawn uniformly for the batch (a sampled softmax; accidental hits removed)."""
        import torch
        from torch.nn.functional import cross_entropy

        if not self.negatives or self.negatives >= n_items:
            return cross_entropy(network.logits(hidden), wanted)
        drawn = torch.randint(n_items, (self.negatives,), generator=generator)
        weights = network.items.weight
        positive = (hidden * weights[wanted + 1]).sum(-1, keepdim=True)
        negative = hidden @ weights[drawn + 1].T
        negative = negative.masked_fill(drawn.unsqueeze(0) == wanted.unsqueeze(1), -torch.inf)
        logits = torch.cat([positive, negative], dim=1)
        return cross_entropy(logits, torch.zeros(len(wanted), dtype=torch.long))

    def _scores(
        self, network: Any, sequences: list[NDArray[np.int64]], users: list[int]
    ) -> NDArray[np.float32]:
        import numpy as np
        import torch

        network.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(users), 256):
                chunk = users[start : start + 256]
                inputs = torch.from_numpy(_last_items([sequences[u] for u in chunk], self.max_len))
                hidden = network(inputs)[:, -1]
                out.append(network.logits(hidden).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)

    def score(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        """Next-item scores after each user's fitting history: ``[len(users), n_items]``."""
        import torch

        if not hasattr(self, "network_"):
            raise invalid_parameter(
                "self", "SequenceRecommender.score", "a fitted model (call fit)", None
            )
        torch.set_num_threads(self.threads)
        return self._scores(self.network_, self.sequences_, [int(u) for u in users])


def _sequences(data: FitData) -> list[NDArray[np.int64]]:
    """Per user, their fitting items in time order, shifted by one (0 is padding)."""
    import numpy as np

    frame = data.interactions
    out: list[NDArray[np.int64]] = [np.zeros(0, dtype=np.int64) for _ in range(data.n_users)]
    for user, items in frame.groupby("user", sort=True)["item"]:
        out[int(user)] = items.to_numpy(dtype=np.int64) + 1
    return out


def _hold_back(
    sequences: list[NDArray[np.int64]], share: float
) -> tuple[list[NDArray[np.int64]], dict[int, NDArray[np.int64]]]:
    """Each sequence without its last ``share`` (users with 3+ items), and those items (0-based)."""
    prefixes, targets = [], {}
    for user, sequence in enumerate(sequences):
        held = max(1, round(share * len(sequence))) if len(sequence) >= 3 else 0
        prefixes.append(sequence[: len(sequence) - held])
        if held:
            targets[user] = sequence[len(sequence) - held :] - 1
    return prefixes, targets


def _windows(sequences: list[NDArray[np.int64]], length: int) -> NDArray[np.int64]:
    """Consecutive windows of ``length`` items (left-padded), from each sequence's end."""
    import numpy as np

    rows = []
    for sequence in sequences:
        if len(sequence) < 2:
            continue
        # windows overlap by one item, so every item after the first is a target once
        for end in range(len(sequence), 1, -(length - 1)):
            window = sequence[max(0, end - length) : end]
            rows.append(np.pad(window, (length - len(window), 0)))
    return np.array(rows, dtype=np.int64).reshape(-1, length)


def _last_items(sequences: list[NDArray[np.int64]], length: int) -> NDArray[np.int64]:
    import numpy as np

    out = np.zeros((len(sequences), length), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        tail = sequence[-length:]
        if len(tail):
            out[row, length - len(tail) :] = tail
    return out


def _ndcg(
    scores: NDArray[np.float32],
    sequences: list[NDArray[np.int64]],
    targets: dict[int, NDArray[np.int64]],
) -> float:
    """Mean NDCG@10 of ``targets`` (sorted users) given ``scores``, seen items excluded."""
    import numpy as np
    import scipy.sparse as sp

    from shipyard.solutions.recsys.metrics import ndcg_at_k, top_k

    users = np.array(sorted(targets), dtype=np.int64)
    n_items = scores.shape[1]
    rows = np.concatenate([np.full(len(sequences[u]), i) for i, u in enumerate(users)])
    cols = np.concatenate([sequences[u] - 1 for u in users])
    seen = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(users), n_items)
    )
    recommended = top_k(scores, seen, np.arange(len(users)), 10)
    return float(ndcg_at_k(recommended, [targets[int(u)] for u in users]).mean())
