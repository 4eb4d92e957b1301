"""Text requests: string columns decoded from every protocol, and checked before batching.

A deployment whose input schema has string columns (:func:`shipyard.types.text_columns`)
takes these decoders instead of the numeric ones (chosen once, when the policy's versions
load). Each returns a 2-D object array of ``str``, one column per schema column in order,
which the same :class:`~shipyard.serving.batcher.MicroBatcher` concatenates across requests;
the model pads each batch to its longest text.

- KServe V2: ``BYTES`` tensors, one [n] (or [n, 1]) tensor per column or one [n, k] tensor;
  ``data`` as JSON strings, or the binary tensor extension (each element a 4-byte
  little-endian length, then that many UTF-8 bytes, as Triton and KServe write them).
- MLflow ``/invocations``: ``dataframe_split``, ``dataframe_records``, ``instances`` and
  ``inputs`` with string values; ``text/csv`` with a header row.

A column the schema declares ``nullable`` (a recommender's ``session``, ``k``...) may be left
out of a request that names its columns (V2 tensors per column, MLflow records, split or
columnar frames, CSV headers): it reads as ``""``, what the model takes as "not given".
Requests whose values are positional (one [n, k] tensor, rows in schema order) carry every
column.

A :class:`TextValidator` then refuses empty or whitespace-only texts (422 naming row and
column) unless the column is declared ``nullable``, counts each text's tokens with the model
(``count_tokens`` against ``max_tokens``): a longer text is truncated by the model (its
first ``max_tokens - 2`` word pieces are kept, between ``[CLS]`` and ``[SEP]``) and its row
recorded, or refused with 422 when the endpoint says so (``serving_refuse_long_text``); and
runs the model's own ``check_texts`` (a language with no pipeline, say) on each column and
``check_inputs`` on all of them at once (a recommender's ``k`` that is not a positive
integer, say): a SchemaError from either is a 422.

Example::

    matrix, request = decode_v2_text(body, ["text"])
    truncated = TextValidator(schema, model).check(matrix)  # rows the model truncates
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shipyard.errors import RequestError, SchemaError
from shipyard.serving.codec import (
    InferenceRequest,
    RequestInput,
    _mismatch,
    _preview,
    csv_table,
    parse_mlflow,
    parse_v2,
)

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from shipyard.types import Schema

__all__ = ["TextValidator", "decode_csv_text", "decode_mlflow_text", "decode_v2_text"]

Names = Sequence[str]
Optional = Collection[str]


# -- KServe V2 -----------------------------------------------------------------------------


def decode_v2_text(
    body: bytes, names: Names, header_length: int | None = None, optional: Optional = ()
) -> tuple[NDArray[np.object_], InferenceRequest]:
    """Decode a V2 request of ``BYTES`` tensors into an [n, len(names)] array of ``str``.

    One tensor per column (shape [n] or [n, 1], any order), or one tensor not named after a
    column of shape [n, len(names)] (or [n] for a one-column model). Raises RequestError
    (422) naming the input for a numeric tensor, a non-string element, invalid UTF-8 (with
    the element's index) or a shape that does not fit. ``optional`` columns may be left
    out (module doc).
    """
    request, binary = parse_v2(body, header_length)
    offset = 0
    values: dict[str, list[str]] = {}
    for tensor in request.inputs:  # binary parts follow the inputs' order in the request
        if tensor.datatype.upper() != "BYTES":
            raise RequestError(
                422,
                f"input {tensor.name!r}: this model takes text; expected datatype BYTES "
                f"(UTF-8 strings), got {tensor.datatype!r}",
            )
        texts, offset = _tensor_texts(tensor, binary, offset)
        expected = math.prod(tensor.shape) if tensor.shape else -1
        if len(texts) != expected:
            raise RequestError(
                422,
                f"input {tensor.name!r}: shape {tensor.shape} holds {expected} values, data "
                f"has {len(texts)}",
            )
        values[tensor.name] = texts
    first = request.inputs[0]
    if len(request.inputs) == 1 and first.name not in names:
        matrix = _one_text_tensor(first, values[first.name], names)
    else:
        matrix = _text_per_column(request.inputs, values, names, optional)
    return matrix, request


def _tensor_texts(
    tensor: RequestInput, binary: memoryview | None, offset: int
) -> tuple[list[str], int]:
    """A BYTES tensor's strings (JSON ``data`` or its binary part) and the next offset."""
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        end = offset + int(size)
        if binary is None or end > len(binary):
            raise RequestError(
                422, f"input {tensor.name!r}: binary_data_size {size} exceeds the binary part"
            )
        return unpack_bytes(binary[offset:end], tensor.name), end
    if tensor.data is None:
        raise RequestError(
            422, f"input {tensor.name!r}: expected data or binary_data_size, got neither"
        )
    return _json_texts(tensor.data, f"input {tensor.name!r}"), offset


def unpack_bytes(chunk: memoryview | bytes, name: str) -> list[str]:
    """The elements of a binary ``BYTES`` tensor: each a 4-byte little-endian length, then
    that many bytes of UTF-8. RequestError (422) naming the input and element otherwise."""
    view = memoryview(chunk)
    texts: list[str] = []
    position = 0
    while position < len(view):
        index = len(texts)
        if position + 4 > len(view):
            raise RequestError(
                422, f"input {name!r} element {index}: a 4-byte length prefix is cut short"
            )
        length = int.from_bytes(view[position : position + 4], "little")
        start, position = position + 4, position + 4 + length
        if position > len(view):
            raise RequestError(
                422,
                f"input {name!r} element {index}: length prefix says {length} bytes, "
                f"{len(view) - start} remain",
            )
        try:
            texts.append(str(view[start:position], "utf-8"))
        except UnicodeDecodeError as exc:
            raise RequestError(
                422,
                f"input {name!r} element {index}: not valid UTF-8 ({exc.reason} at byte "
                f"{exc.start})",
            ) from None
    return texts


def _json_texts(data: list[Any], where: str) -> list[str]:
    """The strings of a JSON ``data`` list, flattened row-major; 422 naming a non-string."""
    flat = list(_flatten(data))
    for i, item in enumerate(flat):
        if not isinstance(item, str):
            raise RequestError(
                422, f"{where} element {i}: expected a string (text), got {_preview(item)}"
            )
    return flat


def _flatten(items: list[Any]) -> Iterator[Any]:
    for item in items:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield item


def _one_text_tensor(tensor: RequestInput, texts: list[str], names: Names) -> NDArray[np.object_]:
    width = len(names)
    shape = tensor.shape
    fits = (len(shape) == 2 and shape[1] == width) or (len(shape) == 1 and width == 1)
    if not fits or not texts:
        raise RequestError(
            422,
            f"input {tensor.name!r}: expected shape [n, {width}] (columns "
            f"{', '.join(names)}) of at least one row, got {shape}",
        )
    return _matrix([texts[i : i + width] for i in range(0, len(texts), width)], names)


def _text_per_column(
    inputs: list[RequestInput], values: dict[str, list[str]], names: Names, optional: Optional
) -> NDArray[np.object_]:
    left_out = [n for n in names if n not in values and n in optional]
    mismatch = _mismatch(names, [*values, *left_out], "input")
    if mismatch:
        raise RequestError(422, f"{mismatch}; the model takes {', '.join(names)}")
    shapes = {t.name: t.shape for t in inputs}
    rows = len(next(iter(values.values())))
    for name in left_out:  # a nullable column left out reads as "" in every row
        values[name], shapes[name] = [""] * rows, [rows]
    for name in names:
        shape = shapes[name]
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1) or len(values[name]) != rows:
            raise RequestError(
                422,
                f"input {name!r}: expected shape [n] or [n, 1] with the same n for every "
                f"input ({rows}), got {shape}",
            )
    if rows == 0:
        raise RequestError(422, "inputs: expected at least one row, got 0")
    return _matrix([[values[name][i] for name in names] for i in range(rows)], names)


