"""Language-model versions in a serving worker: one engine per GGUF, their adapters, the
prediction-log record of a completion, shadows, and the engine gauges of ``/metrics``.

A worker loads ONE engine per GGUF SHA-256 (:class:`EnginePool`), shared by every version
of that base (versions that differ by pinned prompt or sampling defaults) and every LoRA
adapter registered over the base version (the ``llm_adapters`` table, read at load and
once more when a request names an adapter the engine does not hold). The engine starts
when the first such version loads and is closed when the worker stops. The OpenAI routes
(:mod:`shipyard.serving.openai`) and the V2/MLflow routes (through the micro-batcher and
:class:`shipyard.llm.format.LLMFormat`) use the same engine.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shipyard.llm.engine import Engine
    from shipyard.llm.format import LLM
    from shipyard.llm.model import LoadedModel
    from shipyard.llm.semantic import SemanticCache
    from shipyard.llm.types import GenerationResult
    from shipyard.registry.models import ModelVersion
    from shipyard.serving.metrics import ServingMetrics
    from shipyard.serving.runtime import EndpointState
    from shipyard.workspace import Workspace

logger = logging.getLogger(__name__)


@dataclass
class Base:
    """One loaded GGUF in this worker: its model, its engine, the adapters it holds."""

    model: LoadedModel
    engine: Engine
    versions: set[tuple[str, int]] = field(default_factory=set)
    """The (model, base version) pairs whose adapters were read into the engine."""


class EnginePool:
    """The engines of one worker, one per GGUF SHA-256 (module doc)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._bases: dict[str, Base] = {}
        self._lock = threading.Lock()
        self.semantic: SemanticCache | None = None
        """The semantic response cache (``llm_semantic_cache``), MiniLM loaded with the
        first LLM version so that no request waits for it."""

    def attach(self, mv: ModelVersion, llm: LLM) -> None:
        """Bind ``llm`` (version ``mv``, loaded and hash-verified) to its base's engine,
        loading the model and starting the engine on first use; read its adapters."""
        with self._lock:
            base = self._bases.get(llm.spec.sha256)
            if base is None:
                from shipyard.llm.engine import Engine, EngineConfig
                from shipyard.llm.model import load_model

                started = time.perf_counter()
                model = load_model(llm.gguf, sha256=llm.spec.sha256)
                engine = Engine(model, EngineConfig.from_settings(self.workspace.settings), {})
                engine.start()
                base = self._bases[llm.spec.sha256] = Base(model, engine)
                logger.info(
                    "loaded %s and started its engine in %.1f s (one engine for every "
                    "version of this file in this worker)",
                    llm.gguf.name,
                    time.perf_counter() - started,
                    extra={"model": mv.name, "version": mv.version},
                )
            llm.bind(base.model, base.engine)
            settings = self.workspace.settings
            if settings.llm_semantic_cache and self.semantic is None:
                from shipyard.llm.semantic import SemanticCache

                cache = SemanticCache(threshold=settings.llm_semantic_threshold)
                cache.embed(["warm up"])  # load MiniLM now, not on the first request
                self.semantic = cache
            if (mv.name, mv.version) not in base.versions:
                base.versions.add((mv.name, mv.version))
                self._add_adapters(base, mv.name, mv.version)

    def refresh(self, mv: ModelVersion, llm: LLM) -> None:
        """Read the adapters of ``mv`` again (a request named one the engine lacks)."""
        with self._lock:
            base = self._bases.get(llm.spec.sha256)
            if base is not None:
                self._add_adapters(base, mv.name, mv.version)

    def _add_adapters(self, base: Base, model: str, version: int) -> None:
        """Add the latest version of each adapter of ``model`` v``version`` not held yet."""
        try:
            from shipyard.llm.lora import list_adapters
        except ModuleNotFoundError:  # adapters are not installed here: the base alone
            return
        held = set(base.engine.adapters)
        for record in list_adapters(self.workspace, model, version):  # latest first per name
            if record.name in held:
                continue
            adapter = record.load()  # its SHA-256 checked
            adapter.name = record.name
            base.engine.add_adapter(adapter)
            held.add(record.name)
            logger.info(
                "adapter %r v%d of %s v%d added to the engine",
                record.name,
                record.version,
                model,
                version,
            )

    def close(self) -> None:
        """Close every engine (the worker is stopping)."""
        with self._lock:
            for base in self._bases.values():
                base.engine.close()
            self._bases.clear()


def completion_record(
    *,
    request_id: str,
    endpoint: str,
    model: str,
    version: int,
    arm: str,
    routing_key: str | None,
    prompt: str,
    result: GenerationResult,
    latency_s: float,
) -> dict[str, Any]:
    """The prediction-log record of one completion (``texts``: the prompt as sent or
    rendered; ``outputs_json``: the completion with its tokens, timings and adapter)."""
    return {
        "request_id": request_id,
        "time": time.time(),
        "endpoint": endpoint,
        "model": model,
        "version": version,
        "arm": arm,
        "routing_key": routing_key,
        "protocol": "openai",
        "texts": [[prompt]],
        "outputs_json": [answer_json(result)],
        "latency_ms": round(latency_s * 1000, 3),
    }


def answer_json(result: GenerationResult) -> dict[str, Any]:
    """What the prediction log keeps of a completion."""
    return {
        "text": result.text,
        "finish_reason": result.finish_reason,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "cached_tokens": result.cached_tokens,
        "ttft_ms": round(result.ttft_s * 1000, 3),
        "tpot_ms": round(result.tpot_s * 1000, 3),
        "adapter": result.adapter,
    }


def publish(metrics: ServingMetrics, state: EndpointState) -> None:
    """Set the engine gauges of every LLM version (at each scrape)."""
    for version, deployment in state.deployments.items():
        llm = deployment.llm
        if llm is not None and llm.engine is not None:
            metrics.set_llm_state(version, llm.engine.stats())
