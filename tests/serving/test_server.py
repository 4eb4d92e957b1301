"""A running `shipyard serve` spoken to by real clients: tritonclient (KServe V2) and MLflow's."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.monitoring.logstore import query
from shipyard.registry.models import ModelRegistry
from tests.serving.conftest import ADMIN, Server, start_server, wait_for_revision


def _expected(server: Server, rows: pd.DataFrame, version: int = 1) -> np.ndarray:
    return (
        ModelRegistry(server.workspace).load("fraud", version).predict(rows.to_numpy(dtype=float))
    )


def test_kserve_v2_client_works_unchanged(server: Server, rows: pd.DataFrame) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("fraud")
    metadata = client.get_model_metadata("fraud")
    assert [i["name"] for i in metadata["inputs"]] == list(rows.columns)
    x = rows.head(5).to_numpy(dtype=np.float64)
    expected = _expected(server, rows.head(5))
    for binary in (True, False):
        tensor = httpclient.InferInput("input-0", list(x.shape), "FP64")
        tensor.set_data_from_numpy(x, binary_data=binary)
        result = client.infer(
            "fraud",
            [tensor],
            outputs=[httpclient.InferRequestedOutput("probability", binary_data=False)],
        )
        np.testing.assert_allclose(result.as_numpy("probability"), expected, atol=1e-5)
    named = []
    for column in rows.columns:  # one FP32 tensor per feature, in another order
        tensor = httpclient.InferInput(column, [5], "FP32")
        tensor.set_data_from_numpy(
            rows.head(5)[column].to_numpy(dtype=np.float32), binary_data=False
        )
        named.append(tensor)
    result = client.infer("fraud", named[::-1])
    np.testing.assert_allclose(result.as_numpy("probability"), expected, atol=1e-4)


def test_mlflow_scoring_client_works_unchanged(server: Server, rows: pd.DataFrame) -> None:
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    client = ScoringServerClient("127.0.0.1", server.port)
    client.ping()  # raises unless GET /ping answers 200
    status, _, body = server.request("GET", "/ping")
    assert (status, json.loads(body)) == (200, {"live": True})
    predictions = client.invoke(rows.head(7)).get_predictions()
    np.testing.assert_allclose(
        np.asarray(predictions)[:, 1], _expected(server, rows.head(7)), atol=1e-5
    )


@pytest.mark.parametrize("form", ["dataframe_split", "dataframe_records", "instances", "inputs"])
def test_every_mlflow_payload_form(server: Server, rows: pd.DataFrame, form: str) -> None:
    head = rows.head(3)
    payload: dict[str, Any] = {
        "dataframe_split": {
            "dataframe_split": json.loads(head.to_json(orient="split", index=False))
        },
        "dataframe_records": {"dataframe_records": head.to_dict(orient="records")},
        "instances": {"instances": head.to_dict(orient="records")},
        "inputs": {"inputs": head.to_numpy().tolist()},
    }[form]
    status, headers, body = server.post_json("/invocations", payload)
    assert status == 200, body
    np.testing.assert_allclose(
        np.asarray(body["predictions"])[:, 1], _expected(server, head), atol=1e-5
    )
    assert headers["x-model-version"] == "1"


BAD = [
    (b"{", 400, "malformed JSON"),
    (
        b'{"inputs": [{"name": "x", "shape": [1, 15], "datatype": "FP64", "data": ["a"]}]}',
        422,
        "expected numbers",
    ),
    (
        b'{"inputs": [{"name": "TX_AMOUNT", "shape": [1], "datatype": "FP64", "data": [1]}]}',
        422,
        "missing input",
    ),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD)
def test_bad_v2_requests_get_a_4xx_naming_the_problem(
    server: Server, body: bytes, status: int, message: str
) -> None:
    code, _, answer = server.request(
        "POST", "/v2/models/fraud/infer", body, {"Content-Type": "application/json"}
    )
    assert code == status
    assert message in json.loads(answer)["error"]


def test_nan_extra_columns_unknown_models_and_oversized_bodies(
    server: Server, rows: pd.DataFrame
) -> None:
    record = rows.head(1).to_dict(orient="records")[0]
    status, _, body = server.post_json(
        "/invocations", {"dataframe_records": [{**record, "TX_AMOUNT": None}]}
    )
    assert status == 422 and "TX_AMOUNT" in body["error"] and "finite" in body["error"]
    status, _, body = server.post_json(
        "/invocations", {"dataframe_records": [{**record, "EXTRA": 1}]}
    )
    assert status == 422 and "unexpected column(s) ['EXTRA']" in body["error"]
    status, _, body = server.post_json("/v2/models/credit/infer", {"inputs": []})
    assert status == 404 and "unknown model 'credit'" in body["error"]
    big = b'{"inputs": [' + b"1," * (5 << 20) + b"1]}"
    code, _, answer = server.request(
        "POST", "/invocations", big, {"Content-Type": "application/json"}
    )
    assert code == 413 and "over" in json.loads(answer)["error"]
    assert server.request("GET", "/v2/health/live")[0] == 200  # still serving


def test_predictions_are_logged_and_queryable(server: Server, rows: pd.DataFrame) -> None:
    ids = []
    for i in range(5):
        status, headers, _ = server.post_json(
            "/invocations",
            {"inputs": rows.iloc[[i]].to_numpy().tolist()},
            {"X-Request-Id": f"log-test-{i}"},
        )
        assert status == 200
        ids.append(headers["x-request-id"])
    frame = query(
        server.workspace,
        "fraud",
        "SELECT request_id, version, arm, outputs, inputs FROM predictions "
        "WHERE request_id LIKE 'log-test-%' ORDER BY request_id",
    )
    assert frame["request_id"].tolist() == ids
    assert set(frame["arm"]) == {"primary"} and set(frame["version"]) == {1}
    np.testing.assert_allclose(frame["inputs"].iloc[0][0], rows.iloc[0].to_numpy(), rtol=1e-12)


def test_metrics_and_openapi(server: Server, rows: pd.DataFrame) -> None:
    server.post_json("/invocations", {"inputs": rows.head(2).to_numpy().tolist()})
    status, headers, body = server.request("GET", "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in (
        "shipyard_requests_total",
        "shipyard_request_latency_seconds_bucket",
        "shipyard_batch_size_rows_bucket",
        "shipyard_queue_depth",
    ):
        assert name in text
    status, _, body = server.request("GET", "/openapi.json")
    document = json.loads(body)
    assert {"/invocations", "/v2/models/fraud/infer", "/v2/health/ready"} <= set(document["paths"])


def test_traffic_split_sticky_keys_and_shadow_without_restart(
    server: Server, rows: pd.DataFrame
) -> None:
    from shipyard.serving.policy import Arm, TrafficPolicy, apply_policy, set_policy

    ws = server.workspace
    try:
        stored = apply_policy(
            ws,
            TrafficPolicy(
                "fraud", "fraud", (Arm(1, 50), Arm(2, 50)), shadows=(), sticky_key="customer"
            ),
            reason="A/B test",
        )
        wait_for_revision(server, stored.revision)  # workers poll every second
        seen: dict[str, set[str]] = {}
        for i in range(60):
            key = f"customer-{i % 12}"
            status, headers, _ = server.post_json(
                "/invocations",
                {"inputs": rows.iloc[[i]].to_numpy().tolist()},
                {"X-Routing-Key": key},
            )
            assert status == 200
            seen.setdefault(key, set()).add(headers["x-model-version"])
        assert all(len(v) == 1 for v in seen.values())  # sticky
        assert set().union(*seen.values()) == {"1", "2"}  # both arms used
        for i in range(12):  # the header named by the sticky key, and the V2 parameter
            key = f"customer-{i}"
            status, headers, _ = server.post_json(
                "/invocations", {"inputs": rows.iloc[[i]].to_numpy().tolist()}, {"Customer": key}
            )
            assert status == 200 and {headers["x-model-version"]} == seen[key]
            x = rows.iloc[[i]].to_numpy().tolist()
            status, _, answer = server.post_json(
                "/v2/models/fraud/infer",
                {
                    "inputs": [
                        {"name": "x", "shape": [1, len(x[0])], "datatype": "FP64", "data": x}
                    ],
                    "parameters": {"customer": key},
                },
            )
            assert status == 200 and {answer["model_version"]} == seen[key]
        stored = set_policy(
            ws,
            TrafficPolicy("fraud", "fraud", (Arm(1, 50), Arm(2, 50))),
            reason="A/B without stickiness",
        )
        wait_for_revision(server, stored.revision)
        versions = set()
        for i in range(40):  # no sticky key: the routing header does not pin the arm
            status, headers, _ = server.post_json(
                "/invocations",
                {"inputs": rows.iloc[[i]].to_numpy().tolist()},
                {"X-Routing-Key": "customer-0"},
            )
            versions.add(headers["x-model-version"])
        assert versions == {"1", "2"}
        stored = set_policy(
            ws,
            TrafficPolicy("fraud", "fraud", (Arm(1, 1),), shadows=(2,)),
            reason="shadow the tree",
        )
        wait_for_revision(server, stored.revision)
        status, headers, _ = server.post_json(
            "/invocations",
            {"inputs": rows.head(1).to_numpy().tolist()},
            {"X-Request-Id": "shadowed-1"},
        )
        assert status == 200 and headers["x-model-version"] == "1"
        sql = "SELECT version, arm FROM predictions WHERE request_id = 'shadowed-1' ORDER BY arm"
        deadline = time.monotonic() + 60  # the shadow scores after the answer went out
        while len(query(ws, "fraud", sql)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert query(ws, "fraud", sql).values.tolist() == [[1, "primary"], [2, "shadow"]]
    finally:
        back = set_policy(ws, TrafficPolicy("fraud", "fraud", (Arm(1, 1),)), reason="champion")
        wait_for_revision(server, back.revision)


def test_admin_routes_require_the_configured_token(server: Server) -> None:
    assert server.request("GET", "/admin/traffic")[0] == 401
    status, _, body = server.request("GET", "/admin/traffic", headers=ADMIN)
    assert status == 200 and json.loads(body)["traffic"].startswith("v1")
    assert server.request("POST", "/admin/reload", b"", {"Authorization": "Bearer wrong"})[0] == 401


@pytest.fixture(scope="module")
def strict_server(serving_workspace: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server with no admin token that rejects values outside the training range."""
    ws, _ = serving_workspace
    running = start_server(
        ws, "fraud@champion", tmp_path_factory.mktemp("strict"), "--reject-out-of-range"
    )
    yield running
    running.stop()