def _matrix(rows: list[list[str]], names: Names) -> NDArray[np.object_]:
    """An [n, k] object array of ``str`` (never numpy's fixed-width ``<U`` strings)."""
    import numpy as np

    matrix = np.empty((len(rows), len(names)), dtype=object)
    for i, row in enumerate(rows):
        matrix[i, :] = row
    return matrix


# -- MLflow /invocations --------------------------------------------------------------------


def decode_mlflow_text(body: bytes, names: Names, optional: Optional = ()) -> NDArray[np.object_]:
    """Decode an MLflow ``/invocations`` JSON body with string values into the model's columns.

    ``{"dataframe_split": {"columns": ["text"], "data": [["..."]]}}``,
    ``{"dataframe_records": [{"text": "..."}]}``, ``{"instances": [...]}`` and
    ``{"inputs": {"text": ["...", "..."]}}`` (or rows: ``["...", "..."]`` for a one-column
    model). RequestError (422) naming the row and column of a value that is not a string.
    ``optional`` columns may be left out of records and named frames (module doc).
    """
    key, value = parse_mlflow(body)
    if key == "dataframe_split":
        return _split(value, names, optional)
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        return _text_records(value, names, key, optional)
    if isinstance(value, dict):  # columnar: {column: [texts]}
        columns = list(value)
        lists = [v if isinstance(v, list) else [v] for v in value.values()]
        if len({len(v) for v in lists}) > 1:
            raise RequestError(422, f"{key}: every column needs the same number of values")
        rows = [list(row) for row in zip(*lists, strict=True)]
        return _ordered(rows, columns, names, key, optional)
    if isinstance(value, list):  # rows in schema order; bare strings for one column
        rows = [[r] if isinstance(r, str) and len(names) == 1 else r for r in value]
        return _ordered(rows, list(names), names, key)
    raise RequestError(422, f"{key}: expected a list or an object, got {type(value).__name__}")


