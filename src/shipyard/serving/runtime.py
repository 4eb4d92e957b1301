"""The endpoint runtime of one worker: load versions, build their state, watch the policy,
reload, retire, and log what was answered.

The state a request needs (policy, router, loaded versions) is one :class:`EndpointState`,
swapped as a whole when the policy changes: new versions load beside the old ones, one
reference changes, requests in flight finish on the state that accepted them, and versions
no longer in the policy are retired after the longest a request may wait.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from shipyard.errors import RequestError
from shipyard.serving.batcher import MicroBatcher
from shipyard.serving.text import TextValidator
from shipyard.serving.validation import InputValidator
from shipyard.types import text_columns

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from shipyard.features.online import OnlineStore
    from shipyard.governance.explain import Explainer, Explanation
    from shipyard.llm.format import LLM
    from shipyard.registry.models import ModelVersion
    from shipyard.serving.backends import BackendReport
    from shipyard.serving.features import OnlineFeatures
    from shipyard.serving.guard import Guard
    from shipyard.serving.llm import EnginePool
    from shipyard.serving.metrics import ServingMetrics
    from shipyard.serving.policy import Router, TrafficPolicy
    from shipyard.serving.predlog import PredictionLog
    from shipyard.types import Predictor, Schema
    from shipyard.workspace import Workspace

CONFIG_ENV = "SHIPYARD_SERVE_CONFIG"
NO_SCORES: NDArray[np.float64] = np.zeros(0)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    """How a worker serves: endpoint, batching, limits, tokens (passed to workers as JSON).

    ``reject_out_of_range``: answer 422 for values outside the range seen in training
    instead of scoring them and flagging them in the prediction log.
    ``reject_stale_features``: answer 503 to a raw event whose delayed feature views were
    not fed up to its time instead of scoring it flagged (``serving_reject_stale_features``).
    ``refuse_long_text``: answer 422 to a text over its model's token limit instead of
    scoring it truncated and flagged (``serving_refuse_long_text``).
    ``access_log``,
    ``tracing``, ``trace_sample_ratio``, ``otlp_endpoint``, ``log_level`` and ``log_format``
    come from the workspace's settings of the same names (``serving_*``, ``log_*``).
    """

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
    reject_out_of_range: bool = False
    reject_stale_features: bool = False
    refuse_long_text: bool = False
    model_threads: int = 1
    """Intra-op threads of a text model in this worker (``serving_model_threads``)."""
    access_log: bool = False
    tracing: str = "off"
    trace_sample_ratio: float = 1.0
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    log_level: str = "INFO"
    log_format: str = "json"
    metrics_dir: str | None = None
    """The server's shared metrics folder (one slot per worker); ``None``: this worker's own."""
    guardrails: bool = True
    """Watch the versions on probation and roll back on a trip (:mod:`.guard`)."""
    probation_s: float = 3600.0
    """How long after a policy revision brings a version in its guardrails are watched."""
    guard_interval_s: float = 0.5
    """How often the watcher judges the versions on probation."""

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
    """One loaded version: its predictor, batcher and input checks."""

    version: ModelVersion
    predictor: Predictor
    batcher: MicroBatcher
    report: BackendReport
    validator: InputValidator
    text: TextValidator | None = None
    """The text checks of a version whose input schema has string columns (None: tabular)."""
    json_output: str | None = None
    """The output column of a version that answers a JSON value per row (a string output
    column, such as entities); None: it answers probabilities."""
    explainer: Explainer | None = None
    """Built on the first ``explain=true`` request, from the native, hash-verified model."""
    building: asyncio.Future[Explainer] | None = None
    """The explainer's build, awaited by every request that asks before it is done."""
    descriptions: dict[str, str] = field(default_factory=dict)
    """Readable feature names for reason codes (from the lineage's feature views)."""
    llm: LLM | None = None
    """A language model's loaded version, bound to its base's engine (:mod:`.llm`)."""

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
    names: list[str] = field(default_factory=list)
    """The input columns every arm takes (a policy with mixed inputs is refused when set)."""
    features: OnlineFeatures | None = None
    """The feature stage for raw events, when the versions' lineage names feature views."""
    text: bool = False
    """The versions take text: requests are decoded by :mod:`.text` (chosen once, here)."""
    optional: frozenset[str] = frozenset()
    """Text columns every version declares nullable: a request may leave them out."""

    def assign(
        self,
        headers: dict[bytes, bytes],
        parameters: dict[str, Any] | None,
        explicit: int | None,
    ) -> tuple[Deployment, str, str | None]:
        """The deployment that answers, its arm (primary or explicit) and the routing key."""
        key = self.router.routing_key(headers, parameters)
        if explicit is None:
            return self.deployments[self.router.choose(key)], "primary", key
        deployment = self.deployments.get(explicit)
        if deployment is None:
            raise RequestError(
                404, f"version {explicit} is not served; loaded: {sorted(self.deployments)}"
            )
        return deployment, "explicit", key


