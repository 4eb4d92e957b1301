"""Raw-event request decoding: MLflow ``/invocations`` (JSON, CSV) and KServe V2 bodies whose
columns are a raw event's (keys, a timestamp, amounts) rather than the model's features.

Where :mod:`shipyard.serving.codec` decodes a request into the model's float columns, the
decoders here return the event's columns with their own types: an entity key is an integer
or a string, a timestamp an ISO 8601 string (V2: a ``BYTES`` tensor), an amount a number.
Every value is checked here against its kind, and a null is refused (an event is complete or
it is not scored); what the values mean (a negative amount, a time in the future, a late
event) is checked by the feature views when the event is applied. Errors are
:class:`RequestError` naming the column, the row, what was expected and what came.

Which columns a request carries decides how it is read (see :class:`EventColumns`); a
request with none of the event-only columns is not an event, and the decoders answer
``None`` so the caller reports the feature decoder's error instead.
"""

from __future__ import annotations

import csv
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from shipyard.errors import RequestError
from shipyard.serving.codec import V2_NUMPY_TYPES, InferenceRequest, RequestInput

Kind = Literal["key", "time", "number", "value"]
_EXPECTED: dict[str, str] = {
    "key": "an entity key (an integer or a string)",
    "time": "an ISO 8601 timestamp string such as '2018-06-01T00:03:12'",
    "number": "a number",
    "value": "a number or a string",
}
# the V2 binary layouts are the codec's; split by kind of number
_INTEGER_TYPES = {k: v for k, v in V2_NUMPY_TYPES.items() if k.startswith(("INT", "UINT"))}
_FLOAT_TYPES = {k: v for k, v in V2_NUMPY_TYPES.items() if k.startswith("FP")}
_any_decoder = msgspec.json.Decoder()
_v2_decoder = msgspec.json.Decoder(InferenceRequest)


@dataclass(frozen=True)
class EventColumns:
    """The columns of a raw event an endpoint takes, each with its kind.

    ``kinds`` maps each event column to ``"key"``, ``"time"``, ``"number"`` or ``"value"``;
    ``markers`` are the event columns that are not model inputs: a request carrying one of
    them is read as a raw event.
    """

    kinds: Mapping[str, Kind]
    markers: frozenset[str]

    @property
    def names(self) -> list[str]:
        """The event columns, in declaration order."""
        return list(self.kinds)

    def is_event(self, given: Sequence[str]) -> bool:
        """Whether a request with columns ``given`` is a raw event."""
        return any(isinstance(name, str) and name in self.markers for name in given)

    def check_names(self, given: Sequence[str], where: str) -> None:
        """422 unless ``given`` holds every event column once and nothing else."""
        try:  # the usual case first: every column once (a repeat would leave one out)
            if len(given) == len(self.kinds) and self.kinds.keys() == set(given):
                return
        except TypeError:  # an unhashable name (a list): reported below
            pass
        odd = [g for g in given if not isinstance(g, str)]
        if odd:
            raise RequestError(422, f"{where}: column names must be strings, got {_preview(odd)}")
        missing = [n for n in self.kinds if n not in given]
        extra = [g for g in given if g not in self.kinds]
        twice = sorted({g for g in given if given.count(g) > 1})
        parts = [f"missing column(s) {missing}"] if missing else []
        parts += [f"unexpected column(s) {extra}"] if extra else []
        parts += [f"column(s) {twice} given more than once"] if twice else []
        if parts:
            raise RequestError(
                422,
                f"{where}: a raw event needs the columns {', '.join(self.kinds)}; "
                + "; ".join(parts),
            )


@dataclass(frozen=True)
class RawEvents:
    """Decoded raw events: one list of values per event column, ``rows`` values each."""

    columns: dict[str, list[Any]]
    rows: int


def _preview(value: Any) -> str:
    text = "null" if value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(column: str, row: int, kind: Kind, value: Any) -> RequestError:
    return RequestError(
        422, f"column {column!r} (row {row}): expected {_EXPECTED[kind]}, got {_preview(value)}"
    )


