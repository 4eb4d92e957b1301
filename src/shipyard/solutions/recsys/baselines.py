"""The tuned baselines of the recommendation solution: most popular, item-kNN, EASE, ALS, BPR.

Untuned baselines are the usual way recommender results mislead (Rendle et al. 2019, "On
the difficulty of evaluating baselines"; Ferrari Dacrema et al. 2019, "Are we really making
much progress?"), so every baseline here goes through the same :func:`~.tuning.tune` loop as
our own models, over the grids in :data:`GRIDS`:

- :class:`MostPopular`: interaction counts, over all time or over the ``window_days`` before
  each user's last fitting interaction (what was popular when they were asked).
- :class:`ItemKNN`: item-item similarity ``|i & j| / (n_i^a n_j^(1-a) + shrink)`` (``a =
  0.5`` is the cosine; Aiolli 2013's asymmetric cosine otherwise), ``neighbours`` per item.
- :class:`EASE`: Steck 2019's closed form ``B = I - P diag(1/diag P)``, ``P = (X'X +
  l2 I)^-1``, over the items present in the fitting data (float32 Cholesky, LAPACK).
- :class:`ALS`: ``implicit``'s alternating least squares (Hu, Koren, Volinsky 2008) with
  confidence ``1 + alpha x``, on raw or BM25-weighted interactions.
- :class:`BPR`: ``implicit``'s Bayesian personalized ranking (Rendle et al. 2009).

``implicit`` fits run with one thread and BLAS limited to one thread (deterministic for a
seed, and the machine is shared). :data:`QUICK_GRIDS` holds a few settings around the winners
of the full search on both variants (``docs/recsys-baselines.md``), so the quickstart
reproduces the tuned numbers in about a minute.

Example::

    split = temporal_split(load_movielens(), "all")
    tuned = tune_baselines(split, grids=QUICK_GRIDS)
    print(tuned["ease"].describe())

Command line (writes the table of the full search)::

    python -m shipyard.solutions.recsys.baselines --variant all --full
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp
    from numpy.typing import NDArray

    from shipyard.solutions.recsys.data import FitData, Split
    from shipyard.solutions.recsys.metrics import Scorer
    from shipyard.solutions.recsys.tuning import Tuned

__all__ = [
    "ALS",
    "BASELINES",
    "BPR",
    "EASE",
    "GRIDS",
    "QUICK_GRIDS",
    "ItemKNN",
    "MostPopular",
    "search",
    "tune_baselines",
]

DAY = 86_400
SEED = 0


def _check(owner: str, name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise invalid_parameter(name, owner, expected, value)


def _rows(matrix: sp.csr_matrix, users: NDArray[np.int64]) -> sp.csr_matrix:
    import numpy as np

    return matrix[np.asarray(users, dtype=np.int64)]


class MostPopular:
    """Recommend the items with the most interactions (over all time, or recent ones)."""

    def __init__(self, window_days: float | None = None) -> None:
        _check(
            "MostPopular",
            "window_days",
            window_days,
            window_days is None or (_number(window_days) and window_days > 0),
            "None (all time) or a number of days > 0",
        )
        self.window_days = window_days

    def fit(self, data: FitData) -> None:
        """Count interactions per item; per user over the window before their last time."""
        import numpy as np

        frame = data.interactions.drop_duplicates(["user", "item"])
        items = frame["item"].to_numpy()
        self.counts_ = np.bincount(items, minlength=data.n_items).astype(np.float32)
        self.n_items_ = data.n_items
        if self.window_days is None:
            return
        # What was popular in the window before each user's last fitting interaction: the
        # moment they are asked for recommendations (later interactions only break ties).
        order = np.argsort(frame["time"].to_numpy(), kind="stable")
        self.times_ = frame["time"].to_numpy()[order]
        self.items_ = items[order]
        self.last_ = data.last_time()

    def score(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        """Item counts per user (the same row for everyone without a window)."""
        import numpy as np

        users = np.asarray(users, dtype=np.int64)
        if self.window_days is None:
            return np.tile(self.counts_, (len(users), 1))
        out = np.empty((len(users), self.n_items_), dtype=np.float32)
        ends = np.searchsorted(self.times_, self.last_[users], side="right")
        starts = np.searchsorted(self.times_, self.last_[users] - self.window_days * DAY)
        for row, (start, end) in enumerate(zip(starts, ends, strict=True)):
            recent = np.bincount(self.items_[start:end], minlength=self.n_items_)
            # All-time counts break ties (and rank what the window never saw).
            out[row] = recent + self.counts_ / (self.counts_.max() + 1.0)
        return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class ItemKNN:
    """Item-based k nearest neighbours over the user x item matrix (module doc)."""

    def __init__(self, neighbours: int = 100, shrink: float = 10.0, exponent: float = 0.5) -> None:
        _check("ItemKNN", "neighbours", neighbours, _positive_int(neighbours), "an int >= 1")
        _check("ItemKNN", "shrink", shrink, _number(shrink) and shrink >= 0, "a number >= 0")
        _check(
            "ItemKNN",
            "exponent",
            exponent,
            _number(exponent) and 0 <= exponent <= 1,
            "a number in [0, 1]",
        )
        self.neighbours = neighbours
        self.shrink = shrink
        self.exponent = exponent

    def fit(self, data: FitData) -> None:
        """Item-item similarities, the ``neighbours`` largest kept per item."""
        import numpy as np
        import scipy.sparse as sp

        matrix = data.matrix()
        self.matrix_ = matrix
        gram = (matrix.T @ matrix).tocsc().astype(np.float32)
        counts = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float32)
        left = counts**self.exponent
        right = counts ** (1.0 - self.exponent)
        k = min(self.neighbours, data.n_items - 1)
        rows, cols, vals = [], [], []
        for start in range(0, data.n_items, 1024):
            stop = min(start + 1024, data.n_items)
            block = gram[:, start:stop].toarray()
            block /= left[:, None] * right[None, start:stop] + self.shrink + 1e-9
            block[np.arange(start, stop), np.arange(stop - start)] = 0.0
            top = np.argpartition(-block, k - 1, axis=0)[:k]
            values = np.take_along_axis(block, top, axis=0)
            keep = values > 0
            rows.append(top[keep])
            cols.append(np.broadcast_to(np.arange(start, stop), top.shape)[keep])
            vals.append(values[keep])
        self.similarity_ = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(data.n_items, data.n_items),
        )

    def score(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        """Sum of the similarities of each item to the user's items."""
        import numpy as np

        scores = _rows(self.matrix_, users) @ self.similarity_
        return np.asarray(scores.toarray(), dtype=np.float32)


