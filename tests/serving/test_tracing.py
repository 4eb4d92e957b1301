"""Tracing and the access log: a span tree per request, nothing when off, OTLP to a receiver.

The span tree is checked on the app in this process (driven through ASGI, an in-memory
exporter from the OpenTelemetry SDK standing in for a collector); OTLP/HTTP export and the
access log are checked on a real `shipyard serve` posting to a tiny receiver on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shipyard.serving.app import ServingApp
from shipyard.serving.runtime import ServeConfig
from shipyard.serving.server import prepare
from shipyard.serving.tracing import start_tracing
from tests.serving.conftest import start_server

STAGES = ["decode", "queue", "model", "log", "encode"]


async def _call(app: ServingApp, path: str, body: bytes, headers: dict[str, str]) -> Any:
    """One HTTP request through the ASGI interface: (status, headers, JSON body)."""
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), json.loads(sent[1]["body"])


def _serve_in_process(app: ServingApp, requests: list[tuple[str, bytes, dict[str, str]]]) -> Any:
    async def run() -> list[Any]:
        await app.runtime.start()
        try:
            return [await _call(app, *request) for request in requests]
        finally:
            await app.runtime.stop()

    try:
        return asyncio.run(run())
    finally:
        app.metrics.close()  # its private metrics folder (no server-wide one in process)


@pytest.fixture(scope="module")
def traced_endpoint(serving_workspace: Any) -> ServeConfig:
    """An endpoint of its own (its own prediction log), serving fraud's champion."""
    ws, _ = serving_workspace
    prepare(ws, "fraud@champion", "traced", reset=True)
    return ServeConfig(workspace=str(ws.root), endpoint="traced", tracing="console")


def _requests(rows: pd.DataFrame) -> list[tuple[str, bytes, dict[str, str]]]:
    body = json.dumps({"inputs": rows.head(3).to_numpy().tolist()}).encode()
    v2 = json.dumps(
        {
            "id": "trace-v2",
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [2, rows.shape[1]],
                    "datatype": "FP64",
                    "data": rows.head(2).to_numpy().ravel().tolist(),
                }
            ],
        }
    ).encode()
    json_type = {"Content-Type": "application/json"}
    return [
        ("/invocations", body, {**json_type, "X-Request-Id": "trace-mlflow"}),
        ("/v2/models/traced/infer", v2, json_type),
    ]


def test_a_traced_request_is_one_predict_span_with_a_child_per_stage(
    serving_workspace: Any, traced_endpoint: ServeConfig, rows: pd.DataFrame
) -> None:
    ws, _ = serving_workspace
    exporter = InMemorySpanExporter()
    tracing = start_tracing("console", "traced", exporter=exporter)
    assert tracing is not None
    app = ServingApp(ws, traced_endpoint, tracing)
    answers = _serve_in_process(app, _requests(rows))
    tracing.shutdown()
    assert [status for status, _, _ in answers] == [200, 200]
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name == "predict"]
    assert len(roots) == 2 and len(spans) == 2 * (1 + len(STAGES))
    for root, request_id, rows_sent in zip(
        roots, ["trace-mlflow", "trace-v2"], [3, 2], strict=True
    ):
        assert root.parent is None
        attributes = dict(root.attributes or {})
        assert attributes["shipyard.request_id"] == request_id
        assert attributes["shipyard.endpoint"] == "traced"
        assert attributes["shipyard.model.version"] == 1
        assert attributes["shipyard.arm"] in ("primary", "explicit")
        assert attributes["shipyard.rows"] == rows_sent
        children = sorted(
            (s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id),
            key=lambda s: s.start_time or 0,
        )
        assert [c.name for c in children] == STAGES  # in the order they happened
        assert all(c.context.trace_id == root.context.trace_id for c in children)
        model = children[2]
        assert dict(model.attributes or {})["shipyard.batch.rows"] >= rows_sent
        assert dict(model.attributes or {})["shipyard.backend"] in ("native", "onnx", "lleaves")
        for child in children:  # every stage lies within its request
            assert root.start_time <= child.start_time <= child.end_time <= root.end_time  # type: ignore[operator]


def test_tracing_off_takes_the_untraced_path_and_answers_the_same(
    serving_workspace: Any, traced_endpoint: ServeConfig, rows: pd.DataFrame
) -> None:
    ws, _ = serving_workspace
    assert start_tracing("off", "traced") is None
    requests = _requests(rows)
    off = ServingApp(ws, ServeConfig(workspace=str(ws.root), endpoint="traced"))
    assert off.tracing is None and off._predict_route == off._predict
    exporter = InMemorySpanExporter()
    on = ServingApp(ws, traced_endpoint, start_tracing("console", "traced", exporter=exporter))
    untraced = _serve_in_process(off, requests)
    traced = _serve_in_process(on, requests)
    assert [(s, b) for s, _, b in untraced] == [(s, b) for s, _, b in traced]
    assert all(not batcher.timed for batcher in _batchers(off))


