"""Small records and protocols shared by every part of Shipyard.

``Schema`` is declared once per model at training time and enforced at every boundary
(registration, promotion, serving). ``Predictor`` is the one contract every model backend
implements: batching, routing and logging wrap a Predictor without knowing what is inside.
``Lineage`` says where a model comes from, including which columns are its label, time and
entity, so that no generic layer names one solution's columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from shipyard.errors import SchemaError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.data.catalog import Dataset

_KINDS = {"b": "bool", "i": "int", "u": "int", "f": "float", "M": "datetime", "O": "string"}


@dataclass(frozen=True)
class Constraint:
    """The values a column can take at all, as its feature definition declares them.

    A value that breaks a constraint is impossible (a negative count, a flag of 2), so
    serving rejects it instead of scoring it. ``None`` bounds are open.

    Example::

        >>> Constraint(minimum=0, integer=True).describe()
        'an integer >= 0'
        >>> Constraint(0, 1).allows(1.5)
        False
    """

    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False

    def __post_init__(self) -> None:
        for bound in (self.minimum, self.maximum):
            if bound is not None and math.isnan(bound):
                raise SchemaError(
                    f"The bounds of a Constraint must be numbers, not NaN. Got {self!r} instead."
                )
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise SchemaError(
                "The minimum of a Constraint must be <= its maximum. "
                f"Got minimum={self.minimum!r} > maximum={self.maximum!r} instead."
            )

    def allows(self, value: float) -> bool:
        """Whether ``value`` satisfies the constraint.

        NaN is a missing value, judged by the column's nullability, not here; an infinite
        value breaks every constraint (no feature definition produces one).
        """
        number = float(value)
        if math.isnan(number):
            return True
        if math.isinf(number):
            return False
        if self.minimum is not None and number < self.minimum:
            return False
        if self.maximum is not None and number > self.maximum:
            return False
        return not (self.integer and not number.is_integer())

    def describe(self) -> str:
        """What the constraint asks for, in words: ``'an integer in [0, 1]'``."""
        kind = "an integer" if self.integer else "a number"
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            return f"{kind} in [{_number(lo)}, {_number(hi)}]"
        if lo is not None:
            return f"{kind} >= {_number(lo)}"
        if hi is not None:
            return f"{kind} <= {_number(hi)}"
        return kind

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return {"minimum": self.minimum, "maximum": self.maximum, "integer": self.integer}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Constraint:
        """Inverse of :meth:`to_dict`."""
        return cls(data.get("minimum"), data.get("maximum"), bool(data.get("integer")))


NON_NEGATIVE = Constraint(minimum=0)
"""Amounts, averages of amounts, durations."""
COUNT = Constraint(minimum=0, integer=True)
"""Counts of events."""
FLAG = Constraint(minimum=0, maximum=1, integer=True)
"""0/1 indicators."""
RATE = Constraint(minimum=0, maximum=1)
"""Shares and rates."""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a schema: name, logical type (bool, int, float, datetime, string).

    ``constraint`` is what the feature definition declares possible (breaking it is an
    error); ``observed`` is the (min, max) seen in the training data (values outside it are
    scored but flagged).
    """

    name: str
    dtype: str
    nullable: bool = False
    constraint: Constraint | None = None
    observed: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        data: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "nullable": self.nullable}
        if self.constraint is not None:
            data["constraint"] = self.constraint.to_dict()
        if self.observed is not None:
            data["observed"] = list(self.observed)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnSpec:
        """Inverse of :meth:`to_dict` (older records without constraints read as unconstrained)."""
        constraint = data.get("constraint")
        observed = data.get("observed")
        return cls(
            data["name"],
            data["dtype"],
            bool(data.get("nullable")),
            Constraint.from_dict(constraint) if constraint else None,
            (float(observed[0]), float(observed[1])) if observed else None,
        )