class EASE:
    """Steck 2019's embarrassingly shallow autoencoder (closed form; module doc)."""

    def __init__(self, l2: float = 500.0) -> None:
        _check("EASE", "l2", l2, _number(l2) and l2 > 0, "a number > 0")
        self.l2 = l2

    def fit(self, data: FitData) -> None:
        """Solve for the item-item weights over the items present in ``data``."""
        import numpy as np

        matrix = data.matrix()
        present = np.flatnonzero(np.diff(matrix.tocsc().indptr) > 0)
        sub = matrix[:, present]
        gram = (sub.T @ sub).toarray().astype(np.float32)
        gram[np.diag_indices_from(gram)] += self.l2
        inverse = _inverse_spd(gram)
        weights = inverse / (-np.diag(inverse))
        weights[np.diag_indices_from(weights)] = 0.0
        del inverse, gram
        self.matrix_ = sub.tocsr()
        self.weights_ = weights
        self.present_ = present
        self.n_items_ = data.n_items

    def score(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        """``X_u B``; items absent from the fitting data score -inf (never recommended)."""
        import numpy as np

        out = np.full((len(users), self.n_items_), -np.inf, dtype=np.float32)
        out[:, self.present_] = _rows(self.matrix_, users) @ self.weights_
        return out


def _inverse_spd(matrix: NDArray[np.float32]) -> NDArray[np.float32]:
    """The inverse of a symmetric positive-definite matrix through its Cholesky factor, in
    float32: on the 6,582-item Gram of "all" about 1.5x faster than float64 and 2x faster
    than ``numpy.linalg.inv``, with EASE weights within 1e-5 of float64's at l2 = 10."""
    import numpy as np
    from scipy.linalg import lapack

    factor, info = lapack.spotrf(matrix, lower=1, overwrite_a=1)
    if info == 0:
        inverse, info = lapack.spotri(factor, lower=1, overwrite_c=1)
    if info != 0:  # the l2 > 0 ridge keeps X'X + l2 I positive definite; guard anyway
        raise ArithmeticError(f"Cholesky inversion failed (LAPACK info {info}).")
    lower = np.tril(inverse)
    return np.asarray(lower + np.tril(lower, -1).T, dtype=np.float32)


class _Factors:
    """Shared scoring of the ``implicit`` factor models: user factors x item factors."""

    model_: Any

    def _fit(self, build: Callable[[], Any], matrix: sp.csr_matrix) -> None:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        # implicit checks the BLAS thread pool when a model is built and warns if it has more
        # than one thread; one BLAS thread is also what its own threading expects.
        with threadpool_limits(1, "blas"):
            model = build()
            model.fit(matrix, show_progress=False)
        self.model_ = model

    def score(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        """Dot products of the users' and every item's factors."""
        import numpy as np

        user_factors = np.asarray(self.model_.user_factors)[np.asarray(users, dtype=np.int64)]
        return np.asarray(user_factors @ np.asarray(self.model_.item_factors).T, dtype=np.float32)


class ALS(_Factors):
    """``implicit``'s ALS with confidence ``1 + alpha x`` (module doc)."""

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        weighting: str = "none",
        seed: int = SEED,
    ) -> None:
        _check("ALS", "factors", factors, _positive_int(factors), "an int >= 1")
        _check(
            "ALS",
            "regularization",
            regularization,
            _number(regularization) and regularization >= 0,
            "a number >= 0",
        )
        _check("ALS", "alpha", alpha, _number(alpha) and alpha > 0, "a number > 0")
        _check("ALS", "iterations", iterations, _positive_int(iterations), "an int >= 1")
        _check("ALS", "weighting", weighting, weighting in ("none", "bm25"), "'none' or 'bm25'")
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.weighting = weighting
        self.seed = seed

    def fit(self, data: FitData) -> None:
        """Alternate least squares on the (weighted) interaction matrix."""
        from implicit.als import AlternatingLeastSquares

        matrix = data.matrix()
        if self.weighting == "bm25":
            from implicit.nearest_neighbours import bm25_weight

            matrix = bm25_weight(matrix).tocsr().astype("float32")
        self._fit(
            lambda: AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                num_threads=1,
                random_state=self.seed,
            ),
            matrix,
        )


