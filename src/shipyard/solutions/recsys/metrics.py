"""Top-k metrics of the recommendation protocol, evaluation of any scorer, bootstrap CIs.

**Metrics** (binary relevance: an item is relevant when the user interacted with it in the
held-out stage; items the user interacted with in the fitting data are never recommended):

- ``recall@k`` = hits in the top k / ``min(k, number of relevant items)`` (so a user with
  3 relevant items can reach 1.0, as in Liang et al. 2018);
- ``ndcg@k`` = ``sum(1 / log2(rank + 1))`` over hits at ranks 1..k, divided by the same sum
  for an ideal list (``min(k, relevant)`` hits at the top).

Both are computed per user and averaged over the evaluated users with equal weight; the
95% intervals resample users (a percentile bootstrap over users, 1,000 draws by default).

**A scorer** is anything with ``fit(data: FitData) -> None`` and
``score(users: NDArray[int64]) -> NDArray[float32]`` (one row of ``n_items`` scores per
user, higher is better): the baselines and our models all are. :func:`evaluate` fits it on
the stage's fitting data, scores the evaluated users in batches, masks what they have seen
and measures the top k.

Example::

    result = evaluate(MostPopular(), split, "validation")
    print(result.summary())          # ndcg@10 0.031 [0.026, 0.036], recall@10 ...
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp
    from numpy.typing import NDArray

    from shipyard.solutions.recsys.data import FitData, Split
    from shipyard.training.metrics import Interval

__all__ = [
    "Evaluation",
    "K",
    "Scorer",
    "bootstrap_mean",
    "evaluate",
    "ndcg_at_k",
    "paired_difference",
    "recall_at_k",
    "top_k",
]

K = 10
N_BOOT = 1000


class Scorer(Protocol):
    """A recommendation model the protocol can tune and test (module doc)."""

    def fit(self, data: FitData) -> None:
        """Fit on ``data`` (the stage's fitting interactions)."""

    def score(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        """Scores of every item for each of ``users``: shape ``[len(users), n_items]``."""


def top_k(
    scores: NDArray[np.floating], seen: sp.csr_matrix | None, users: NDArray[np.int64], k: int
) -> NDArray[np.int64]:
    """The ``k`` best items per row of ``scores``, best first, items in ``seen[users]`` excluded.

    ``scores`` is modified in place (seen items set to -inf). Ties break by item index.
    """
    import numpy as np

    if k < 1:
        raise invalid_parameter("k", "top_k", "an integer of at least 1", k)
    scores = scores.astype(np.float32, copy=False)
    if seen is not None:
        rows = seen[users]
        scores[np.repeat(np.arange(len(users)), np.diff(rows.indptr)), rows.indices] = -np.inf
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    chosen = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -chosen), axis=1)
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def _hits(recommended: NDArray[np.int64], relevant: list[NDArray[np.int64]]) -> NDArray[np.bool_]:
    import numpy as np

    out = np.zeros(recommended.shape, dtype=bool)
    for i, items in enumerate(relevant):
        out[i] = np.isin(recommended[i], items)
    return out


def ndcg_at_k(
    recommended: NDArray[np.int64], relevant: list[NDArray[np.int64]], k: int = K
) -> NDArray[np.float64]:
    """Per-user NDCG@k with binary relevance (module doc); ``recommended`` is [users, >=k]."""
    import numpy as np

    hits = _hits(recommended[:, :k], relevant)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discount[: hits.shape[1]]).sum(axis=1)
    ideal_hits = np.minimum(np.array([len(r) for r in relevant]), k)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[ideal_hits]
    return np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0)


def recall_at_k(
    recommended: NDArray[np.int64], relevant: list[NDArray[np.int64]], k: int = K
) -> NDArray[np.float64]:
    """Per-user recall@k = hits / min(k, relevant) (module doc)."""
    import numpy as np

    hits = _hits(recommended[:, :k], relevant).sum(axis=1)
    sizes = np.minimum(np.array([len(r) for r in relevant]), k)
    return np.where(sizes > 0, hits / np.maximum(sizes, 1), 0.0)


