"""Our recommendation models: a two-stage system (retrieval, then a LightGBM ranker over
feature-store features) and the sequence-aware model, with the grids they are tuned over.

**Retrieval** (:class:`Retrieval`) proposes candidates per user from four sources: the top
``candidates`` items of an implicit ALS model (exact inner products offline; the served
model puts the same factors in an HNSW index), the top ``candidates // 2`` by item-kNN
(cosine co-occurrence with the user's history) and by EASE (``ease_l2``; over the items
with 2+ fitting interactions), and the ``popular`` items most interacted with in the
``popular_days`` before the user's own moment (each user's test period falls at a
different time, and what was popular then matters). Items the user has seen are never
candidates; every source's score is also a ranker feature.

**Ranking** (:class:`TwoStage`): a LightGBM ``lambdarank`` model over the candidates'
retrieval scores and the features of :mod:`shipyard.solutions.recsys.features`. Its labels
never come from the stage being scored: each user's fitting interactions are split by time,
the last ``ranker_share`` (at least one, for users with 3 or more) become the ranker's
targets, retrieval and the feature store are fitted on the rest, and candidates that the
user went on to interact with are the positives. Retrieval and features are then computed
again on the whole fitting data, at each user's last fitting moment, and the ranker orders
those candidates. Items that are not candidates score below every candidate.

**Measured** on the "all" variant (2026-11-28, 2 shared cores), every model through
:func:`~shipyard.solutions.recsys.tuning.tune` over :data:`GRIDS`: the two-stage model
(300 candidates, 600 trees at 0.03, 31 leaves) scored test NDCG@10 0.165 [0.151, 0.180]
against the best tuned baseline's (EASE, l2=200) 0.139 [0.125, 0.152]: +0.026
[+0.014, +0.041] paired over users, +19% [+10%, +31%]; the per-model intervals still touch
(0.151 against 0.152). Candidates hold 45% of the test items; a fit takes 1.5 to 5 minutes.
The sequence model stays below most popular (test 0.074): see its module.

Example::

    tuned = tune("two_stage", OUR_MODELS["two_stage"], GRIDS["two_stage"], split)
    print(tuned.describe())
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from numpy.typing import NDArray

    from shipyard.solutions.recsys.data import FitData
    from shipyard.solutions.recsys.metrics import Scorer
    from shipyard.workspace import Workspace

__all__ = ["GRIDS", "OUR_MODELS", "QUICK_GRIDS", "Retrieval", "TwoStage", "split_for_ranker"]

NOT_A_CANDIDATE = -1.0e9
"""The score of an item that retrieval did not propose: below every ranked candidate."""
RETRIEVAL_NAMES = ("als_score", "als_rank", "knn_score", "ease_score", "popular_score")
EASE_MIN_COUNT = 2
"""EASE is fitted over the items with at least this many fitting interactions (a third of
the full catalogue's inversion cost on MovieLens; an item seen once has no co-occurrence
to learn from)."""


def _positive_int(value: Any, name: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid_parameter(name, owner, "an int >= 1", value)
    return value


class Retrieval:
    """Candidate items per user from ALS, item-kNN, EASE and recent popularity (module doc)."""

    def __init__(
        self,
        *,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 10.0,
        iterations: int = 15,
        candidates: int = 200,
        popular: int = 50,
        popular_days: int = 90,
        ease_l2: float | None = 300.0,
        seed: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.candidates = candidates
        self.popular = popular
        self.popular_days = popular_days
        self.ease_l2 = ease_l2
        self.seed = seed

    def fit(self, data: FitData) -> None:
        """Fit ALS and the item similarities on ``data``; remember each user's moment."""
        import implicit
        import numpy as np
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        from shipyard.solutions.recsys.features import cosine_items

        for name in ("factors", "iterations", "candidates", "popular", "popular_days"):
            _positive_int(getattr(self, name), name, "Retrieval")
        matrix = data.matrix()
        # implicit warns when BLAS runs its own threads: its constructor checks, so both run
        # under the limit
        with threadpool_limits(1, "blas"):
            model = implicit.als.AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.seed,
                use_gpu=False,
            )
            model.fit(matrix, show_progress=False)
        self.user_factors_: NDArray[np.float32] = np.asarray(model.user_factors, np.float32)
        self.item_factors_: NDArray[np.float32] = np.asarray(model.item_factors, np.float32)
        self.similarity_ = cosine_items(matrix)
        self.ease_items_, self.ease_ = _ease(matrix, self.ease_l2)
        self.seen_ = matrix
        self.moments_ = data.last_time()
        order = np.argsort(data.interactions["time"].to_numpy(), kind="mergesort")
        self.times_ = data.interactions["time"].to_numpy()[order]
        self.items_ = data.interactions["item"].to_numpy()[order]
        self.n_items_ = data.n_items

    def popular_at(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        """Per user, each item's interactions in the ``popular_days`` up to their moment."""
        import numpy as np

        out = np.zeros((len(users), self.n_items_), dtype=np.float32)
        for row, user in enumerate(users):
            moment = self.moments_[user]
            lo = np.searchsorted(self.times_, moment - self.popular_days * 86_400, side="right")
            hi = np.searchsorted(self.times_, moment, side="right")
            out[row] = np.bincount(self.items_[lo:hi], minlength=self.n_items_)
        return out

    def retrieve(self, users: NDArray[np.int64]) -> pd.DataFrame:
        """Candidate pairs (``user``, ``item``) with :data:`RETRIEVAL_NAMES`, unseen items only."""
        import numpy as np
        import pandas as pd

        als = self.user_factors_[users] @ self.item_factors_.T
        knn = np.asarray((self.seen_[users] @ self.similarity_).todense(), dtype=np.float32)
        ease = np.zeros_like(knn)
        if len(self.ease_items_):
            ease[:, self.ease_items_] = self.seen_[users][:, self.ease_items_] @ self.ease_
        popular = self.popular_at(users)
        seen = self.seen_[users].toarray() > 0
        chosen = np.zeros(als.shape, dtype=bool)
        half = self.candidates // 2
        for scores, n in ((als, self.candidates), (knn, half), (ease, half)):
            chosen |= _top_mask(np.where(seen, -np.inf, scores), n)
        chosen |= _top_mask(np.where(seen | (popular == 0), -np.inf, popular), self.popular)
        chosen &= ~seen
        rows, items = np.nonzero(chosen)
        ranks = np.argsort(np.argsort(-np.where(seen, -np.inf, als), axis=1), axis=1)
        return pd.DataFrame(
            {
                "user": users[rows],
                "item": items.astype(np.int64),
                "als_score": als[rows, items].astype(np.float64),
                "als_rank": ranks[rows, items].astype(np.float64),
                "knn_score": knn[rows, items].astype(np.float64),
                "ease_score": ease[rows, items].astype(np.float64),
                "popular_score": popular[rows, items].astype(np.float64),
            }
        )


def _ease(matrix: sp.csr_matrix, l2: float | None) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """EASE (Steck 2019) over the items with :data:`EASE_MIN_COUNT`+ interactions: their
    indexes and the item-item weights (zero diagonal). ``l2`` None: no EASE (empty)."""
    import numpy as np

    if l2 is None:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    if isinstance(l2, bool) or not isinstance(l2, int | float) or l2 <= 0:
        raise invalid_parameter("ease_l2", "Retrieval", "a float > 0 or None", l2)
    counts = np.asarray(matrix.sum(axis=0)).ravel()
    kept = np.flatnonzero(counts >= EASE_MIN_COUNT).astype(np.int64)
    columns = matrix[:, kept]
    gram = (columns.T @ columns).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    inverse = np.linalg.inv(gram)
    weights = inverse / -np.diag(inverse)
    weights[np.diag_indices_from(weights)] = 0.0
    return kept, weights.astype(np.float32)


def _top_mask(scores: NDArray[np.floating], n: int) -> NDArray[np.bool_]:
    """True at each row's ``n`` highest finite scores."""
    import numpy as np

    n = min(n, scores.shape[1])
    top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    mask = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(mask, top, True, axis=1)
    out: NDArray[np.bool_] = mask & np.isfinite(scores)
    return out


def split_for_ranker(data: FitData, share: float) -> tuple[FitData, dict[int, set[int]]]:
    """Each user's fitting interactions split by time: the first part (what retrieval and the
    features see) and the last ``share`` (at least one, users with 3 or more) as targets."""
    import numpy as np

    from shipyard.solutions.recsys.data import FitData

    if not 0.0 < share < 1.0:
        raise invalid_parameter("ranker_share", "TwoStage", "a float in (0, 1)", share)
    frame = data.interactions
    position = frame.groupby("user").cumcount().to_numpy()
    count = frame.groupby("user")["item"].transform("size").to_numpy()
    held = np.maximum(1, np.round(share * count)).astype(np.int64)
    target = (count >= 3) & (position >= count - held)
    history = FitData(frame[~target].reset_index(drop=True), data.n_users, data.n_items, data.items)
    targets: dict[int, set[int]] = {}
    for user, item in zip(frame["user"][target], frame["item"][target], strict=True):
        targets.setdefault(int(user), set()).add(int(item))
    return history, targets


@contextlib.contextmanager
def _workspace(workspace: Workspace | None) -> Iterator[Workspace]:
    """The given workspace, or a temporary one removed afterwards."""
    from shipyard.workspace import Workspace

    if workspace is not None:
        yield workspace
        return
    with tempfile.TemporaryDirectory(prefix="shipyard-recsys-") as folder:
        temporary = Workspace.init(f"{folder}/workspace")
        try:
            yield temporary
        finally:
            temporary.close()


class TwoStage:
    """Retrieval, then a LightGBM lambdarank ranker over feature-store features (module doc).

    Example: ``TwoStage(candidates=200, trees=300).fit(split.fitting("validation"))``.
    """

    def __init__(
        self,
        *,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 10.0,
        iterations: int = 15,
        candidates: int = 200,
        popular: int = 50,
        popular_days: int = 90,
        ease_l2: float | None = 300.0,
        trees: int = 300,
        learning_rate: float = 0.05,
        leaves: int = 31,
        min_leaf: int = 50,
        ranker_share: float = 0.2,
        seed: int = 0,
        workspace: Workspace | None = None,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.candidates = candidates
        self.popular = popular
        self.popular_days = popular_days
        self.ease_l2 = ease_l2
        self.trees = trees
        self.learning_rate = learning_rate
        self.leaves = leaves
        self.min_leaf = min_leaf
        self.ranker_share = ranker_share
        self.seed = seed
        self.workspace = workspace

    def _retrieval(self) -> Retrieval:
        return Retrieval(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            candidates=self.candidates,
            popular=self.popular,
            popular_days=self.popular_days,
            ease_l2=self.ease_l2,
            seed=self.seed,
        )

    def _frame(self, workspace: Workspace, data: FitData) -> pd.DataFrame:
        """Candidates of every user with fitting interactions, with all ranker features."""
        import numpy as np

        from shipyard.solutions.recsys.features import pair_features, write_interactions

        retrieval = self._retrieval()
        retrieval.fit(data)
        users = np.flatnonzero(np.diff(data.matrix().indptr) > 0).astype(np.int64)
        pairs = retrieval.retrieve(users)
        version = write_interactions(workspace, data)
        return pair_features(workspace, version, data, pairs, retrieval.similarity_)

    def fit(self, data: FitData) -> None:
        """Fit the ranker on a time slice of ``data``, then rank ``data``'s candidates."""
        import lightgbm as lgb
        import numpy as np

        _positive_int(self.trees, "trees", "TwoStage")
        _positive_int(self.leaves, "leaves", "TwoStage")
        _positive_int(self.min_leaf, "min_leaf", "TwoStage")
        history, targets = split_for_ranker(data, self.ranker_share)
        with _workspace(self.workspace) as workspace:
            train = self._frame(workspace, history)
            full = self._frame(workspace, data)
        labels = np.array(
            [
                item in targets.get(int(u), ())
                for u, item in zip(train["user"], train["item"], strict=True)
            ],
            dtype=np.int32,
        )
        has_positive = train.assign(label=labels).groupby("user")["label"].transform("max") > 0
        train, labels = train[has_positive.to_numpy()], labels[has_positive.to_numpy()]
        self.feature_names_ = [c for c in train.columns if c not in ("user", "item")]
        self.ranker_ = lgb.LGBMRanker(
            objective="lambdarank",
            n_estimators=self.trees,
            learning_rate=self.learning_rate,
            num_leaves=self.leaves,
            min_child_samples=self.min_leaf,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            random_state=self.seed,
            n_jobs=1,
            deterministic=True,
            force_col_wise=True,
            verbose=-1,
        )
        groups = train.groupby("user", sort=False).size().to_numpy()
        self.ranker_.fit(train[self.feature_names_], labels, group=groups)
        self.target_recall_ = _recall_of(train, targets)
        predicted = self.ranker_.predict(full[self.feature_names_])
        self.scores_: NDArray[np.float32] = np.full(
            (data.n_users, data.n_items), NOT_A_CANDIDATE, dtype=np.float32
        )
        self.scores_[full["user"].to_numpy(), full["item"].to_numpy()] = predicted
        self.candidates_ = full[["user", "item"]].reset_index(drop=True)

    def score(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        """Ranker scores of every item for ``users`` (non-candidates far below)."""
        if not hasattr(self, "scores_"):
            raise invalid_parameter("self", "TwoStage.score", "a fitted model (call fit)", None)
        return self.scores_[users]

    def candidate_recall(self, truth: Mapping[int, NDArray[np.int64]]) -> float:
        """The share of ``truth``'s held-out items (pooled over users) that were candidates."""
        pairs = set(
            zip(self.candidates_["user"].tolist(), self.candidates_["item"].tolist(), strict=True)
        )
        total = sum(len(items) for items in truth.values())
        found = sum((int(u), int(i)) in pairs for u, items in truth.items() for i in items)
        return found / max(total, 1)


def _recall_of(frame: pd.DataFrame, targets: Mapping[int, set[int]]) -> float:
    pairs = set(zip(frame["user"].tolist(), frame["item"].tolist(), strict=True))
    total = sum(len(t) for t in targets.values())
    return sum((u, i) in pairs for u, t in targets.items() for i in t) / max(total, 1)


def _two_stage(params: Mapping[str, Any]) -> Scorer:
    return TwoStage(**params)


def _sequence(params: Mapping[str, Any]) -> Scorer:
    from shipyard.solutions.recsys.sequence import SequenceRecommender

    return SequenceRecommender(**params)


OUR_MODELS: dict[str, Callable[[Mapping[str, Any]], Scorer]] = {
    "two_stage": _two_stage,
    "sequence": _sequence,
}
"""Factories of our models, by name, for :func:`~shipyard.solutions.recsys.tuning.tune`."""

GRIDS: dict[str, list[dict[str, Any]]] = {
    "two_stage": [
        {"candidates": 300, "trees": 600, "leaves": 31, "learning_rate": 0.03},
        {"candidates": 300, "trees": 600, "leaves": 63, "min_leaf": 20, "learning_rate": 0.03},
        {"candidates": 400, "trees": 800, "leaves": 31, "learning_rate": 0.03},
    ],
    "sequence": [
        {"dim": 64, "blocks": 1, "max_len": 50, "dropout": 0.2},
        {"dim": 64, "blocks": 2, "max_len": 100, "dropout": 0.2},
    ],
}
"""The grids the results table tunes our models over (on validation)."""

QUICK_GRIDS: dict[str, list[dict[str, Any]]] = {
    "two_stage": [{"candidates": 150, "trees": 150, "leaves": 15, "learning_rate": 0.05}],
    "sequence": [{"dim": 64, "blocks": 1, "max_len": 50, "dropout": 0.2, "max_epochs": 5}],
}
"""The quickstart's grids: one setting each, all our models within about 90 s."""
