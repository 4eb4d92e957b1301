"""The serving app: one ASGI application for the KServe V2 and MLflow protocols.

A plain ASGI callable (no framework on the hot path): route by method and path, decode with
msgspec into the model's input columns, route to an arm of the traffic policy, score through
that version's micro-batcher, group-commit the prediction record, answer. Shadow versions
score the same rows after the answer is on its way. A policy change (polled from the
metadata database) loads new versions beside the old ones and swaps one reference: requests
in flight finish on the state that accepted them.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.serving.batcher import BatchTimeoutError, MicroBatcher
from shipyard.serving.codec import (
    RequestError,
    decode_mlflow,
    decode_v2,
    encode,
    encode_error,
    encode_mlflow,
    encode_v2,
)
from shipyard.serving.metrics import ServingMetrics

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from shipyard.registry.models import ModelVersion
    from shipyard.serving.backends import BackendReport
    from shipyard.serving.policy import Router, TrafficPolicy
    from shipyard.serving.predlog import PredictionLog
    from shipyard.types import Predictor, Schema
    from shipyard.workspace import Workspace

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

CONFIG_ENV = "SHIPYARD_SERVE_CONFIG"
JSON = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class ServeConfig:
    """How a worker serves: endpoint, batching, limits, tokens (passed to workers as JSON)."""

    workspace: str
    endpoint: str
    max_batch_size: int = 64
    max_wait_ms: float = 0.0
    timeout_ms: float = 1000.0
    max_body_bytes: int = 8 << 20
    poll_interval_s: float = 1.0
    admin_token: str | None = None
    predict_token: str | None = None
    log_predictions: bool = True
    fsync_interval_s: float = 1.0

    def to_env(self) -> str:
        """JSON for the workers' environment."""
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        """Read the configuration the server put in the environment."""
        raw = os.environ.get(CONFIG_ENV)
        if not raw:
            raise RuntimeError(f"{CONFIG_ENV} is not set: start workers with shipyard serve")
        return cls(**json.loads(raw))


@dataclass
class Deployment:
    """One loaded version: its predictor and batcher."""

    version: ModelVersion
    predictor: Predictor
    batcher: MicroBatcher
    report: BackendReport

    @property
    def schema(self) -> Schema:
        """The version's input schema."""
        return self.version.input_schema


@dataclass
class EndpointState:
    """Everything one request needs, swapped as a whole when the policy changes."""

    policy: TrafficPolicy
    router: Router
    deployments: dict[int, Deployment] = field(default_factory=dict)


