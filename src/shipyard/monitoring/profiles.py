"""Profiles: what a column of data looked like, in bounded memory, mergeable with ``+``.

A reference profile is built once per model version from its training or validation data
and stored with it (``to_json``); a current profile is built from a window of the
prediction log with ``reference.empty().update(batch)``. Both are histograms over the
*same* buckets, so drift tests compare them bucket by bucket without seeing a raw row.

- :class:`NumericProfile`: fixed bins whose inner edges are the reference's quantiles
  (20 bins by default, open at both ends so any later value has a bin), the count and the
  sum of the values in each bin, a missing count, min / max, and the mean and variance as
  mergeable moments (Chan, Golub & LeVeque, "Algorithms for computing the sample variance",
  1983). NaN, ``None`` and ±inf are missing.
- :class:`CategoricalProfile`: the counts of the reference's categories (its
  ``max_categories`` most frequent, 1,000 by default), one *unseen* bucket for every other
  value (a category the reference never had, or one of its rare tail when it had more than
  ``max_categories``: a column with that many values is an identifier, and choosing the
  top categories from the reference's own counts biases those counts at the boundary)
  and a missing count. Values are compared as text: ``1``, ``1.0`` and ``"1"`` are one
  category.
- :class:`DatasetProfile`: one profile per column, plus the number of rows.

Profiles follow River's verbs: ``update(batch)`` adds rows in place (and returns the
profile), ``a + b`` returns the profile of both inputs, and the merge is exact for counts
and associative, so per-worker, per-partition and per-segment profiles combine.

Example::

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> reference = DatasetProfile.from_reference({"amount": rng.normal(size=1000)})
    >>> current = reference.empty().update({"amount": rng.normal(size=500)})
    >>> current.n_rows, len(current["amount"].counts)
    (500, 20)
    >>> again = DatasetProfile.from_json(reference.to_json())
    >>> again["amount"].edges == reference["amount"].edges
    True
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import NDArray

from shipyard.errors import SchemaError, invalid_parameter

FORMAT_VERSION = 1

Batch: TypeAlias = Any
"""A pandas DataFrame or a mapping of column name to a 1-D array-like."""


class ColumnKind(StrEnum):
    """How a column is profiled and which drift tests apply to it."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


@dataclass(frozen=True)
class Histogram:
    """The buckets of a profile, in a fixed order: labels and row counts (missing included)."""

    labels: tuple[str, ...]
    counts: NDArray[np.int64]

    @property
    def total(self) -> int:
        return int(self.counts.sum())


def _merge_moments(
    a: tuple[int, float, float], b: tuple[int, float, float]
) -> tuple[int, float, float]:
    """Merge (count, mean, sum of squared deviations) of two samples (Chan et al. 1983)."""
    n_a, mean_a, m2_a = a
    n_b, mean_b, m2_b = b
    n = n_a + n_b
    if n_a == 0 or n_b == 0:
        return b if n_a == 0 else a
    delta = mean_b - mean_a
    mean = mean_a + delta * n_b / n
    m2 = m2_a + m2_b + delta * delta * n_a * n_b / n
    return n, mean, m2


def numeric_values(values: Any, column: str) -> NDArray[np.float64]:
    """A column's values as a 1-D float array (NaN for missing), or a SchemaError naming it."""
    array = values if isinstance(values, np.ndarray) else None
    if array is not None and array.dtype.kind in "biuf":
        out = array.astype(np.float64, copy=False)
    else:
        import pandas as pd

        try:
            out = pd.Series(values).to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise SchemaError(
                f"Column {column!r} is profiled as numeric, but its values are not numbers ({exc})."
            ) from exc
    if out.ndim != 1:
        raise SchemaError(f"Column {column!r} must be 1-D; got an array of shape {out.shape}.")
    return out


