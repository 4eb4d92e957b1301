"""The two-stage ranker's features: feature-store views of item and user history, and the
features of a (user, candidate item) pair that are not one entity's window aggregate.

**From the feature store** (``shipyard.features``; the fitting interactions are written to the
catalog as data set :data:`SOURCE` and the views below are materialized and retrieved
point-in-time with :class:`~shipyard.features.offline.OfflineStore`):

* :data:`ITEM_HISTORY` (entity ``item``): the item's interactions ever and its mean rating
  ever. Retrieved with an ASOF join at the user's moment ``t`` (``FitData.last_time()``),
  they are exact: the latest row of the item at or before ``t`` carries the count of every
  interaction up to ``t``. The item's popularity over the last 1, 7, 30 and 365 days at
  ``t`` is ``ever(t) - ever(t - window)``, both retrieved the same way. (A windowed count
  read from the item's last row before ``t`` would be stale: it is the count of the window
  that ended at that row, not at ``t``.)
* :data:`USER_ACTIVITY` (entity ``user``): the user's interactions over the last 1, 7, 30 and
  365 days and ever, and their mean rating. The user's last fitting interaction is at ``t``
  itself, so these windows end exactly at ``t``.

**Computed here** from the same fitting interactions only (never a held-out one), because
they relate a user to an item rather than aggregate one entity over time: the user's genre
affinity · the item's genres (cosine of the user's genre shares with the item's genre
vector); the candidate's mean cosine similarity (co-occurrence, item-kNN) to the user's
last 1, 5 and 20 items and to their whole history; the item's age at ``t`` (days since its first
interaction, ``-1`` when its first interaction is after ``t``: nothing after ``t`` is used);
the movie's release year and the years between it and ``t``.

Example::

    frame = pair_features(workspace, data, pairs)   # pairs: user, item (+ retrieval columns)
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from shipyard.errors import invalid_parameter
from shipyard.features.definitions import Aggregation, FeatureView

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from numpy.typing import NDArray

    from shipyard.solutions.recsys.data import FitData
    from shipyard.workspace import Workspace

__all__ = [
    "FEATURE_NAMES",
    "ITEM_HISTORY",
    "SOURCE",
    "USER_ACTIVITY",
    "VIEWS",
    "WINDOWS_DAYS",
    "cosine_items",
    "pair_features",
    "store_features",
    "write_interactions",
]

SOURCE = "recsys_interactions"
"""The catalog data set the views read: one row per fitting interaction (user, item, rating,
time)."""
WINDOWS_DAYS = (1, 7, 30, 365)
EVER = timedelta(days=365 * 100)
LAST_ITEMS = (1, 5, 20)
"""The candidate's similarity is averaged over the user's last 1, 5 and 20 items."""
SECONDS_PER_DAY = 86_400

ITEM_HISTORY = FeatureView(
    name="recsys_item_history",
    entity="item",
    timestamp="time",
    source=SOURCE,
    description="How often and how well an item was rated up to a moment (exact by ASOF).",
    features=(
        Aggregation("ITEM_INTERACTIONS", "count", EVER),
        Aggregation("ITEM_MEAN_RATING", "mean", EVER, column="rating", decimals=1),
    ),
)

USER_ACTIVITY = FeatureView(
    name="recsys_user_activity",
    entity="user",
    timestamp="time",
    source=SOURCE,
    description="How active a user was up to their last fitting interaction.",
    features=(
        *(Aggregation(f"USER_INTERACTIONS_{n}D", "count", timedelta(days=n)) for n in WINDOWS_DAYS),
        Aggregation("USER_INTERACTIONS", "count", EVER),
        Aggregation("USER_MEAN_RATING", "mean", EVER, column="rating", decimals=1),
    ),
)

VIEWS = (ITEM_HISTORY, USER_ACTIVITY)

STORE_NAMES = (
    "ITEM_INTERACTIONS",
    *(f"ITEM_INTERACTIONS_{n}D" for n in WINDOWS_DAYS),
    "ITEM_MEAN_RATING",
    *USER_ACTIVITY.feature_names,
)
PAIR_NAMES = (
    "genre_affinity",
    *(f"last_{n}_similarity" for n in LAST_ITEMS),
    "history_similarity",
    "item_age_days",
    "item_year",
    "years_since_release",
)
FEATURE_NAMES = (*STORE_NAMES, *PAIR_NAMES)
"""Every column :func:`pair_features` adds, in order."""


def write_interactions(workspace: Workspace, data: FitData) -> int:
    """Write ``data``'s interactions to the catalog as :data:`SOURCE`, materialize the views
    over them and return the data set version (the same version when nothing changed)."""
    import pandas as pd

    from shipyard.data.catalog import write_dataset
    from shipyard.features.offline import OfflineStore

    frame = data.interactions[["user", "item", "rating", "time"]].copy()
    frame["time"] = pd.to_datetime(frame["time"], unit="s")
    frame = frame.sort_values(["time", "user", "item"], kind="mergesort").reset_index(drop=True)
    dataset = write_dataset(workspace, SOURCE, frame, time_column="time")
    OfflineStore(workspace).materialize(VIEWS, dataset_version=dataset.version)
    return dataset.version


def store_features(
    workspace: Workspace, version: int, pairs: pd.DataFrame, moments: NDArray[np.int64]
) -> pd.DataFrame:
    """The feature-store columns of :data:`STORE_NAMES` for ``pairs`` (``user``, ``item``) at
    each user's moment (``moments[user]``, epoch seconds), point-in-time (module doc)."""
    import numpy as np
    import pandas as pd

    from shipyard.features.offline import OfflineStore

    store = OfflineStore(workspace)
    at = moments[pairs["user"].to_numpy()]
    out = pd.DataFrame(index=pairs.index)

    def item_history(shift_days: int) -> pd.DataFrame:
        events = pd.DataFrame(
            {
                "item": pairs["item"].to_numpy(),
                "time": pd.to_datetime(at - shift_days * SECONDS_PER_DAY, unit="s"),
            }
        )
        found = store.get_historical_features(events, [ITEM_HISTORY], dataset_version=version)
        return found.to_pandas()

    now = item_history(0)
    ever = now["ITEM_INTERACTIONS"].fillna(0).to_numpy(dtype=np.float64)
    out["ITEM_INTERACTIONS"] = ever
    for n in WINDOWS_DAYS:
        before = item_history(n)["ITEM_INTERACTIONS"].fillna(0).to_numpy(dtype=np.float64)
        out[f"ITEM_INTERACTIONS_{n}D"] = ever - before
    out["ITEM_MEAN_RATING"] = now["ITEM_MEAN_RATING"].to_numpy(dtype=np.float64)
    users = pd.DataFrame({"user": np.arange(len(moments)), "time": moments})
    users = users[moments > 0]
    users["time"] = pd.to_datetime(users["time"], unit="s")
    activity = store.get_historical_features(users, [USER_ACTIVITY], dataset_version=version)
    per_user = activity.to_pandas().set_index("user")[USER_ACTIVITY.feature_names]
    joined = per_user.reindex(pairs["user"].to_numpy())
    for name in USER_ACTIVITY.feature_names:
        out[name] = joined[name].to_numpy(dtype=np.float64)
    return out


