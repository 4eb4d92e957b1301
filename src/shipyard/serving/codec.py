"""Request and response codecs: Open Inference Protocol (KServe V2), MLflow scoring, CSV.

Every decoder turns a request body into one 2-D float64 array whose columns follow the
model's input columns (``names``, in order), or raises :class:`RequestError` with an HTTP
status and a message that names the field, what was expected and what came. What the
values may be (finite, constraints, training range) is checked afterwards by the
deployment's :class:`~shipyard.serving.validation.InputValidator`. msgspec does the JSON
work; pandas never touches the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from shipyard.errors import RequestError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "RequestError",
    "decode_csv",
    "decode_mlflow",
    "decode_v2",
    "encode_error",
    "encode_mlflow",
    "encode_mlflow_values",
    "encode_v2",
    "encode_v2_explained",
    "encode_v2_values",
    "event_time",
    "explain_flag",
]

Names = Sequence[str]

NUMERIC_TYPES = frozenset(
    {
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
    }
)


class RequestInput(msgspec.Struct, forbid_unknown_fields=False):
    """One input tensor of a V2 inference request."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class RequestOutput(msgspec.Struct, forbid_unknown_fields=False):
    """A requested output of a V2 inference request."""

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(msgspec.Struct, forbid_unknown_fields=False):
    """A V2 inference request (``POST /v2/models/{name}/infer``)."""

    inputs: list[RequestInput]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[RequestOutput] | None = None


class ResponseOutput(msgspec.Struct):
    """One output tensor of a V2 inference response."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    """Numbers (FP64), or JSON texts (BYTES) for a model that answers JSON values."""


class InferenceResponse(msgspec.Struct, omit_defaults=True):
    """A V2 inference response."""

    model_name: str
    outputs: list[ResponseOutput]
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None


_decoder = msgspec.json.Decoder(InferenceRequest)
_any_decoder = msgspec.json.Decoder()
encode = msgspec.json.Encoder().encode


def _floats(values: Any, where: str) -> NDArray[np.float64]:
    import numpy as np

    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise RequestError(422, f"{where}: expected numbers, got {_preview(values)}") from None
    return array


def _preview(values: Any) -> str:
    text = repr(values)
    return text if len(text) <= 80 else text[:77] + "..."


V2_NUMPY_TYPES = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


def _tensor_values(
    tensor: RequestInput, binary: memoryview | None, offset: list[int]
) -> NDArray[np.float64]:
    """A tensor's values, from JSON ``data`` or from the binary tensor extension."""
    import numpy as np

    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if binary is None or offset[0] + int(size) > len(binary):
            raise RequestError(
                422, f"input {tensor.name!r}: binary_data_size {size} exceeds the binary part"
            )
        chunk = binary[offset[0] : offset[0] + int(size)]
        offset[0] += int(size)
        try:
            return np.frombuffer(chunk, dtype=V2_NUMPY_TYPES[tensor.datatype.upper()]).astype(
                np.float64
            )
        except ValueError as exc:
            raise RequestError(422, f"input {tensor.name!r}: {exc}") from None
    if tensor.data is None:
        raise RequestError(
            422, f"input {tensor.name!r}: expected data or binary_data_size, got neither"
        )
    return _floats(tensor.data, f"input {tensor.name!r}")


def decode_v2(
    body: bytes, names: Names, header_length: int | None = None
) -> tuple[NDArray[np.float64], InferenceRequest]:
    """Decode a V2 request: one [n, n_features] tensor, or one [n] tensor per feature.

    ``header_length`` (the ``Inference-Header-Content-Length`` header) marks a request that
    uses the binary tensor data extension: JSON first, raw little-endian tensors after it.
    """
    import numpy as np

    request, binary = parse_v2(body, header_length)
    offset = [0]
    for tensor in request.inputs:
        if tensor.datatype.upper() not in NUMERIC_TYPES:
            raise RequestError(
                422,
                f"input {tensor.name!r}: datatype must be numeric (FP64, FP32, INT64 ...), "
                f"got {tensor.datatype!r}",
            )
    if len(request.inputs) == 1 and request.inputs[0].name not in names:
        matrix = _one_tensor(request.inputs[0], names, binary, offset)
    else:
        matrix = _tensor_per_column(request.inputs, names, binary, offset)
    if matrix.shape[0] == 0:
        raise RequestError(422, "inputs: expected at least one row, got 0")
    return np.ascontiguousarray(matrix), request


