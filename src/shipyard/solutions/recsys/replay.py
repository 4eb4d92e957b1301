"""What the session signal adds: an offline replay of the test period, step by step.

**Protocol.** For each evaluated user, their test interactions are walked in time order
(ties by item id, as :func:`~shipyard.solutions.recsys.data.temporal_split` orders them):
``t_1, t_2, ..., t_n``. At step ``j`` (``j = 0 .. n-1``) the user has seen ``t_1 .. t_j`` in
the test period so far; the last ``session_length`` of them (at most) are the **session**,
and the served recommender is asked, in process, for the top ``k`` items of the user with
that session, seen items excluded (:meth:`shipyard.training.recommend.Recommender.recommend`
with ``exclude_seen=True``: the fitting history and the session). Each step is scored
against what the user did next:

- ``hit@k`` = 1 when the next item ``t_{j+1}`` is among the ``k`` recommended, else 0;
- ``ndcg@k`` = NDCG@k (binary relevance, :func:`~shipyard.solutions.recsys.metrics.ndcg_at_k`)
  of the list against the **remaining** test items ``t_{j+1} .. t_n``: ``sum 1/log2(rank+1)``
  over hits at ranks 1..k over the same sum for ``min(k, n-j)`` hits at the top.

Step 0 has an empty session: it is the protocol's usual test of the user (one request at
the start of the test period), identical for every session weight.

**Comparison.** The same steps are replayed twice: with ``session_weight`` 0 (the query is
the user's vector alone: no session signal in retrieval; the session's items are still
excluded, so both lists compete for the same unseen items) and with the model's weight.
Steps are grouped into buckets by session length (``0``, ``1``, ``2-4``, ``5-9``,
``10-19``, ``20+`` by default); within a bucket each user's steps are averaged first, so
every user counts once, and the 95% intervals resample users
(:func:`~shipyard.solutions.recsys.metrics.bootstrap_mean`,
:func:`~shipyard.solutions.recsys.metrics.paired_difference`: the two weights on the same
users). A model with a ranker still sees the session in its ranker at weight 0: the
comparison then measures the session in retrieval only (:attr:`ReplayResult.notes`).

**Measured** (2026-11-28, "all" variant, :func:`~shipyard.solutions.recsys.served.fit_recommender`
defaults: 64-factor ALS, HNSW, session weight 256, the last 20 items): 20,003 steps of 671
users; NDCG@10 0.0645 [0.0573, 0.0719] without the session, 0.0906 [0.0835, 0.0990] with
it, +0.0260 [+0.0185, +0.0336] (+40% [+27%, +56%]); hit@10 0.066 -> 0.109. By session
length: 1 item +0.007 [-0.006, +0.020] (not significant), 2-4 +0.025, 5-9 +0.037, 10-19
+0.048 (+66%), 20+ +0.024 (+60%). 96 s on the shared 2-core machine.

Example::

    result = replay_sessions(recommender, temporal_split(load_movielens()))
    print(result.describe())
    print(result.table())        # Markdown, one row per bucket
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shipyard.errors import DataValidationError, invalid_parameter

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.solutions.recsys.data import Split
    from shipyard.training.metrics import Interval
    from shipyard.training.recommend import Recommender

__all__ = ["BUCKETS", "BucketResult", "ReplayResult", "replay_sessions"]

BUCKETS = (0, 1, 2, 5, 10, 20)
"""Lower bounds of the session-length buckets: 0, 1, 2-4, 5-9, 10-19, 20+."""
METRICS = ("hit", "ndcg")


@dataclass(frozen=True)
class BucketResult:
    """One bucket of session lengths: both weights' metrics and their paired difference."""

    bucket: str
    users: int
    steps: int
    without: dict[str, Interval]
    """Per metric (``hit``, ``ndcg``), session weight 0: mean over users, 95% interval."""
    with_session: dict[str, Interval]
    """The same with the model's session weight."""
    difference: dict[str, Interval]
    """``with - without``, paired over the same users."""
    relative: dict[str, Interval]
    """``with / without - 1``."""