class BPR(_Factors):
    """``implicit``'s BPR: SGD on sampled (user, seen, unseen) triples (module doc)."""

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        iterations: int = 100,
        seed: int = SEED,
    ) -> None:
        _check("BPR", "factors", factors, _positive_int(factors), "an int >= 1")
        _check(
            "BPR",
            "learning_rate",
            learning_rate,
            _number(learning_rate) and learning_rate > 0,
            "a number > 0",
        )
        _check(
            "BPR",
            "regularization",
            regularization,
            _number(regularization) and regularization >= 0,
            "a number >= 0",
        )
        _check("BPR", "iterations", iterations, _positive_int(iterations), "an int >= 1")
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.seed = seed

    def fit(self, data: FitData) -> None:
        """SGD over sampled triples (one thread: the same seed gives the same factors)."""
        from implicit.bpr import BayesianPersonalizedRanking

        self._fit(
            lambda: BayesianPersonalizedRanking(
                factors=self.factors,
                learning_rate=self.learning_rate,
                regularization=self.regularization,
                iterations=self.iterations,
                num_threads=1,
                random_state=self.seed,
            ),
            data.matrix(),
        )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _factory(cls: Callable[..., Scorer], name: str) -> Callable[[Mapping[str, Any]], Scorer]:
    import inspect

    allowed = sorted(p for p in inspect.signature(cls).parameters)

    def build(params: Mapping[str, Any]) -> Scorer:
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise invalid_parameter(
                "params", f"baseline {name!r}", f"keys among {allowed}", unknown
            )
        return cls(**params)

    return build


BASELINES: dict[str, Callable[[Mapping[str, Any]], Scorer]] = {
    "most-popular": _factory(MostPopular, "most-popular"),
    "item-knn": _factory(ItemKNN, "item-knn"),
    "ease": _factory(EASE, "ease"),
    "als": _factory(ALS, "als"),
    "bpr": _factory(BPR, "bpr"),
}
"""Per baseline name, a factory from one setting of its grid to an unfitted scorer."""


def _product(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]


GRIDS: dict[str, list[dict[str, Any]]] = {
    "most-popular": [{"window_days": w} for w in (None, 30, 90, 365, 730, 1825)],
    "item-knn": _product(
        neighbours=[10, 50, 200, 1000, 3000], shrink=[0, 10, 100], exponent=[0.5, 0.8]
    ),
    "ease": [{"l2": l2} for l2 in (30.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 3000.0)],
    "als": _product(
        factors=[16, 32, 64],
        regularization=[0.01, 0.1, 1.0],
        alpha=[0.5, 1.0, 2.0, 5.0, 20.0],
        iterations=[15],
        weighting=["none", "bm25"],
    ),
    "bpr": _product(
        factors=[16, 32, 64, 128],
        learning_rate=[0.003, 0.01, 0.03],
        regularization=[0.001, 0.01],
        iterations=[50, 100, 300],
    ),
}
"""The full grids (``docs/recsys-baselines.md`` gives the results of searching them)."""