def _split(value: Any, names: Names, optional: Optional) -> NDArray[np.object_]:
    if not isinstance(value, dict) or "data" not in value:
        raise RequestError(422, 'dataframe_split: expected {"columns": [...], "data": [[...]]}')
    columns = value.get("columns") or list(names)
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise RequestError(
            422,
            "dataframe_split.columns: expected a list of column names, got "
            f"{type(columns).__name__}",
        )
    data = value["data"]
    if not isinstance(data, list):
        raise RequestError(422, f"dataframe_split.data: expected rows, got {_preview(data)}")
    rows = [[r] if isinstance(r, str) and len(columns) == 1 else r for r in data]
    return _ordered(rows, columns, names, "dataframe_split.data", optional)


def _text_records(
    records: list[dict[str, Any]], names: Names, key: str, optional: Optional
) -> NDArray[np.object_]:
    for i, record in enumerate(records):
        given = [*record, *(n for n in names if n not in record and n in optional)]
        mismatch = _mismatch(names, given, "column")
        if mismatch:
            raise RequestError(422, f"{key}[{i}]: {mismatch}")
    rows = [[record.get(n, "") for n in names] for record in records]
    return _ordered(rows, list(names), names, key)


def _ordered(
    rows: list[Any], columns: list[str], names: Names, key: str, optional: Optional = ()
) -> NDArray[np.object_]:
    """Rows of ``columns`` checked (strings, widths) and put in the model's column order;
    ``optional`` columns absent from ``columns`` read as ``""``."""
    left_out = [n for n in names if n not in columns and n in optional]
    mismatch = _mismatch(names, [*columns, *left_out], "column")
    if mismatch:
        raise RequestError(422, f"{key}: {mismatch}; the model takes {', '.join(names)}")
    if not rows:
        raise RequestError(422, f"{key}: expected at least one row, got 0")
    order = [columns.index(n) if n in columns else -1 for n in names]
    ordered = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise RequestError(
                422,
                f"{key}[{i}]: expected a row of {len(columns)} text(s) ({', '.join(columns)}), "
                f"got {_preview(row)}",
            )
        for j in order:
            if j >= 0 and not isinstance(row[j], str):
                raise RequestError(
                    422,
                    f"{key}[{i}].{columns[j]}: expected a string (text), got {_preview(row[j])}",
                )
        ordered.append([row[j] if j >= 0 else "" for j in order])
    return _matrix(ordered, names)


# -- CSV -----------------------------------------------------------------------------------


def decode_csv_text(body: bytes, names: Names, optional: Optional = ()) -> NDArray[np.object_]:
    """Decode a ``text/csv`` body of texts: a header row naming the columns (``text``), then
    one row per text; quoted cells may hold commas and line breaks."""
    header, rows = csv_table(body, "texts")
    return _ordered(rows, header, names, "CSV", optional)


# -- validation ----------------------------------------------------------------------------