@dataclass(frozen=True)
class ReplayResult:
    """The replay of every test step (one row each) and its summary per bucket."""

    steps: pd.DataFrame
    """One row per step: ``user`` (dense), ``step`` (session length before the cap),
    ``bucket``, then ``hit_without``, ``ndcg_without``, ``hit_with``, ``ndcg_with``."""
    buckets: tuple[BucketResult, ...]
    overall: BucketResult
    """Every step of every user (each user's steps averaged first)."""
    weight: float
    k: int
    session_length: int
    seconds: float
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """A few lines: what was replayed, and the NDCG gain of the session signal."""
        o = self.overall
        lines = [
            f"session replay over the test period: {o.steps:,} steps of {o.users:,} users, "
            f"top {self.k}, session = the last {self.session_length} test items seen, "
            f"weight 0 vs {self.weight:g} ({self.seconds:.1f} s)",
            f"  all steps: ndcg@{self.k} {_num(o.without['ndcg'])} -> "
            f"{_num(o.with_session['ndcg'])}, {_signed(o.difference['ndcg'])} "
            f"({_percent(o.relative['ndcg'])}); hit@{self.k} {_num(o.without['hit'])} -> "
            f"{_num(o.with_session['hit'])}, {_signed(o.difference['hit'])}",
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def table(self) -> str:
        """A Markdown table: one row per bucket of session lengths, then all steps."""
        k = self.k
        head = (
            f"| session items | users | steps | ndcg@{k} no session | ndcg@{k} session | "
            f"difference | relative | hit@{k} no session | hit@{k} session | difference |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        )
        rows = [
            f"| {b.bucket} | {b.users:,} | {b.steps:,} | {_num(b.without['ndcg'])} | "
            f"{_num(b.with_session['ndcg'])} | {_signed(b.difference['ndcg'])} | "
            f"{_percent(b.relative['ndcg'])} | {_num(b.without['hit'])} | "
            f"{_num(b.with_session['hit'])} | {_signed(b.difference['hit'])} |"
            for b in (*self.buckets, self.overall)
        ]
        return "\n".join([head, *rows])


def _num(i: Interval) -> str:
    return f"{i.estimate:.4f} [{i.low:.4f}, {i.high:.4f}]"


def _signed(i: Interval) -> str:
    return f"{i.estimate:+.4f} [{i.low:+.4f}, {i.high:+.4f}]"


def _percent(i: Interval) -> str:
    return f"{i.estimate:+.1%} [{i.low:+.1%}, {i.high:+.1%}]"


def replay_sessions(
    model: Recommender,
    split: Split,
    *,
    weight: float | None = None,
    session_length: int | None = None,
    k: int = 10,
    buckets: tuple[int, ...] = BUCKETS,
    users: int | None = None,
    batch: int = 1024,
    n_boot: int = 1000,
    seed: int = 0,
) -> ReplayResult:
    """Replay the test period step by step with and without the session signal (module doc).

    ``model`` must have been fitted on ``split.fitting("test")`` (train + validation) with
    MovieLens ids as its item and user ids; ``weight`` defaults to its ``session_weight``,
    ``session_length`` to its own. ``users`` keeps the first N evaluated users (by dense
    index). Example: ``replay_sessions(rec, split, users=100).table()``.
    """
    import time

    owner = "replay_sessions"
    weight = float(model.session_weight if weight is None else weight)
    length = int(model.session_length if session_length is None else session_length)
    _check(owner, weight, length, k, buckets, users, batch)
    started = time.perf_counter()
    plan = _plan(model, split, length, users)
    results = {}
    for name, w in (("without", 0.0), ("with", weight)):
        replica = copy.copy(model)
        replica.session_weight = w
        # the replay's sessions must never reach a live store's session state
        replica._store = None
        recommended = _recommend(replica, plan, k, batch)
        results[name] = _score(recommended, plan, k)
    frame = plan.steps.assign(
        bucket=_bucket_names(plan.steps["step"].to_numpy(), buckets),
        hit_without=results["without"][0],
        ndcg_without=results["without"][1],
        hit_with=results["with"][0],
        ndcg_with=results["with"][1],
    )
    names = _bucket_labels(buckets)
    per_bucket = tuple(
        _summary(frame[frame["bucket"] == name], name, n_boot, seed)
        for name in names
        if (frame["bucket"] == name).any()
    )
    notes = []
    if getattr(model, "ranker", None) is not None:
        notes.append("the model has a ranker, which sees the session at weight 0 too")
    if weight == 0.0:
        notes.append("the model's session weight is 0: both replays are the same")
    return ReplayResult(
        steps=frame,
        buckets=per_bucket,
        overall=_summary(frame, "all", n_boot, seed),
        weight=weight,
        k=k,
        session_length=length,
        seconds=time.perf_counter() - started,
        notes=tuple(notes),
    )


def _check(
    owner: str,
    weight: float,
    length: int,
    k: int,
    buckets: tuple[int, ...],
    users: int | None,
    batch: int,
) -> None:
    if not weight >= 0:
        raise invalid_parameter("weight", owner, "a session weight >= 0", weight)
    for name, value in (("session_length", length), ("k", k), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise invalid_parameter(name, owner, "an integer >= 1", value)
    if users is not None and (isinstance(users, bool) or not isinstance(users, int) or users < 1):
        raise invalid_parameter("users", owner, "None or an integer >= 1", users)
    ok = (
        isinstance(buckets, tuple)
        and len(buckets) >= 1
        and buckets[0] == 0
        and all(isinstance(b, int) for b in buckets)
        and all(a < b for a, b in itertools.pairwise(buckets))
    )
    if not ok:
        raise invalid_parameter(
            "buckets", owner, "increasing session lengths starting at 0, e.g. (0, 1, 5)", buckets
        )


@dataclass(frozen=True)
class _Plan:
    """Every step to replay: its user and session (external ids) and its targets (dense)."""

    steps: pd.DataFrame
    """``user`` (dense), ``step``."""
    user_ids: list[str]
    sessions: list[str]
    next_item: NDArray[np.int64]
    remaining: list[NDArray[np.int64]]
    item_ids: NDArray[np.int64]


def _plan(model: Recommender, split: Split, length: int, limit: int | None) -> _Plan:
    import numpy as np
    import pandas as pd

    test = split.held_out("test")
    evaluated = np.unique(test["user"].to_numpy())
    if limit is not None:
        evaluated = evaluated[:limit]
    known = model.items.lookup([str(i) for i in split.item_ids[np.unique(test["item"])]])
    if (known < 0).all():
        raise DataValidationError(
            "replay_sessions: the model knows none of the split's test items by MovieLens id; "
            "fit it on split.fitting('test') with MovieLens ids as item ids"
        )
    users, steps, user_ids, sessions, nexts, remaining = [], [], [], [], [], []
    for user, group in test[test["user"].isin(evaluated)].groupby("user", sort=True):
        items = group["item"].to_numpy(dtype=np.int64)
        external = [str(i) for i in split.item_ids[items]]
        name = str(split.user_ids[int(user)])
        for j in range(len(items)):
            users.append(int(user))
            steps.append(j)
            user_ids.append(name)
            sessions.append(" ".join(external[max(0, j - length) : j]))
            nexts.append(int(items[j]))
            remaining.append(items[j:])
    frame = pd.DataFrame(
        {"user": np.array(users, dtype=np.int64), "step": np.array(steps, dtype=np.int64)}
    )
    return _Plan(
        frame, user_ids, sessions, np.array(nexts, dtype=np.int64), remaining, split.item_ids
    )


def _recommend(model: Recommender, plan: _Plan, k: int, batch: int) -> NDArray[np.int64]:
    """The top ``k`` of every step as MovieLens ids (-1 where a list is shorter)."""
    import numpy as np

    out = np.full((len(plan.user_ids), k), -1, dtype=np.int64)
    for start in range(0, len(plan.user_ids), batch):
        end = start + batch
        answers = model.recommend(
            plan.user_ids[start:end], sessions=plan.sessions[start:end], k=k, exclude_seen=True
        )
        for r, answer in enumerate(answers):
            ids = [int(entry["item"]) for entry in answer["items"][:k]]
            out[start + r, : len(ids)] = ids
    return out


def _score(
    recommended: NDArray[np.int64], plan: _Plan, k: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per step: hit@k of the next item, NDCG@k of the remaining items (module doc)."""
    import numpy as np

    from shipyard.solutions.recsys.metrics import ndcg_at_k

    # MovieLens ids back to the split's dense items (-1 stays unmatched)
    position = np.searchsorted(plan.item_ids, recommended)
    position = np.minimum(position, len(plan.item_ids) - 1)
    dense = np.where(plan.item_ids[position] == recommended, position, -1)
    hits = (dense == plan.next_item[:, None]).any(axis=1).astype(np.float64)
    return hits, ndcg_at_k(dense, plan.remaining, k)


def _bucket_labels(buckets: tuple[int, ...]) -> list[str]:
    labels = []
    for low, high in zip(buckets, (*buckets[1:], None), strict=True):
        if high is None:
            labels.append(f"{low}+")
        elif high == low + 1:
            labels.append(str(low))
        else:
            labels.append(f"{low}-{high - 1}")
    return labels


def _bucket_names(steps: NDArray[np.int64], buckets: tuple[int, ...]) -> NDArray[np.object_]:
    import numpy as np

    labels = np.array(_bucket_labels(buckets), dtype=object)
    index = np.searchsorted(np.array(buckets), steps, side="right") - 1
    out: NDArray[np.object_] = labels[index]
    return out


def _summary(frame: pd.DataFrame, name: str, n_boot: int, seed: int) -> BucketResult:
    """Each user's steps averaged, then user-bootstrap intervals (paired across weights)."""
    from shipyard.solutions.recsys.metrics import bootstrap_mean, paired_difference

    per_user = frame.groupby("user")[
        ["hit_without", "ndcg_without", "hit_with", "ndcg_with"]
    ].mean()
    without, with_session, difference, relative = {}, {}, {}, {}
    for metric in METRICS:
        a = per_user[f"{metric}_without"].to_numpy(dtype=float)
        b = per_user[f"{metric}_with"].to_numpy(dtype=float)
        without[metric] = bootstrap_mean(a, n_boot, seed)
        with_session[metric] = bootstrap_mean(b, n_boot, seed)
        difference[metric], relative[metric] = paired_difference(a, b, n_boot, seed)
    return BucketResult(
        name, len(per_user), len(frame), without, with_session, difference, relative
    )
