"""explain=true on a real server: attributions and reason codes beside the predictions, logged."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import RequestError
from shipyard.governance.explain import explain
from shipyard.monitoring.logstore import query
from shipyard.registry.models import ModelRegistry
from shipyard.serving.codec import explain_flag, query_explain
from tests.serving.conftest import Server, v2_body
from tests.serving.test_raw_events import _served, raw_server

__all__ = ["raw_server"]  # a fixture, shared with the raw-event tests

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _expected(server: Server, matrix: np.ndarray) -> Any:
    """The champion's attributions computed in-process from its verified native file."""
    return explain(ModelRegistry(server.workspace).load("fraud", "champion"), matrix)


def _check_records(records: list[dict[str, Any]], matrix: np.ndarray, expected: Any) -> None:
    assert len(records) == len(matrix)
    for i, record in enumerate(records):
        np.testing.assert_allclose(record["attributions"], expected.values[i], rtol=0, atol=1e-9)
        assert record["base_value"] == pytest.approx(expected.base_value, abs=1e-12)
        pushes = [r["contribution"] for r in record["reasons"]]
        assert pushes == sorted(pushes, reverse=True) and all(p > 0 for p in pushes)
        assert 1 <= len(pushes) <= 4 or max(expected.values[i]) <= 0
        for reason in record["reasons"]:
            j = expected.features.index(reason["feature"])
            assert reason["value"] == pytest.approx(matrix[i, j])
            assert reason["contribution"] == pytest.approx(expected.values[i, j])


def test_v2_explain_true_returns_attributions_and_reasons_beside_the_same_predictions(
    server: Server, rows: pd.DataFrame
) -> None:
    matrix = rows.head(5).to_numpy(dtype=float)
    path = "/v2/models/fraud/infer"
    status, _, plain = server.post_json(path, v2_body(matrix, "exp-plain"))
    assert status == 200
    assert "explanations" not in plain["parameters"]
    status, _, body = server.post_json(path, v2_body(matrix, "exp-v2", explain=True))
    assert status == 200, body
    assert body["outputs"] == plain["outputs"]
    parameters = body["parameters"]
    assert parameters["explanation_features"] == list(rows.columns)
    assert parameters["output_space"] == "log-odds"
    expected = _expected(server, matrix)
    _check_records(parameters["explanations"], matrix, expected)
    # base value + attributions = the log-odds of the served probability (backend parity 1e-5)
    served = np.asarray(body["outputs"][0]["data"])
    raw = np.array([r["base_value"] + sum(r["attributions"]) for r in parameters["explanations"]])
    np.testing.assert_allclose(1 / (1 + np.exp(-raw)), served, rtol=0, atol=1e-5)


def test_invocations_query_explain_true_answers_and_logs_the_explanations(
    server: Server, rows: pd.DataFrame
) -> None:
    matrix = rows.iloc[10:13].to_numpy(dtype=float)
    payload = {"dataframe_split": {"columns": list(rows.columns), "data": matrix.tolist()}}
    headers = {"X-Request-Id": "exp-mlflow"}
    status, _, body = server.post_json("/invocations?explain=true", payload, headers)
    assert status == 200, body
    assert len(body["predictions"]) == 3
    _check_records(body["explanations"], matrix, _expected(server, matrix))
    status, _, plain = server.post_json("/invocations", payload, {"X-Request-Id": "exp-none"})
    assert status == 200 and set(plain) == {"predictions"}
    logged = query(
        server.workspace,
        "fraud",
        "SELECT request_id, explanations FROM predictions "
        "WHERE request_id IN ('exp-mlflow', 'exp-none')",
    )
    by_id = dict(zip(logged["request_id"], logged["explanations"], strict=True))
    assert json.loads(by_id["exp-mlflow"]) == body["explanations"]
    assert by_id["exp-none"] is None or pd.isna(by_id["exp-none"])


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_reason_codes_requested_with_curl(server: Server, rows: pd.DataFrame) -> None:
    matrix = rows.head(1).to_numpy(dtype=float)
    done = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--fail-with-body",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            json.dumps({"inputs": matrix.tolist()}),
            f"{server.url}/invocations?explain=true",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    answer = json.loads(done.stdout)
    _check_records(answer["explanations"], matrix, _expected(server, matrix))


@pytest.mark.parametrize(
    ("path", "parameters"),
    [("/invocations?explain=maybe", None), ("/v2/models/fraud/infer", {"explain": "perhaps"})],
)
def test_an_unreadable_explain_flag_is_a_422_naming_it(
    server: Server, rows: pd.DataFrame, path: str, parameters: dict[str, Any] | None
) -> None:
    matrix = rows.head(1).to_numpy(dtype=float)
    if path.startswith("/v2"):
        payload: Any = v2_body(matrix, "exp-bad", **(parameters or {}))
    else:
        payload = {"inputs": matrix.tolist()}
    status, _, body = server.post_json(path, payload)
    assert status == 422
    assert "'explain'" in body["error"] and "true or false" in body["error"]


@pytest.mark.parametrize(
    ("given", "wanted"),
    [(True, True), (False, False), ("true", True), (b"1", True), ("False", False), ("", False)],
)
def test_the_explain_flag_reads_booleans_and_text(given: object, wanted: bool) -> None:
    assert explain_flag(given) is wanted


def test_the_query_flag_is_off_unless_asked() -> None:
    assert query_explain(b"explain=true") is True
    assert query_explain(b"other=1") is False
    assert query_explain(b"a=1&explain=false") is False
    with pytest.raises(RequestError) as refused:
        query_explain(b"explain=sure")
    assert refused.value.status == 422


def test_a_raw_event_is_explained_on_the_features_computed_from_it(raw_server: Server) -> None:
    cells = {
        "TRANSACTION_ID": [10**9 + 7],
        "TX_DATETIME": ["2018-06-08T13:00:00"],
        "CUSTOMER_ID": ["explained-card"],
        "TERMINAL_ID": [10**8 + 7],
        "TX_AMOUNT": [250.0],
    }
    payload = {
        "dataframe_split": {"columns": list(cells), "data": [[v[0] for v in cells.values()]]}
    }
    status, _, body = raw_server.post_json(
        "/invocations?explain=true", payload, {"X-Request-Id": "exp-raw"}
    )
    assert status == 200, body
    served = _served(raw_server.workspace, "fraud-raw").set_index("TRANSACTION_ID").loc[10**9 + 7]
    features = body["explanation_features"]
    matrix = np.array([[float(served[name]) for name in features]])
    _check_records(body["explanations"], matrix, _expected(raw_server, matrix))