@dataclass(frozen=True)
class Schema:
    """An ordered list of columns; what a model takes or returns.

    Example::

        >>> s = Schema((ColumnSpec("amount", "float"), ColumnSpec("night", "int")))
        >>> s.names
        ['amount', 'night']
    """

    columns: tuple[ColumnSpec, ...]

    @property
    def names(self) -> list[str]:
        """Column names, in order."""
        return [c.name for c in self.columns]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, columns: Iterable[str] | None = None) -> Schema:
        """Infer a schema from a DataFrame's dtypes (only ``columns``, if given)."""
        names = list(frame.columns if columns is None else columns)
        specs = []
        for name in names:
            series = frame[name]
            kind = _KINDS.get(series.dtype.kind, "string")
            observed = None
            if kind in ("bool", "int", "float") and series.notna().any():
                observed = (float(series.min()), float(series.max()))
            specs.append(ColumnSpec(name, kind, bool(series.isna().any()), observed=observed))
        return cls(tuple(specs))

    def with_constraints(self, constraints: Mapping[str, Constraint]) -> Schema:
        """A copy whose columns named in ``constraints`` carry that constraint (others unchanged).

        Example: ``schema.with_constraints(view_constraints(views))`` at training time.
        """
        return Schema(
            tuple(
                replace(c, constraint=constraints[c.name]) if c.name in constraints else c
                for c in self.columns
            )
        )

    def to_dict(self) -> list[dict[str, Any]]:
        """JSON-serializable form."""
        return [c.to_dict() for c in self.columns]

    @classmethod
    def from_dict(cls, data: Iterable[Mapping[str, Any]]) -> Schema:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(ColumnSpec.from_dict(d) for d in data))

    def check_compatible(self, other: Schema, what: str) -> None:
        """Raise SchemaError unless ``other`` takes the same columns, in order, with the same types.

        Numeric widening (int columns where floats are expected) is compatible.
        """
        if self.names != other.names:
            missing = [n for n in self.names if n not in other.names]
            extra = [n for n in other.names if n not in self.names]
            detail = []
            if missing:
                detail.append(f"missing {missing}")
            if extra:
                detail.append(f"unexpected {extra}")
            if not detail:
                detail.append("same columns in a different order")
            raise SchemaError(f"{what}: input schema differs ({'; '.join(detail)}).")
        for mine, theirs in zip(self.columns, other.columns, strict=True):
            same = mine.dtype == theirs.dtype
            widening = mine.dtype == "float" and theirs.dtype in ("int", "bool")
            if not (same or widening):
                raise SchemaError(
                    f"{what}: column {mine.name!r} must be {mine.dtype}, got {theirs.dtype}."
                )


def text_columns(schema: Schema) -> list[str]:
    """The names of ``schema``'s string columns: a model that takes any reads raw text.

    Serving decodes such columns as text (V2 ``BYTES`` tensors, JSON strings) and hands the
    predictor a 2-D object array of ``str``; the registry, backends and monitoring skip the
    steps that need numeric feature frames. Empty for every tabular model.

    Example::

        >>> text_columns(Schema((ColumnSpec("text", "string"),)))
        ['text']
    """
    return [c.name for c in schema.columns if c.dtype == "string"]


@runtime_checkable
class Predictor(Protocol):
    """The serving contract: a columnar batch in, scores out, with declared schemas.

    Tabular models take a 2-D float array; text models (a ``string`` column in
    ``input_schema``, see :func:`text_columns`) take a 2-D object array of ``str`` in the
    same column order and pad each batch themselves.
    """

    input_schema: Schema
    output_schema: Schema

    def predict(self, batch: NDArray[np.float64]) -> NDArray[np.float64]:
        """Score a 2-D float array whose columns follow ``input_schema``; one row per score."""
        ...


