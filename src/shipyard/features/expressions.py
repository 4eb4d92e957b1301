"""A feature view's SQL evaluated in Python for small batches, checked against DuckDB.

DuckDB plans every query it runs: about 0.2 ms for ``SELECT 1`` and 1 to 2 ms for the raw
values and row features of a batch of a few events, whatever the batch's size. Serving
applies events in batches of a few (one per concurrent request), so that fixed cost was most
of a raw event's. A :class:`PythonSelect` computes the same values in Python, column by
column, for the part of SQL feature views use most:

* the raw values a :class:`~shipyard.features.streaming.StreamingView` keeps: the timestamp
  in epoch microseconds (nanoseconds only when they are whole microseconds), the entity
  key, an aggregated column as ``DOUBLE`` or as exact units of ``DECIMAL(18, d)`` (DuckDB's
  cast: the value times ``10**d`` rounded half away from zero);
* row features made of column references, integer and decimal constants, ``CAST`` /
  ``TRY_CAST`` between booleans, integers and ``DOUBLE``, comparisons, ``AND`` / ``OR`` /
  ``NOT``, ``IS [NOT] NULL``, ``+ - * /`` in ``DOUBLE``, and the calendar parts ``hour``,
  ``minute``, ``second``, ``isodow``, ``dayofweek``, ``day``, ``month``, ``year`` of a
  ``TIMESTAMP``; each expression is read from DuckDB's own parse tree
  (``json_serialize_sql``), so there is no second parser of the definitions.

Anything else (another function, an input column that is not an integer, ``DOUBLE``,
boolean, string or ``TIMESTAMP`` without a time zone) is not compiled, and DuckDB computes
the view as before.

**Exactness is checked, not assumed.** Before the Python functions compute the events of one
Arrow schema, they and DuckDB compute the same expressions over a calibration table of that
schema (halves of the last decimal, negative zero, non-finite values, nulls, every hour of
eight days, integer bounds, ...); the functions are used only if every value and every type
is identical, otherwise DuckDB computes every batch of that schema. At run time, a value
outside the domain where the Python result is known exact (a decimal near ``DECIMAL(18)``'s
bound, a NaN compared, a division by zero, a date outside years 1 to 9999, an integer out of
a cast's range) sends the whole batch to DuckDB, which answers (or refuses) it as always.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

MAX_ROWS = 256
"""Batches larger than this go to DuckDB: its fixed cost is then small beside the work."""

Kind = Literal["bool", "int", "float", "str", "time", "decimal"]
Values = list[Any]
Evaluate = Callable[["_Batch"], Values]

_US_PER_DAY = 86_400_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MIN_US = (date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * _US_PER_DAY
_MAX_US = (date(9999, 12, 31).toordinal() + 1 - _EPOCH_ORDINAL) * _US_PER_DAY - 1
_DECIMAL_LIMIT = 10**18  # DECIMAL(18, d) holds fewer than 10**18 units
_SAFE_UNITS = 10**17  # beyond, DuckDB's checks decide (a product overflowing DECIMAL(18) fails)
_INT_RANGES = {
    "TINYINT": (-(2**7), 2**7 - 1),
    "SMALLINT": (-(2**15), 2**15 - 1),
    "INTEGER": (-(2**31), 2**31 - 1),
    "BIGINT": (-(2**63), 2**63 - 1),
}
_CAST_NAMES = {
    "TINYINT": "TINYINT",
    "INT1": "TINYINT",
    "SMALLINT": "SMALLINT",
    "INT2": "SMALLINT",
    "INTEGER": "INTEGER",
    "INT": "INTEGER",
    "INT4": "INTEGER",
    "BIGINT": "BIGINT",
    "INT8": "BIGINT",
    "DOUBLE": "DOUBLE",
    "FLOAT8": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
    "BOOL": "BOOLEAN",
}
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "COMPARE_EQUAL": operator.eq,
    "COMPARE_NOTEQUAL": operator.ne,
    "COMPARE_LESSTHAN": operator.lt,
    "COMPARE_GREATERTHAN": operator.gt,
    "COMPARE_LESSTHANOREQUALTO": operator.le,
    "COMPARE_GREATERTHANOREQUALTO": operator.ge,
}
_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}


class FallbackError(Exception):
    """A value outside the domain where the Python result is known to equal DuckDB's."""