def test_without_an_admin_token_admin_routes_are_refused_and_say_how_to_enable_them(
    strict_server: Server,
) -> None:
    for method, path in (
        ("GET", "/admin/traffic"),
        ("POST", "/admin/traffic"),
        ("POST", "/admin/rollback"),
        ("POST", "/admin/reload"),
    ):
        body = b'{"reason": "x", "arms": [{"version": 2}]}' if method == "POST" else None
        status, _, answer = strict_server.request(method, path, body, ADMIN)
        assert status == 403, (method, path)
        assert "SHIPYARD_SERVING_ADMIN_TOKEN" in json.loads(answer)["error"]
    from shipyard.serving.policy import get_policy

    assert get_policy(strict_server.workspace, "fraud").arms[0].version == 1  # nothing changed


def _outside(server: Server, rows: pd.DataFrame, column: str) -> dict[str, Any]:
    """A real row whose ``column`` is ten times above the largest value seen in training."""
    schema = ModelRegistry(server.workspace).get("fraud", 1).input_schema
    spec = next(c for c in schema.columns if c.name == column)
    assert spec.observed is not None, "registration records the training range"
    record: dict[str, Any] = rows.head(1).to_dict(orient="records")[0]
    record[column] = spec.observed[1] * 10 + 1
    return record