def parse_time(text: str) -> datetime:
    """An ISO 8601 timestamp as a naive UTC datetime (an offset is converted to UTC)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def convert(column: str, kind: Kind, values: Sequence[Any]) -> list[Any]:
    """``values`` of one event column checked against ``kind`` (a timestamp parsed)."""
    out: list[Any] = []
    for row, value in enumerate(values):
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _bad(column, row, kind, value)
            if not math.isfinite(value):
                raise _bad(column, row, kind, value)
            out.append(float(value))
        elif kind == "key":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
                raise _bad(column, row, kind, value)
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                raise _bad(column, row, kind, value)  # an integer key is a 64-bit integer
            out.append(value)
        elif kind == "time":
            if not isinstance(value, str):
                raise _bad(column, row, kind, value)
            try:
                out.append(parse_time(value))
            except ValueError:
                raise _bad(column, row, kind, value) from None
        else:
            if value is None or isinstance(value, bool | list | dict):
                raise _bad(column, row, kind, value)
            out.append(value)
    return out


def _build(spec: EventColumns, columns: Mapping[str, Sequence[Any]], where: str) -> RawEvents:
    spec.check_names(list(columns), where)
    sizes = {len(v) for v in columns.values()}
    if len(sizes) != 1:
        raise RequestError(422, f"{where}: every column needs the same number of values")
    rows = sizes.pop()
    if rows == 0:
        raise RequestError(422, f"{where}: expected at least one event, got 0")
    converted = {name: convert(name, kind, columns[name]) for name, kind in spec.kinds.items()}
    return RawEvents(converted, rows)


# -- MLflow /invocations -------------------------------------------------------------------


def decode_events_mlflow(body: bytes, spec: EventColumns) -> RawEvents | None:
    """Raw events from an MLflow JSON body: ``dataframe_split``, ``dataframe_records``, or
    ``instances`` / ``inputs`` as records or as ``{column: [values]}``; ``None`` when the
    body is not a raw event (no event-only column)."""
    try:
        payload = _any_decoder.decode(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(payload, dict) or len(payload) != 1:
        return None
    key, value = next(iter(payload.items()))
    if key == "dataframe_split" and isinstance(value, dict):
        names = value.get("columns")
        data = value.get("data")
        if not isinstance(names, list) or not spec.is_event(names):
            return None
        if not isinstance(data, list):
            raise RequestError(422, 'dataframe_split: expected {"columns": [...], "data": [[...]]}')
        for i, row in enumerate(data):
            if not isinstance(row, list) or len(row) != len(names):
                raise RequestError(
                    422,
                    f"dataframe_split.data[{i}]: expected a row of {len(names)} values like "
                    f"the columns, got {_preview(row)}",
                )
        spec.check_names(names, key)
        return _build(spec, {n: [row[j] for row in data] for j, n in enumerate(names)}, key)
    if key not in ("dataframe_records", "instances", "inputs"):
        return None
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        if not spec.is_event(list(value[0])):
            return None
        for i, record in enumerate(value):
            spec.check_names(list(record), f"{key}[{i}]")
        return _build(spec, {n: [r[n] for r in value] for n in spec.kinds}, key)
    if isinstance(value, dict) and spec.is_event(list(value)):
        if not all(isinstance(v, list) for v in value.values()):
            raise RequestError(422, f"{key}: expected {{column: [values]}}")
        return _build(spec, value, key)
    return None


def decode_events_csv(body: bytes, spec: EventColumns) -> RawEvents | None:
    """Raw events from a ``text/csv`` body (a header row, then one event per line); numbers
    are parsed, key cells that are integers become integers; ``None`` when not an event."""
    try:
        lines = body.decode("utf-8-sig").splitlines()
        table = [row for row in csv.reader(lines) if row]
    except (UnicodeDecodeError, csv.Error):
        return None
    if not table:
        return None
    header = [name.strip() for name in table[0]]
    if not spec.is_event(header):
        return None
    spec.check_names(header, "CSV header")
    columns: dict[str, list[Any]] = {name: [] for name in header}
    for i, row in enumerate(table[1:]):
        if len(row) != len(header):
            raise RequestError(
                422, f"CSV row {i}: expected {len(header)} values like the header, got {len(row)}"
            )
        for name, cell in zip(header, row, strict=True):
            columns[name].append(_csv_cell(name, spec.kinds[name], cell.strip(), i))
    return _build(spec, columns, "CSV")


def _csv_cell(column: str, kind: Kind, text: str, row: int) -> Any:
    if not text:
        return None
    if kind == "number":
        try:
            return float(text)
        except ValueError:
            raise _bad(column, row, kind, text) from None
    if kind == "key":
        return int(text) if text.lstrip("-").isdigit() else text
    if kind == "value":
        try:
            return float(text)
        except ValueError:
            return text
    return text


# -- KServe V2 -------------------------------------------------------------------------------


def decode_events_v2(
    body: bytes, spec: EventColumns, header_length: int | None = None
) -> tuple[RawEvents, InferenceRequest] | None:
    """Raw events from a V2 request: one ``[n]`` tensor per event column; ``BYTES`` for
    strings and timestamps, an integer type or ``BYTES`` for keys, a numeric type for
    numbers; JSON data or the binary tensor extension. ``None`` when not an event."""
    binary = None
    if header_length is not None:
        if not 0 < header_length <= len(body):
            return None
        binary = memoryview(body)[header_length:]
        body = body[:header_length]
    try:
        request = _v2_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    names = [t.name for t in request.inputs]
    if not spec.is_event(names):
        return None
    spec.check_names(names, "inputs")
    offset = [0]
    columns: dict[str, list[Any]] = {}
    for tensor in request.inputs:
        columns[tensor.name] = _tensor(tensor, spec.kinds[tensor.name], binary, offset)
    return _build(spec, columns, "inputs"), request


def _tensor(
    tensor: RequestInput, kind: Kind, binary: memoryview | None, offset: list[int]
) -> list[Any]:
    datatype = tensor.datatype.upper()
    allowed = {
        "key": "an integer type (INT64 ...) or BYTES",
        "time": "BYTES (ISO 8601 strings)",
        "number": "a numeric type (FP64, FP32, INT64 ...)",
        "value": "a numeric type or BYTES",
    }[kind]
    fits = (
        (kind == "key" and (datatype in _INTEGER_TYPES or datatype == "BYTES"))
        or (kind == "time" and datatype == "BYTES")
        or (kind == "number" and (datatype in _INTEGER_TYPES or datatype in _FLOAT_TYPES))
        or (kind == "value" and datatype != "BOOL")
    )
    if not fits:
        raise RequestError(
            422, f"input {tensor.name!r}: datatype must be {allowed}, got {tensor.datatype!r}"
        )
    values = _tensor_data(tensor, datatype, binary, offset)
    expected = math.prod(tensor.shape) if tensor.shape else -1
    if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise RequestError(
            422, f"input {tensor.name!r}: expected shape [n] or [n, 1], got {tensor.shape}"
        )
    if len(values) != expected:
        raise RequestError(
            422,
            f"input {tensor.name!r}: shape {tensor.shape} holds {expected} values, data has "
            f"{len(values)}",
        )
    return values


def _tensor_data(
    tensor: RequestInput, datatype: str, binary: memoryview | None, offset: list[int]
) -> list[Any]:
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        if tensor.data is None:
            raise RequestError(
                422, f"input {tensor.name!r}: expected data or binary_data_size, got neither"
            )
        data = tensor.data
        if data and isinstance(data[0], list):  # [[v], [v]] for shape [n, 1]
            data = [v for row in data for v in (row if isinstance(row, list) else [row])]
        return list(data)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RequestError(
            422, f"input {tensor.name!r}: binary_data_size must be an integer >= 0, got {size!r}"
        )
    if binary is None or offset[0] + size > len(binary):
        raise RequestError(
            422, f"input {tensor.name!r}: binary_data_size {size} exceeds the binary part"
        )
    chunk = bytes(binary[offset[0] : offset[0] + int(size)])
    offset[0] += int(size)
    if datatype == "BYTES":  # each element: a 4-byte little-endian length, then the bytes
        out: list[Any] = []
        at = 0
        while at < len(chunk):
            if at + 4 > len(chunk):
                raise RequestError(422, f"input {tensor.name!r}: truncated BYTES element")
            (length,) = struct.unpack_from("<I", chunk, at)
            at += 4
            try:
                out.append(chunk[at : at + length].decode())
            except UnicodeDecodeError:
                raise RequestError(422, f"input {tensor.name!r}: BYTES element not UTF-8") from None
            at += length
        return out
    import numpy as np

    dtype = _INTEGER_TYPES.get(datatype) or _FLOAT_TYPES[datatype]
    try:
        return list(np.frombuffer(chunk, dtype=dtype).tolist())
    except ValueError as exc:
        raise RequestError(422, f"input {tensor.name!r}: {exc}") from None
