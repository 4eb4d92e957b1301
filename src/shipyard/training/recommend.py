"""A served recommender: ranked items per user, with session state, behind the Predictor contract.

A :class:`Recommender` holds item and user vectors (a factor model's), the items each user
has seen (CSR), item popularity, optional titles and genres, an optional ANN index
(:class:`shipyard.training.ann.ItemIndex`) and an optional re-ranker (:class:`Ranker`).
For each request row it answers one JSON value::

    {"items": [{"item": "318", "score": 0.83, "title": "Shawshank Redemption, The"}, ...],
     "source": "personal", "ignored": ["99999"], "k": 10}

**Query.** A known user's query is their vector plus ``session_weight`` times the mean of
the session items' vectors; an unknown user's is the session mean alone ("session"); an
unknown user with no session gets the most popular items ("popular"): the cold start.
Session items are the request's ``session`` column (item ids separated by spaces or
commas); with an online store bound (:meth:`Recommender.bind_online`, which ``shipyard
serve`` does), they are appended to the user's short-term state there (the newest
``session_length`` items younger than ``session_ttl_s``), and a row without session items
reads that state: a request that names items changes the next one's answer at once, in every
worker. The state is keyed by the registered model's name (all its versions share it).

**Retrieval.** One search for the whole batch (the index's, else exact) by inner product,
of k plus the row's excluded items (at most ``candidates`` of them) per row, or
``candidates`` where a row has a genre filter or a ranker re-scores; the items seen
(history and session) are dropped unless ``exclude_seen`` is false, then the genre filter;
a row left with fewer than k falls back to an exact search over the whole catalogue with
the same filters. A ranker, when present, re-scores the candidates left
(:class:`RankContext`), and the top k are answered.

**Bad input.** An unknown session item is ignored and listed in ``ignored``; ``k`` above the
catalogue is capped (``reason`` says so); filters that leave nothing give an empty list with
a ``reason``. :meth:`Recommender.check_inputs` refuses (SchemaError naming column, row,
expected and got) a ``k`` that is not an integer >= 1, an ``exclude_seen`` that is not
true/false, and a genre the catalogue does not have (listing those it has).

The file format and the registry glue (:class:`RecommenderConfig`, the ``recommender``
native format) live in :mod:`shipyard.training.recommend_format`; their names are
importable from here too.

Example::

    rec = Recommender(item_ids=["1", "2"], item_vectors=V, user_ids=["7"], user_vectors=U,
                      seen_indptr=indptr, seen_indices=indices, popularity=counts)
    rec.recommend(["7"], sessions=[["2"]], k=5)
"""

from __future__ import annotations

import importlib
import itertools
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from shipyard.errors import (
    OnlineContentionError,
    OnlineStoreUnavailableError,
    ParameterError,
    SchemaError,
    invalid_parameter,
)
from shipyard.training.recommend_format import FILE as FILE
from shipyard.training.recommend_format import FRAMEWORK as FRAMEWORK
from shipyard.training.recommend_format import INPUTS as INPUTS
from shipyard.training.recommend_format import RECOMMENDATIONS as RECOMMENDATIONS
from shipyard.training.recommend_format import SEPARATORS, Ids, pack_strings
from shipyard.training.recommend_format import RecommenderConfig as RecommenderConfig
from shipyard.training.recommend_format import RecommenderFormat as RecommenderFormat
from shipyard.training.recommend_format import RecommenderModel as RecommenderModel
from shipyard.training.recommend_format import load_recommender as load_recommender
from shipyard.training.recommend_format import save_recommender as save_recommender

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from shipyard.features.definitions import FeatureView
    from shipyard.features.online import OnlineStore
    from shipyard.training.ann import ItemIndex

logger = logging.getLogger(__name__)

DEFAULT_K = 10
_TRUE, _FALSE = {"", "true", "1", "yes"}, {"false", "0", "no"}


