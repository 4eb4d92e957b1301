"""Text requests decoded from every protocol, checked before batching, and batched together.

The model object is real: MiniLM's tokenizer (cut to a 16-token limit) in a one-layer encoder
classifier. The entity recognizer's ``check_texts`` (languages) is exercised through a real
server in test_text_serving.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from shipyard.errors import RequestError, SchemaError
from shipyard.serving.batcher import MicroBatcher
from shipyard.serving.codec import encode_mlflow_values, encode_v2_values
from shipyard.serving.text import (
    TextValidator,
    decode_csv_text,
    decode_mlflow_text,
    decode_v2_text,
)
from shipyard.types import ColumnSpec, Schema

NAMES = ["text"]
TEXTS = ["A moving, funny film.", "Ennuyeux à mourir — évitez-le.", "ok"]
SCHEMA = Schema((ColumnSpec("text", "string"),))


def _v2(*inputs: dict[str, Any]) -> bytes:
    return json.dumps({"inputs": list(inputs)}).encode()


def _column(matrix: NDArray[Any]) -> list[str]:
    assert matrix.dtype == object and matrix.ndim == 2
    assert all(type(v) is str for v in matrix.ravel())  # str objects, never numpy <U
    return [str(v) for v in matrix[:, 0]]


def _binary(name: str, shape: list[int], texts: list[bytes] | bytes) -> tuple[bytes, int]:
    """A V2 request body with one BYTES tensor in the binary extension, as tritonclient
    writes it (or ``texts`` as the raw binary part), and its Inference-Header-Content-Length."""
    from tritonclient.utils import serialize_byte_tensor  # type: ignore[import-untyped]

    if isinstance(texts, bytes):
        raw = texts
    else:
        raw = serialize_byte_tensor(np.array(texts, dtype=object)).item()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": shape,
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    return header + raw, len(header)


# -- KServe V2 -----------------------------------------------------------------------------


def test_v2_bytes_as_json_strings_in_every_shape_decode_to_the_same_texts() -> None:
    per_column, request = decode_v2_text(
        _v2({"name": "text", "shape": [3], "datatype": "BYTES", "data": TEXTS}), NAMES
    )
    column, _ = decode_v2_text(
        _v2({"name": "text", "shape": [3, 1], "datatype": "BYTES", "data": [[t] for t in TEXTS]}),
        NAMES,
    )
    tensor, _ = decode_v2_text(
        _v2({"name": "input-0", "shape": [3, 1], "datatype": "BYTES", "data": TEXTS}), NAMES
    )
    assert _column(per_column) == _column(column) == _column(tensor) == TEXTS
    assert request.inputs[0].name == "text"


def test_v2_binary_bytes_elements_are_length_prefixed_utf8() -> None:
    body, length = _binary("text", [3], [t.encode() for t in TEXTS])
    matrix, _ = decode_v2_text(body, NAMES, length)
    assert _column(matrix) == TEXTS


def test_invalid_utf8_in_a_bytes_tensor_is_refused_naming_input_and_element() -> None:
    body, length = _binary("text", [2], [b"fine", b"caf\xe9 au lait"])  # latin-1, not UTF-8
    with pytest.raises(RequestError) as refused:
        decode_v2_text(body, NAMES, length)
    assert refused.value.status == 422
    assert "input 'text' element 1: not valid UTF-8" in refused.value.message


def test_a_length_prefix_past_the_end_is_refused() -> None:
    body, length = _binary("text", [1], (9).to_bytes(4, "little") + b"cut ")
    with pytest.raises(RequestError, match="element 0: length prefix says 9 bytes, 4 remain"):
        decode_v2_text(body, NAMES, length)


def test_a_numeric_tensor_for_a_text_column_names_the_column_and_bytes() -> None:
    numeric = {"name": "text", "shape": [1], "datatype": "FP64", "data": [1.0]}
    with pytest.raises(RequestError) as refused:
        decode_v2_text(_v2(numeric), NAMES)
    assert refused.value.status == 422
    assert "input 'text'" in refused.value.message
    assert "expected datatype BYTES" in refused.value.message


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", 3]}, "element 1"),
        ({"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a", "b"]}, "holds 3"),
        ({"name": "other", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}, "[n, 1]"),
        ({"name": "text", "shape": [0], "datatype": "BYTES", "data": []}, "at least one row"),
    ],
)
def test_bad_bytes_tensors_get_422_naming_the_problem(tensor: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError) as refused:
        decode_v2_text(_v2(tensor), NAMES)
    assert refused.value.status == 422 and message in refused.value.message


# -- MLflow and CSV ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}},
        {"dataframe_split": {"data": [[t] for t in TEXTS]}},
        {"dataframe_records": [{"text": t} for t in TEXTS]},
        {"instances": [{"text": t} for t in TEXTS]},
        {"instances": TEXTS},
        {"inputs": {"text": TEXTS}},
        {"inputs": [[t] for t in TEXTS]},
    ],
)
def test_every_mlflow_form_with_strings_decodes_to_the_texts(payload: dict[str, Any]) -> None:
    assert _column(decode_mlflow_text(json.dumps(payload).encode(), NAMES)) == TEXTS


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"dataframe_records": [{"text": "a"}, {"text": 5}]}, "dataframe_records[1].text"),
        ({"dataframe_records": [{"review": "a"}]}, "missing column(s) ['text']"),
        ({"inputs": {"text": ["a"], "extra": ["b"]}}, "unexpected column(s) ['extra']"),
        ({"dataframe_split": {"columns": ["text"], "data": [[None]]}}, "expected a string"),
    ],
)
def test_mlflow_values_that_are_not_texts_get_422(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError) as refused:
        decode_mlflow_text(json.dumps(payload).encode(), NAMES)
    assert refused.value.status == 422 and message in refused.value.message


def test_csv_with_a_text_header_keeps_quoted_commas_and_line_breaks() -> None:
    body = b'text\n"Long, slow,\nand dull."\nSuperb\n'
    assert _column(decode_csv_text(body, NAMES)) == ["Long, slow,\nand dull.", "Superb"]
    with pytest.raises(RequestError, match="missing column"):
        decode_csv_text(b"review\nfine\n", NAMES)


# -- validation ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier() -> Any:
    """A one-layer MiniLM encoder classifier whose tokenizer takes 16 word pieces."""
    from shipyard.training.text import TextClassifier, TextTokenizer, build_encoder, minilm_config

    return TextClassifier(build_encoder(minilm_config(1)), TextTokenizer.pretrained(max_tokens=16))


def _matrix(texts: list[str]) -> NDArray[Any]:
    matrix = np.empty((len(texts), 1), dtype=object)
    matrix[:, 0] = texts
    return matrix


LONG = "This film is " + "very " * 30 + "long."


@pytest.mark.parametrize("empty", ["", "   ", "\n\t"])
def test_empty_or_whitespace_text_is_refused_naming_row_and_column(
    classifier: Any, empty: str
) -> None:
    with pytest.raises(RequestError) as refused:
        TextValidator(SCHEMA, classifier).check(_matrix(["fine", empty]))
    assert refused.value.status == 422
    assert "input 'text' (row 1) is empty or only whitespace" in refused.value.message


def test_a_text_over_the_token_limit_is_flagged_by_default_and_refused_by_setting(
    classifier: Any,
) -> None:
    matrix = _matrix(["short and sweet", LONG, "fine", LONG])
    assert TextValidator(SCHEMA, classifier).check(matrix) == (1, 3)
    assert TextValidator(SCHEMA, classifier).check(_matrix(["short"])) == ()
    count = int(classifier.count_tokens([LONG])[0])
    with pytest.raises(RequestError) as refused:
        TextValidator(SCHEMA, classifier, refuse_long_text=True).check(matrix)
    assert refused.value.status == 422
    assert f"(row 1) is {count} tokens long" in refused.value.message
    assert "at most 16" in refused.value.message


def test_a_model_without_a_token_limit_checks_content_only() -> None:
    validator = TextValidator(SCHEMA, object())
    assert validator.max_tokens is None and validator.check(_matrix([LONG * 100])) == ()


def test_a_schema_mixing_text_and_numbers_is_not_served_as_text() -> None:
    mixed = Schema((ColumnSpec("text", "string"), ColumnSpec("stars", "float")))
    with pytest.raises(SchemaError, match=r"\['stars'\]"):
        TextValidator(mixed)


# -- batching and answers ------------------------------------------------------------------


def test_concurrent_text_requests_are_scored_in_one_padded_batch(classifier: Any) -> None:
    from shipyard.training.trainers import native_format

    torch_text = native_format("torch-text")
    calls: list[int] = []

    async def score_each() -> list[NDArray[Any]]:
        batcher = MicroBatcher(
            lambda batch: torch_text.predict(classifier, batch),
            on_batch=lambda rows, seconds: calls.append(rows),
        )
        try:
            requests = [_matrix([f"review number {i} " + "good " * i]) for i in range(20)]
            return list(await asyncio.gather(*(batcher.submit(r) for r in requests)))
        finally:
            await batcher.close()

    scores = asyncio.run(score_each())
    assert sum(calls) == 20 and len(calls) < 20  # object arrays concatenate like floats
    alone = [classifier.predict_proba([f"review number {i} " + "good " * i]) for i in range(20)]
    np.testing.assert_allclose(np.concatenate(scores), np.concatenate(alone), atol=1e-5)


def test_json_answers_are_v2_bytes_and_mlflow_objects() -> None:
    values = np.empty(2, dtype=object)
    values[0] = {"language": "en", "entities": [{"text": "Paris", "label": "GPE"}]}
    values[1] = {"language": "fr", "entities": []}
    v2 = json.loads(encode_v2_values("entities", 1, "r1", values, "primary", "entities"))
    (output,) = v2["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("entities", "BYTES", [2])
    assert [json.loads(d) for d in output["data"]] == values.tolist()
    assert json.loads(encode_mlflow_values(values)) == {"predictions": values.tolist()}


NULLABLE = ("user", "session", "k")
OPTIONAL = frozenset({"session", "k"})


def _v2_columns(*tensors: tuple[str, list[str]]) -> bytes:
    inputs = [{"name": n, "shape": [len(v)], "datatype": "BYTES", "data": v} for n, v in tensors]
    return json.dumps({"inputs": inputs}).encode()


@pytest.mark.parametrize(
    ("decode", "body"),
    [
        (decode_mlflow_text, {"dataframe_records": [{"user": "7"}, {"user": "8", "k": "3"}]}),
        (decode_mlflow_text, {"dataframe_split": {"columns": ["user"], "data": [["7"], ["8"]]}}),
        (decode_mlflow_text, {"inputs": {"user": ["7", "8"]}}),
        (decode_csv_text, "user\n7\n8\n"),
    ],
)
def test_nullable_columns_left_out_of_a_named_request_read_as_empty(decode: Any, body: Any) -> None:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    matrix = decode(raw, NULLABLE, OPTIONAL)
    assert matrix[:, 0].tolist() == ["7", "8"]
    assert matrix[0, 1:].tolist() == ["", ""]


def test_a_v2_request_may_leave_out_a_nullable_tensor_but_not_a_required_one() -> None:
    matrix, _ = decode_v2_text(
        _v2_columns(("user", ["7", "8"]), ("k", ["5", ""])), NULLABLE, None, OPTIONAL
    )
    assert matrix.tolist() == [["7", "", "5"], ["8", "", ""]]
    with pytest.raises(RequestError, match=r"missing input\(s\) \['user'\]"):
        decode_v2_text(_v2_columns(("session", ["1 2"])), NULLABLE, None, OPTIONAL)


def test_without_the_schema_saying_nullable_every_column_is_still_required() -> None:
    body = json.dumps({"dataframe_records": [{"user": "7"}]}).encode()
    with pytest.raises(RequestError, match=r"missing column\(s\) \['session', 'k'\]"):
        decode_mlflow_text(body, NULLABLE)