@dataclass(frozen=True)
class ColumnRoles:
    """Which columns of a solution's data are its label, its time and its entity.

    The entity is what a day's alerts are counted in (a card, an applicant): CP@k ranks
    entities, known-compromised removal drops them. Splits, evaluation, training frames and
    the promotion gate read these names; none of them knows a solution's columns.

    Example::

        >>> ColumnRoles(label="default", time="application_date", entity="applicant_id").names
        ('application_date', 'applicant_id', 'default')
    """

    label: str
    time: str
    entity: str

    @property
    def names(self) -> tuple[str, ...]:
        """The column names: time, entity, label (duplicates and empty roles dropped).

        A role may be empty (``""``) where the data has no such column: review texts have
        no time.
        """
        return tuple(n for n in dict.fromkeys((self.time, self.entity, self.label)) if n)

    def to_dict(self) -> dict[str, str]:
        """JSON-serializable form."""
        return {"label": self.label, "time": self.time, "entity": self.entity}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnRoles:
        """Inverse of :meth:`to_dict`."""
        return cls(str(data["label"]), str(data["time"]), str(data["entity"]))


@dataclass(frozen=True)
class Lineage:
    """Where a model comes from: data set version, feature definitions, protocol, column roles.

    ``views`` is the ``module:attribute`` reference of the feature views (so a frame can be
    rebuilt), ``view_hashes`` their definition hashes by view name and ``features_hash`` the
    hash of the set. ``train_window`` and ``eval_window`` are (first day, last day) ISO dates:
    what the model was fitted on and the out-of-time window a promotion gate compares on.
    Build one with :meth:`of`, then add the windows of the model being registered with
    :meth:`with_windows`.
    """

    dataset: str
    dataset_version: int
    dataset_hash: str
    views: str
    view_hashes: Mapping[str, str]
    features_hash: str
    columns: ColumnRoles
    protocol: str = ""
    train_window: tuple[str, str] | None = None
    eval_window: tuple[str, str] | None = None

    @classmethod
    def of(
        cls, dataset: Dataset, views: str, *, columns: ColumnRoles, protocol: str = ""
    ) -> Lineage:
        """The lineage of models trained on ``dataset`` with the feature views ``views``.

        Raises DataValidationError if a column of ``columns`` is not in the data set, and
        FeatureDefinitionError if ``views`` cannot be imported.
        """
        from shipyard.errors import DataValidationError
        from shipyard.features.definitions import definitions_hash, load_views

        for role, name in columns.to_dict().items():
            if name and name not in dataset.columns:
                raise DataValidationError(
                    f"The {role} column {name!r} is not in data set {dataset.name} "
                    f"v{dataset.version}; its columns are {', '.join(dataset.columns)}."
                )
        loaded = load_views(views)
        return cls(
            dataset=dataset.name,
            dataset_version=dataset.version,
            dataset_hash=dataset.content_hash,
            views=views,
            view_hashes={v.name: v.definition_hash for v in loaded},
            features_hash=definitions_hash(loaded),
            columns=columns,
            protocol=protocol,
        )

    def with_windows(self, train: tuple[str, str], evaluation: tuple[str, str]) -> Lineage:
        """A copy that records the training and the out-of-time evaluation window (ISO dates)."""
        return replace(
            self,
            train_window=(str(train[0]), str(train[1])),
            eval_window=(str(evaluation[0]), str(evaluation[1])),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (what the registry stores with each model version)."""
        return {
            "dataset": self.dataset,
            "dataset_version": self.dataset_version,
            "dataset_hash": self.dataset_hash,
            "views": self.views,
            "view_hashes": dict(self.view_hashes),
            "features_hash": self.features_hash,
            "columns": self.columns.to_dict(),
            "protocol": self.protocol,
            "train_window": list(self.train_window) if self.train_window else None,
            "eval_window": list(self.eval_window) if self.eval_window else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lineage:
        """Inverse of :meth:`to_dict`."""
        train, evaluation = data.get("train_window"), data.get("eval_window")
        return cls(
            dataset=data["dataset"],
            dataset_version=int(data["dataset_version"]),
            dataset_hash=data["dataset_hash"],
            views=data["views"],
            view_hashes=dict(data["view_hashes"]),
            features_hash=data["features_hash"],
            columns=ColumnRoles.from_dict(data["columns"]),
            protocol=data.get("protocol", ""),
            train_window=(str(train[0]), str(train[1])) if train else None,
            eval_window=(str(evaluation[0]), str(evaluation[1])) if evaluation else None,
        )