def parse_v2(
    body: bytes, header_length: int | None = None
) -> tuple[InferenceRequest, memoryview | None]:
    """A V2 request's JSON part and, with the binary tensor extension, its binary part.

    Raises RequestError: 400 for malformed JSON or a header length that does not fit the
    body, 422 for a request that is not a V2 inference request or holds no input.
    """
    binary = None
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise RequestError(
                400, f"Inference-Header-Content-Length {header_length} does not fit the body"
            )
        binary = memoryview(body)[header_length:]
        body = body[:header_length]
    try:
        request = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise RequestError(422, f"invalid inference request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise RequestError(400, f"malformed JSON: {exc}") from None
    if not request.inputs:
        raise RequestError(422, "inputs: expected at least one input tensor, got none")
    return request, binary


def _one_tensor(
    tensor: RequestInput, names: Names, binary: memoryview | None, offset: list[int]
) -> NDArray[np.float64]:
    """One [n, n_features] tensor, columns in the model's order."""
    values = _tensor_values(tensor, binary, offset)
    expected = math.prod(tensor.shape) if tensor.shape else -1
    if values.size != expected:
        raise RequestError(
            422,
            f"input {tensor.name!r}: shape {tensor.shape} holds {expected} values, data "
            f"has {values.size}",
        )
    if len(tensor.shape) != 2 or tensor.shape[1] != len(names):
        raise RequestError(
            422,
            f"input {tensor.name!r}: expected shape [n, {len(names)}] (columns "
            f"{', '.join(names)}), got {tensor.shape}",
        )
    return values.reshape(tensor.shape)


def _tensor_per_column(
    inputs: list[RequestInput], names: Names, binary: memoryview | None, offset: list[int]
) -> NDArray[np.float64]:
    """One [n] tensor per model column, in any order."""
    import numpy as np

    by_name = {t.name: t for t in inputs}
    mismatch = _mismatch(names, by_name, "input")
    if mismatch:
        raise RequestError(422, f"{mismatch}; the model takes {', '.join(names)}")
    columns = []
    rows = None
    for name in names:
        tensor = by_name[name]
        values = _tensor_values(tensor, binary, offset).reshape(-1)
        if rows is None:
            rows = values.size
        if values.size != rows or math.prod(tensor.shape or [0]) != values.size:
            raise RequestError(
                422,
                f"input {name!r}: {values.size} values for shape {tensor.shape}; every "
                f"input needs {rows}",
            )
        columns.append(values)
    return np.column_stack(columns)


def encode_v2(
    model_name: str, version: int, request_id: str | None, scores: NDArray[np.float64], arm: str
) -> bytes:
    """The V2 response for ``scores`` (one ``probability`` output of shape [n])."""
    return encode(
        InferenceResponse(
            model_name=model_name,
            model_version=str(version),
            id=request_id,
            parameters={"arm": arm},
            outputs=[ResponseOutput("probability", [len(scores)], "FP64", scores.tolist())],
        )
    )


def encode_v2_values(
    model_name: str,
    version: int,
    request_id: str | None,
    values: NDArray[Any],
    arm: str,
    output: str,
) -> bytes:
    """The V2 response of a model that answers a JSON value per row (a string output column,
    such as entities): one ``BYTES`` output named ``output``, each element that row's JSON."""
    return encode(
        InferenceResponse(
            model_name=model_name,
            model_version=str(version),
            id=request_id,
            parameters={"arm": arm},
            outputs=[ResponseOutput(output, [len(values)], "BYTES", json_texts(values))],
        )
    )


def json_texts(values: NDArray[Any]) -> list[str]:
    """Each row's value as JSON text (the elements of a V2 ``BYTES`` output)."""
    return [encode(value).decode() for value in values.tolist()]


def encode_mlflow_values(values: NDArray[Any]) -> bytes:
    """MLflow's response for a model that answers JSON values: ``{"predictions": [...]}``,
    one value (an object, a list, a string) per row."""
    return encode({"predictions": values.tolist()})


def encode_v2_explained(
    model_name: str,
    version: int,
    request_id: str | None,
    scores: NDArray[np.float64],
    arm: str,
    explained: Explained,
) -> bytes:
    """The V2 response of an ``explain=true`` request: the probabilities as usual, and in
    ``parameters`` the attribution features, their output space and one explanation per row."""
    return encode(
        InferenceResponse(
            model_name=model_name,
            model_version=str(version),
            id=request_id,
            parameters={"arm": arm, **explained.fields()},
            outputs=[ResponseOutput("probability", [len(scores)], "FP64", scores.tolist())],
        )
    )


def encode_mlflow_explained(scores: NDArray[np.float64], explained: Explained) -> bytes:
    """MLflow's response with the explanations beside the predictions (``explain=true``)."""
    return encode({"predictions": [[1.0 - s, s] for s in scores.tolist()], **explained.fields()})


class Explained(msgspec.Struct, frozen=True):
    """What an ``explain=true`` answer adds: attribution features, output space, records."""

    features: list[str]
    output_space: str
    records: list[dict[str, Any]]
    """Per row: ``base_value``, ``attributions`` (in ``features`` order), ``reasons``."""

    def fields(self) -> dict[str, Any]:
        """The keys an answer carries."""
        return {
            "explanation_features": self.features,
            "output_space": self.output_space,
            "explanations": self.records,
        }


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})