class TextValidator:
    """Checks a decoded text request against one version's schema and model (module doc).

    ``model`` is the loaded text model (a :class:`shipyard.training.text.TextModel`: its
    ``max_tokens``, ``count_tokens`` and optional ``check_texts`` are used when present; a
    model without a token limit, such as TF-IDF, has only its texts checked for content).
    """

    def __init__(
        self,
        schema: Schema,
        model: Any = None,
        *,
        refuse_long_text: bool = False,
        languages: Sequence[str] = (),
    ) -> None:
        numeric = [c.name for c in schema.columns if c.dtype != "string"]
        if numeric:
            raise SchemaError(
                f"A text model's input columns must all be strings to be served; columns "
                f"{numeric} are not (serving decodes a text model's request as text only)."
            )
        self.schema = schema
        self.names = schema.names
        self.refuse_long_text = refuse_long_text
        limit = getattr(model, "max_tokens", None)
        count = getattr(model, "count_tokens", None)
        self.max_tokens: int | None = int(limit) if limit is not None and count else None
        self._count: Callable[[Sequence[str]], Any] | None = count if self.max_tokens else None
        self._check: Callable[[Sequence[str]], None] | None = getattr(model, "check_texts", None)
        self._check_inputs: Callable[[Mapping[str, Sequence[str]]], None] | None = getattr(
            model, "check_inputs", None
        )
        self.nullable = frozenset(c.name for c in schema.columns if c.nullable)
        """String columns that may be empty (``ColumnSpec.nullable``); the others may not."""
        # a model with its own check_texts (the entity recognizer routes by language) judges
        # languages itself: one judge per model
        self.languages = () if self._check is not None else tuple(languages)
        """The languages the model was trained on (its ``languages`` parameter); a text
        surely in another is refused. Empty: not checked here."""

    def check(self, matrix: NDArray[np.object_]) -> tuple[int, ...]:
        """Raise RequestError (422) for texts the model must not see; return the rows whose
        text the model truncates (empty when every text fits).

        ``matrix`` is the [n, k] object array of ``str`` a text decoder returned.
        """
        truncated: set[int] = set()
        for j, name in enumerate(self.names):
            texts: list[str] = matrix[:, j].tolist()
            # a nullable column may be empty: the model reads empty as its default
            for i, text in enumerate(() if name in self.nullable else texts):
                if not text.strip():
                    raise RequestError(
                        422,
                        f"input {name!r} (row {i}) is empty or only whitespace; expected a "
                        f"text to score, got {_preview(text)}",
                    )
            if self.languages:
                self._language(name, texts)
            if self._count is not None:
                truncated.update(self._long(name, texts))
            if self._check is not None:
                try:
                    self._check(texts)
                except SchemaError as exc:
                    raise RequestError(422, f"input {name!r}: {exc}") from None
        if self._check_inputs is not None:
            columns = {name: matrix[:, j].tolist() for j, name in enumerate(self.names)}
            try:
                self._check_inputs(columns)
            except SchemaError as exc:  # it names the column, row, expected and got
                raise RequestError(422, str(exc)) from None
        return tuple(sorted(truncated))

    def _language(self, name: str, texts: list[str]) -> None:
        """RequestError (422) for the first text surely in a language the model was not
        trained on (short texts and unsure detections are scored: see
        :func:`shipyard.training.entities.foreign_language`)."""
        from shipyard.training.entities import foreign_language, language_name

        for i, text in enumerate(texts):
            found = foreign_language(text, self.languages)
            if found is not None:
                trained = ", ".join(language_name(code) for code in self.languages)
                raise RequestError(
                    422,
                    f"input {name!r} (row {i}): the text's language was detected as "
                    f"{language_name(found)}; this model was trained on {trained} text only "
                    "and would score it without meaning",
                )

    def _long(self, name: str, texts: list[str]) -> list[int]:
        """Rows over the token limit; RequestError (422) for the first when refusing them."""
        import numpy as np

        assert self._count is not None and self.max_tokens is not None
        counts = np.asarray(self._count(texts), dtype=np.int64)
        over: list[int] = np.flatnonzero(counts > self.max_tokens).tolist()
        if over and self.refuse_long_text:
            row = over[0]
            raise RequestError(
                422,
                f"input {name!r} (row {row}) is {int(counts[row])} tokens long by the model's "
                f"count; the model takes at most {self.max_tokens}. This endpoint refuses "
                "longer texts (serving_refuse_long_text = true): shorten the text, or serve "
                "without the setting to have it scored truncated by the model's rule",
            )
        return over