# -- re-ranking --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankContext:
    """What a ranker sees for a batch of n rows and c candidates per row.

    ``candidates`` are dense item indexes, best retrieval score first, padded with -1 (and
    score -inf) where filters left fewer than c; a ranker's scores at padded places are
    ignored. ``users`` are dense user indexes (-1: unknown user); ``sessions`` the dense
    session items of each row (oldest first); ``now`` epoch seconds.
    """

    users: NDArray[np.int64]
    sessions: list[NDArray[np.int64]]
    candidates: NDArray[np.int64]
    scores: NDArray[np.float32]
    now: float


class Ranker(Protocol):
    """Re-scores retrieved candidates; saved in the recommender's file as ``kind`` and bytes."""

    kind: str
    """The name it was registered under with :func:`register_ranker`."""

    def rerank(self, context: RankContext) -> NDArray[np.float32]:
        """New scores, float32 [n, c], higher first (padded places ignored)."""
        ...

    def to_bytes(self) -> bytes:
        """The ranker's state; its loader rebuilds it from these bytes."""
        ...


RANKERS: dict[str, str] = {}
"""``{kind: "module:function"}``: how each kind of ranker is loaded from its bytes."""


def register_ranker(kind: str, loader: str) -> None:
    """Make rankers of ``kind`` loadable: ``loader`` is ``"module:function"`` taking the bytes
    :meth:`Ranker.to_bytes` wrote and returning the ranker (imported when a model loads).

    Example: ``register_ranker("lightgbm", "shipyard.solutions.recsys.ranker:load_ranker")``.
    """
    if not re.fullmatch(r"[\w.]+:\w+", loader):
        raise invalid_parameter("loader", "register_ranker", "'module:function'", loader)
    RANKERS[kind] = loader


def load_ranker(kind: str, data: bytes) -> Ranker:
    """The ranker of ``kind`` rebuilt from ``data`` (ParameterError for an unknown kind)."""
    loader = RANKERS.get(kind)
    if loader is None:
        raise ParameterError(
            f"No ranker of kind {kind!r} is registered (known: {', '.join(RANKERS) or 'none'});"
            " import the module that calls register_ranker for it first."
        )
    module, function = loader.split(":")
    ranker: Ranker = getattr(importlib.import_module(module), function)(data)
    return ranker


def _genre_masks(genres: Sequence[str]) -> tuple[tuple[str, ...], NDArray[np.uint64]]:
    """The genre names (sorted) and each item's genres as bits of a uint64 (<= 64 genres)."""
    split = [[g for g in str(v).split("|") if g] for v in genres]
    names = tuple(sorted({g for item in split for g in item}))
    if len(names) > 64:
        raise invalid_parameter("genres", "Recommender", "at most 64 distinct genres", len(names))
    bit = {g: np.uint64(1) << np.uint64(i) for i, g in enumerate(names)}
    masks = np.zeros(len(split), dtype=np.uint64)
    for i, item in enumerate(split):
        for g in item:
            masks[i] |= bit[g]
    return names, masks


# -- requests --------------------------------------------------------------------------------


@dataclass
class Requests:
    """A batch of parsed request rows (what :meth:`Recommender.parse` returns)."""

    users: list[str]
    sessions: list[list[str]]
    """Item ids as given (known or not), oldest first."""
    k: NDArray[np.int64]
    exclude_seen: NDArray[np.bool_]
    genres: NDArray[np.uint64]
    """The genre bits a row accepts; 0: no genre filter."""
    genre_names: list[str]


def _bad(column: str, row: int, expected: str, got: object) -> SchemaError:
    return SchemaError(f"Column {column!r} (row {row}): expected {expected}, got {got!r}.")


def _parse_k(row: int, value: str) -> int:
    text = value.strip()
    if not text:
        return DEFAULT_K
    try:
        k = int(text)
    except ValueError:
        raise _bad("k", row, "an integer >= 1 (or empty for 10)", value) from None
    if k < 1:
        raise _bad("k", row, "an integer >= 1 (or empty for 10)", value)
    return k