def explain_flag(value: object) -> bool:
    """Whether ``explain`` (V2 ``parameters.explain`` or the ``?explain=`` query) asks for
    explanations: true/false (a JSON boolean or text); RequestError(422) naming it otherwise."""
    if isinstance(value, bool):
        return value
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if isinstance(text, str) and text.strip().lower() in _TRUE | _FALSE:
        return text.strip().lower() in _TRUE
    from shipyard.errors import invalid_parameter

    refused = invalid_parameter(
        "explain",
        "a prediction request (parameters.explain or ?explain=)",
        "true or false",
        value,
    )
    raise RequestError(422, str(refused))


def query_explain(query: bytes) -> bool:
    """The ``explain`` flag of a URL query string (``explain=true``); False when absent."""
    from urllib.parse import parse_qsl

    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    found = [value for key, value in pairs if key == "explain"]
    return explain_flag(found[-1]) if found else False


def decode_mlflow(body: bytes, names: Names) -> NDArray[np.float64]:
    """Decode an MLflow ``/invocations`` JSON body (dataframe_split, dataframe_records,
    instances or inputs) into the model's columns."""
    import numpy as np

    key, value = parse_mlflow(body)
    if key == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise RequestError(422, 'dataframe_split: expected {"columns": [...], "data": [[...]]}')
        columns = value.get("columns") or names
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise RequestError(
                422,
                "dataframe_split.columns: expected a list of column names, got "
                f"{type(columns).__name__}",
            )
        matrix = _floats(value["data"], "dataframe_split.data")
        if matrix.ndim != 2 or matrix.shape[1] != len(columns):
            raise RequestError(
                422,
                f"dataframe_split.data: expected rows of {len(columns)} values, got shape "
                f"{list(matrix.shape)}",
            )
        return _reorder(matrix, list(columns), names, key)
    if (
        key in ("dataframe_records", "instances")
        and isinstance(value, list)
        and value
        and isinstance(value[0], dict)
    ):
        return _records(value, names, key)
    if isinstance(value, dict):  # columnar tensor input: {column: [values]}
        return _columns(value, names, key)
    if isinstance(value, list):  # rows in schema order
        matrix = _floats(value, key)
        if matrix.ndim == 1:
            matrix = matrix.reshape(1, -1)
        if matrix.ndim != 2 or matrix.shape[1] != len(names):
            raise RequestError(
                422,
                f"{key}: expected rows of {len(names)} values ({', '.join(names)}), got shape "
                f"{list(matrix.shape)}",
            )
        return np.ascontiguousarray(matrix)
    raise RequestError(422, f"{key}: expected a list or an object, got {type(value).__name__}")


def parse_mlflow(body: bytes) -> tuple[str, Any]:
    """The one payload key of an MLflow ``/invocations`` JSON body and its value.

    Raises RequestError: 400 for malformed JSON, 422 unless exactly one of dataframe_split,
    dataframe_records, instances, inputs is given.
    """
    try:
        payload = _any_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise RequestError(400, f"malformed JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestError(
            422,
            "expected a JSON object with one of dataframe_split, dataframe_records, "
            "instances, inputs",
        )
    keys = [
        k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in payload
    ]
    if len(keys) != 1:
        raise RequestError(
            422,
            "expected exactly one of dataframe_split, dataframe_records, instances, inputs; "
            f"got {sorted(payload) or 'none'}",
        )
    return keys[0], payload[keys[0]]


def _reorder(
    matrix: NDArray[np.float64], columns: list[str], names: Names, key: str
) -> NDArray[np.float64]:
    import numpy as np

    mismatch = _mismatch(names, columns, "column")
    if mismatch:
        raise RequestError(422, f"{key}: {mismatch}; the model takes {', '.join(names)}")
    same = len(columns) == len(names) and all(a == b for a, b in zip(columns, names, strict=True))
    ordered = matrix if same else matrix[:, [columns.index(n) for n in names]]
    return np.ascontiguousarray(ordered)


