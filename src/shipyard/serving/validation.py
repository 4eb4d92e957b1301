"""What a request's values may be, checked in a few vectorized operations per request.

An :class:`InputValidator` is built once per deployed version from its input schema: bound
vectors for the declared constraints (a count is an integer >= 0, a flag 0/1, a rate in
[0, 1]), bound vectors for the range observed in training, the integer mask and the
nullable mask. A request whose values are all finite, inside the training range and
integral where they must be costs one sum and a few comparisons; only a request that
fails the fast path pays for finding out which cell is wrong.

- a non-finite value (NaN, null, inf) in a non-nullable column, or inf anywhere: rejected
  (:class:`RequestError` 422 naming column and row);
- a value breaking a declared constraint: rejected (422 naming column, row, what the
  constraint asks for and what came);
- a value outside the training range: scored, and its column named in the result (the
  prediction log records it); rejected instead when ``reject_out_of_range`` is set.

Example::

    validator = InputValidator(version.input_schema)
    out_of_range = validator.check(matrix)  # () when every value was seen in training
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from shipyard.errors import RequestError

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from shipyard.types import Schema

NO_FLAGS: tuple[str, ...] = ()
SMALL_BATCH = 4
"""Up to this many rows, the fast path checks values in Python rather than with numpy."""


class InputValidator:
    """Checks a decoded request against one version's input schema (see the module doc)."""

    def __init__(self, schema: Schema, *, reject_out_of_range: bool = False) -> None:
        columns = schema.columns
        self.schema = schema
        self.names = schema.names
        self.reject_out_of_range = reject_out_of_range
        inf = math.inf
        lower = [c.constraint.minimum if c.constraint else None for c in columns]
        upper = [c.constraint.maximum if c.constraint else None for c in columns]
        self._lower = np.array([-inf if v is None else v for v in lower], dtype=np.float64)
        self._upper = np.array([inf if v is None else v for v in upper], dtype=np.float64)
        self._integer = np.array([bool(c.constraint and c.constraint.integer) for c in columns])
        self._integer_index = np.flatnonzero(self._integer)
        self._nullable = np.array([c.nullable for c in columns])
        seen_lo = np.array([c.observed[0] if c.observed else -inf for c in columns])
        seen_hi = np.array([c.observed[1] if c.observed else inf for c in columns])
        # the fast path compares with the narrower of the two ranges: inside it, both hold
        self._seen_lo = np.maximum(seen_lo, self._lower)
        self._seen_hi = np.minimum(seen_hi, self._upper)
        ranged = bool(np.isfinite(self._seen_lo).any() or np.isfinite(self._seen_hi).any())
        self._checked = ranged or bool(self._integer_index.size)
        self._seen_lo_list: list[float] = self._seen_lo.tolist()
        self._seen_hi_list: list[float] = self._seen_hi.tolist()
        self._integer_list: list[int] = self._integer_index.tolist()

    def check(self, matrix: NDArray[np.float64]) -> tuple[str, ...]:
        """Raise RequestError for impossible values; return the columns outside the training range.

        ``matrix`` is 2-D float64 with one column per schema column, in order.
        """
        finite = math.isfinite(float(matrix.sum()))  # NaN and inf propagate: one reduction
        if not finite:
            self._reject_non_finite(matrix)
        if not self._checked:
            return NO_FLAGS
        if not finite or self._suspect(matrix):
            return self._slow_check(matrix)
        return NO_FLAGS

    def _suspect(self, matrix: NDArray[np.float64]) -> bool:
        """Whether a finite ``matrix`` may hold a value outside the fast-path bounds."""
        if len(matrix) <= SMALL_BATCH:
            # measured: for a few rows, a Python pass over tolist() costs ~1 us a row against
            # ~4 us for the numpy calls below, whose cost is per call, not per value
            lows, highs, integers = self._seen_lo_list, self._seen_hi_list, self._integer_list
            for row in matrix.tolist():
                for value, low, high in zip(row, lows, highs, strict=True):
                    if not low <= value <= high:
                        return True
                for i in integers:
                    if row[i] % 1.0:
                        return True
            return False
        return bool(
            (matrix < self._seen_lo).any()
            or (matrix > self._seen_hi).any()
            or (self._integer_index.size and np.fmod(matrix[:, self._integer_index], 1.0).any())
        )

    def _reject_non_finite(self, matrix: NDArray[np.float64]) -> None:
        bad = ~np.isfinite(matrix) & ~(self._nullable & np.isnan(matrix))
        if bad.any():
            row, column = (int(i) for i in np.argwhere(bad)[0])
            value = matrix[row, column]
            got = "null/NaN" if math.isnan(value) else repr(float(value))
            allowed = "a finite number or null" if self._nullable[column] else "a finite number"
            raise RequestError(
                422, f"input {self.names[column]!r} (row {row}) must be {allowed}; got {got}"
            )

    def _slow_check(self, matrix: NDArray[np.float64]) -> tuple[str, ...]:
        with np.errstate(invalid="ignore"):  # NaN of nullable columns compares False
            fraction = np.fmod(matrix, 1.0)
            broken = (matrix < self._lower) | (matrix > self._upper)
            broken |= self._integer & (fraction != 0) & ~np.isnan(matrix)
            if broken.any():
                row, column = (int(i) for i in np.argwhere(broken)[0])
                spec = self.schema.columns[column]
                assert spec.constraint is not None
                raise RequestError(
                    422,
                    f"input {spec.name!r} (row {row}) must be {spec.constraint.describe()}; "
                    f"got {_number(float(matrix[row, column]))}",
                )
            outside = ((matrix < self._seen_lo) | (matrix > self._seen_hi)).any(axis=0)
        flagged = tuple(self.names[i] for i in np.flatnonzero(outside))
        if flagged and self.reject_out_of_range:
            column = int(np.flatnonzero(outside)[0])
            rows = np.flatnonzero(
                (matrix[:, column] < self._seen_lo[column])
                | (matrix[:, column] > self._seen_hi[column])
            )
            lo, hi = self.schema.columns[column].observed or (-math.inf, math.inf)
            raise RequestError(
                422,
                f"input {self.names[column]!r} (row {int(rows[0])}) is outside the range seen in "
                f"training [{_number(lo)}, {_number(hi)}]; got "
                f"{_number(float(matrix[rows[0], column]))} (this endpoint rejects out-of-range "
                f"values: served with --reject-out-of-range)",
            )
        return flagged


def _number(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and value.is_integer() else repr(value)
