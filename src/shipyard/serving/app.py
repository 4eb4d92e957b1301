"""The serving app: one ASGI application for the KServe V2 and MLflow protocols.

A plain ASGI callable (no framework on the hot path) whose routes are one table below. A
prediction is decode → score → log/shadow → encode: msgspec (or the CSV reader) decodes
into the endpoint's input columns, the policy's router picks the version, its validator
checks the values, its micro-batcher scores them, the record is group-committed to the
prediction log, shadows score after the answer. Loading, policy watching and reloading
live in :mod:`shipyard.serving.runtime`; the admin routes in :mod:`shipyard.serving.admin`.

A request whose columns are not the model's but a raw event's (the model's lineage names
feature views) takes :meth:`ServingApp._accept_events` instead of ``_accept``: its events are
turned into the model's inputs by :mod:`shipyard.serving.features`, then scored and logged
the same way (the precomputed path does not change).

Predictions are refused (503) while the prediction log cannot be written, and
``/v2/health/ready`` says why. With ``serving_tracing`` on, the app takes
:meth:`ServingApp._predict_traced` (one span per stage) instead of ``_predict``, chosen once
at start (per request for the ``serving_trace_sample_ratio`` share when it is below 1); both
run the same stages. The access log (``serving_access_log``) is one logging call per request.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import RequestError
from shipyard.serving import admin
from shipyard.serving.batcher import BatchTimeoutError
from shipyard.serving.codec import (
    decode_csv,
    decode_mlflow,
    decode_v2,
    encode,
    encode_error,
    encode_mlflow,
    encode_mlflow_values,
    encode_v2,
    encode_v2_values,
    event_time,
    explain_flag,
    query_explain,
)
from shipyard.serving.event_codec import (
    EventColumns,
    RawEvents,
    decode_events_csv,
    decode_events_mlflow,
    decode_events_v2,
)
from shipyard.serving.llm import publish
from shipyard.serving.metrics import ServingMetrics, request_cause
from shipyard.serving.openai import OpenAIRoutes
from shipyard.serving.predlog import PredictionLogClosedError
from shipyard.serving.runtime import (
    CONFIG_ENV,
    Accepted,
    EndpointRuntime,
    EndpointState,
    ServeConfig,
    unlogged_message,
)
from shipyard.serving.text import decode_csv_text, decode_mlflow_text, decode_v2_text

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from shipyard.serving.tracing import Tracing
    from shipyard.workspace import Workspace

__all__ = ["CONFIG_ENV", "ServeConfig", "ServingApp", "create_app"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = dict[bytes, bytes]
Response = tuple[int, bytes, list[tuple[bytes, bytes]]]
Handler = Callable[[str, Headers, Receive, float], Awaitable[Response]]

JSON = [(b"content-type", b"application/json")]
QUERY = b":query"
"""Where :meth:`ServingApp._route` puts a request's query string among its headers (a name
no client can send: ``:`` is not allowed in a header name)."""
TEXT = [(b"content-type", b"text/plain; version=0.0.4")]
LIVE = encode({"live": True})
_EVENT_DATATYPES = {"key": "INT64|BYTES", "time": "BYTES", "number": "FP64", "value": "FP64|BYTES"}
STALE_HEADER = b"x-shipyard-stale-features"
"""Names the delayed feature views a raw event's features were read stale from."""
TRUNCATED_HEADER = b"x-truncated"
"""Lists the rows (0-based, comma-separated) whose text the model read truncated."""

access_logger = logging.getLogger("shipyard.access")
# (request id, version, arm) of the prediction being answered; set only with the access log on
_ANSWERING: contextvars.ContextVar[tuple[str, int, str] | None] = contextvars.ContextVar(
    "shipyard_answering", default=None
)