def _mismatch(names: Names, given: Iterable[str], noun: str) -> str:
    """``"missing column(s) [...]; unexpected column(s) [...]"``; empty when they match."""
    given = list(given)
    missing = [n for n in names if n not in given]
    extra = [g for g in given if g not in names]
    parts = [f"missing {noun}(s) {missing}"] if missing else []
    parts += [f"unexpected {noun}(s) {extra}"] if extra else []
    return "; ".join(parts)


def _records(records: list[Any], names: Names, key: str) -> NDArray[np.float64]:
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise RequestError(
                422, f"{key}[{i}]: expected an object of column values, got {_preview(record)}"
            )
        if len(record) != len(names) or any(n not in record for n in names):
            raise RequestError(422, f"{key}[{i}]: {_mismatch(names, record, 'column')}")
    return _floats([[record[n] for n in names] for record in records], key)


def _columns(value: dict[str, Any], names: Names, key: str) -> NDArray[np.float64]:
    import numpy as np

    columns = list(value)
    arrays = [_floats(value[c], f"{key}.{c}").reshape(-1) for c in columns]
    if len({a.size for a in arrays}) > 1:
        raise RequestError(422, f"{key}: every column needs the same number of values")
    return _reorder(np.column_stack(arrays) if arrays else np.zeros((0, 0)), columns, names, key)


def csv_table(body: bytes, cells: str) -> tuple[list[str], list[list[str]]]:
    """A ``text/csv`` body's header (names stripped, each once) and its non-empty rows, each
    as long as the header; ``cells`` names what the rows hold in errors ("values", "texts").

    Quoted cells may hold commas and line breaks (RFC 4180).
    """
    import csv
    import io

    try:
        content = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"CSV body is not UTF-8: {exc}") from None
    try:
        table = [row for row in csv.reader(io.StringIO(content, newline="")) if row]
    except csv.Error as exc:
        raise RequestError(400, f"malformed CSV: {exc}") from None
    if len(table) < 2:
        raise RequestError(
            422, f"CSV: expected a header row of column names and at least one row of {cells}"
        )
    header = [name.strip() for name in table[0]]
    if len(set(header)) != len(header):
        twice = sorted({n for n in header if header.count(n) > 1})
        raise RequestError(422, f"CSV header: column(s) {twice} appear more than once")
    for i, row in enumerate(table[1:]):
        if len(row) != len(header):
            raise RequestError(
                422, f"CSV row {i}: expected {len(header)} values like the header, got {len(row)}"
            )
    return header, table[1:]


def decode_csv(body: bytes, names: Names) -> NDArray[np.float64]:
    """Decode a ``text/csv`` body (MLflow's other ``/invocations`` format): a header row of
    column names, then one row of numbers per line; an empty cell is null."""
    import numpy as np

    header, rows = csv_table(body, "values")
    matrix = np.empty((len(rows), len(header)), dtype=np.float64)
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            text = cell.strip()
            try:
                matrix[i, j] = float(text) if text else math.nan
            except ValueError:
                raise RequestError(
                    422, f"CSV row {i}, column {header[j]!r}: expected a number, got {text!r}"
                ) from None
    return _reorder(matrix, header, names, "CSV")


def encode_mlflow(scores: NDArray[np.float64]) -> bytes:
    """MLflow's response for a predict_proba model: ``{"predictions": [[p0, p1], ...]}``."""
    return encode({"predictions": [[1.0 - s, s] for s in scores.tolist()]})


def event_time(value: object) -> float:
    """A request's event time in epoch seconds, from the ``X-Event-Time`` header (bytes) or
    ``parameters.event_time``: epoch seconds (a number) or ISO 8601 text (naive = UTC).

    Raises RequestError(422) naming ``event_time``, what it takes and what came.
    """
    seconds: float | None = None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            seconds = _iso_seconds(value)
    if seconds is None or not math.isfinite(seconds):
        from shipyard.errors import invalid_parameter

        refused = invalid_parameter(
            "event_time",
            "a prediction request (X-Event-Time header or parameters.event_time)",
            "epoch seconds or ISO 8601 text such as '2018-06-01T12:30:00' (naive = UTC)",
            value,
        )
        raise RequestError(422, str(refused))
    return seconds


def _iso_seconds(text: str) -> float | None:
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def encode_error(message: str) -> bytes:
    """The error body used on every route: ``{"error": "..."}``."""
    return encode({"error": message})