QUICK_GRIDS: dict[str, list[dict[str, Any]]] = {
    "most-popular": [{"window_days": w} for w in (None, 365, 730)],
    "item-knn": [
        {"neighbours": 200, "shrink": 10, "exponent": 0.8},  # all
        {"neighbours": 50, "shrink": 10, "exponent": 0.8},  # positive
    ],
    "ease": [{"l2": 200.0}, {"l2": 500.0}],  # all, positive
    "als": [
        {
            "factors": 16,
            "regularization": 0.01,
            "alpha": 2.0,
            "iterations": 15,
            "weighting": "none",
        },
        {"factors": 32, "regularization": 1.0, "alpha": 0.5, "iterations": 15, "weighting": "none"},
    ],
    "bpr": [
        {"factors": 32, "learning_rate": 0.003, "regularization": 0.01, "iterations": 100},
        {"factors": 16, "learning_rate": 0.01, "regularization": 0.001, "iterations": 50},
    ],
}
"""The full search's winners on both variants (``docs/recsys-baselines.md``), so a quick run
chooses the same settings and reproduces the tuned numbers (the seeds are fixed)."""


def tune_baselines(
    split: Split,
    *,
    grids: Mapping[str, Sequence[Mapping[str, Any]]] = GRIDS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Tuned]:
    """Tune every baseline named in ``grids`` on ``split`` (validation), refit, test once."""
    from shipyard.solutions.recsys.tuning import tune

    unknown = sorted(set(grids) - set(BASELINES))
    if unknown:
        raise invalid_parameter(
            "grids", "tune_baselines", f"keys among {sorted(BASELINES)}", unknown
        )
    return {
        name: tune(name, BASELINES[name], grid, split, progress=progress)
        for name, grid in grids.items()
    }


def search(
    variants: Sequence[str],
    grids: Mapping[str, Sequence[Mapping[str, Any]]] = GRIDS,
    progress: Callable[[str], None] | None = None,
) -> str:
    """Tune every baseline on each variant; the Markdown of the results, the time each
    search took and every setting tried (what ``docs/recsys-baselines.md`` holds)."""
    from shipyard.solutions.recsys.data import load_movielens, temporal_split
    from shipyard.solutions.recsys.report import results_table

    movies = load_movielens()
    parts = []
    for variant in variants:
        split = temporal_split(movies, variant)
        tuned: dict[str, Tuned] = {}
        seconds: dict[str, float] = {}
        for name, grid in grids.items():
            started = time.perf_counter()
            tuned.update(tune_baselines(split, grids={name: grid}, progress=progress))
            seconds[name] = time.perf_counter() - started
        timing = ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items())
        parts += [
            results_table(tuned, variant=variant, baselines=list(tuned)),
            f"Search time ({split.describe()}): {timing}; {sum(seconds.values()):.0f} s in all.",
            "",
            _trials(tuned),
        ]
    return "\n".join(parts)


def _trials(tuned: Mapping[str, Tuned]) -> str:
    lines = [
        "<details><summary>Every setting tried (validation, fitted on train)</summary>",
        "",
        "| model | parameters | validation NDCG@10 | validation recall@10 | fit s |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name, result in tuned.items():
        for trial in sorted(result.trials, key=lambda t: -t.ndcg):
            shown = ", ".join(f"{k}={v}" for k, v in trial.params.items()) or "none"
            lines.append(
                f"| {name} | {shown} | {trial.ndcg:.4f} | {trial.recall:.4f} "
                f"| {trial.fit_seconds:.1f} |"
            )
    return "\n".join([*lines, "", "</details>", ""])


def main(argv: Sequence[str] | None = None) -> None:
    """``--variant all|positive`` (repeatable; default both), ``--full`` (the full grids,
    written to ``docs/recsys-baselines.md`` unless ``--out`` says otherwise; else the quick
    grids, printed)."""
    import platform

    from shipyard.integrity import write_atomically
    from shipyard.solutions.recsys.data import VARIANTS

    parser = argparse.ArgumentParser(description="Tune the recommendation baselines.")
    parser.add_argument("--variant", choices=VARIANTS, action="append")
    parser.add_argument("--full", action="store_true", help="search the full grids")
    parser.add_argument("--out", type=Path, help="the Markdown file to write")
    args = parser.parse_args(argv)
    variants = args.variant or list(VARIANTS)
    body = search(variants, GRIDS if args.full else QUICK_GRIDS, progress=print)
    sys.stdout.write(body + "\n")
    out = args.out or (Path("docs/recsys-baselines.md") if args.full else None)
    if out is None:
        return
    command = "python -m shipyard.solutions.recsys.baselines " + " ".join(
        [*(f"--variant {v}" for v in variants), *(["--full"] if args.full else [])]
    )
    header = [
        "# Recommendations: the tuned baselines",
        "",
        "Every baseline tuned on validation (fitted on train), refit on train + validation, "
        "tested once, on the per-user temporal protocol (`docs/recsys.md`). Grids: "
        "`shipyard.solutions.recsys.baselines.GRIDS`.",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d', time.gmtime())} "
        f"({platform.machine()}, {os.cpu_count()} cores shared with other work: the seconds "
        "are indicative).",
        "",
    ]
    write_atomically(out, ("\n".join(header) + "\n" + body).encode())


if __name__ == "__main__":
    main()