def _label(value: Any) -> str:
    """The text a category is known by: ``1``, ``1.0`` and ``"1"`` are the same category."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _count_labels(values: Any, column: str) -> tuple[dict[str, int], int]:
    """Counts of each category label among ``values``, and the number of missing values."""
    import pandas as pd

    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if series.ndim != 1:
        raise SchemaError(f"Column {column!r} must be 1-D.")
    n_missing = int(series.isna().sum())
    counts: dict[str, int] = {}
    for key, count in series.value_counts(sort=False, dropna=True).items():
        if count:
            label = _label(key)
            counts[label] = counts.get(label, 0) + int(count)
    return counts, n_missing


def _batch_length(batch: Batch, names: Iterable[str]) -> int:
    lengths = {name: len(batch[name]) for name in names}
    if len(set(lengths.values())) > 1:
        raise SchemaError(f"The columns of a batch must have one length; got {lengths}.")
    return next(iter(lengths.values()), 0)


class NumericProfile:
    """Bins, counts, sums, missing count, min/max and moments of one numeric column.

    ``edges`` are the inner bin edges (strictly increasing, finite): bin ``i`` holds the
    values ``x`` with ``edges[i-1] <= x < edges[i]``, the first bin everything below
    ``edges[0]`` and the last everything from ``edges[-1]`` up. Build a reference with
    :meth:`from_reference`; its edges are the reference's quantiles.
    """

    kind = ColumnKind.NUMERIC

    def __init__(self, name: str, edges: Iterable[float]) -> None:
        self.name = name
        self.edges = tuple(float(e) for e in edges)
        bad = [e for e in self.edges if not math.isfinite(e)]
        if bad or any(b <= a for a, b in itertools.pairwise(self.edges)):
            raise invalid_parameter(
                "edges", "NumericProfile", "strictly increasing finite numbers", self.edges
            )
        self._edges = np.asarray(self.edges, dtype=np.float64)
        # annotated: NumPy 2.2's stubs would infer a 1-D shape that sums no longer keep
        self.counts: NDArray[np.int64] = np.zeros(len(self.edges) + 1, dtype=np.int64)
        self.sums: NDArray[np.float64] = np.zeros(len(self.edges) + 1, dtype=np.float64)
        self.missing = 0
        self.minimum: float | None = None
        self.maximum: float | None = None
        self.mean = 0.0
        self.m2 = 0.0

    @classmethod
    def from_reference(cls, name: str, values: Any, n_bins: int = 20) -> NumericProfile:
        """The profile of ``values``, binned at their quantiles 1/n_bins ... (n_bins-1)/n_bins.

        Quantiles are taken by inverting the empirical CDF, so every edge is a value of the
        reference (no edge falls between the two values of a 0/1 column).

        Tied quantiles collapse into one edge, so a column with few distinct values gets
        fewer bins (a 0/1 column gets three: below 0, [0, 1) and from 1 up).
        """
        if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 2:
            raise invalid_parameter("n_bins", "NumericProfile", "an int >= 2", n_bins)
        x = numeric_values(values, name)
        finite = x[np.isfinite(x)]
        edges: list[float] = []
        if finite.size:
            quantiles = np.quantile(finite, np.arange(1, n_bins) / n_bins, method="inverted_cdf")
            edges = sorted({float(q) for q in quantiles})
        return cls(name, edges).update(x)

    @property
    def count(self) -> int:
        """Rows with a value (missing ones excluded)."""
        return int(self.counts.sum())

    @property
    def n_rows(self) -> int:
        return self.count + self.missing

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1) of the values; 0.0 with fewer than two."""
        return self.m2 / (self.count - 1) if self.count > 1 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    @property
    def bin_means(self) -> NDArray[np.float64]:
        """The mean value of each bin (NaN for an empty bin)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums / self.counts

    def update(self, values: Any) -> NumericProfile:
        """Add a batch of values (array-like; NaN, None and ±inf count as missing)."""
        x = numeric_values(values, self.name)
        finite = np.isfinite(x)
        n_finite = int(finite.sum())
        self.missing += x.size - n_finite
        if n_finite == 0:
            return self
        x = x[finite] if n_finite < x.size else x
        bins = np.searchsorted(self._edges, x, side="right")
        self.counts += np.bincount(bins, minlength=self.counts.size)
        self.sums += np.bincount(bins, weights=x, minlength=self.sums.size)
        low, high = float(x.min()), float(x.max())
        self.minimum = low if self.minimum is None else min(self.minimum, low)
        self.maximum = high if self.maximum is None else max(self.maximum, high)
        mean = float(x.mean())
        batch = (n_finite, mean, float(np.square(x - mean).sum()))
        n_before = self.count - n_finite
        _, self.mean, self.m2 = _merge_moments((n_before, self.mean, self.m2), batch)
        return self

    def histogram(self) -> Histogram:
        """The bins then the missing bucket, with their labels (``[a, b)``, ``missing``)."""
        bounds = ["-inf", *(f"{e:.6g}" for e in self.edges), "inf"]
        labels = tuple(f"[{a}, {b})" for a, b in itertools.pairwise(bounds))
        return Histogram((*labels, "missing"), np.append(self.counts, self.missing))

    def check_compatible(self, other: object) -> None:
        """Raise SchemaError, naming the column, unless ``other`` has the same bins."""
        if not isinstance(other, NumericProfile):
            raise SchemaError(
                f"Column {self.name!r} is numeric here but {_kind_of(other)} in the other profile."
            )
        if other.name != self.name:
            raise SchemaError(f"Cannot combine column {self.name!r} with column {other.name!r}.")
        if other.edges != self.edges:
            raise SchemaError(
                f"The profiles of column {self.name!r} have different bin edges "
                f"({len(self.edges) + 1} vs {len(other.edges) + 1} bins): they come from "
                "different references. Build the current profile with reference.empty()."
            )

    def __add__(self, other: NumericProfile) -> NumericProfile:
        self.check_compatible(other)
        out = NumericProfile(self.name, self.edges)
        out.counts = self.counts + other.counts
        out.sums = self.sums + other.sums
        out.missing = self.missing + other.missing
        lows = [v for v in (self.minimum, other.minimum) if v is not None]
        highs = [v for v in (self.maximum, other.maximum) if v is not None]
        out.minimum = min(lows) if lows else None
        out.maximum = max(highs) if highs else None
        _, out.mean, out.m2 = _merge_moments(
            (self.count, self.mean, self.m2), (other.count, other.mean, other.m2)
        )
        return out

    def empty(self) -> NumericProfile:
        """A profile with the same bins and no rows."""
        return NumericProfile(self.name, self.edges)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "name": self.name,
            "edges": list(self.edges),
            "counts": self.counts.tolist(),
            "sums": self.sums.tolist(),
            "missing": self.missing,
            "min": self.minimum,
            "max": self.maximum,
            "mean": self.mean,
            "m2": self.m2,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NumericProfile:
        out = cls(str(data["name"]), data["edges"])
        counts = np.asarray(data["counts"], dtype=np.int64)
        sums = np.asarray(data["sums"], dtype=np.float64)
        if counts.shape != out.counts.shape or sums.shape != out.sums.shape:
            raise SchemaError(
                f"The stored profile of column {out.name!r} is malformed: "
                f"{len(out.edges)} edges need {out.counts.size} counts and sums."
            )
        out.counts, out.sums = counts, sums
        out.missing = int(data["missing"])
        out.minimum = None if data["min"] is None else float(data["min"])
        out.maximum = None if data["max"] is None else float(data["max"])
        out.mean, out.m2 = float(data["mean"]), float(data["m2"])
        return out

    def __repr__(self) -> str:
        return (
            f"NumericProfile({self.name!r}, bins={self.counts.size}, count={self.count}, "
            f"missing={self.missing})"
        )


class CategoricalProfile:
    """Counts of the reference's categories, an unseen bucket and a missing count."""

    kind = ColumnKind.CATEGORICAL

    def __init__(self, name: str, categories: Iterable[str]) -> None:
        self.name = name
        self.categories = tuple(str(c) for c in categories)
        if len(set(self.categories)) != len(self.categories):
            raise invalid_parameter(
                "categories", "CategoricalProfile", "distinct labels", self.categories
            )
        self._index = {c: i for i, c in enumerate(self.categories)}
        self.counts: NDArray[np.int64] = np.zeros(len(self.categories), dtype=np.int64)
        self.unseen = 0
        self.missing = 0

    @classmethod
    def from_reference(
        cls, name: str, values: Any, max_categories: int = 1000
    ) -> CategoricalProfile:
        """The profile of ``values``; its categories are their ``max_categories`` most frequent."""
        if (
            isinstance(max_categories, bool)
            or not isinstance(max_categories, int)
            or max_categories < 1
        ):
            raise invalid_parameter(
                "max_categories", "CategoricalProfile", "an int >= 1", max_categories
            )
        counts, _ = _count_labels(values, name)
        ranked = sorted(counts, key=lambda label: (-counts[label], label))
        return cls(name, ranked[:max_categories]).update(values)

    @property
    def count(self) -> int:
        """Rows with a value (unseen ones included, missing ones excluded)."""
        return int(self.counts.sum()) + self.unseen

    @property
    def n_rows(self) -> int:
        return self.count + self.missing

    def frequencies(self) -> dict[str, float]:
        """Share of each category, ``<unseen>`` and ``<missing>`` among all rows."""
        hist = self.histogram()
        total = max(hist.total, 1)
        return {label: int(c) / total for label, c in zip(hist.labels, hist.counts, strict=True)}

    def update(self, values: Any) -> CategoricalProfile:
        """Add a batch of values (array-like; None and NaN count as missing)."""
        counts, n_missing = _count_labels(values, self.name)
        self.missing += n_missing
        for label, count in counts.items():
            i = self._index.get(label)
            if i is None:
                self.unseen += count
            else:
                self.counts[i] += count
        return self

    def histogram(self) -> Histogram:
        """The categories, then ``<unseen>``, then ``<missing>``."""
        return Histogram(
            (*self.categories, "<unseen>", "<missing>"),
            np.append(self.counts, [self.unseen, self.missing]).astype(np.int64),
        )

    def check_compatible(self, other: object) -> None:
        """Raise SchemaError, naming the column, unless ``other`` has the same categories."""
        if not isinstance(other, CategoricalProfile):
            raise SchemaError(
                f"Column {self.name!r} is categorical here but {_kind_of(other)} in the other "
                "profile."
            )
        if other.name != self.name:
            raise SchemaError(f"Cannot combine column {self.name!r} with column {other.name!r}.")
        if other.categories != self.categories:
            raise SchemaError(
                f"The profiles of column {self.name!r} have different categories: they come "
                "from different references. Build the current profile with reference.empty()."
            )

    def __add__(self, other: CategoricalProfile) -> CategoricalProfile:
        self.check_compatible(other)
        out = CategoricalProfile(self.name, self.categories)
        out.counts = self.counts + other.counts
        out.unseen = self.unseen + other.unseen
        out.missing = self.missing + other.missing
        return out

    def empty(self) -> CategoricalProfile:
        """A profile with the same categories and no rows."""
        return CategoricalProfile(self.name, self.categories)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "name": self.name,
            "categories": list(self.categories),
            "counts": self.counts.tolist(),
            "unseen": self.unseen,
            "missing": self.missing,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoricalProfile:
        out = cls(str(data["name"]), data["categories"])
        counts = np.asarray(data["counts"], dtype=np.int64)
        if counts.shape != out.counts.shape:
            raise SchemaError(
                f"The stored profile of column {out.name!r} is malformed: "
                f"{len(out.categories)} categories but {counts.size} counts."
            )
        out.counts = counts
        out.unseen, out.missing = int(data["unseen"]), int(data["missing"])
        return out

    def __repr__(self) -> str:
        return (
            f"CategoricalProfile({self.name!r}, categories={len(self.categories)}, "
            f"count={self.count}, unseen={self.unseen}, missing={self.missing})"
        )