class _UnsupportedError(Exception):
    """An expression or input type this module does not compile."""


@dataclass
class _Batch:
    """The input columns of one batch, as Python values (timestamps in epoch microseconds)."""

    columns: dict[str, Values]
    rows: int


@dataclass(frozen=True)
class _Node:
    kind: Kind
    evaluate: Evaluate
    scale: int = 0
    """For a decimal: the number of decimals of its integer units."""


def _kind_of(arrow_type: pa.DataType) -> Kind | None:
    """The kind of an input column of this Arrow type (None: not computed in Python)."""
    import pyarrow as pa

    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_float64(arrow_type):
        return "float"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "str"
    if pa.types.is_timestamp(arrow_type) and arrow_type.tz is None:
        return "time"
    return None


_UNIT_US = {"s": 1_000_000, "ms": 1_000, "us": 1}


def _micros(column: pa.ChunkedArray) -> Values:
    """A timestamp column as epoch microseconds (DuckDB's TIMESTAMP); nanoseconds only when
    they are whole microseconds (else DuckDB decides how to truncate them)."""
    import pyarrow as pa

    int64 = pa.int64()  # a view of the same buffers, not a cast (a tenth of its cost)
    values: Values = [v for chunk in column.chunks for v in chunk.view(int64).to_pylist()]
    unit = column.type.unit
    if unit == "ns":
        if any(v is not None and v % 1000 for v in values):
            raise FallbackError
        return [None if v is None else v // 1000 for v in values]
    factor = _UNIT_US[unit]
    if factor == 1:
        return values
    return [None if v is None else v * factor for v in values]


def round_half_away(value: float) -> int:
    """``value`` rounded to an integer, halves away from zero (C's ``round``), exactly."""
    if value < 0:
        return -round_half_away(-value)
    whole = math.floor(value)
    # exact: a double's fractional part is a double
    return whole + 1 if value - whole >= 0.5 else whole


def decimal_units(value: Any, kind: Kind, decimals: int) -> int | None:
    """DuckDB's ``TRY_CAST(TRY_CAST(value AS DECIMAL(18, d)) * 10**d AS BIGINT)``.

    None where the cast gives a null (a non-finite or too large value); raises
    :class:`FallbackError` near the bound, where DuckDB's multiplication may fail instead.
    """
    if value is None:
        return None
    scale = 10**decimals
    if kind == "float":
        scaled = value * float(scale)
        if not math.isfinite(scaled):  # DuckDB: not a finite DECIMAL, a null
            return None
        units = round_half_away(scaled)
    elif kind == "int":
        units = value * scale
    else:
        raise FallbackError
    if abs(units) >= _DECIMAL_LIMIT:
        return None
    if abs(units) * scale >= _SAFE_UNITS:
        raise FallbackError
    return units


class _Compiler:
    """Turns DuckDB's parse tree of one expression into a column function (or refuses)."""

    def __init__(self, kinds: dict[str, Kind]) -> None:
        self.kinds = kinds
        self.used: set[str] = set()

    def column(self, names: Sequence[str]) -> str:
        if len(names) != 1:
            raise _UnsupportedError("qualified column")
        name = names[0]
        if name not in self.kinds:
            matches = [k for k in self.kinds if k.lower() == name.lower()]
            if len(matches) != 1:
                raise _UnsupportedError(f"column {name!r}")
            name = matches[0]
        self.used.add(name)
        return name

    def compile(self, node: dict[str, Any]) -> _Node:
        handler = {
            "COLUMN_REF": self._column_ref,
            "VALUE_CONSTANT": self._constant,
            "OPERATOR_CAST": self._cast,
            "CONJUNCTION_AND": self._conjunction,
            "CONJUNCTION_OR": self._conjunction,
            "OPERATOR_NOT": self._not,
            "OPERATOR_IS_NULL": self._is_null,
            "OPERATOR_IS_NOT_NULL": self._is_null,
            "FUNCTION": self._function,
        }.get(node.get("type", ""))
        if handler is None and node.get("type") in _COMPARE:
            handler = self._comparison
        if handler is None:
            raise _UnsupportedError(str(node.get("type")))
        return handler(node)

    def _column_ref(self, node: dict[str, Any]) -> _Node:
        name = self.column(node["column_names"])
        kind = self.kinds[name]
        if kind == "time":  # only through a calendar function
            raise _UnsupportedError("a timestamp value")
        return _Node(kind, lambda batch: batch.columns[name])

    def _constant(self, node: dict[str, Any]) -> _Node:
        literal = node.get("literal")
        if not isinstance(literal, dict):
            raise _UnsupportedError("constant")
        text = literal.get("text")
        if literal.get("kind") == "INTEGER" and isinstance(text, str):
            value: Any = int(text)
            return _Node("int", lambda batch: [value] * batch.rows)
        if literal.get("kind") == "NUMERIC" and isinstance(text, str):
            # a DECIMAL literal: kept as such; used with a DOUBLE it becomes that double
            whole, _, fraction = text.partition(".")
            if not (whole.isdigit() and (fraction.isdigit() or not fraction)):
                raise _UnsupportedError("constant")
            units = int(whole + fraction)
            return _Node("decimal", lambda batch: [units] * batch.rows, scale=len(fraction))
        raise _UnsupportedError("constant")

    def _cast(self, node: dict[str, Any]) -> _Node:
        target = node.get("type_expr", {})
        if target.get("children"):
            raise _UnsupportedError("parameterized type")
        name = _CAST_NAMES.get(str(target.get("type_name", "")).upper())
        if name is None:
            raise _UnsupportedError("cast target")
        child = self.compile(node["child"])
        try_cast = bool(node.get("try_cast"))
        evaluate = child.evaluate
        if name == "DOUBLE":
            if child.kind not in ("int", "float", "bool"):
                raise _UnsupportedError("cast to DOUBLE")
            return _Node("float", lambda b: [None if v is None else float(v) for v in evaluate(b)])
        if name == "BOOLEAN":
            if child.kind not in ("int", "bool"):
                raise _UnsupportedError("cast to BOOLEAN")
            return _Node("bool", lambda b: [None if v is None else v != 0 for v in evaluate(b)])
        low, high = _INT_RANGES[name]
        if child.kind == "bool":
            return _Node("int", lambda b: [None if v is None else int(v) for v in evaluate(b)])
        if child.kind != "int":
            raise _UnsupportedError(f"cast of {child.kind} to {name}")

        def to_int(batch: _Batch) -> Values:
            out: Values = []
            for v in evaluate(batch):
                if v is not None and not low <= v <= high:
                    if not try_cast:
                        raise FallbackError  # DuckDB's conversion error
                    v = None
                out.append(v)
            return out

        return _Node("int", to_int)

    def _conjunction(self, node: dict[str, Any]) -> _Node:
        children = [self.compile(c) for c in node["children"]]
        if any(c.kind != "bool" for c in children):
            raise _UnsupportedError("conjunction of non-booleans")
        evaluates = [c.evaluate for c in children]
        is_and = node["type"] == "CONJUNCTION_AND"

        def combine(batch: _Batch) -> Values:
            columns = [e(batch) for e in evaluates]
            out: Values = []
            for values in zip(*columns, strict=True):
                if is_and:
                    out.append(False if False in values else None if None in values else True)
                else:
                    out.append(True if True in values else None if None in values else False)
            return out

        return _Node("bool", combine)

    def _not(self, node: dict[str, Any]) -> _Node:
        (child,) = [self.compile(c) for c in node["children"]]
        if child.kind != "bool":
            raise _UnsupportedError("NOT of a non-boolean")
        evaluate = child.evaluate
        return _Node("bool", lambda b: [None if v is None else not v for v in evaluate(b)])

    def _is_null(self, node: dict[str, Any]) -> _Node:
        (child,) = [self.compile(c) for c in node["children"]]
        evaluate = child.evaluate
        if node["type"] == "OPERATOR_IS_NULL":
            return _Node("bool", lambda b: [v is None for v in evaluate(b)])
        return _Node("bool", lambda b: [v is not None for v in evaluate(b)])

    def _operands(self, left: _Node, right: _Node) -> tuple[Kind, Evaluate, Evaluate]:
        """Both sides in their common kind, as DuckDB casts them (int and DOUBLE: DOUBLE)."""
        kinds = {left.kind, right.kind}
        if kinds == {"int"}:
            return "int", left.evaluate, right.evaluate
        if kinds <= {"int", "float", "decimal"} and "float" in kinds:
            return "float", _as_float(left), _as_float(right)
        if kinds == {"str"}:
            return "str", left.evaluate, right.evaluate
        raise _UnsupportedError(f"operands {sorted(kinds)}")

    def _comparison(self, node: dict[str, Any]) -> _Node:
        kind, left, right = self._operands(self.compile(node["left"]), self.compile(node["right"]))
        if kind == "str":
            raise _UnsupportedError("string comparison")  # collations
        compare = _COMPARE[node["type"]]

        def evaluate(batch: _Batch) -> Values:
            out: Values = []
            for a, b in zip(left(batch), right(batch), strict=True):
                if a is None or b is None:
                    out.append(None)
                    continue
                if kind == "float" and (math.isnan(a) or math.isnan(b)):
                    raise FallbackError  # DuckDB orders NaN above every number
                out.append(compare(a, b))
            return out

        return _Node("bool", evaluate)

    def _function(self, node: dict[str, Any]) -> _Node:
        name = str(node.get("function_name", "")).lower()
        if node.get("schema") or node.get("catalog") or node.get("distinct"):
            raise _UnsupportedError("qualified function")
        if node.get("filter") is not None or node.get("order_bys", {}).get("orders"):
            raise _UnsupportedError("aggregate modifiers")
        arguments = [a.get("expression") for a in node.get("arguments", [])]
        if any(a.get("name") for a in node.get("arguments", [])):
            raise _UnsupportedError("named argument")
        if name in _CALENDAR:
            if len(arguments) != 1 or arguments[0].get("type") != "COLUMN_REF":
                raise _UnsupportedError(f"{name} of an expression")
            column = self.column(arguments[0]["column_names"])
            if self.kinds[column] != "time":
                raise _UnsupportedError(f"{name} of a {self.kinds[column]}")
            part = _CALENDAR[name]
            return _Node(
                "int", lambda b: [None if v is None else part(v) for v in b.columns[column]]
            )
        if not node.get("is_operator") or name not in ("+", "-", "*", "/"):
            raise _UnsupportedError(f"function {name}")
        children = [self.compile(a) for a in arguments]
        if len(children) == 1 and name == "-":
            (child,) = children
            if child.kind != "float":
                raise _UnsupportedError("negation of a non-double")  # integer overflow per type
            evaluate = child.evaluate
            return _Node("float", lambda b: [None if v is None else -v for v in evaluate(b)])
        if len(children) != 2:
            raise _UnsupportedError(f"{name} of {len(children)} arguments")
        left_node, right_node = children
        if name == "/" and {left_node.kind, right_node.kind} == {"int"}:
            left, right = _as_float(left_node), _as_float(right_node)  # '/' is DOUBLE division
        else:
            kind, left, right = self._operands(left_node, right_node)
            if kind != "float":
                raise _UnsupportedError(f"{name} in {kind}")  # integer overflow depends on types
        operation = _ARITHMETIC.get(name)

        def arithmetic(batch: _Batch) -> Values:
            out: Values = []
            for a, b in zip(left(batch), right(batch), strict=True):
                if a is None or b is None:
                    out.append(None)
                    continue
                if operation is None:  # division
                    if b == 0:
                        raise FallbackError
                    result = a / b
                else:
                    result = operation(a, b)
                if not math.isfinite(result):
                    raise FallbackError  # DuckDB's overflow checks
                out.append(result)
            return out

        return _Node("float", arithmetic)


def _as_float(node: _Node) -> Evaluate:
    evaluate = node.evaluate
    if node.kind == "float":
        return evaluate
    if node.kind == "decimal":
        # a decimal constant meeting a DOUBLE is cast to DOUBLE: the nearest double
        scale = 10**node.scale
        return lambda b: [None if v is None else v / scale for v in evaluate(b)]
    return lambda b: [None if v is None else float(v) for v in evaluate(b)]


def _civil(us: int) -> date:
    if not _MIN_US <= us <= _MAX_US:
        raise FallbackError
    return date.fromordinal(us // _US_PER_DAY + _EPOCH_ORDINAL)


_CALENDAR: dict[str, Callable[[int], int]] = {
    "hour": lambda us: us % _US_PER_DAY // 3_600_000_000,
    "minute": lambda us: us % 3_600_000_000 // 60_000_000,
    "second": lambda us: us % 60_000_000 // 1_000_000,
    "isodow": lambda us: (us // _US_PER_DAY + 3) % 7 + 1,  # 1970-01-01 was a Thursday
    "dayofweek": lambda us: (us // _US_PER_DAY + 4) % 7,  # Sunday = 0
    "day": lambda us: _civil(us).day,
    "month": lambda us: _civil(us).month,
    "year": lambda us: _civil(us).year,
}


@dataclass(frozen=True)
class RawSpec:
    """How a view reads its raw values: timestamp column, entity column, aggregated series."""

    timestamp: str
    entity: str
    series: tuple[tuple[str, int | None], ...]
    """(column, decimals) per stored series, then per source column a derived feature reads:
    DOUBLE when decimals is None."""


class PythonSelect:
    """The raw values and row features of one view over batches of one Arrow schema.

    Built by :func:`python_select` (None when something is not compiled or the calibration
    disagrees with DuckDB). :meth:`columns` answers what ``SELECT <raw values>, <row
    features> FROM events`` answers in DuckDB: one list per expression, and the DuckDB type
    name of each row feature in :attr:`types`.
    """

    def __init__(
        self,
        raw: RawSpec,
        kinds: dict[str, Kind],
        features: list[_Node],
        inputs: set[str],
    ) -> None:
        self.raw = raw
        self.kinds = kinds
        self.features = features
        self.inputs = inputs
        self.types: list[str] = []

    def columns(self, table: pa.Table, converted: dict[str, Values] | None = None) -> list[Values]:
        """One list per expression (raw values, then row features); raises FallbackError.

        ``converted`` keeps the Python values of ``table``'s columns across the views that
        read the same events (each column is converted once).
        """
        if table.num_rows > MAX_ROWS:
            raise FallbackError
        return self._evaluate(_batch(table, self.kinds, self.inputs, converted))

    def _evaluate(self, batch: _Batch) -> list[Values]:
        raw = self.raw
        times = batch.columns[raw.timestamp]
        for us in times:
            if us is not None and not _MIN_US <= us <= _MAX_US:
                raise FallbackError  # DuckDB's timestamp range and infinities
        out: list[Values] = [times, batch.columns[raw.entity]]
        for column, decimals in raw.series:
            values = batch.columns[column]
            kind = self.kinds[column]
            if decimals is None:
                if kind == "float":
                    out.append(values)
                else:  # an integer column as DOUBLE
                    out.append([None if v is None else float(v) for v in values])
            else:
                out.append([decimal_units(v, kind, decimals) for v in values])
        out.extend(feature.evaluate(batch) for feature in self.features)
        return out


def _batch(
    table: pa.Table,
    kinds: dict[str, Kind],
    inputs: set[str],
    converted: dict[str, Values] | None = None,
) -> _Batch:
    known = {} if converted is None else converted
    values = {}
    for name in inputs:
        column = known.get(name)
        if column is None:
            raw = table.column(name)
            column = known[name] = _micros(raw) if kinds[name] == "time" else raw.to_pylist()
        values[name] = column
    return _Batch(values, table.num_rows)


def _parse(expression: str) -> dict[str, Any]:
    import duckdb

    connection = duckdb.connect(config={"threads": 1})
    try:
        text = connection.execute("SELECT json_serialize_sql(?)", [f"SELECT {expression}"])
        tree = json.loads(text.fetchall()[0][0])
    finally:
        connection.close()
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        raise _UnsupportedError("not one expression")
    node = tree["statements"][0]["node"]
    if node.get("type") != "SELECT_NODE" or node.get("from_table", {}).get("type") != "EMPTY":
        raise _UnsupportedError("not a bare expression")
    select_list = node.get("select_list", [])
    if len(select_list) != 1:
        raise _UnsupportedError("not one expression")
    parsed: dict[str, Any] = select_list[0]
    return parsed


def compile_select(
    raw: RawSpec, expressions: Sequence[str], schema: pa.Schema
) -> PythonSelect | None:
    """The Python functions of ``raw`` and the row feature ``expressions`` over ``schema``
    (None when some input type or expression is not compiled)."""
    kinds: dict[str, Kind] = {}
    for field in schema:
        kind = _kind_of(field.type)
        if kind is not None:
            kinds[field.name] = kind
    needed = [raw.timestamp, raw.entity, *(column for column, _ in raw.series)]
    if any(name not in kinds for name in needed):
        return None
    if kinds[raw.timestamp] != "time" or kinds[raw.entity] not in ("int", "str", "float"):
        return None
    if any(kinds[column] not in ("int", "float") for column, _ in raw.series):
        return None
    compiler = _Compiler(kinds)
    features = []
    try:
        for expression in expressions:
            node = compiler.compile(_parse(expression))
            if node.kind in ("time", "decimal"):
                raise _UnsupportedError(f"a {node.kind} result")
            features.append(node)
    except Exception as exc:  # not compiled, or not parsed: DuckDB computes it (or says why)
        logger.debug("row features computed by DuckDB: %s", exc)
        return None
    return PythonSelect(raw, kinds, features, set(needed) | compiler.used)


# -- calibration -----------------------------------------------------------------------------

_FLOATS: list[float | None] = [
    0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1.5, 2.5, -2.5, 0.005, 0.015, 0.025, -0.005, 0.125,
    0.135, 0.145, -0.125, 1.005, 2.675, -2.675, 12.345, 99.995, 0.49999999999999994,
    0.0049999999999999999, 1e-9, 6.0, 6.5, 7.0, 100.0, 1234567.885, 1e12 + 0.005,
    123456789012.345, 1e13, 2.0**52, math.nan, math.inf, -math.inf, None,
]  # fmt: skip
_INTS: list[int | None] = [
    0, 1, -1, 2, 5, 6, 7, 100, 1000, 127, 128, -128, -129, 32767, 32768, 2**31 - 1, 2**31,
    -(2**31) - 1, 2**53 + 1, 10**15, 10**16, 2**63 - 1, -(2**63), None,
]  # fmt: skip
_STRINGS: list[str | None] = ["a", "B", "", "42", "-7", "é", "a b", None]


def _pool(arrow_type: pa.DataType, kind: Kind, seed: int) -> list[Any]:
    import random

    import pyarrow as pa

    rng = random.Random(seed)
    if kind == "float":
        extra = [rng.randint(0, 10**7) / 10 ** rng.randint(0, 4) for _ in range(200)]
        return _FLOATS + extra + [-v for v in extra[:40]]
    if kind == "int":
        info = (arrow_type.bit_width, pa.types.is_signed_integer(arrow_type))
        low, high = (
            (-(2 ** (info[0] - 1)), 2 ** (info[0] - 1) - 1) if info[1] else (0, 2 ** info[0] - 1)
        )
        values = [v for v in _INTS if v is None or low <= v <= high]
        return (
            values
            + [low, high]
            + [rng.randint(max(low, -(10**6)), min(high, 10**6)) for _ in range(60)]
        )
    if kind == "bool":
        return [True, False, None]
    if kind == "str":
        return _STRINGS
    # timestamps: every hour of eight days, the epoch's neighbours, the range's ends, noise
    start = (date(2018, 4, 1).toordinal() - _EPOCH_ORDINAL) * _US_PER_DAY
    hours = [start + h * 3_600_000_000 + rng.randint(0, 3_599_999_999) for h in range(24 * 8)]
    edges = [0, -1, 1, -_US_PER_DAY, _US_PER_DAY - 1, _MIN_US, _MAX_US, start, start - 1]
    return hours + edges + [rng.randint(_MIN_US, _MAX_US) for _ in range(40)] + [None]


def _calibration_table(schema: pa.Schema, kinds: dict[str, Kind], inputs: set[str]) -> pa.Table:
    import pyarrow as pa

    pools = {
        name: _pool(schema.field(name).type, kinds[name], seed)
        for seed, name in enumerate(sorted(inputs))
    }
    rows = max(len(p) for p in pools.values())
    arrays = []
    for field in schema:
        if field.name in pools:
            pool = pools[field.name]
            step = 1 + 2 * sorted(pools).index(field.name)  # combinations vary by column
            values = [pool[(i * step) % len(pool)] for i in range(rows)]
            if kinds[field.name] == "time":
                arrays.append(_timestamps(values, field.type))
            else:
                arrays.append(pa.array(values, field.type))
        else:
            arrays.append(pa.nulls(rows, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _timestamps(micros: list[int | None], arrow_type: pa.DataType) -> pa.Array:
    """Epoch microseconds as a timestamp column of ``arrow_type``'s unit (those it cannot
    hold become nulls)."""
    import pyarrow as pa

    unit = arrow_type.unit
    if unit == "ns":
        limit = 2**63 // 1000
        raw = [None if v is None or not -limit < v < limit else v * 1000 for v in micros]
    else:
        factor = _UNIT_US[unit]
        raw = [None if v is None else v // factor for v in micros]
    return pa.array(raw, pa.int64()).cast(arrow_type)


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


def calibrate(
    compiled: PythonSelect,
    schema: pa.Schema,
    duckdb_select: Callable[[pa.Table], tuple[list[Values], list[str]]],
) -> bool:
    """Whether ``compiled`` equals DuckDB (``duckdb_select``) over a calibration table of
    ``schema``; sets the row features' DuckDB types."""
    table = _calibration_table(schema, compiled.kinds, compiled.inputs)
    keep = []
    for i in range(table.num_rows):  # rows the Python path would hand to DuckDB are left out
        try:
            compiled.columns(table.slice(i, 1))
        except FallbackError:
            continue
        keep.append(i)
    if len(keep) < table.num_rows // 2:
        logger.debug("calibration: most rows fall back to DuckDB")
        return False
    import pyarrow as pa

    table = table.take(pa.array(keep, pa.int64()))
    python = compiled._evaluate(_batch(table, compiled.kinds, compiled.inputs))
    try:
        expected, types = duckdb_select(table)
    except Exception as exc:  # DuckDB refused a value Python accepted
        logger.debug("calibration: DuckDB failed: %s", exc)
        return False
    for i, (mine, theirs) in enumerate(zip(python, expected, strict=True)):
        for row, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            if not _same(a, b):
                logger.warning(
                    "expression %d computed in Python differs from DuckDB at %r: %r != %r; "
                    "DuckDB computes these events",
                    i,
                    table.slice(row, 1).to_pylist(),
                    a,
                    b,
                )
                return False
    compiled.types = types
    return True