@dataclass(slots=True)
class Accepted:
    """A prediction request decoded, assigned to a version and validated: what the later
    stages (score, log, shadow, encode) need."""

    protocol: str
    request_id: str
    key: str | None
    matrix: NDArray[Any]
    """float64 rows, or for a text model an object array of ``str`` (see :mod:`.text`)."""
    state: EndpointState
    deployment: Deployment
    version: int
    arm: str
    out_of_range: tuple[str, ...]
    stale: tuple[str, ...] = ()
    """Delayed feature views read stale for a raw event (see :mod:`.features`)."""
    events: dict[str, list[Any]] | None = None
    """The raw event columns as decoded, when the request carried events, not features."""
    event_time: float | None = None
    """When the request's traffic happened (epoch seconds), when the client said so."""
    explain: bool = False
    """The client asked for attributions and reason codes (``explain=true``)."""
    truncated: tuple[int, ...] = ()
    """Rows whose text is over the model's token limit: the model reads it truncated."""


class EndpointRuntime:
    """Loads and swaps the versions of one endpoint in one worker; logs their answers."""

    def __init__(self, workspace: Workspace, config: ServeConfig, metrics: ServingMetrics) -> None:
        self.workspace = workspace
        self.config = config
        self.metrics = metrics
        self.state: EndpointState | None = None
        self.log: PredictionLog | None = None
        self._poller: asyncio.Task[None] | None = None
        self._log_prober: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._reloading = asyncio.Lock()
        self._features: dict[tuple[str, tuple[tuple[str, str], ...]], OnlineFeatures] = {}
        self._id_prefix = uuid.uuid4().hex[:12]
        self._id_counter = 0
        self._explaining: ThreadPoolExecutor | None = None
        self._online: OnlineStore | None = None
        self.guard: Guard | None = None
        """The guardrail watcher (:mod:`.guard`), while ``config.guardrails`` is on."""
        self.engines: EnginePool | None = None
        """The language models' engines (:mod:`.llm`), once an LLM version loads."""

    @property
    def model(self) -> str:
        """The registered model the endpoint serves (the endpoint's name before loading)."""
        return self.state.policy.model if self.state is not None else self.config.endpoint

    def not_ready(self) -> str | None:
        """Why this worker cannot serve now, or ``None`` when it is ready.

        Ready means: every version of the policy is loaded on a backend that passed its
        parity check, and the prediction log (when on) takes writes.
        """
        if self.state is None:
            return "loading the traffic policy's versions"
        if self.log is not None and self.log.error is not None:
            return f"the prediction log cannot be written ({self.log.error})"
        features = self.state.features
        if features is not None and features.problem is not None:
            return f"raw events cannot be served: {features.problem}"
        return None

    def next_id(self) -> str:
        """A unique request id: a random per-worker prefix and a counter (no uuid per request)."""
        self._id_counter += 1
        return f"{self._id_prefix}-{self._id_counter}"

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open and probe the prediction log, load the current policy's versions, watch both."""
        from shipyard.serving.policy import get_policy
        from shipyard.serving.predlog import PredictionLog, log_folder, worker_name

        if self.config.log_predictions:
            self.log = PredictionLog(
                log_folder(self.workspace, self.config.endpoint),
                worker=worker_name(),
                fsync_interval_s=self.config.fsync_interval_s,
                on_write=self.metrics.log_write,
            )
            await self.log.probe()  # not writable: start, but not ready (probed again)
            self._log_prober = asyncio.get_running_loop().create_task(self._watch_log(self.log))
        policy = await asyncio.to_thread(get_policy, self.workspace, self.config.endpoint)
        self.state = await self._build(policy, {})
        self._poller = asyncio.get_running_loop().create_task(self._watch_policy())
        if self.config.guardrails:
            from shipyard.serving.guard import Guard

            self.guard = Guard(
                self.workspace,
                self.config.endpoint,
                probation_s=self.config.probation_s,
                interval_s=self.config.guard_interval_s,
            )
            self.guard.start(lambda: self.state.policy if self.state is not None else None)

    async def stop(self) -> None:
        """Stop watching, close batchers and the prediction log."""
        for task in (self._poller, self._log_prober):
            if task is not None:
                task.cancel()
        if self.guard is not None:
            await self.guard.stop()
        if self.state is not None:
            for deployment in self.state.deployments.values():
                await deployment.batcher.close()
        for features in self._features.values():
            await features.stop()
        if self.log is not None:
            self.log.close()
        if self._explaining is not None:
            self._explaining.shutdown(wait=False)
        if self._online is not None:
            self._online.close()
        if self.engines is not None:
            await asyncio.to_thread(self.engines.close)

    async def reload(self) -> None:
        """Load the latest policy beside the current one, then switch atomically."""
        from shipyard.serving.policy import get_policy

        async with self._reloading:
            old = self.state
            policy = await asyncio.to_thread(get_policy, self.workspace, self.config.endpoint)
            self.state = await self._build(policy, old.deployments if old else {})
            if self.guard is not None:
                self.guard.switched(old.policy if old else None, policy)
            if old is not None:
                retired = [d for v, d in old.deployments.items() if v not in self.state.deployments]
                if retired:
                    self.spawn(self._retire(retired))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, holding a reference until it ends."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _build(self, policy: TrafficPolicy, loaded: dict[int, Deployment]) -> EndpointState:
        from shipyard.serving.policy import Router

        deployments: dict[int, Deployment] = {}
        for version in sorted(policy.versions):
            existing = loaded.get(version)
            if existing is None or existing.version.name != policy.model:
                existing = await asyncio.to_thread(self._load, policy.model, version)
            deployments[version] = existing
        names = deployments[policy.arms[0].version].validator.names
        text = _takes_text(policy.model, deployments)
        features = await self._feature_stage([d.version for d in deployments.values()], names)
        self.metrics.set_state(
            policy.revision, {v: d.report.chosen for v, d in deployments.items()}
        )
        optional = frozenset.intersection(
            *(
                frozenset(c.name for c in d.schema.columns if c.nullable and c.dtype == "string")
                for d in deployments.values()
            )
        )
        return EndpointState(
            policy,
            Router(policy),
            deployments,
            names,
            features,
            text,
            optional if text else frozenset(),
        )

    async def _feature_stage(
        self, versions: list[ModelVersion], names: list[str]
    ) -> OnlineFeatures | None:
        """The raw-event feature stage of versions whose lineage names feature views (one per
        set of views and definitions, kept across policy changes)."""
        from shipyard.serving.features import OnlineFeatures, check_same_views

        check_same_views(versions)
        lineage = versions[0].lineage
        if not lineage.views:
            return None
        key = (lineage.views, tuple(sorted(lineage.view_hashes.items())))
        features = self._features.get(key)
        if features is None:
            features = OnlineFeatures(
                self.workspace,
                versions[0],
                names,
                max_batch_size=self.config.max_batch_size,
                poll_interval_s=self.config.poll_interval_s,
                timeout_ms=self.config.timeout_ms,
                reject_stale=self.config.reject_stale_features,
                on_stale=self.metrics.stale,
            )
            await features.start()
            self._features[key] = features
        return features

    def _load(self, model: str, version: int) -> Deployment:
        from shipyard.registry.models import ModelRegistry
        from shipyard.serving.backends import load_backend

        registry = ModelRegistry(self.workspace)
        predictor, report = load_backend(registry, model, version)
        _require_parity(model, version, report)
        mv = registry.get(model, version)
        llm = self._bind_llm(mv, predictor) if mv.framework == "llm" else None
        # the observer reads the batcher's queue after each model call
        observe = self.metrics.batch_observer(version, report.chosen, lambda: batcher.queue_depth)
        batcher = MicroBatcher(
            predictor.predict,
            max_batch_size=self.config.max_batch_size,
            max_wait_ms=self.config.max_wait_ms,
            # a generation takes seconds, not milliseconds: the engine bounds its own queue
            timeout_ms=self.config.timeout_ms if llm is None else 600_000.0,
            on_batch=observe,
            timed=self.config.tracing != "off",
        )
        validator = InputValidator(
            mv.input_schema, reject_out_of_range=self.config.reject_out_of_range
        )
        text = None
        model_object = getattr(predictor, "model", predictor)
        bind_online = getattr(model_object, "bind_online", None)
        if bind_online is not None:  # state kept across requests (a recommender's sessions)
            bind_online(self._online_store(), model)
        if text_columns(mv.input_schema):  # the model object's token limit and checks
            with_threads = getattr(model_object, "with_threads", None)
            if with_threads is not None:  # an encoder: PyTorch's or ONNX Runtime's threads
                model_object = with_threads(self.config.model_threads)
                predictor.model = model_object  # type: ignore[attr-defined]
            text = TextValidator(
                mv.input_schema,
                model_object,
                refuse_long_text=self.config.refuse_long_text,
                languages=mv.params.get("languages") or (),
            )
        outputs = text_columns(mv.output_schema) if mv.output_schema else []
        json_output = outputs[0] if outputs else None
        return Deployment(mv, predictor, batcher, report, validator, text, json_output, llm=llm)

    def _bind_llm(self, mv: ModelVersion, predictor: Predictor) -> LLM:
        """Bind a language model's version to its base's engine (one per GGUF, :mod:`.llm`)."""
        from shipyard.serving.llm import EnginePool

        if self.engines is None:
            self.engines = EnginePool(self.workspace)
        llm: LLM = predictor.model  # type: ignore[attr-defined]
        self.engines.attach(mv, llm)
        return llm

    def _online_store(self) -> OnlineStore:
        """The workspace's online store, opened once per worker (for ``bind_online``)."""
        if self._online is None:
            from shipyard.features.online import open_online_store

            self._online = open_online_store(self.workspace)
        return self._online

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
            except Exception:  # keep serving the current policy; say why
                logger.exception(
                    "worker %d: reloading the traffic policy of %r failed; still serving "
                    "revision %s",
                    os.getpid(),
                    self.config.endpoint,
                    self.state.policy.revision if self.state else None,
                    extra={"endpoint": self.config.endpoint},
                )

    async def _watch_log(self, log: PredictionLog) -> None:
        """Probe the prediction log's folder every poll interval: readiness follows it."""
        while True:
            await asyncio.sleep(self.config.poll_interval_s)
            try:
                await log.probe()
            except asyncio.CancelledError:
                raise
            except Exception:  # never stop probing
                logger.exception("probing the prediction log of %r failed", self.config.endpoint)

    async def _retire(self, deployments: list[Deployment]) -> None:
        # requests in flight hold the old state; give them the full timeout to finish
        await asyncio.sleep(self.config.timeout_ms / 1000 + 1)
        for deployment in deployments:
            await deployment.batcher.close()

    # -- explanations ----------------------------------------------------------------------

    async def explainer(self, deployment: Deployment) -> Explainer:
        """The deployment's explainer, built once from its native, hash-verified model file.

        Raises RequestError(422) naming the model type when the version cannot be explained.
        """
        if deployment.explainer is not None:
            return deployment.explainer
        if deployment.text is not None:
            mv = deployment.version
            raise RequestError(
                422,
                f"explain: {mv.name} v{mv.version} ({mv.model_type}) takes text; attributions "
                "and reason codes are computed over numeric features only",
            )
        if deployment.building is None:  # one build, however many requests wait for it
            deployment.building = asyncio.ensure_future(
                asyncio.to_thread(self._build_explainer, deployment)
            )
        try:
            deployment.explainer = await asyncio.shield(deployment.building)
        except RequestError:  # cannot be explained: every request gets the same 422
            raise
        except Exception:  # a failed load (I/O, integrity): the next request tries again
            deployment.building = None
            raise
        return deployment.explainer

    async def explain(self, explainer: Explainer, matrix: NDArray[np.float64]) -> Explanation:
        """``explainer(matrix)`` on this worker's one explaining thread, first come first served.

        TreeSHAP costs ~100x a prediction: off the loop (the booster releases the GIL) the
        worker keeps answering other requests; one thread per worker keeps explained requests
        in order instead of many threads sharing the cores in turn (long tails).
        """
        if self._explaining is None:
            self._explaining = ThreadPoolExecutor(1, thread_name_prefix="explain")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._explaining, explainer, matrix)

    def _build_explainer(self, deployment: Deployment) -> Explainer:
        from shipyard.errors import FeatureDefinitionError
        from shipyard.governance.explain import Explainer, UnexplainableModelError
        from shipyard.governance.reasons import feature_descriptions
        from shipyard.registry.models import ModelRegistry

        mv = deployment.version
        native = ModelRegistry(self.workspace).load(mv.name, mv.version)  # SHA-256 checked
        try:
            explainer = Explainer.of(native)
        except UnexplainableModelError as exc:
            message = f"explain: {mv.name} v{mv.version} ({mv.model_type}) cannot be explained"
            raise RequestError(422, f"{message}; {exc}") from None
        if mv.lineage.views:
            try:
                deployment.descriptions = feature_descriptions(mv.lineage.views)
            except FeatureDefinitionError:  # the views moved: column names still read
                logger.warning("explain: feature views %r cannot be loaded", mv.lineage.views)
        return explainer

    # -- the prediction log ----------------------------------------------------------------

    async def log_answer(
        self,
        request: Accepted,
        scores: NDArray[np.float64],
        latency: float,
        explanations: list[dict[str, Any]] | None = None,
    ) -> None:
        """Write the record of an answer; return once it is written (before the answer).

        Raises RequestError(503) when the record cannot be written: no prediction is
        answered unlogged.
        """
        from shipyard.serving.predlog import PredictionLogClosedError

        deployment = request.deployment
        if self.log is not None:
            record = self._record(
                request,
                deployment,
                request.arm,
                scores,
                latency,
                request.out_of_range,
                request.truncated,
            )
            if explanations is not None:  # absent (NULL) unless the client asked
                record["explanations"] = explanations
            try:
                await self.log.commit(record)
            except (OSError, PredictionLogClosedError) as exc:
                raise RequestError(503, unlogged_message(str(exc))) from exc
        if self.guard is not None:  # JSON answers have no score: latency and errors only
            numeric = scores if deployment.json_output is None else NO_SCORES
            self.guard.observe(request.version, numeric, latency)

    def failed(self, request: Accepted, error: Exception) -> None:
        """Count a 5xx answer to an accepted request against its version (the guardrails)."""
        if self.guard is not None and (not isinstance(error, RequestError) or error.status >= 500):
            self.guard.failed(request.version)

    def shadow(self, request: Accepted) -> None:
        """Score the request's rows with the policy's shadow versions in the background; log."""
        deployments = request.state.deployments
        for version in request.state.policy.shadows:
            if version != request.version and version in deployments:
                self.spawn(self._shadow(deployments[version], request))

    async def _shadow(self, deployment: Deployment, request: Accepted) -> None:
        version = deployment.version.version
        started = time.perf_counter()
        out_of_range: tuple[str, ...] = ()
        truncated: tuple[int, ...] = ()
        try:
            if deployment.text is None:
                out_of_range = deployment.validator.check(request.matrix)
            else:
                truncated = await asyncio.to_thread(deployment.text.check, request.matrix)
            scores = await deployment.batcher.submit(request.matrix)
        except Exception as exc:
            self.metrics.error(500, "shadow")
            logger.warning(
                "shadow v%d failed on request %s: %s",
                version,
                request.request_id,
                exc,
                extra={
                    "request_id": request.request_id,
                    "endpoint": self.config.endpoint,
                    "version": version,
                },
            )
            return
        if self.log is not None:
            latency = time.perf_counter() - started
            record = self._record(
                request, deployment, "shadow", scores, latency, out_of_range, truncated
            )
            self.log.append(record)

    def _record(
        self,
        request: Accepted,
        deployment: Deployment,
        arm: str,
        scores: NDArray[Any],
        latency: float,
        out_of_range: tuple[str, ...],
        truncated: tuple[int, ...] = (),
    ) -> dict[str, Any]:
        """The prediction-log record of ``deployment``'s answer to ``request``.

        A text request's texts go to ``texts`` (as received, not truncated), a JSON answer
        to ``outputs_json``: ``inputs`` and ``outputs`` hold numbers only.
        """
        rows = request.matrix.tolist()
        answers = scores.tolist()
        record: dict[str, Any] = {
            "request_id": request.request_id,
            "time": time.time(),
            "endpoint": self.config.endpoint,
            "model": self.model,
            "version": deployment.version.version,
            "arm": arm,
            "routing_key": request.key,
            "protocol": request.protocol,
            "texts" if deployment.text is not None else "inputs": rows,
            "outputs" if deployment.json_output is None else "outputs_json": answers,
            "latency_ms": round(latency * 1000, 3),
        }
        if truncated:  # absent (NULL) when every text fits the model
            record["truncated"] = truncated
        if out_of_range:  # absent (NULL in queries) when every value was seen in training
            record["out_of_range"] = out_of_range
        if request.event_time is not None:  # absent (NULL) unless the client sent it
            record["event_time"] = request.event_time
        if request.events is not None:  # a raw event: inputs are the features computed
            record["events"] = request.events
            if request.stale:
                record["stale_features"] = request.stale
        return record