def test_values_outside_the_training_range_are_scored_and_flagged_in_the_log(
    server: Server, rows: pd.DataFrame
) -> None:
    record = _outside(server, rows, "TX_AMOUNT")
    status, _, body = server.post_json(
        "/invocations", {"dataframe_records": [record]}, {"X-Request-Id": "outside-1"}
    )
    assert status == 200, body
    status, _, _ = server.post_json(
        "/invocations",
        {"dataframe_records": rows.head(1).to_dict(orient="records")},
        {"X-Request-Id": "inside-1"},
    )
    frame = query(
        server.workspace,
        "fraud",
        "SELECT request_id, coalesce(list_contains(out_of_range, 'TX_AMOUNT'), false) AS flagged "
        "FROM predictions WHERE request_id IN ('outside-1', 'inside-1')",
    )
    assert dict(zip(frame["request_id"], frame["flagged"], strict=True)) == {
        "outside-1": True,
        "inside-1": False,
    }


def test_an_endpoint_can_reject_values_outside_the_training_range(
    strict_server: Server, rows: pd.DataFrame
) -> None:
    record = _outside(strict_server, rows, "TX_AMOUNT")
    status, _, body = strict_server.post_json("/invocations", {"dataframe_records": [record]})
    assert status == 422
    assert "input 'TX_AMOUNT' (row 0) is outside the range seen in training" in body["error"]