class ServingApp:
    """The ASGI application of one endpoint in one worker process."""

    def __init__(self, workspace: Workspace, config: ServeConfig) -> None:
        self.workspace = workspace
        self.config = config
        self.metrics = ServingMetrics(config.endpoint)
        self.state: EndpointState | None = None
        self.log: PredictionLog | None = None
        self._poller: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._openapi: bytes | None = None
        self._id_prefix = uuid.uuid4().hex[:12]
        self._id_counter = 0

    def _next_id(self) -> str:
        """A unique request id: a random per-worker prefix and a counter (no uuid per request)."""
        self._id_counter += 1
        return f"{self._id_prefix}-{self._id_counter}"

    # -- lifecycle -------------------------------------------------------------------------

    async def startup(self) -> None:
        """Load the current policy's versions and start watching for policy changes."""
        from shipyard.serving.policy import get_policy
        from shipyard.serving.predlog import PredictionLog, log_folder

        if self.config.log_predictions:
            self.log = PredictionLog(
                log_folder(self.workspace, self.config.endpoint),
                worker=f"w{os.getpid()}",
                fsync_interval_s=self.config.fsync_interval_s,
            )
        policy = await asyncio.to_thread(get_policy, self.workspace, self.config.endpoint)
        self.state = await self._build(policy, {})
        self._poller = asyncio.get_running_loop().create_task(self._watch_policy())

    async def shutdown(self) -> None:
        """Stop watching, close batchers and the prediction log."""
        if self._poller is not None:
            self._poller.cancel()
        if self.state is not None:
            for deployment in self.state.deployments.values():
                await deployment.batcher.close()
        if self.log is not None:
            self.log.close()

    async def _build(self, policy: TrafficPolicy, loaded: dict[int, Deployment]) -> EndpointState:
        from shipyard.serving.policy import Router

        deployments: dict[int, Deployment] = {}
        for version in sorted(policy.versions):
            existing = loaded.get(version)
            if existing is None or existing.version.name != policy.model:
                existing = await asyncio.to_thread(self._load, policy.model, version)
            deployments[version] = existing
        return EndpointState(policy, Router(policy), deployments)

    def _load(self, model: str, version: int) -> Deployment:
        from shipyard.registry.models import ModelRegistry
        from shipyard.serving.backends import load_backend

        registry = ModelRegistry(self.workspace)
        predictor, report = load_backend(registry, model, version)
        key = str(version)

        def observe(rows: int, seconds: float) -> None:
            self.metrics.batch[key].observe(rows)

        batcher = MicroBatcher(
            predictor.predict,
            max_batch_size=self.config.max_batch_size,
            max_wait_ms=self.config.max_wait_ms,
            timeout_ms=self.config.timeout_ms,
            on_batch=observe,
        )
        return Deployment(registry.get(model, version), predictor, batcher, report)

    async def _watch_policy(self) -> None:
        from shipyard.serving.policy import current_revision

        while True:
            await asyncio.sleep(self.config.poll_interval_s)
            try:
                revision = await asyncio.to_thread(
                    current_revision, self.workspace, self.config.endpoint
                )
                if self.state is not None and revision != self.state.policy.revision:
                    await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving the current policy; say why
                print(f"shipyard worker {os.getpid()}: policy reload failed: {exc}", flush=True)

    async def reload(self) -> None:
        """Load the latest policy beside the current one, then switch atomically."""
        from shipyard.serving.policy import get_policy

        assert self.state is not None
        old = self.state
        policy = await asyncio.to_thread(get_policy, self.workspace, self.config.endpoint)
        self.state = await self._build(policy, old.deployments)
        retired = [d for v, d in old.deployments.items() if v not in self.state.deployments]
        if retired:
            task = asyncio.get_running_loop().create_task(self._retire(retired))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _retire(self, deployments: list[Deployment]) -> None:
        # requests in flight hold the old state; give them the full timeout to finish
        await asyncio.sleep(self.config.timeout_ms / 1000 + 1)
        for deployment in deployments:
            await deployment.batcher.close()

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        try:
            status, body, headers = await self._route(scope, receive, started)
        except RequestError as exc:
            self.metrics.error(exc.status, "bad_request" if exc.status < 500 else "server")
            status, body, headers = exc.status, encode_error(exc.message), JSON
        except BatchTimeoutError as exc:
            self.metrics.error(503, "timeout")
            status, body, headers = 503, encode_error(str(exc)), JSON
        except Exception as exc:  # the model failed: answer, never crash the worker
            self.metrics.error(500, "model")
            status, body, headers = (
                500,
                encode_error(f"prediction failed: {type(exc).__name__}: {exc}"),
                JSON,
            )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

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

    async def _route(
        self, scope: Scope, receive: Receive, started: float
    ) -> tuple[int, bytes, list[Any]]:
        method = scope["method"]
        path = scope["path"].rstrip("/") or "/"
        headers = dict(scope["headers"])
        endpoint = self.config.endpoint
        if method == "GET":
            if path in ("/v2/health/live", "/health", "/ping"):
                return 200, encode({"live": True}), JSON
            if path == "/v2/health/ready":
                ready = self.state is not None
                return (200 if ready else 503), encode({"ready": ready}), JSON
            if path == "/metrics":
                self._update_gauges()
                return (
                    200,
                    self.metrics.render().encode(),
                    [(b"content-type", b"text/plain; version=0.0.4")],
                )
            if path == "/openapi.json":
                return 200, self._openapi_document(), JSON
            if path == "/v2":
                return (
                    200,
                    encode(
                        {
                            "name": "shipyard",
                            "version": _version(),
                            "extensions": ["binary_tensor_data"],
                        }
                    ),
                    JSON,
                )
            if path.startswith("/v2/models/"):
                return self._model_metadata(path)
            if path == "/admin/traffic":
                self._authorize(headers, self.config.admin_token)
                return 200, encode(self._status()), JSON
        if method == "POST":
            if path == "/invocations":
                self._authorize(headers, self.config.predict_token)
                return await self._predict(scope, receive, headers, started, "mlflow", None)
            if path.startswith("/v2/models/") and path.endswith("/infer"):
                self._authorize(headers, self.config.predict_token)
                name, version = _model_path(path[: -len("/infer")])
                if name not in (endpoint, self._model_name()):
                    raise RequestError(
                        404, f"unknown model {name!r}; this server serves {endpoint!r}"
                    )
                return await self._predict(scope, receive, headers, started, "v2", version)
            if path == "/admin/reload":
                self._authorize(headers, self.config.admin_token)
                await self.reload()
                return 200, encode(self._status()), JSON
            if path in ("/admin/traffic", "/admin/rollback"):
                self._authorize(headers, self.config.admin_token)
                return await self._admin_policy(path, await self._body(receive))
        raise RequestError(404, f"no route {method} {path}")

    async def _admin_policy(self, path: str, body: bytes) -> tuple[int, bytes, list[Any]]:
        """Set the traffic policy (``/admin/traffic``) or roll it back; then load it here."""
        from shipyard.errors import ShipyardError
        from shipyard.serving.policy import (
            Arm,
            TrafficPolicy,
            apply_policy,
            get_policy,
            rollback_policy,
        )

        change = _decode_admin(body)
        reason = str(change.get("reason") or "")
        if not reason:
            raise RequestError(422, "reason: required (why the traffic changes)")
        actor = str(change.get("actor") or "admin-api")
        try:
            if path == "/admin/rollback":
                await asyncio.to_thread(
                    rollback_policy,
                    self.workspace,
                    self.config.endpoint,
                    reason=reason,
                    actor=actor,
                )
            else:
                current = await asyncio.to_thread(get_policy, self.workspace, self.config.endpoint)
                arms = change.get("arms")
                if not isinstance(arms, list) or not arms:
                    raise RequestError(422, 'arms: expected [{"version": 1, "weight": 90}, ...]')
                policy = TrafficPolicy(
                    self.config.endpoint,
                    current.model,
                    tuple(Arm(int(a["version"]), float(a.get("weight", 1))) for a in arms),
                    tuple(int(v) for v in change.get("shadows") or ()),
                    change.get("sticky_key"),
                )
                await asyncio.to_thread(
                    apply_policy, self.workspace, policy, reason=reason, actor=actor
                )
        except (KeyError, TypeError, ValueError, ShipyardError) as exc:
            if isinstance(exc, RequestError):
                raise
            raise RequestError(422, f"traffic change refused: {exc}") from None
        await self.reload()
        return 200, encode(self._status()), JSON

    def _authorize(self, headers: dict[bytes, bytes], token: str | None) -> None:
        if token is None:
            return
        given = headers.get(b"authorization", b"").decode()
        import hmac

        if not hmac.compare_digest(given, f"Bearer {token}"):
            raise RequestError(401, "missing or wrong bearer token (Authorization: Bearer <token>)")

    def _model_name(self) -> str:
        return self.state.policy.model if self.state is not None else self.config.endpoint

    def _model_metadata(self, path: str) -> tuple[int, bytes, list[Any]]:
        ready = path.endswith("/ready")
        name, version = _model_path(path[: -len("/ready")] if ready else path)
        state = self.state
        if state is None:
            return 503, encode_error("not ready"), JSON
        if name not in (self.config.endpoint, state.policy.model):
            raise RequestError(
                404, f"unknown model {name!r}; this server serves {self.config.endpoint!r}"
            )
        if version is not None and version not in state.deployments:
            raise RequestError(404, f"model {name!r} has no loaded version {version}")
        if ready:
            return 200, encode({"name": name, "ready": True}), JSON
        first = state.deployments[version or state.policy.arms[0].version]
        inputs = [{"name": c.name, "datatype": "FP64", "shape": [-1]} for c in first.schema.columns]
        return (
            200,
            encode(
                {
                    "name": name,
                    "versions": [str(v) for v in sorted(state.deployments)],
                    "platform": f"shipyard-{first.report.chosen}",
                    "inputs": inputs,
                    "outputs": [{"name": "probability", "datatype": "FP64", "shape": [-1]}],
                    "parameters": {
                        "traffic": state.policy.describe(),
                        "tensor_input": f"[n, {len(inputs)}] FP64",
                    },
                }
            ),
            JSON,
        )

    async def _predict(
        self,
        scope: Scope,
        receive: Receive,
        headers: dict[bytes, bytes],
        started: float,
        protocol: str,
        explicit: int | None,
    ) -> tuple[int, bytes, list[Any]]:
        body = await self._body(receive)
        state = self.state
        if state is None:
            raise RequestError(503, "the endpoint is still loading its models")
        key_header = headers.get(b"x-routing-key")
        key = key_header.decode() if key_header else None
        request_id = (headers.get(b"x-request-id") or b"").decode() or self._next_id()
        if explicit is not None:
            if explicit not in state.deployments:
                raise RequestError(
                    404, f"version {explicit} is not served; loaded: {sorted(state.deployments)}"
                )
            version, arm = explicit, "explicit"
        else:
            version, arm = state.router.choose(key), "primary"
        deployment = state.deployments[version]
        if protocol == "v2":
            header_length = headers.get(b"inference-header-content-length")
            matrix, request = decode_v2(
                body, deployment.schema, int(header_length) if header_length else None
            )
            if request.id:
                request_id = request.id
            if (
                key is None
                and request.parameters
                and "routing_key" in request.parameters
                and explicit is None
            ):
                key = str(request.parameters["routing_key"])
                version = state.router.choose(key)
                deployment = state.deployments[version]
        else:
            matrix = decode_mlflow(body, deployment.schema)
        scores = await deployment.batcher.submit(matrix)
        latency = time.perf_counter() - started
        if self.log is not None:
            await self.log.commit(
                self._record(request_id, version, arm, key, protocol, matrix, scores, latency)
            )
        self.metrics.request(version, arm, latency)
        for shadow in state.policy.shadows:
            if shadow != version and shadow in state.deployments:
                task = asyncio.get_running_loop().create_task(
                    self._shadow(state.deployments[shadow], request_id, key, protocol, matrix)
                )
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        extra = [
            (b"x-request-id", request_id.encode()),
            (b"x-model-version", str(version).encode()),
        ]
        if protocol == "v2":
            return (
                200,
                encode_v2(self._model_name(), version, request_id, scores, arm),
                JSON + extra,
            )
        return 200, encode_mlflow(scores), JSON + extra

    async def _shadow(
        self,
        deployment: Deployment,
        request_id: str,
        key: str | None,
        protocol: str,
        matrix: NDArray[np.float64],
    ) -> None:
        started = time.perf_counter()
        try:
            scores = await deployment.batcher.submit(matrix)
        except Exception as exc:
            self.metrics.error(500, f"shadow_v{deployment.version.version}")
            print(f"shadow v{deployment.version.version} failed: {exc}", flush=True)
            return
        if self.log is not None:
            version = deployment.version.version
            self.log.append(
                self._record(
                    request_id,
                    version,
                    "shadow",
                    key,
                    protocol,
                    matrix,
                    scores,
                    time.perf_counter() - started,
                )
            )

    def _record(
        self,
        request_id: str,
        version: int,
        arm: str,
        key: str | None,
        protocol: str,
        matrix: NDArray[np.float64],
        scores: NDArray[np.float64],
        latency: float,
    ) -> dict[str, Any]:
        return {
            "request_id": request_id,
            "time": time.time(),
            "endpoint": self.config.endpoint,
            "model": self._model_name(),
            "version": version,
            "arm": arm,
            "routing_key": key,
            "protocol": protocol,
            "inputs": matrix.tolist(),
            "outputs": scores.tolist(),
            "latency_ms": round(latency * 1000, 3),
        }

    def _update_gauges(self) -> None:
        if self.state is not None:
            for version, deployment in self.state.deployments.items():
                self.metrics.queue_depth[str(version)] = deployment.batcher.queue_depth

    def _status(self) -> dict[str, Any]:
        state = self.state
        if state is None:
            return {"ready": False}
        return {
            "endpoint": self.config.endpoint,
            "model": state.policy.model,
            "revision": state.policy.revision,
            "traffic": state.policy.describe(),
            "worker": os.getpid(),
            "versions": {
                str(v): {"backend": d.report.chosen, "note": d.report.note}
                for v, d in state.deployments.items()
            },
        }

    def _openapi_document(self) -> bytes:
        if self._openapi is None:
            from shipyard.serving.openapi import document

            names = (
                []
                if self.state is None
                else next(iter(self.state.deployments.values())).schema.names
            )
            self._openapi = encode(document(self.config.endpoint, names))
        return self._openapi


def _decode_admin(body: bytes) -> dict[str, Any]:
    import msgspec

    try:
        value = msgspec.json.decode(body or b"{}")
    except msgspec.DecodeError as exc:
        raise RequestError(400, f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RequestError(422, "expected a JSON object")
    return value


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
    from shipyard.workspace import Workspace

    config = ServeConfig.from_env()
    return ServingApp(Workspace.open(config.workspace), config)