def bootstrap_mean(
    values: NDArray[np.float64], n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95
) -> Interval:
    """The mean of per-user ``values`` with a percentile bootstrap interval over users."""
    import numpy as np

    from shipyard.training.metrics import Interval, interval

    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        raise invalid_parameter("values", "bootstrap_mean", "at least one user", 0)
    if n_boot == 0:
        mean = float(values.mean())
        return Interval(mean, float("nan"), float("nan"), level)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(values), size=(n_boot, len(values)))
    return interval(float(values.mean()), values[draws].mean(axis=1), level)


def paired_difference(
    a: NDArray[np.float64], b: NDArray[np.float64], n_boot: int = N_BOOT, seed: int = 0
) -> tuple[Interval, Interval]:
    """``b - a`` over the same users: the mean difference and the relative one
    (``mean(b) / mean(a) - 1``), each with a bootstrap interval resampling users."""
    import numpy as np

    from shipyard.training.metrics import interval

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or len(a) == 0:
        raise invalid_parameter(
            "b", "paired_difference", f"per-user values for the same {len(a)} users", len(b)
        )
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(a), size=(n_boot, len(a)))
    mean_a, mean_b = a[draws].mean(axis=1), b[draws].mean(axis=1)
    absolute = interval(float(b.mean() - a.mean()), mean_b - mean_a)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = interval(float(b.mean() / a.mean() - 1), mean_b / mean_a - 1)
    return absolute, relative


@dataclass(frozen=True)
class Evaluation:
    """One scorer on one stage: per-user metrics (aligned with ``users``) and timings."""

    stage: str
    users: NDArray[np.int64]
    ndcg: NDArray[np.float64]
    recall: NDArray[np.float64]
    recommended: NDArray[np.int64]
    """The top k per evaluated user (dense item indexes)."""
    fit_seconds: float
    score_seconds: float
    k: int = K

    def interval(self, metric: str, n_boot: int = N_BOOT) -> Interval:
        """``ndcg`` or ``recall`` averaged over users, with its bootstrap interval."""
        if metric not in ("ndcg", "recall"):
            raise invalid_parameter("metric", "Evaluation", "'ndcg' or 'recall'", metric)
        return bootstrap_mean(getattr(self, metric), n_boot)

    def summary(self, n_boot: int = N_BOOT) -> str:
        """``ndcg@10 0.031 [0.026, 0.036], recall@10 0.045 [...] over 671 users``."""
        return (
            f"ndcg@{self.k} {self.interval('ndcg', n_boot)}, recall@{self.k} "
            f"{self.interval('recall', n_boot)} over {len(self.users):,} users"
        )


def evaluate(
    scorer: Scorer, split: Split, stage: str, *, k: int = K, batch: int = 512, fit: bool = True
) -> Evaluation:
    """Fit ``scorer`` on ``stage``'s fitting data (unless ``fit=False``), recommend the top
    ``k`` unseen items to every evaluated user and measure them (module doc)."""
    import numpy as np

    data = split.fitting(stage)
    started = time.perf_counter()
    if fit:
        scorer.fit(data)
    fitted = time.perf_counter()
    truth = split.truth(stage)
    users = np.array(sorted(truth), dtype=np.int64)
    seen = data.matrix()
    recommended = np.empty((len(users), k), dtype=np.int64)
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        scores = np.array(scorer.score(chunk), dtype=np.float32)
        recommended[start : start + batch] = top_k(scores, seen, chunk, k)
    scored = time.perf_counter()
    relevant = [truth[int(u)] for u in users]
    return Evaluation(
        stage,
        users,
        ndcg_at_k(recommended, relevant, k),
        recall_at_k(recommended, relevant, k),
        recommended,
        fitted - started,
        scored - fitted,
        k,
    )