def _parse_flag(row: int, value: str) -> bool:
    text = value.strip().lower()
    if text not in _TRUE | _FALSE:
        raise _bad("exclude_seen", row, "true or false (or empty for true)", value)
    return text in _TRUE


@dataclass(frozen=True)
class Excluded:
    """The items each row of a batch must not get: sorted ``row * m + item`` keys, and how
    many each row has."""

    keys: NDArray[np.int64]
    counts: NDArray[np.int64]


# -- the recommender ---------------------------------------------------------------------------


class Recommender:
    """Ranked items per user from factor vectors, with session state and cold start (module doc).

    ``item_ids``/``user_ids`` are external ids in dense order (rows of ``item_vectors`` /
    ``user_vectors``, float32); ``seen_indptr``/``seen_indices`` the items each user has
    seen (CSR, dense item indexes); ``popularity`` [m] the cold-start order; ``titles`` and
    ``genres`` (``"A|B"``) per item, optional; ``candidates`` how many items retrieval
    over-fetches per row.
    """

    def __init__(
        self,
        *,
        item_ids: Sequence[str] | NDArray[Any],
        item_vectors: NDArray[np.float32],
        user_ids: Sequence[str] | NDArray[Any],
        user_vectors: NDArray[np.float32],
        seen_indptr: NDArray[np.int64],
        seen_indices: NDArray[np.int32],
        popularity: NDArray[np.float32],
        titles: Sequence[str] | None = None,
        genres: Sequence[str] | None = None,
        session_weight: float = 1.0,
        session_length: int = 20,
        session_ttl_s: float = 1800.0,
        candidates: int = 200,
        index: ItemIndex | None = None,
        ranker: Ranker | None = None,
    ) -> None:
        m = len(item_ids)
        arrays: dict[str, NDArray[Any]] = {
            "item_vectors": np.ascontiguousarray(item_vectors, dtype=np.float32),
            "user_vectors": np.ascontiguousarray(user_vectors, dtype=np.float32),
            "seen_indptr": np.asarray(seen_indptr, dtype=np.int64),
            "seen_indices": np.asarray(seen_indices, dtype=np.int32),
            "popularity": np.asarray(popularity, dtype=np.float32),
        }
        items, users = Ids.of(item_ids, "item_ids"), Ids.of(user_ids, "user_ids")
        for name, ids in (("item", items), ("user", users)):
            arrays[f"{name}_ids"], arrays[f"{name}_sorted"] = ids.ids, ids.sorted_ids
            arrays[f"{name}_order"] = ids.order
        if titles is not None:
            _same_length("titles", titles, m)
            arrays["title_offsets"], arrays["title_blob"] = pack_strings(titles)
        genre_names: tuple[str, ...] = ()
        if genres is not None:
            _same_length("genres", genres, m)
            genre_names, arrays["genre_masks"] = _genre_masks(genres)
        params = {
            "session_weight": session_weight,
            "session_length": session_length,
            "session_ttl_s": session_ttl_s,
            "candidates": candidates,
            "genre_names": list(genre_names),
        }
        self._restore(arrays, params, index, ranker)

    def _restore(
        self,
        arrays: Mapping[str, NDArray[Any]],
        params: Mapping[str, Any],
        index: ItemIndex | None,
        ranker: Ranker | None,
    ) -> None:
        """Set every attribute from arrays (possibly memory-mapped) and parameters; check them."""
        self.arrays = dict(arrays)
        a = self.arrays
        # plain views of the same (mapped) memory: indexing a np.memmap costs more per call
        self._plain = {name: array.view(np.ndarray) for name, array in a.items()}
        v = self._plain
        self.items = Ids(v["item_ids"], v["item_sorted"], v["item_order"])
        self.users = Ids(v["user_ids"], v["user_sorted"], v["user_order"])
        self.item_vectors: NDArray[np.float32] = a["item_vectors"]
        self.user_vectors: NDArray[np.float32] = a["user_vectors"]
        self.seen_indptr: NDArray[np.int64] = a["seen_indptr"]
        self.seen_indices: NDArray[np.int32] = a["seen_indices"]
        self.popularity: NDArray[np.float32] = a["popularity"]
        self.genre_names: tuple[str, ...] = tuple(params["genre_names"])
        self.session_weight = float(params["session_weight"])
        self.session_length = int(params["session_length"])
        self.session_ttl_s = float(params["session_ttl_s"])
        self.candidates = int(params["candidates"])
        self.index, self.ranker = index, ranker
        self._store: OnlineStore | None = None
        self._view: FeatureView | None = None
        self._popular: NDArray[np.int64] | None = None
        self._strings: tuple[list[str], list[str] | None, list[str] | None] | None = None
        self._check()

    def _check(self) -> None:
        owner, m, n = "Recommender", len(self.items), len(self.users)
        if m == 0:
            raise invalid_parameter("item_ids", owner, "at least one item", [])
        f = self.item_vectors.shape[1] if self.item_vectors.ndim == 2 else -1
        shapes = {
            "item_vectors": (self.item_vectors.shape, (m, f)),
            "user_vectors": (self.user_vectors.shape, (n, f)),
            "seen_indptr": (self.seen_indptr.shape, (n + 1,)),
            "popularity": (self.popularity.shape, (m,)),
        }
        for name, (got, want) in shapes.items():
            if got != want:
                raise invalid_parameter(name, owner, f"of shape {want}", f"shape {got}")
        if self.index is not None and self.index.size != m:
            raise invalid_parameter("index", owner, f"an index of the {m} items", self.index.size)
        for name, value, low in (
            ("session_weight", self.session_weight, 0.0),
            ("session_length", self.session_length, 1),
            ("session_ttl_s", self.session_ttl_s, 1e-9),
            ("candidates", self.candidates, 1),
        ):
            if not value >= low:
                raise invalid_parameter(name, owner, f"a number >= {low}", value)

    def __len__(self) -> int:
        """The number of items in the catalogue."""
        return len(self.items)

    def params(self) -> dict[str, Any]:
        """The settings saved beside the arrays (sessions, over-fetching, genre names)."""
        return {
            "session_weight": self.session_weight,
            "session_length": self.session_length,
            "session_ttl_s": self.session_ttl_s,
            "candidates": self.candidates,
            "genre_names": list(self.genre_names),
        }

    # -- the online store ----------------------------------------------------------------------

    def bind_online(self, store: OnlineStore, name: str) -> None:
        """Keep session state in ``store`` under model ``name`` (serving calls this at load).

        Every version of a model shares its state: a user's session follows them across an
        A/B split. Without a store, sessions are per request only.
        """
        from shipyard.features.definitions import FeatureView, RowFeature

        self._store = store
        self._view = FeatureView(
            name="recsys_session_" + re.sub(r"\W", "_", name),
            entity="user",
            timestamp="time",
            source="serving requests",
            features=(RowFeature("items", "items", ("items",)),),
            description=f"The recent session items of each user of model {name!r}.",
        )

    def _stored_sessions(
        self, users: list[str], given: list[list[str]], now: float
    ) -> list[list[str]]:
        """Each row's session (item ids, oldest first) after merging with the stored state."""
        if self._store is None or self._view is None:
            return [self._trim([(i, now) for i in s], now) for s in given]
        keys = list(dict.fromkeys(users))
        merged: list[list[str]] = []

        def update(states: list[bytes | None]) -> dict[str, bytes]:
            current = {k: _read_state(s) for k, s in zip(keys, states, strict=True)}
            changed: dict[str, bytes] = {}
            rows: list[list[str]] = []
            for user, items in zip(users, given, strict=True):
                entries = current[user]
                if items:  # an item seen again moves to the end
                    newest = list(dict.fromkeys(reversed(items)))[::-1]
                    kept = [e for e in entries if e[0] not in set(newest)]
                    entries = self._trim_entries(kept + [(i, now) for i in newest], now)
                    current[user] = entries
                    changed[user] = json.dumps({"items": entries}).encode()
                rows.append([i for i, _ in self._trim_entries(entries, now)])
            merged[:] = rows
            return changed

        try:
            if any(given):
                self._store.update_many(self._view, keys, update)
            else:  # nothing to write: read without taking the write lock
                update(self._store.get_many(self._view, keys))
        except (OnlineStoreUnavailableError, OnlineContentionError) as exc:
            logger.warning("session state unavailable (%s): sessions are per request", exc)
            return [self._trim([(i, now) for i in s], now) for s in given]
        return merged

    def _trim_entries(
        self, entries: list[tuple[str, float]], now: float
    ) -> list[tuple[str, float]]:
        fresh = [(i, t) for i, t in entries if now - t <= self.session_ttl_s]
        return fresh[-self.session_length :]

    def _trim(self, entries: list[tuple[str, float]], now: float) -> list[str]:
        return [i for i, _ in self._trim_entries(entries, now)]

    # -- parsing and checks --------------------------------------------------------------------

    def parse(self, columns: Mapping[str, Sequence[str]]) -> Requests:
        """Parse request columns (those of :data:`INPUTS`); SchemaError naming the column, row,
        expected and got for a bad ``k``, ``exclude_seen`` or ``genre``."""
        users = [str(u).strip() for u in columns["user"]]
        n = len(users)
        empty = [""] * n
        sessions = [
            [t for t in SEPARATORS.split(str(s)) if t] for s in columns.get("session", empty)
        ]
        k = np.array([_parse_k(i, str(v)) for i, v in enumerate(columns.get("k", empty))])
        flags = [_parse_flag(i, str(v)) for i, v in enumerate(columns.get("exclude_seen", empty))]
        genres, names = np.zeros(n, dtype=np.uint64), []
        for row, value in enumerate(columns.get("genre", empty)):
            wanted = [g.strip() for g in str(value).split("|") if g.strip()]
            names.append("|".join(wanted))
            for g in wanted:
                if g not in self.genre_names:
                    known = ", ".join(self.genre_names) or "none (the catalogue has no genres)"
                    raise _bad("genre", row, f"one of the catalogue's genres ({known})", g)
                genres[row] |= np.uint64(1) << np.uint64(self.genre_names.index(g))
        return Requests(users, sessions, k.astype(np.int64), np.array(flags, bool), genres, names)

    def check_inputs(self, columns: Mapping[str, Sequence[str]]) -> None:
        """SchemaError for a request serving must refuse (422); called once per request."""
        self.parse(columns)

    # -- recommending --------------------------------------------------------------------------

    def recommend(
        self,
        users: Sequence[str],
        sessions: Sequence[str | Sequence[str]] | None = None,
        k: int | Sequence[int] = DEFAULT_K,
        exclude_seen: bool | Sequence[bool] = True,
        genre: str | Sequence[str | None] | None = None,
        *,
        now: float | None = None,
    ) -> list[dict[str, Any]]:
        """The recommendations of each user (module doc), scalars applying to every row.

        Example: ``rec.recommend(["7", "new"], sessions=["318 296", ""], k=5)``.
        """
        n = len(users)

        def column(name: str, value: Any) -> list[str]:
            one = value is None or isinstance(value, str) or np.ndim(value) == 0
            values = [value] * n if one else list(value)
            if len(values) != n:
                raise invalid_parameter(name, "Recommender.recommend", f"{n} values", value)
            return [
                "" if v is None else str(v).lower() if isinstance(v, bool | np.bool_) else str(v)
                for v in values
            ]

        given = [s if isinstance(s, str) else " ".join(s) for s in (sessions or [""] * n)]
        columns = {
            "user": [str(u) for u in users],
            "session": column("sessions", given),
            "k": column("k", k),
            "exclude_seen": column("exclude_seen", exclude_seen),
            "genre": column("genre", genre),
        }
        return self.answer(self.parse(columns), now=time.time() if now is None else now)

    def answer(self, requests: Requests, *, now: float) -> list[dict[str, Any]]:
        """The answers to parsed requests (what :meth:`recommend` and serving call)."""
        found = [self.items.lookup(s) for s in requests.sessions]
        pairs = list(zip(requests.sessions, found, strict=True))
        ignored = [[t for t, d in zip(s, f, strict=True) if d < 0] for s, f in pairs]
        fresh = [[t for t, d in zip(s, f, strict=True) if d >= 0] for s, f in pairs]
        merged = [self.items.lookup(s) for s in self._stored_sessions(requests.users, fresh, now)]
        sessions = [s[s >= 0] for s in merged]  # an item this version's catalogue lacks
        users = self.users.lookup(requests.users)
        served = np.minimum(requests.k, len(self))
        queries, has, source = self._queries(users, sessions)
        excluded = self._excluded(users, sessions, requests.exclude_seen)
        c = self._fetch(served, excluded, requests.genres)
        candidates, scores = self._retrieve(queries, has, c)
        candidates, scores = self._filter(
            candidates, scores, (queries, has), excluded, requests.genres, served
        )
        if self.ranker is not None:
            context = RankContext(users, sessions, candidates, scores, now)
            reranked = np.asarray(self.ranker.rerank(context), dtype=np.float32)
            scores = np.where(candidates >= 0, reranked, -np.inf).astype(np.float32)
            order = np.argsort(-scores, axis=1, kind="stable")
            candidates = np.take_along_axis(candidates, order, 1)
            scores = np.take_along_axis(scores, order, 1)
        return self._rows(candidates, scores, requests, served, (source, ignored))

    def _fetch(
        self, served: NDArray[np.int64], excluded: Excluded, genres: NDArray[np.uint64]
    ) -> int:
        """How many items one search retrieves per row: k plus the row's excluded items (at
        most ``candidates`` of them), ``candidates`` for a genre-filtered row or a ranker's."""
        m = len(self)
        if not len(served):
            return 1
        if self.ranker is not None:
            return int(min(m, max(int(served.max()), self.candidates)))
        need = served + np.minimum(excluded.counts, self.candidates)
        need = np.where(genres != 0, np.maximum(need, self.candidates), need)
        return int(min(m, max(int(need.max()), 1)))

    def _queries(
        self, users: NDArray[np.int64], sessions: list[NDArray[np.int64]]
    ) -> tuple[NDArray[np.float32], NDArray[np.bool_], list[str]]:
        """Each row's query vector, whether it has one, and its source (module doc)."""
        n, f = len(users), self.item_vectors.shape[1]
        queries = np.zeros((n, f), dtype=np.float32)
        known = users >= 0
        if known.any():
            rows = np.flatnonzero(known)
            queries[rows] = self._plain["user_vectors"][users[rows]]
        with_session = np.array([len(s) > 0 for s in sessions], dtype=bool)
        for r in np.flatnonzero(with_session).tolist():
            mean = self._plain["item_vectors"][np.sort(sessions[r])].mean(axis=0)
            queries[r] += (self.session_weight if known[r] else 1.0) * mean
        has = known | with_session
        names = np.where(known, "personal", np.where(with_session, "session", "popular"))
        return queries, has, names.tolist()

    def _exact(self, queries: NDArray[np.float32], c: int) -> tuple[NDArray[Any], NDArray[Any]]:
        """Exact top ``c`` by inner product: (scores, items), best first."""
        full = queries @ np.asarray(self.item_vectors).T
        return _top(full, c)

    def _popular_order(self) -> NDArray[np.int64]:
        if self._popular is None:
            self._popular = np.argsort(-np.asarray(self.popularity), kind="stable").astype(np.int64)
        return self._popular

    def _retrieve(
        self, queries: NDArray[np.float32], has: NDArray[np.bool_], c: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """``c`` candidates per row, best first: one search for every row with a vector."""
        n = len(queries)
        candidates = np.empty((n, c), dtype=np.int64)
        scores = np.empty((n, c), dtype=np.float32)
        rows = np.flatnonzero(has)
        if rows.size:
            if self.index is not None:
                found_scores, found = self.index.search(queries[rows], c)
            else:
                found_scores, found = self._exact(queries[rows], c)
            candidates[rows], scores[rows] = found, found_scores
        popular = np.flatnonzero(~has)
        if popular.size:
            top = self._popular_order()[:c]
            candidates[popular] = top
            scores[popular] = self._plain["popularity"][top]
        return candidates, scores

    def _excluded(
        self, users: NDArray[np.int64], sessions: list[NDArray[np.int64]], exclude: NDArray[Any]
    ) -> Excluded:
        """The items each row must not get (its user's seen items and its session's), as
        ``row * m + item`` keys for the whole batch."""
        n, m = len(users), len(self)
        rows = np.flatnonzero((users >= 0) & exclude)
        indptr = self._plain["seen_indptr"]
        starts = indptr[users[rows]].astype(np.int64)
        lengths = indptr[users[rows] + 1].astype(np.int64) - starts
        total = int(lengths.sum())
        parts_rows, parts_items = [np.repeat(rows, lengths)], []
        if total:
            within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            parts_items.append(self._plain["seen_indices"][np.repeat(starts, lengths) + within])
        else:
            parts_items.append(np.empty(0, dtype=np.int64))
        for r in np.flatnonzero(exclude).tolist():
            if len(sessions[r]):
                parts_rows.append(np.full(len(sessions[r]), r, dtype=np.int64))
                parts_items.append(sessions[r])
        row_of = np.concatenate(parts_rows).astype(np.int64)
        keys = np.unique(row_of * m + np.concatenate(parts_items).astype(np.int64))
        return Excluded(keys, np.bincount(keys // m, minlength=n).astype(np.int64))

    def _allowed(
        self, rows: NDArray[np.int64], items: NDArray[np.int64], excluded: Excluded, genres: Any
    ) -> NDArray[np.bool_]:
        """Which ``items`` (one row of them per entry of ``rows``) pass the row's filters."""
        ok = items >= 0
        if len(excluded.keys):  # sorted keys: a binary search beats np.isin on small batches
            query = rows[:, None] * len(self) + items
            where = np.minimum(np.searchsorted(excluded.keys, query), len(excluded.keys) - 1)
            ok &= excluded.keys[where] != query
        wanted = np.asarray(genres, dtype=np.uint64)[:, None]
        if wanted.any():
            masks = self._plain["genre_masks"][np.maximum(items, 0)]
            ok &= (wanted == 0) | ((masks & wanted) != 0)
        return ok

    def _filter(
        self,
        candidates: NDArray[np.int64],
        scores: NDArray[np.float32],
        queries: tuple[NDArray[np.float32], NDArray[np.bool_]],
        excluded: Excluded,
        genres: NDArray[np.uint64],
        k: NDArray[np.int64],
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Drop excluded and off-genre candidates; a row left short of k searches exactly."""
        m, c = len(self), candidates.shape[1]
        # an approximate index may miss items even when asked for all of them
        complete = c >= m and (self.index is None or self.index.kind == "exact")
        ok = self._allowed(np.arange(len(candidates)), candidates, excluded, genres)
        short = [] if complete else np.flatnonzero(ok.sum(axis=1) < k).tolist()
        for r in short:  # over-fetching was not enough: every item
            full = (
                queries[0][r] @ np.asarray(self.item_vectors).T
                if queries[1][r]
                else np.asarray(self.popularity, dtype=np.float32).copy()
            )
            every = np.arange(m)[None, :]
            full[~self._allowed(np.array([r]), every, excluded, genres[r : r + 1])[0]] = -np.inf
            top_scores, top = _top(full[None, :], c)
            candidates[r], scores[r] = top[0], top_scores[0]
            ok[r] = np.isfinite(top_scores[0])
        scores = np.where(ok, scores, np.float32(-np.inf)).astype(np.float32)
        order = np.argsort(-scores, axis=1, kind="stable")
        candidates = np.take_along_axis(candidates, order, 1)
        scores = np.take_along_axis(scores, order, 1)
        candidates[~np.isfinite(scores)] = -1
        return candidates, scores

    def _names(self) -> tuple[list[str], list[str] | None, list[str] | None]:
        """Each item's id, title and genres as strings, built once (at the first answer)."""
        if self._strings is None:
            m = len(self)
            ids = self.items.external(np.arange(m))
            titles = None
            if "title_blob" in self.arrays:
                blob = np.asarray(self.arrays["title_blob"]).tobytes()
                bounds = np.asarray(self.arrays["title_offsets"]).tolist()
                titles = [blob[a:b].decode() for a, b in itertools.pairwise(bounds)]
            genres = None
            if self.genre_names:
                masks = np.asarray(self.arrays["genre_masks"])
                joined = {
                    int(mask): "|".join(
                        g for i, g in enumerate(self.genre_names) if int(mask) >> i & 1
                    )
                    for mask in np.unique(masks).tolist()
                }
                genres = [joined[mask] for mask in masks.tolist()]
            self._strings = (ids, titles, genres)
        return self._strings

    def _rows(
        self,
        candidates: NDArray[np.int64],
        scores: NDArray[np.float32],
        requests: Requests,
        served: NDArray[np.int64],
        extra: tuple[list[str], list[list[str]]],
    ) -> list[dict[str, Any]]:
        """Every row's JSON answer (module doc), from strings built once."""
        ids, titles, genres = self._names()
        width = min(candidates.shape[1], int(served.max(initial=0)))
        chosen = candidates[:, :width].tolist()
        rounded = scores[:, :width].tolist()
        answers = []
        for r, (row, row_scores) in enumerate(zip(chosen, rounded, strict=True)):
            limit = int(served[r])
            items: list[dict[str, Any]] = []
            for dense, score in zip(row[:limit], row_scores[:limit], strict=True):
                if dense < 0:
                    break
                entry: dict[str, Any] = {"item": ids[dense], "score": round(score, 6)}
                if titles is not None:
                    entry["title"] = titles[dense]
                if genres is not None:
                    entry["genres"] = genres[dense]
                items.append(entry)
            answer: dict[str, Any] = {"items": items, "source": extra[0][r], "ignored": extra[1][r]}
            answer["k"] = limit
            reason = self._reason(requests, r, limit, len(items))
            if reason:
                answer["reason"] = reason
            answers.append(answer)
        return answers

    def _reason(self, requests: Requests, r: int, served: int, got: int) -> str:
        """Why row ``r`` has fewer items than asked (capped k, filters), or ``""``."""
        asked = int(requests.k[r])
        if asked == served == got:
            return ""
        reasons = []
        if asked > served:
            reasons.append(
                f"k={asked} is more than the {len(self)} items in the catalogue: capped at {served}"
            )
        if got < served:
            filters = []
            if requests.exclude_seen[r]:
                filters.append("items already seen excluded")
            if requests.genre_names[r]:
                filters.append(f"genre {requests.genre_names[r]!r}")
            said = ", ".join(filters) or "none"
            reasons.append(
                f"no item passes the filters ({said})"
                if not got
                else f"only {got} of {served} pass the filters ({said})"
            )
        return "; ".join(reasons)


def _top(full: NDArray[Any], c: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The top ``c`` columns of each row of ``full`` (scores, indexes), best first."""
    m = full.shape[1]
    if c < m:
        part = np.argpartition(-full, c - 1, axis=1)[:, :c]
    else:
        part = np.broadcast_to(np.arange(m), full.shape)
    picked = np.take_along_axis(full, part, 1)
    order = np.argsort(-picked, axis=1, kind="stable")
    return (
        np.take_along_axis(picked, order, 1).astype(np.float32),
        np.take_along_axis(part, order, 1).astype(np.int64),
    )


def _same_length(name: str, values: Sequence[Any], m: int) -> None:
    if len(values) != m:
        raise invalid_parameter(name, "Recommender", f"one value per item ({m})", len(values))


def _read_state(state: bytes | None) -> list[tuple[str, float]]:
    if state is None:
        return []
    return [(str(i), float(t)) for i, t in json.loads(state)["items"]]
