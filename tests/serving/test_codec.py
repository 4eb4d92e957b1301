from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from shipyard.errors import RequestError, ShipyardError
from shipyard.serving.codec import RequestError as CodecRequestError
from shipyard.serving.codec import (
    decode_csv,
    decode_mlflow,
    decode_v2,
    encode_mlflow,
    encode_v2,
)

SCHEMA = ["a", "b", "c"]  # the model's input columns, in order
ROWS = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def _v2(inputs: list[dict[str, object]]) -> bytes:
    return json.dumps({"inputs": inputs}).encode()


def test_v2_tensor_and_named_columns_decode_to_the_same_matrix() -> None:
    tensor, _ = decode_v2(
        _v2([{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": ROWS}]), SCHEMA
    )
    flat, _ = decode_v2(
        _v2(
            [
                {
                    "name": "x",
                    "shape": [2, 3],
                    "datatype": "FP32",
                    "data": [v for row in ROWS for v in row],
                }
            ]
        ),
        SCHEMA,
    )
    named, _ = decode_v2(
        _v2(
            [
                {
                    "name": n,
                    "shape": [2],
                    "datatype": "FP64",
                    "data": [r["abc".index(n)] for r in ROWS],
                }
                for n in "cab"
            ]
        ),
        SCHEMA,
    )
    np.testing.assert_array_equal(tensor, np.array(ROWS))
    np.testing.assert_array_equal(flat, tensor)
    np.testing.assert_array_equal(named, tensor)


def test_v2_binary_tensor_extension() -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 3],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": 48},
                }
            ]
        }
    ).encode()
    body = header + struct.pack("<6d", *[v for row in ROWS for v in row])
    matrix, _ = decode_v2(body, SCHEMA, header_length=len(header))
    np.testing.assert_array_equal(matrix, np.array(ROWS))


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b'{"inputs": "x"}', 422, "invalid inference request"),
        (_v2([]), 422, "at least one input"),
        (
            _v2([{"name": "x", "shape": [1, 3], "datatype": "BYTES", "data": ["a", "b", "c"]}]),
            422,
            "datatype must be numeric",
        ),
        (
            _v2([{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": ["a", "b", "c"]}]),
            422,
            "expected numbers",
        ),
        (
            _v2([{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3]}]),
            422,
            "holds 4 values, data has 3",
        ),
        (
            _v2([{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]),
            422,
            r"expected shape \[n, 3\]",
        ),
        (
            _v2([{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}]),
            422,
            r"missing input\(s\) \['b', 'c'\]",
        ),
    ],
)
def test_v2_bad_requests_name_the_problem(body: bytes, status: int, message: str) -> None:
    with pytest.raises(RequestError, match=message) as caught:
        decode_v2(body, SCHEMA)
    assert caught.value.status == status


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {"columns": ["b", "a", "c"], "data": [[2, 1, 3], [5, 4, 6]]}},
        {"dataframe_records": [{"a": 1, "b": 2, "c": 3}, {"c": 6, "b": 5, "a": 4}]},
        {"instances": [{"a": 1, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": 6}]},
        {"inputs": ROWS},
        {"inputs": {"a": [1, 4], "b": [2, 5], "c": [3, 6]}},
    ],
)
def test_every_mlflow_format_decodes_to_the_model_columns(payload: dict[str, object]) -> None:
    np.testing.assert_array_equal(
        decode_mlflow(json.dumps(payload).encode(), SCHEMA), np.array(ROWS)
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"dataframe_records": [{"a": 1, "b": 2}]}, r"missing column\(s\) \['c'\]"),
        (
            {"dataframe_records": [{"a": 1, "b": 2, "c": 3, "d": 4}]},
            r"unexpected column\(s\) \['d'\]",
        ),
        ({"inputs": [[1, 2]]}, "expected rows of 3 values"),
        (
            {"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, "x", 3]]}},
            "expected numbers",
        ),
        ({"something": []}, "expected exactly one of"),
        ([1, 2], "expected a JSON object"),
        # found by schemathesis: a number for the columns was a 500 (len() of an int)
        (
            {"dataframe_split": {"columns": -16, "data": None}},
            "dataframe_split.columns: expected a list of column names, got int",
        ),
        (
            {"dataframe_split": {"columns": ["a", 2, "c"], "data": [[1, 2, 3]]}},
            "expected a list of column names",
        ),
    ],
)
def test_mlflow_bad_requests_name_the_problem(payload: object, message: str) -> None:
    with pytest.raises(RequestError, match=message) as caught:
        decode_mlflow(json.dumps(payload).encode(), SCHEMA)
    assert caught.value.status == 422


def test_responses() -> None:
    scores = np.array([0.25, 0.5])
    v2 = json.loads(encode_v2("fraud", 3, "r1", scores, "primary"))
    assert v2["model_version"] == "3" and v2["id"] == "r1"
    assert v2["outputs"] == [
        {"name": "probability", "shape": [2], "datatype": "FP64", "data": [0.25, 0.5]}
    ]
    assert json.loads(encode_mlflow(scores)) == {"predictions": [[0.75, 0.25], [0.5, 0.5]]}


def test_request_error_is_one_of_shipyards_errors_and_still_importable_from_the_codec() -> None:
    assert CodecRequestError is RequestError
    error = RequestError(422, "input 'a' (row 0) must be a finite number")
    assert isinstance(error, ShipyardError) and isinstance(error, ValueError)
    assert error.status == 422 and str(error) == error.message


def test_csv_with_a_header_row_decodes_to_the_model_columns() -> None:
    body = b"b,a,c\r\n2,1,3\r\n5,4,6\r\n"
    np.testing.assert_array_equal(decode_csv(body, SCHEMA), np.array(ROWS))
    with_null = decode_csv(b"a,b,c\n1,,3\n", SCHEMA)
    assert np.isnan(with_null[0, 1])  # an empty cell is null, judged by the validator


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"a,b,c\n", "at least one row"),
        (b"a,b\n1,2\n", r"missing column\(s\) \['c'\]"),
        (b"a,b,c\n1,2\n", "CSV row 0: expected 3 values"),
        (b"a,b,c\n1,x,3\n", "CSV row 0, column 'b': expected a number, got 'x'"),
        (b"a,a,b,c\n1,1,2,3\n", r"column\(s\) \['a'\] appear more than once"),
    ],
)
def test_bad_csv_names_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=message) as caught:
        decode_csv(body, SCHEMA)
    assert caught.value.status == 422


def test_csv_that_is_not_text_is_a_400() -> None:
    with pytest.raises(RequestError, match="not UTF-8") as caught:
        decode_csv(b"\xff\xfe,b\n", SCHEMA)
    assert caught.value.status == 400
