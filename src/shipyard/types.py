"""Small records and protocols shared by every part of Shipyard.

``Schema`` is declared once per model at training time and enforced at every boundary
(registration, promotion, serving). ``Predictor`` is the one contract every model backend
implements: batching, routing and logging wrap a Predictor without knowing what is inside.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from shipyard.errors import SchemaError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

_KINDS = {"b": "bool", "i": "int", "u": "int", "f": "float", "M": "datetime", "O": "string"}


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a schema: name, logical type (bool, int, float, datetime, string)."""

    name: str
    dtype: str
    nullable: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return {"name": self.name, "dtype": self.dtype, "nullable": self.nullable}


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
            specs.append(ColumnSpec(name, kind, bool(series.isna().any())))
        return cls(tuple(specs))

    def to_dict(self) -> list[dict[str, Any]]:
        """JSON-serializable form."""
        return [c.to_dict() for c in self.columns]

    @classmethod
    def from_dict(cls, data: Iterable[Mapping[str, Any]]) -> Schema:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(ColumnSpec(d["name"], d["dtype"], bool(d.get("nullable"))) for d in data))

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


@runtime_checkable
class Predictor(Protocol):
    """The serving contract: a columnar batch in, scores out, with declared schemas."""

    input_schema: Schema
    output_schema: Schema

    def predict(self, batch: NDArray[np.float64]) -> NDArray[np.float64]:
        """Score a 2-D float array whose columns follow ``input_schema``; one row per score."""
        ...