def cosine_items(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Item-item cosine similarity of co-occurrence (items x items, zero diagonal)."""
    import numpy as np
    import scipy.sparse as sp

    binary = matrix.astype(np.float32).tocsc()
    binary.data[:] = 1.0
    norms = np.sqrt(np.asarray(binary.multiply(binary).sum(axis=0)).ravel())
    inverse = sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-12), 0.0).astype(np.float32))
    normalized = (binary @ inverse).tocsr()
    similarity = (normalized.T @ normalized).tocsr()
    similarity.setdiag(0.0)
    similarity.eliminate_zeros()
    return similarity


def _genres(items: pd.DataFrame) -> NDArray[np.float32]:
    import numpy as np

    split = items["genres"].astype(str).str.split("|")
    names = sorted({g for gs in split for g in gs})
    index = {g: i for i, g in enumerate(names)}
    out = np.zeros((len(items), len(names)), dtype=np.float32)
    for row, gs in enumerate(split):
        out[row, [index[g] for g in gs]] = 1.0
    return out


def pair_features(
    workspace: Workspace,
    version: int,
    data: FitData,
    pairs: pd.DataFrame,
    similarity: sp.csr_matrix | None = None,
) -> pd.DataFrame:
    """``pairs`` (``user``, ``item``, ...) with every column of :data:`FEATURE_NAMES`, from
    ``data`` (the interactions written as data set ``version``) at each user's moment."""
    import numpy as np

    for column in ("user", "item"):
        if column not in pairs.columns:
            raise invalid_parameter("pairs", "pair_features", "a frame with user and item", column)
    moments = data.last_time()
    matrix = data.matrix()
    similarity = cosine_items(matrix) if similarity is None else similarity
    users = pairs["user"].to_numpy()
    items = pairs["item"].to_numpy()
    out = pairs.copy()
    stored = store_features(workspace, version, pairs, moments)
    for name in STORE_NAMES:
        out[name] = stored[name].to_numpy()

    genres = _genres(data.items)
    taste = np.asarray(matrix @ genres)
    taste /= np.maximum(np.linalg.norm(taste, axis=1, keepdims=True), 1e-12)
    item_genres = genres / np.maximum(np.linalg.norm(genres, axis=1, keepdims=True), 1e-12)
    out["genre_affinity"] = np.einsum("ij,ij->i", taste[users], item_genres[items])

    for n in LAST_ITEMS:
        last = _last_items_matrix(data, n)
        tail = np.maximum(np.diff(last.indptr), 1)
        values = _pair_values(last @ similarity, users, items)
        out[f"last_{n}_similarity"] = values / tail[users]
    history = matrix @ similarity
    counts = np.maximum(np.diff(matrix.indptr), 1)
    out["history_similarity"] = _pair_values(history, users, items) / counts[users]

    first = data.interactions.groupby("item")["time"].min()
    first_time = np.full(data.n_items, np.iinfo(np.int64).max, dtype=np.int64)
    first_time[first.index.to_numpy()] = first.to_numpy()
    at = moments[users]
    age = (at - first_time[items]) / SECONDS_PER_DAY
    out["item_age_days"] = np.where(first_time[items] <= at, age, -1.0)
    year = data.items["year"].to_numpy(dtype=np.float64)
    out["item_year"] = year[items]
    moment_year = 1970.0 + at / (365.25 * SECONDS_PER_DAY)
    out["years_since_release"] = moment_year - year[items]
    return out


def _last_items_matrix(data: FitData, n: int) -> sp.csr_matrix:
    """Users x items, 1.0 for each user's last ``n`` fitting interactions."""
    import numpy as np
    import scipy.sparse as sp

    frame = data.interactions.drop_duplicates(["user", "item"], keep="last")
    frame = frame.sort_values(["user", "time", "item"], kind="mergesort")
    tail = frame.groupby("user").tail(n)
    return sp.csr_matrix(
        (np.ones(len(tail), dtype=np.float32), (tail["user"], tail["item"])),
        shape=(data.n_users, data.n_items),
    )


def _pair_values(
    product: sp.csr_matrix, users: NDArray[np.int64], items: NDArray[np.int64]
) -> NDArray[np.float64]:
    """``product[users[i], items[i]]`` for every pair, from a sparse users x items matrix."""
    import numpy as np

    values = np.asarray(product.tocsr()[users, items]).ravel()
    return values.astype(np.float64)
