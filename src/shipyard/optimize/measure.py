"""What an optimization report measures: parity with the original, latency, throughput.

Parity compares the candidate's probabilities with the original's on the same reviews:
the largest absolute difference (the test of an exact transform), the share of decisions
(at 0.5) that flip, and the change of accuracy and ROC AUC with a 95% bootstrap interval of
the paired difference (reviews resampled with replacement, both models scored on the same
draw). Speed is measured in-process with an explicit thread count: one review per call
(median and p99 latency) and batches of 32 (reviews per second).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from shipyard.training.metrics import Interval, day_bootstrap, interval

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

Scorer = Callable[[Sequence[str]], "NDArray[np.float64]"]
"""Probabilities for a list of reviews (a model's ``predict_proba``)."""
THRESHOLD = 0.5


@dataclass(frozen=True)
class Timing:
    """Speed of one model at one thread count (milliseconds, reviews per second)."""

    threads: int
    p50_ms: float
    p99_ms: float
    reviews_per_s: float
    requests: int
    batch_size: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return asdict(self)


def timing(
    score: Scorer, texts: Sequence[str], *, threads: int, requests: int = 100, batches: int = 8
) -> Timing:
    """Time ``score`` (already running on ``threads`` threads) on ``texts``.

    ``requests`` single-review calls cycle through the texts (latency: median and p99);
    ``batches`` calls of 32 reviews give the throughput. A few warm-up calls run first.
    """
    import numpy as np

    texts = list(texts)
    if not texts:
        raise ValueError("timing needs at least one review")
    for text in texts[:3]:
        score([text])
    single = np.empty(requests)
    for i in range(requests):
        text = texts[i % len(texts)]
        start = time.perf_counter()
        score([text])
        single[i] = time.perf_counter() - start
    batch = [texts[i % len(texts)] for i in range(32)]
    elapsed = 0.0
    for b in range(batches):
        rows = [texts[(b * 32 + i) % len(texts)] for i in range(32)] if b else batch
        start = time.perf_counter()
        score(rows)
        elapsed += time.perf_counter() - start
    return Timing(
        threads=threads,
        p50_ms=float(np.median(single) * 1000),
        p99_ms=float(np.quantile(single, 0.99) * 1000),
        reviews_per_s=float(32 * batches / elapsed) if elapsed > 0 else float("inf"),
        requests=requests,
        batch_size=32,
    )


@dataclass(frozen=True)
class Parity:
    """How a candidate's scores differ from the original's on the same labelled reviews."""

    rows: int
    max_abs_diff: float
    flipped_share: float
    accuracy_change: Interval
    roc_auc_change: Interval
    accuracy: float
    """The candidate's accuracy on these rows (the original's is ``accuracy - change``)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Parity:
        """Inverse of :meth:`to_dict`."""
        return cls(
            **{
                **data,
                "accuracy_change": Interval(**data["accuracy_change"]),
                "roc_auc_change": Interval(**data["roc_auc_change"]),
            }
        )


def parity(
    labels: NDArray[Any],
    original: NDArray[np.float64],
    candidate: NDArray[np.float64],
    *,
    n_boot: int = 500,
    seed: int = 0,
) -> Parity:
    """Compare ``candidate``'s probabilities with ``original``'s on reviews labelled ``labels``.

    Example::

        found = parity(y_test, teacher.predict_proba(texts), student.predict_proba(texts))
        found.accuracy_change   # e.g. -0.004 [-0.012, 0.003]
    """
    import numpy as np

    from shipyard.training.metrics import RankedScores

    y = np.asarray(labels).astype(int)
    a, b = np.asarray(original, dtype=float), np.asarray(candidate, dtype=float)
    right_a = ((a >= THRESHOLD) == (y == 1)).astype(float)
    right_b = ((b >= THRESHOLD) == (y == 1)).astype(float)

    def accuracy_delta(w: NDArray[np.float64]) -> float:
        return float(np.dot(w, right_b - right_a) / w.sum())

    ranked_a, ranked_b = RankedScores(y, a), RankedScores(y, b)

    def auc_delta(w: NDArray[np.float64]) -> float:
        return ranked_b.roc_auc(w) - ranked_a.roc_auc(w)  # NaN on a one-class draw

    reviews = np.arange(len(y))
    acc = interval(*day_bootstrap(reviews, accuracy_delta, n_boot, seed))
    auc = interval(*day_bootstrap(reviews, auc_delta, n_boot, seed))
    return Parity(
        rows=len(y),
        max_abs_diff=float(np.max(np.abs(a - b))) if len(y) else 0.0,
        flipped_share=float(np.mean((a >= THRESHOLD) != (b >= THRESHOLD))) if len(y) else 0.0,
        accuracy_change=acc,
        roc_auc_change=auc,
        accuracy=float(right_b.mean()) if len(y) else float("nan"),
    )