def _takes_text(model: str, deployments: dict[int, Deployment]) -> bool:
    """Whether the policy's versions take text; SchemaError when some do and some do not."""
    kinds = {v: d.text is not None for v, d in deployments.items()}
    if len(set(kinds.values())) > 1:
        from shipyard.errors import SchemaError

        text = sorted(v for v, k in kinds.items() if k)
        raise SchemaError(
            f"{model}: a traffic policy serves one kind of input; versions {text} take text, "
            f"versions {sorted(v for v, k in kinds.items() if not k)} take numbers"
        )
    return any(kinds.values())


def unlogged_message(reason: str) -> str:
    """The 503 answer to a prediction that cannot be logged."""
    return (
        f"the prediction log cannot be written ({reason}); predictions are refused rather "
        "than served unlogged until it can (see /v2/health/ready)"
    )


def _require_parity(model: str, version: int, report: BackendReport) -> None:
    """Refuse a backend whose parity check (in ``serving.json``) did not pass."""
    from shipyard.errors import IntegrityError
    from shipyard.serving.backends import PARITY_TOLERANCE

    chosen = report.candidates.get(report.chosen)
    if chosen is None or chosen.note or not chosen.max_abs_diff <= PARITY_TOLERANCE:
        found = "no check" if chosen is None else chosen.note or f"max |Δ| {chosen.max_abs_diff}"
        raise IntegrityError(
            f"{model} v{version}: backend {report.chosen!r} has not passed its parity check "
            f"({found}); prepare the version again (shipyard serve does)"
        )
