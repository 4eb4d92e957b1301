"""The served MovieLens recommender: fit the factors, index them, register, serve.

:func:`fit_recommender` fits implicit ALS (the ``implicit`` package, confidence
``1 + alpha x``) on a stage's fitting interactions and builds a
:class:`~shipyard.training.recommend.Recommender` keyed by MovieLens ids (``"318"``), with
titles and genres, the items each user has seen, interaction counts as the cold-start
order, and the item vectors in an HNSW index (:mod:`shipyard.training.ann`).
:func:`register_recommender` registers it (an MLflow run with its parameters and metrics,
lineage naming the ``movielens`` data set it was fitted on, a card with its intended use and
its cold-start and session rules) and makes it the champion, ready for
``shipyard serve movies``.

**Session weight.** A request's session items move the query toward their mean:
``user + w * mean(session)``. :func:`choose_session_weight` picks ``w`` on validation only:
the model is fitted on train, each evaluated user's validation interactions are split in
time, the first half (at most ``session_length`` items) sent as the session and the second
half the relevant items; NDCG@10 (seen and session items excluded) is measured for each
weight of a grid. On MovieLens ("all"; 64 factors, regularization 0.05, alpha 10; 671 users),
NDCG@10 of the second half was 0.068 at weight 0 (the user's vector alone), 0.072 at 4,
0.081 at 16, 0.096 at 64, 0.107 at 256 and 0.108 at 1,000 (0.106 for the session mean
alone): what a user watched last says more about what comes next than their whole history,
and ALS item vectors are short beside user vectors, so the weight is large. 256 is chosen
(within 0.001 of the best; the history still breaks ties). The weight is in the units of
the factors: choose it again when the factor settings change.

Example::

    split = temporal_split(load_movielens())
    recommender = fit_recommender(split.fitting("test"), user_ids=split.user_ids)
    register_recommender(ws, recommender, split_note="fitted on train + validation",
                         interactions=interactions_frame(split.fitting("test"), split.user_ids))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.registry.card import CardNotes
    from shipyard.registry.models import ModelVersion
    from shipyard.solutions.recsys.data import FitData, Split
    from shipyard.training.ann import IndexKind
    from shipyard.training.recommend import Ranker, Recommender
    from shipyard.workspace import Workspace

__all__ = [
    "MODEL_NAME",
    "SESSION_WEIGHT",
    "choose_session_weight",
    "fit_recommender",
    "interactions_frame",
    "recommender_card_notes",
    "register_recommender",
]

MODEL_NAME = "movies"
SESSION_WEIGHT = 256.0
"""The session weight :func:`choose_session_weight` chose on validation (module doc)."""
WEIGHT_GRID = (0.0, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0)


def fit_recommender(
    data: FitData,
    *,
    factors: int = 64,
    regularization: float = 0.05,
    alpha: float = 10.0,
    iterations: int = 15,
    session_weight: float = SESSION_WEIGHT,
    session_length: int = 20,
    session_ttl_s: float = 1800.0,
    candidates: int = 200,
    index: IndexKind | None = "hnsw",
    ranker: Ranker | None = None,
    user_ids: Sequence[Any] | NDArray[Any] | None = None,
    seed: int = 0,
) -> Recommender:
    """An ALS recommender over ``data`` (one stage's fitting interactions), MovieLens-keyed.

    ``user_ids`` are the external id of each dense user (``split.user_ids``; default: the
    dense index itself); items are keyed by ``data.items["movie_id"]``. ``index`` is
    ``"hnsw"``, ``"exact"`` (a faiss flat index) or None (numpy's exact product).
    Example: ``fit_recommender(split.fitting("test"), user_ids=split.user_ids)``.
    """
    import numpy as np

    from shipyard.solutions.recsys.baselines import ALS
    from shipyard.training.recommend import Recommender

    if user_ids is not None and len(user_ids) != data.n_users:
        raise invalid_parameter(
            "user_ids", "fit_recommender", f"one id per user ({data.n_users})", len(user_ids)
        )
    als = ALS(
        factors=factors,
        regularization=regularization,
        alpha=alpha,
        iterations=iterations,
        seed=seed,
    )
    als.fit(data)
    item_vectors = np.ascontiguousarray(als.model_.item_factors, dtype=np.float32)
    user_vectors = np.ascontiguousarray(als.model_.user_factors, dtype=np.float32)
    matrix = data.matrix()
    matrix.sort_indices()
    built = None
    if index is not None:
        from shipyard.training.ann import ItemIndex

        # faiss searches max(ef_search, k) candidates: retrieval asks for `candidates`
        built = ItemIndex.build(
            item_vectors,
            kind=index,
            ef_search=max(64, candidates),
            seed=seed,
        )
    items = data.items
    users = range(data.n_users) if user_ids is None else user_ids
    return Recommender(
        item_ids=[str(i) for i in items["movie_id"]],
        item_vectors=item_vectors,
        user_ids=[str(u) for u in users],
        user_vectors=user_vectors,
        seen_indptr=matrix.indptr.astype(np.int64),
        seen_indices=matrix.indices.astype(np.int32),
        popularity=np.asarray(matrix.sum(axis=0), dtype=np.float32).ravel(),
        titles=[str(t) for t in items["title"]],
        genres=[str(g) for g in items["genres"]],
        session_weight=session_weight,
        session_length=session_length,
        session_ttl_s=session_ttl_s,
        candidates=candidates,
        index=built,
        ranker=ranker,
    )


def choose_session_weight(
    split: Split,
    weights: Sequence[float] = WEIGHT_GRID,
    *,
    k: int = 10,
    users: int | None = None,
    **fit: Any,
) -> dict[float, float]:
    """Validation NDCG@``k`` of each session weight (module doc); fit options as
    :func:`fit_recommender`'s. ``users`` keeps the first N evaluated users.

    Example: ``scores = choose_session_weight(split); best = max(scores, key=scores.get)``.
    """
    import numpy as np

    from shipyard.solutions.recsys.metrics import ndcg_at_k

    model = fit_recommender(split.fitting("validation"), user_ids=split.user_ids, **fit)
    held = split.held_out("validation")
    rows, sessions, relevant = [], [], []
    for user, group in held.groupby("user", sort=True):
        items = group.drop_duplicates("item")["item"].to_numpy(dtype=np.int64)
        if len(items) < 2:
            continue
        half = len(items) // 2
        rows.append(str(split.user_ids[int(user)]))
        shown = items[:half][-model.session_length :]
        sessions.append(" ".join(str(split.item_ids[i]) for i in shown))
        relevant.append(split.item_ids[items[half:]])
    if users is not None:
        rows, sessions, relevant = rows[:users], sessions[:users], relevant[:users]
    scores = {}
    for weight in weights:
        model.session_weight = float(weight)
        answers = model.recommend(rows, sessions=sessions, k=k)
        found = np.full((len(rows), k), -1, dtype=np.int64)
        for r, answer in enumerate(answers):
            ids = [int(e["item"]) for e in answer["items"]]
            found[r, : len(ids)] = ids
        scores[float(weight)] = float(np.mean(ndcg_at_k(found, relevant, k)))
    return scores


def interactions_frame(data: FitData, user_ids: Sequence[Any] | NDArray[Any]) -> pd.DataFrame:
    """``data``'s interactions with MovieLens ids (``user``, ``item``, ``rating``, ``time`` as
    a timestamp), sorted by time: what :func:`register_recommender` writes to the catalog."""
    import numpy as np
    import pandas as pd

    frame = data.interactions
    movie = data.items["movie_id"].to_numpy()
    out = pd.DataFrame(
        {
            "user": np.asarray(user_ids)[frame["user"].to_numpy()].astype(str),
            "item": movie[frame["item"].to_numpy()].astype(str),
            "rating": frame["rating"].to_numpy(dtype=np.float64),
            "time": pd.to_datetime(frame["time"].to_numpy(), unit="s"),
        }
    )
    return out.sort_values(["time", "user", "item"], kind="mergesort").reset_index(drop=True)


def recommender_card_notes(
    recommender: Recommender, split_note: str, metrics: Mapping[str, float] | None
) -> CardNotes:
    """The card's words: intended use, cold start and session rules, how it was measured."""
    import html

    from shipyard.registry.card import CardNotes, CardSection

    rows = [f"| {k} | {v:.4f} |" for k, v in (metrics or {}).items()]
    markdown = "\n".join(
        [f"{split_note}.", "", "| metric | value |", "|---|---|", *rows]
        if rows
        else [f"{split_note}. Not measured at registration."]
    )
    section = CardSection("Offline evaluation", markdown, f"<pre>{html.escape(markdown)}</pre>")
    return CardNotes(
        intended_use=(
            "Recommend movies a MovieLens user has not seen yet: the top k by the user's ALS "
            "factors, moved toward the items of their current session, optionally filtered "
            "by genre. Answers are ranked lists (one JSON value per request row)."
        ),
        limitations=(
            "Cold start: an unknown user with session items is answered from the session "
            "alone (source 'session'); with none, the most interacted-with movies (source "
            "'popular'). A user's history is what the model was fitted on: refit to add new "
            "users and interactions.",
            f"Sessions: up to {recommender.session_length} items younger than "
            f"{recommender.session_ttl_s:g} s are kept per user in the online store (shared by "
            f"every version of the model); query = user + {recommender.session_weight:g} x "
            "mean(session items). Unknown session items are ignored and listed in 'ignored'.",
            "Retrieval is approximate (HNSW) over-fetching "
            f"{recommender.candidates} candidates; a row left with fewer than k after "
            "filters is searched exactly.",
            "Implicit feedback from 100k ratings (1995-2016); popularity bias: little-watched "
            "movies are rarely recommended.",
        ),
        sections=(section,),
        evaluation=(
            "Measured offline on the protocol, one request per user without a session: see "
            "'Offline evaluation' below."
            if rows
            else f"{split_note}. Not measured at registration."
        ),
        interval="user bootstrap",
    )


def register_recommender(
    workspace: Workspace,
    recommender: Recommender,
    *,
    name: str = MODEL_NAME,
    split_note: str = "per-user temporal split, fitted on train + validation",
    metrics: Mapping[str, float] | None = None,
    interactions: pd.DataFrame | None = None,
    params: Mapping[str, Any] | None = None,
    promote: bool = True,
) -> ModelVersion:
    """Register ``recommender`` as a version of ``name`` (champion unless ``promote=False``).

    ``interactions`` (:func:`interactions_frame`) are written to the catalog as data set
    ``movielens`` and named in the lineage; ``metrics`` (e.g. test NDCG@10) are logged to the
    MLflow run and quoted in the card; ``params`` are the fit options to record.
    Example: ``register_recommender(ws, rec, metrics={"test_ndcg@10": 0.12})`` then
    ``shipyard serve movies``.
    """
    import pandas as pd
    from mlflow.entities import Metric, Param, RunTag

    from shipyard.registry.models import ModelRegistry
    from shipyard.registry.tracking import environment_tags
    from shipyard.training.recommend import RecommenderConfig
    from shipyard.types import ColumnRoles, Lineage

    config = RecommenderConfig(
        **{
            **{k: v for k, v in (params or {}).items() if k in RecommenderConfig.defaults},
            "session_weight": recommender.session_weight,
            "session_length": recommender.session_length,
            "session_ttl_s": recommender.session_ttl_s,
            "candidates": recommender.candidates,
            "index": recommender.index.kind if recommender.index is not None else "",
            "ranker": recommender.ranker.kind if recommender.ranker is not None else "",
        }
    )
    dataset = None
    if interactions is not None:
        from shipyard.data.catalog import write_dataset

        dataset = write_dataset(workspace, "movielens", interactions, time_column="time")
    registry = ModelRegistry(workspace)
    client = registry.tracker.client
    run_id = str(
        client.create_run(registry.tracker.experiment_id("recsys"), run_name=name).info.run_id
    )
    logged = {**config.get_params(), "items": len(recommender), "users": len(recommender.users)}
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), 0, 0) for k, v in (metrics or {}).items()],
        params=[Param(k, str(v)) for k, v in logged.items()],
        tags=[RunTag(k, v) for k, v in {"solution": "recsys", **environment_tags()}.items()],
    )
    client.set_terminated(run_id)
    lineage = Lineage(
        dataset=dataset.name if dataset else "",
        dataset_version=dataset.version if dataset else 0,
        dataset_hash=dataset.content_hash if dataset else "",
        views="",
        view_hashes={},
        features_hash="",
        columns=ColumnRoles(label="", time="time", entity="user"),
        protocol=split_note,
    )
    users = recommender.users.external(recommender.users.order[:2])
    sample = pd.DataFrame(
        {"user": users, "session": ["", ""], "k": ["10", "5"], "exclude_seen": ["", "false"]}
    ).assign(genre="")
    version = registry.register(
        name,
        config.model(recommender),
        lineage=lineage,
        evaluation=None,
        run_id=run_id,
        sample=sample,
        notes=recommender_card_notes(recommender, split_note, metrics),
        reason="recsys solution: ALS recommender with session state",
        metrics=metrics,
    )
    if promote:
        registry.promote(name, version.version, reason="recsys: the fitted recommender")
    return registry.get(name, version.version)