ColumnProfile: TypeAlias = NumericProfile | CategoricalProfile


def _kind_of(profile: object) -> str:
    kind = getattr(profile, "kind", None)
    return kind.value if isinstance(kind, ColumnKind) else type(profile).__name__


def _merge_columns(a: ColumnProfile, b: ColumnProfile) -> ColumnProfile:
    if isinstance(a, NumericProfile) and isinstance(b, NumericProfile):
        return a + b
    if isinstance(a, CategoricalProfile) and isinstance(b, CategoricalProfile):
        return a + b
    a.check_compatible(b)  # raises: the kinds differ
    raise AssertionError("unreachable")


def column_profile_from_dict(data: Mapping[str, Any]) -> ColumnProfile:
    """Rebuild a column profile from :meth:`to_dict` output."""
    kind = data.get("kind")
    if kind == ColumnKind.NUMERIC.value:
        return NumericProfile.from_dict(data)
    if kind == ColumnKind.CATEGORICAL.value:
        return CategoricalProfile.from_dict(data)
    raise SchemaError(f"Unknown profile kind {kind!r} for column {data.get('name')!r}.")


def _is_numeric(values: Any) -> bool:
    dtype = getattr(values, "dtype", None)
    if dtype is None:
        dtype = np.asarray(values).dtype
    return getattr(dtype, "kind", "O") in "iuf"