@pytest.mark.parametrize(("column", "value"), [("TX_AMOUNT", -5.0), ("TX_DURING_NIGHT", 2.0)])
def test_impossible_values_are_never_scored_silently(
    server: Server, rows: pd.DataFrame, column: str, value: float
) -> None:
    """A declared constraint rejects them (422); a schema registered before constraints were
    recorded at least flags them, since training never saw them."""
    schema = ModelRegistry(server.workspace).get("fraud", 1).input_schema
    spec = next(c for c in schema.columns if c.name == column)
    record = {**rows.head(1).to_dict(orient="records")[0], column: value}
    request_id = f"impossible-{column}"
    status, _, body = server.post_json(
        "/invocations", {"dataframe_records": [record]}, {"X-Request-Id": request_id}
    )
    if spec.constraint is not None:
        assert status == 422, body
        assert body["error"] == (
            f"input {column!r} (row 0) must be {spec.constraint.describe()}; got {value:g}"
        )
        return
    assert status == 200
    flagged = query(
        server.workspace,
        "fraud",
        f"SELECT list_contains(out_of_range, '{column}') AS flagged FROM predictions "
        f"WHERE request_id = '{request_id}'",
    )["flagged"]
    assert flagged.tolist() == [True]


def test_mlflow_csv_payloads_are_accepted(server: Server, rows: pd.DataFrame) -> None:
    head = rows.head(4)
    body = head[list(head.columns)[::-1]].to_csv(index=False).encode()  # any column order
    status, _, answer = server.request(
        "POST", "/invocations", body, {"Content-Type": "text/csv; charset=utf-8"}
    )
    assert status == 200, answer
    np.testing.assert_allclose(
        np.asarray(json.loads(answer)["predictions"])[:, 1], _expected(server, head), atol=1e-5
    )
    status, _, answer = server.request(
        "POST", "/invocations", b"TX_AMOUNT\n1\n", {"Content-Type": "text/csv"}
    )
    assert status == 422 and "missing column(s)" in json.loads(answer)["error"]


def test_schemathesis_finds_no_server_error(server: Server) -> None:
    """Property-based requests generated from the OpenAPI document: never a 5xx."""
    import subprocess
    import sys
    from pathlib import Path

    schemathesis = Path(sys.executable).with_name("schemathesis")
    done = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "passed" in done.stdout
    assert server.request("GET", "/v2/health/live")[0] == 200


def test_admin_api_sets_and_rolls_back_traffic(server: Server, rows: pd.DataFrame) -> None:
    from shipyard.serving.policy import Arm, TrafficPolicy, get_policy, set_policy

    ws = server.workspace
    try:
        status, _, body = server.post_json(
            "/admin/traffic",
            {
                "arms": [{"version": 1, "weight": 1}],
                "shadows": [2],
                "reason": "shadow via the API",
                "actor": "ops",
            },
            ADMIN,
        )
        assert status == 200, body
        stored = get_policy(ws, "fraud")
        assert (stored.shadows, stored.reason, stored.actor) == ((2,), "shadow via the API", "ops")
        assert body["revision"] == stored.revision  # this worker switched at once
        status, _, body = server.post_json(
            "/admin/traffic", {"arms": [{"version": 99}], "reason": "typo"}, ADMIN
        )
        assert status == 422 and "version 99" in body["error"]
        status, _, body = server.post_json("/admin/traffic", {"arms": []}, ADMIN)
        assert status == 422 and "reason" in body["error"]
        assert get_policy(ws, "fraud").revision == stored.revision  # refusals change nothing
        status, _, body = server.post_json("/admin/rollback", {"reason": "undo"}, ADMIN)
        assert status == 200 and get_policy(ws, "fraud").shadows == ()
    finally:
        back = set_policy(ws, TrafficPolicy("fraud", "fraud", (Arm(1, 1),)), reason="champion")
        wait_for_revision(server, back.revision)