class ServingApp:
    """The ASGI application of one endpoint in one worker process."""

    def __init__(
        self, workspace: Workspace, config: ServeConfig, tracing: Tracing | None = None
    ) -> None:
        self.config = config
        self.tracing = tracing
        self._access_log = config.access_log
        # chosen once: with tracing off the hot path holds no tracing code at all
        self._predict_route = self._predict
        if tracing is not None:
            sampled = config.trace_sample_ratio < 1.0
            self._predict_route = self._predict_sampled if sampled else self._predict_traced
        self._random = random.Random().random
        folder = Path(config.metrics_dir) if config.metrics_dir else None
        self.metrics = ServingMetrics(config.endpoint, folder)
        self.runtime = EndpointRuntime(workspace, config, self.metrics)
        self.openai = OpenAIRoutes(self)
        self._openapi: bytes | None = None
        self._routes: dict[tuple[str, str], Handler] = {
            ("GET", "/v2/health/live"): self._live,
            ("GET", "/health"): self._live,
            ("GET", "/ping"): self._live,
            ("GET", "/v2/health/ready"): self._ready,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/openapi.json"): self._openapi_document,
            ("GET", "/v2"): self._server_metadata,
            ("POST", "/invocations"): self._invocations,
            ("GET", "/admin/traffic"): self._admin_status,
            ("POST", "/admin/traffic"): self._admin_change,
            ("POST", "/admin/rollback"): self._admin_change,
            ("POST", "/admin/reload"): self._admin_reload,
        }

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"][:4] == "/v1/":  # OpenAI's routes: a language model, maybe streamed
            await self.openai(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            status, body, headers = await self._route(scope, receive, started)
        except RequestError as exc:
            self.metrics.error(exc.status, request_cause(exc.status), _predicting(scope))
            status, body, headers = exc.status, encode_error(exc.message), JSON
        except BatchTimeoutError as exc:
            self.metrics.error(503, "timeout", True)
            status, body, headers = 503, encode_error(str(exc)), JSON
        except Exception as exc:  # the model failed: answer, never crash the worker
            predicting = _predicting(scope)
            if isinstance(exc, OSError | PredictionLogClosedError):
                cause = "prediction_log"
            else:
                cause = "model" if predicting else "server"
            self.metrics.error(500, cause, predicting)
            message = f"prediction failed: {type(exc).__name__}: {exc}"
            status, body, headers = 500, encode_error(message), JSON
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if self._access_log:
            self._log_access(scope, status, started)

    def _log_access(self, scope: Scope, status: int, started: float) -> None:
        """One access-log record: route, status, latency and, for predictions, what answered."""
        answering = _ANSWERING.get()
        request_id: str | None = None
        version: int | None = None
        arm: str | None = None
        if answering is not None:
            request_id, version, arm = answering
        else:  # not a prediction, or refused before it was assigned: the client's id if any
            given = dict(scope["headers"]).get(b"x-request-id")
            request_id = given.decode("latin-1") if given else None
        access_logger.info(
            "request",
            extra={
                "request_id": request_id,
                "endpoint": self.config.endpoint,
                "version": version,
                "arm": arm,
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.runtime.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.runtime.stop()
                if self.tracing is not None:
                    self.tracing.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: Scope, receive: Receive, started: float) -> Response:
        method = scope["method"]
        path = scope["path"].rstrip("/") or "/"
        headers: Headers = dict(scope["headers"])
        query = scope.get("query_string")
        if query:
            headers[QUERY] = query
        handler = self._routes.get((method, path))
        if handler is not None:
            return await handler(path, headers, receive, started)
        if path.startswith("/v2/models/"):
            if method == "GET":
                return self._model_metadata(path)
            if method == "POST" and path.endswith("/infer"):
                return await self._infer(path, headers, receive, started)
        raise RequestError(404, f"no route {method} {path}")

    async def _body(self, receive: Receive) -> bytes:
        chunks = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.config.max_body_bytes:
                raise RequestError(413, f"request body over {self.config.max_body_bytes:,} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    # -- prediction ------------------------------------------------------------------------

    async def _invocations(
        self, path: str, headers: Headers, receive: Receive, started: float
    ) -> Response:
        admin.authorize(headers, self.config.predict_token)
        return await self._predict_route("mlflow", None, headers, receive, started)

    async def _infer(
        self, path: str, headers: Headers, receive: Receive, started: float
    ) -> Response:
        admin.authorize(headers, self.config.predict_token)
        name, version = _model_path(path[: -len("/infer")])
        if name not in (self.config.endpoint, self.runtime.model):
            raise RequestError(
                404, f"unknown model {name!r}; this server serves {self.config.endpoint!r}"
            )
        return await self._predict_route("v2", version, headers, receive, started)

    async def _predict(
        self,
        protocol: str,
        explicit: int | None,
        headers: Headers,
        receive: Receive,
        started: float,
    ) -> Response:
        """Decode → score → log/shadow → encode."""
        body = await self._body(receive)
        try:
            request = self._accept(protocol, explicit, headers, body)
        except RequestError as refused:  # not the model's columns: a raw event, maybe
            if refused.status != 422:
                raise
            request = await self._accept_events(protocol, explicit, headers, body, refused)
        if request.deployment.text is not None:
            await self._check_text(request)
        if request.explain:
            return await self._explained(request, started)
        try:
            scores = await request.deployment.batcher.submit(request.matrix)
            await self._record(request, scores, started)
        except Exception as exc:  # the guardrails count it against the version
            self.runtime.failed(request, exc)
            raise
        return self._answer(request, scores)

    async def _check_text(self, request: Accepted) -> None:
        """Check a text request (empty texts, token limit, the model's ``check_texts``) in a
        thread: counting tokens and detecting languages take milliseconds per batch, which
        the event loop spends accepting other requests instead."""
        text = request.deployment.text
        assert text is not None
        request.truncated = await asyncio.to_thread(text.check, request.matrix)

    async def _explained(self, request: Accepted, started: float) -> Response:
        """Score, explain (the native model's attributions and reason codes), log, answer.

        Only ``explain=true`` requests come here: the plain path does no explaining work.
        A version that cannot be explained is refused (422) before it scores.
        """
        from shipyard.governance.reasons import explanation_records
        from shipyard.serving.codec import (
            Explained,
            encode_mlflow_explained,
            encode_v2_explained,
        )

        deployment = request.deployment
        explainer = await self.runtime.explainer(deployment)
        # TreeSHAP costs ~100x a prediction: the runtime runs it off the loop, beside scoring
        scores, explanation = await asyncio.gather(
            deployment.batcher.submit(request.matrix),
            self.runtime.explain(explainer, request.matrix),
        )
        records = explanation_records(explanation, descriptions=deployment.descriptions)
        explained = Explained(list(explainer.features), explainer.output_space, records)
        await self._record(request, scores, started, records)
        status, _, headers = self._answer(request, scores)
        if request.protocol == "v2":
            body = encode_v2_explained(
                self.runtime.model,
                request.version,
                request.request_id,
                scores,
                request.arm,
                explained,
            )
        else:
            body = encode_mlflow_explained(scores, explained)
        return status, body, headers

    async def _predict_traced(
        self,
        protocol: str,
        explicit: int | None,
        headers: Headers,
        receive: Receive,
        started: float,
    ) -> Response:
        """:meth:`_predict` with one span per stage, children of one ``predict`` span."""
        from opentelemetry.trace import SpanKind

        assert self.tracing is not None
        tracer = self.tracing.tracer
        with tracer.start_as_current_span("predict", kind=SpanKind.SERVER) as span:
            span.set_attributes(
                {"shipyard.endpoint": self.config.endpoint, "shipyard.protocol": protocol}
            )
            refused: RequestError | None = None
            with tracer.start_as_current_span("decode"):
                body = await self._body(receive)
                try:
                    request = self._accept(protocol, explicit, headers, body)
                except RequestError as exc:
                    if exc.status != 422:
                        raise
                    refused = exc
            if refused is not None:
                with tracer.start_as_current_span("features"):
                    request = await self._accept_events(protocol, explicit, headers, body, refused)
            if request.deployment.text is not None:
                with tracer.start_as_current_span("validate"):
                    await self._check_text(request)
            if request.explain:
                with tracer.start_as_current_span("explain"):
                    return await self._explained(request, started)
            deployment = request.deployment
            span.set_attributes(
                {
                    "shipyard.request_id": request.request_id,
                    "shipyard.model.version": request.version,
                    "shipyard.arm": request.arm,
                    "shipyard.rows": len(request.matrix),
                }
            )
            queued = time.time_ns()
            try:
                scores, run = await deployment.batcher.submit_timed(request.matrix)
            except Exception as exc:  # the guardrails count it against the version
                self.runtime.failed(request, exc)
                raise
            tracer.start_span("queue", start_time=queued).end(end_time=run.started_ns)
            model = tracer.start_span(
                "model",
                start_time=run.started_ns,
                attributes={
                    "shipyard.batch.rows": run.rows,
                    "shipyard.batch.requests": run.requests,
                    "shipyard.backend": deployment.report.chosen,
                },
            )
            model.end(end_time=run.ended_ns)
            with tracer.start_as_current_span("log"):
                await self._record(request, scores, started)
            with tracer.start_as_current_span("encode"):
                return self._answer(request, scores)

    async def _predict_sampled(
        self,
        protocol: str,
        explicit: int | None,
        headers: Headers,
        receive: Receive,
        started: float,
    ) -> Response:
        """Trace a ``serving_trace_sample_ratio`` share of requests, decided before any span."""
        if self._random() < self.config.trace_sample_ratio:
            return await self._predict_traced(protocol, explicit, headers, receive, started)
        return await self._predict(protocol, explicit, headers, receive, started)

    def _accept(
        self, protocol: str, explicit: int | None, headers: Headers, body: bytes
    ) -> Accepted:
        """Decode, assign and validate a prediction request (every path's first stage)."""
        state = self._state()
        log = self.runtime.log
        if log is not None and log.error is not None:  # never answer what cannot be logged
            raise RequestError(503, unlogged_message(log.error))
        matrix, request_id, parameters = self._decode(protocol, body, headers, state)
        deployment, arm, key = state.assign(headers, parameters, explicit)
        version = deployment.version.version
        if self._access_log:
            _ANSWERING.set((request_id, version, arm))
        # a text request is checked by _check_text, off the event loop
        out_of_range = deployment.validator.check(matrix) if deployment.text is None else ()
        # the traffic's own time (a replay): parameters.event_time, else X-Event-Time
        given = parameters.get("event_time") if parameters else None
        if given is None:
            given = headers.get(b"x-event-time")
        return Accepted(
            protocol,
            request_id,
            key,
            matrix,
            state,
            deployment,
            version,
            arm,
            out_of_range,
            event_time=None if given is None else event_time(given),
            explain=_wants_explanation(headers, parameters),
        )

    async def _accept_events(
        self,
        protocol: str,
        explicit: int | None,
        headers: Headers,
        body: bytes,
        refused: RequestError,
    ) -> Accepted:
        """Accept a raw-event request: decode the events, assign, compute the model's inputs
        with the online store, validate. ``refused`` (the feature decoder's error) is raised
        when the endpoint takes no events or the body carries no event-only column."""
        state = self._state()
        features = state.features
        if features is None:
            raise refused
        decoded = self._decode_events(protocol, body, headers, features.columns)
        if decoded is None:
            raise refused
        events, request_id, parameters = decoded
        deployment, arm, key = state.assign(headers, parameters, explicit)
        version = deployment.version.version
        if self._access_log:
            _ANSWERING.set((request_id, version, arm))
        assembled = await features.assemble(events)
        out_of_range = deployment.validator.check(assembled.matrix)
        return Accepted(
            protocol,
            request_id,
            key,
            assembled.matrix,
            state,
            deployment,
            version,
            arm,
            out_of_range,
            assembled.stale,
            events.columns,
            explain=_wants_explanation(headers, parameters),
        )

    def _decode_events(
        self, protocol: str, body: bytes, headers: Headers, columns: EventColumns
    ) -> tuple[RawEvents, str, dict[str, Any] | None] | None:
        """The request's raw events, its id and its V2 parameters; None: not events."""
        given = headers.get(b"x-request-id")
        request_id = given.decode("latin-1") if given else None
        parameters = None
        events: RawEvents | None
        if protocol == "v2":
            length = headers.get(b"inference-header-content-length")
            decoded = decode_events_v2(body, columns, int(length) if length else None)
            if decoded is None:
                return None
            events, request = decoded
            parameters = request.parameters
            request_id = request.id or request_id
        elif headers.get(b"content-type", b"")[:8].lower() == b"text/csv":
            events = decode_events_csv(body, columns)
        else:
            events = decode_events_mlflow(body, columns)
        if events is None:
            return None
        return events, request_id or self.runtime.next_id(), parameters

    async def _record(
        self,
        request: Accepted,
        scores: NDArray[np.float64],
        started: float,
        explanations: list[dict[str, Any]] | None = None,
    ) -> None:
        """Log the answer (before it is sent), count it, and hand the rows to the shadows."""
        latency = time.perf_counter() - started
        await self.runtime.log_answer(request, scores, latency, explanations)
        self.metrics.request(request.version, request.arm, latency)
        if request.state.policy.shadows:
            self.runtime.shadow(request)

    def _answer(self, request: Accepted, scores: NDArray[np.float64]) -> Response:
        request_id, version = request.request_id, request.version
        extra = [
            (b"x-request-id", request_id.encode()),
            (b"x-model-version", str(version).encode()),
        ]
        if request.stale:
            extra.append((STALE_HEADER, ",".join(request.stale).encode()))
        if request.truncated:
            extra.append((TRUNCATED_HEADER, ",".join(map(str, request.truncated)).encode()))
        output = request.deployment.json_output
        if output is not None:  # a JSON value per row (entities): V2 BYTES, MLflow objects
            if request.protocol == "v2":
                answer = encode_v2_values(
                    self.runtime.model, version, request_id, scores, request.arm, output
                )
            else:
                answer = encode_mlflow_values(scores)
        elif request.protocol == "v2":
            answer = encode_v2(self.runtime.model, version, request_id, scores, request.arm)
        else:
            answer = encode_mlflow(scores)
        return 200, answer, JSON + extra

    def _decode(
        self, protocol: str, body: bytes, headers: Headers, state: EndpointState
    ) -> tuple[NDArray[Any], str, dict[str, Any] | None]:
        """The request's rows in the endpoint's columns, its id and its V2 parameters.

        Rows are float64, or ``str`` objects for an endpoint whose versions take text.
        """
        given = headers.get(b"x-request-id")
        parameters = None
        matrix: NDArray[Any]
        if protocol == "v2":
            length = headers.get(b"inference-header-content-length")
            if length is not None and not length.isdigit():
                raise RequestError(400, f"Inference-Header-Content-Length {length!r}: not a number")
            size = int(length) if length else None
            if state.text:
                matrix, request = decode_v2_text(body, state.names, size, state.optional)
            else:
                matrix, request = decode_v2(body, state.names, size)
            parameters = request.parameters
            if request.id:
                return matrix, request.id, parameters
        elif headers.get(b"content-type", b"")[:8].lower() == b"text/csv":
            if state.text:
                matrix = decode_csv_text(body, state.names, state.optional)
            else:
                matrix = decode_csv(body, state.names)
        elif state.text:
            matrix = decode_mlflow_text(body, state.names, state.optional)
        else:
            matrix = decode_mlflow(body, state.names)
        return matrix, given.decode("latin-1") if given else self.runtime.next_id(), parameters

    def _state(self) -> EndpointState:
        state = self.runtime.state
        if state is None:
            raise RequestError(503, "the endpoint is still loading its models")
        return state

    # -- health, metadata, metrics ---------------------------------------------------------

    async def _live(
        self, path: str, headers: Headers, receive: Receive, started: float
    ) -> Response:
        return 200, LIVE, JSON

    async def _ready(
        self, path: str, headers: Headers, receive: Receive, started: float
    ) -> Response:
        """Ready: the policy's versions loaded and parity-checked, the prediction log writable."""
        reason = self.runtime.not_ready()
        if reason is None:
            return 200, encode({"ready": True}), JSON
        return 503, encode({"ready": False, "reason": reason}), JSON

    async def _metrics(
        self, path: str, headers: Headers, receive: Receive, started: float
    ) -> Response:
        state = self.runtime.state
        if state is not None:
            for version, deployment in state.deployments.items():
                self.metrics.set_queue_depth(version, deployment.batcher.queue_depth)
            publish(self.metrics, state)
        return 200, self.metrics.render().encode(), TEXT

    async def _server_metadata(
        self, path: str, headers: Headers, receive: Receive, started: float
    ) -> Response:
        document = {"name": "shipyard", "version": _version(), "extensions": ["binary_tensor_data"]}
        return 200, encode(document), JSON

    async def _openapi_document(
        self, path: str, headers: Headers, receive: Receive, started: float
    ) -> Response:
        if self._openapi is None:
            from shipyard.serving.openapi import document

            state = self.runtime.state
            names = [] if state is None else state.names
            text = state is not None and state.text
            self._openapi = encode(document(self.config.endpoint, names, text=text))
        return 200, self._openapi, JSON

    def _model_metadata(self, path: str) -> Response:
        ready = path.endswith("/ready")
        name, version = _model_path(path[: -len("/ready")] if ready else path)
        state = self.runtime.state
        if state is None:
            return 503, encode_error("not ready"), JSON
        if name not in (self.config.endpoint, state.policy.model):
            raise RequestError(
                404, f"unknown model {name!r}; this server serves {self.config.endpoint!r}"
            )
        if version is not None and version not in state.deployments:
            raise RequestError(404, f"model {name!r} has no loaded version {version}")
        if ready:
            reason = self.runtime.not_ready()
            if reason is not None:
                return 503, encode({"name": name, "ready": False, "reason": reason}), JSON
            return 200, encode({"name": name, "ready": True}), JSON
        first = state.deployments[version or state.policy.arms[0].version]
        kind = "BYTES" if first.text is not None else "FP64"
        inputs = [{"name": c.name, "datatype": kind, "shape": [-1]} for c in first.schema.columns]
        output = first.json_output
        document = {
            "name": name,
            "versions": [str(v) for v in sorted(state.deployments)],
            "platform": f"shipyard-{first.report.chosen}",
            "inputs": inputs,
            "outputs": [
                {"name": "probability", "datatype": "FP64", "shape": [-1]}
                if output is None
                else {"name": output, "datatype": "BYTES", "shape": [-1]}
            ],
            "parameters": {
                "traffic": state.policy.describe(),
                "tensor_input": f"[n, {len(inputs)}] {kind}",
            },
        }
        if state.features is not None:  # the columns of a raw event, one [n] tensor each
            kinds = state.features.columns.kinds
            document["parameters"]["raw_event_inputs"] = [  # type: ignore[index]
                {"name": name, "datatype": _EVENT_DATATYPES[kind]} for name, kind in kinds.items()
            ]
        return 200, encode(document), JSON

    # -- admin -----------------------------------------------------------------------------

    async def _admin_status(
        self, path: str, headers: Headers, receive: Receive, started: float
    ) -> Response:
        admin.authorize(headers, self.config.admin_token, admin=True)
        return 200, encode(admin.traffic_status(self.runtime)), JSON

    async def _admin_change(
        self, path: str, headers: Headers, receive: Receive, started: float
    ) -> Response:
        admin.authorize(headers, self.config.admin_token, admin=True)
        status = await admin.change_traffic(self.runtime, path, await self._body(receive))
        return 200, encode(status), JSON

    async def _admin_reload(
        self, path: str, headers: Headers, receive: Receive, started: float
    ) -> Response:
        admin.authorize(headers, self.config.admin_token, admin=True)
        await self.runtime.reload()
        return 200, encode(admin.traffic_status(self.runtime)), JSON


def _wants_explanation(headers: Headers, parameters: dict[str, Any] | None) -> bool:
    """``explain=true`` in the V2 parameters or the URL query (``/invocations?explain=true``)."""
    if parameters and "explain" in parameters:
        return explain_flag(parameters["explain"])
    query = headers.get(QUERY)
    return query is not None and query_explain(query)


def _predicting(scope: Scope) -> bool:
    """Whether the request went to a prediction route (counted in shipyard_requests_total)."""
    path: str = scope["path"].rstrip("/")
    return path == "/invocations" or (path.startswith("/v2/models/") and path.endswith("/infer"))


def _model_path(path: str) -> tuple[str, int | None]:
    """``/v2/models/NAME[/versions/V]`` into (NAME, V)."""
    parts = path.split("/")[3:]
    if not parts or not parts[0]:
        raise RequestError(404, "expected /v2/models/{name}")
    if len(parts) == 1:
        return parts[0], None
    if len(parts) == 3 and parts[1] == "versions" and parts[2].isdigit():
        return parts[0], int(parts[2])
    raise RequestError(404, f"no route {path}")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shipyard")
    except PackageNotFoundError:
        return "0"


def create_app() -> ServingApp:
    """The worker's app factory (uvicorn calls it in each worker process)."""
    from shipyard.logs import configure_logging
    from shipyard.serving.tracing import start_tracing
    from shipyard.workspace import Workspace

    config = ServeConfig.from_env()
    configure_logging(config.log_level, json=config.log_format == "json")
    tracing = start_tracing(config.tracing, config.endpoint, otlp_endpoint=config.otlp_endpoint)
    return ServingApp(Workspace.open(config.workspace), config, tracing)