class DatasetProfile:
    """One profile per column of a data set, and how many rows it has seen.

    Build the reference with :meth:`from_reference`, a current window with
    ``reference.empty().update(batch)``; merge windows or workers with ``+``.
    """

    def __init__(self, columns: Iterable[ColumnProfile]) -> None:
        self.columns: dict[str, ColumnProfile] = {}
        for profile in columns:
            if profile.name in self.columns:
                raise SchemaError(f"Column {profile.name!r} is profiled twice.")
            self.columns[profile.name] = profile
        self.n_rows = 0

    @classmethod
    def from_reference(
        cls,
        batch: Batch,
        *,
        columns: Iterable[str] | None = None,
        categorical: Iterable[str] = (),
        n_bins: int = 20,
        max_categories: int = 1000,
    ) -> DatasetProfile:
        """Profile ``batch`` (all its columns, or ``columns``) as a reference.

        Columns of integer or float type are numeric, the rest categorical; name integer
        codes in ``categorical`` to profile them as categories.
        """
        names = list(batch.keys() if columns is None else columns)
        forced = set(categorical)
        unknown = forced - set(names)
        if unknown:
            raise SchemaError(f"Columns {sorted(unknown)} in 'categorical' are not profiled.")
        profiles: list[ColumnProfile] = []
        for name in names:
            if name not in batch:
                raise SchemaError(f"Column {name!r} is not in the batch.")
            values = batch[name]
            if name not in forced and _is_numeric(values):
                profiles.append(NumericProfile.from_reference(name, values, n_bins))
            else:
                profiles.append(CategoricalProfile.from_reference(name, values, max_categories))
        out = cls(profiles)
        out.n_rows = _batch_length(batch, names)
        return out

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def __getitem__(self, name: str) -> ColumnProfile:
        return self.columns[name]

    def __iter__(self) -> Iterator[ColumnProfile]:
        return iter(self.columns.values())

    def __len__(self) -> int:
        return len(self.columns)

    def update(self, batch: Batch) -> DatasetProfile:
        """Add the rows of ``batch`` (extra columns are ignored; a missing one is an error)."""
        absent = [name for name in self.columns if name not in batch]
        if absent:
            raise SchemaError(f"The batch lacks the profiled columns {absent}.")
        n = _batch_length(batch, self.columns)
        for name, profile in self.columns.items():
            profile.update(batch[name])
        self.n_rows += n
        return self

    def empty(self) -> DatasetProfile:
        """A profile with the same columns, bins and categories, and no rows."""
        return DatasetProfile(p.empty() for p in self.columns.values())

    def check_compatible(self, other: DatasetProfile) -> None:
        """Raise SchemaError naming the first column that differs in name, kind or buckets."""
        mine, theirs = set(self.columns), set(other.columns)
        if mine != theirs:
            raise SchemaError(
                "The profiles have different columns: only here "
                f"{sorted(mine - theirs)}, only in the other {sorted(theirs - mine)}."
            )
        for name, profile in self.columns.items():
            profile.check_compatible(other.columns[name])

    def __add__(self, other: DatasetProfile) -> DatasetProfile:
        self.check_compatible(other)
        merged: list[ColumnProfile] = []
        for name, profile in self.columns.items():
            merged.append(_merge_columns(profile, other.columns[name]))
        out = DatasetProfile(merged)
        out.n_rows = self.n_rows + other.n_rows
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "n_rows": self.n_rows,
            "columns": [p.to_dict() for p in self.columns.values()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetProfile:
        if data.get("format") != FORMAT_VERSION:
            raise SchemaError(
                f"Unknown profile format {data.get('format')!r}; this Shipyard reads "
                f"format {FORMAT_VERSION}."
            )
        out = cls(column_profile_from_dict(c) for c in data["columns"])
        out.n_rows = int(data["n_rows"])
        return out

    def to_json(self) -> str:
        """The profile as JSON text (exact: floats round-trip), to store with a model version."""
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> DatasetProfile:
        return cls.from_dict(json.loads(text))

    def __repr__(self) -> str:
        return f"DatasetProfile(columns={self.names}, n_rows={self.n_rows})"