def test_a_sample_ratio_traces_that_share_of_requests_decided_before_any_span(
    serving_workspace: Any, traced_endpoint: ServeConfig, rows: pd.DataFrame
) -> None:
    ws, _ = serving_workspace
    exporter = InMemorySpanExporter()
    config = replace(traced_endpoint, trace_sample_ratio=0.5)
    tracing = start_tracing("console", "traced", exporter=exporter)
    app = ServingApp(ws, config, tracing)
    assert app._predict_route == app._predict_sampled
    draws = iter([0.9, 0.1, 0.7, 0.3])  # the draws of four requests: traced when < 0.5
    app._random = lambda: next(draws)
    answers = _serve_in_process(app, _requests(rows) * 2)
    assert tracing is not None
    tracing.shutdown()  # export what the batch processor holds
    assert [status for status, _, _ in answers] == [200] * 4
    roots = [s for s in exporter.get_finished_spans() if s.name == "predict"]
    # requests 2 and 4 (the V2 ones, whose id is trace-v2) were traced, 1 and 3 not at all
    assert [dict(r.attributes or {})["shipyard.request_id"] for r in roots] == ["trace-v2"] * 2
    assert len(exporter.get_finished_spans()) == 2 * (1 + len(STAGES))


def _batchers(app: ServingApp) -> list[Any]:
    return (
        []
        if app.runtime.state is None
        else [d.batcher for d in app.runtime.state.deployments.values()]
    )


def test_console_tracing_writes_one_json_object_per_span(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tracing = start_tracing("console", "fraud")
    assert tracing is not None
    with (
        tracing.tracer.start_as_current_span("predict"),
        tracing.tracer.start_as_current_span("decode"),
    ):
        pass
    tracing.shutdown()
    spans = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [s["name"] for s in spans] == ["decode", "predict"]
    assert spans[0]["parent_id"] == spans[1]["context"]["span_id"]
    assert spans[1]["resource"]["attributes"]["shipyard.endpoint"] == "fraud"


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP traces endpoint that keeps what it is sent."""

    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            type(self).bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[bytes]]]:
    _Receiver.bodies = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/traces", _Receiver.bodies
    finally:
        httpd.shutdown()
        httpd.server_close()


def _exported_spans(bodies: list[bytes]) -> list[tuple[str, dict[str, Any], bytes, bytes]]:
    """(name, attributes, span id, parent span id) of every span the receiver got."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans = []
    for body in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attributes = {
                        a.key: getattr(a.value, a.value.WhichOneof("value"))
                        for a in span.attributes
                    }
                    spans.append((span.name, attributes, span.span_id, span.parent_span_id))
    return spans


def test_a_server_exports_spans_over_otlp_and_writes_the_access_log(
    serving_workspace: Any,
    rows: pd.DataFrame,
    tmp_path: Path,
    otlp_receiver: tuple[str, list[bytes]],
) -> None:
    ws, _ = serving_workspace
    url, bodies = otlp_receiver
    server = start_server(
        ws,
        "fraud@champion",
        tmp_path,
        "--endpoint",
        "traced-otlp",
        "--reset",
        env={
            "SHIPYARD_SERVING_TRACING": "otlp",
            "SHIPYARD_SERVING_OTLP_ENDPOINT": url,
            "SHIPYARD_SERVING_ACCESS_LOG": "true",
        },
    )
    ids = [f"otlp-{i}" for i in range(6)]
    try:
        body = {"inputs": rows.head(2).to_numpy().tolist()}
        for request_id in ids:
            status, _, _ = server.post_json("/invocations", body, {"X-Request-Id": request_id})
            assert status == 200
        assert (
            server.post_json("/invocations", {"inputs": [[1.0]]}, {"X-Request-Id": "bad"})[0] == 422
        )
    finally:
        server.stop()  # a stopping worker exports what it holds
    spans = _exported_spans(bodies)
    roots = {
        a["shipyard.request_id"]: s
        for n, a, s, _ in spans
        if n == "predict" and "shipyard.request_id" in a
    }
    assert set(ids) <= set(roots)
    for request_id in ids:
        stages = sorted(n for n, _, _, parent in spans if parent == roots[request_id])
        assert stages == sorted(STAGES)
    access = [
        json.loads(line)
        for line in server.log.read_text().splitlines()
        if line.startswith("{") and '"logger": "shipyard.access"' in line
    ]
    by_id = {record["request_id"]: record for record in access}
    for request_id in ids:
        record = by_id[request_id]
        assert record["status"] == 200 and record["endpoint"] == "traced-otlp"
        assert record["version"] == 1 and record["arm"] == "primary"
        assert record["latency_ms"] > 0 and record["time"].endswith("Z")
    assert by_id["bad"]["status"] == 422
