"""Continuous batching on the CPU: many generations share one forward pass per step.

One background thread runs the scheduler. Every step (iteration-level scheduling):

1. cancelled sequences leave, and their KV slots are free;
2. waiting requests are admitted into free slots, first come first served; the longest
   cached block-aligned prefix of each prompt is copied from the prefix cache;
3. one forward pass computes one decode token for **every** running sequence and prefill
   chunks for admitted ones: at most ``prefill_chunk`` prompt tokens per step in total;
4. each sequence samples its token; finished ones (end-of-sequence, stop string,
   ``max_tokens``, the window) leave at once.

**Fairness rule**: a long prompt never stalls the running decodes for more than one chunk.
Prompts are prefilled ``prefill_chunk`` tokens per step at most, in admission order, in the
same forward as every running sequence's next token; a 2,000-token prompt costs the others
four slower steps, not one 2,000-token stall. Waiting requests are admitted strictly in
arrival order, so a short request never overtakes, nor is starved by, a long one.

Keys and values live in a fixed pool (:mod:`shipyard.llm.kv`): ``max_running`` slots of
``max_context`` positions, reserved at start; see that module for why, and for the prefix
cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.errors import ParameterError, RequestError, invalid_parameter
from shipyard.llm.types import (
    LORA_MODULES,
    EngineStats,
    FinishReason,
    GenerationResult,
    LoraAdapter,
    SamplingParams,
    TokenEvent,
)

if TYPE_CHECKING:
    import torch

    from shipyard.llm.kv import KVPool, PrefixCache
    from shipyard.llm.model import LoadedModel
    from shipyard.llm.sampling import IncrementalDecoder, StopMatcher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """How much the engine runs at once: ``max_running`` sequences in the batch (and KV
    slots), ``max_waiting`` queued requests, ``max_context`` tokens per sequence, at most
    ``prefill_chunk`` prompt tokens per step, ``prefix_cache_bytes`` of cached prefixes in
    ``block_size``-token blocks, ``threads`` for PyTorch (default: the CPU count)."""

    max_running: int = 32
    max_waiting: int = 256
    max_context: int = 2048
    prefill_chunk: int = 512
    prefix_cache_bytes: int = 256 << 20
    block_size: int = 16
    threads: int | None = None

    def __post_init__(self) -> None:
        rules = {
            "max_running": (self.max_running, 1),
            "max_waiting": (self.max_waiting, 0),
            "max_context": (self.max_context, 2),
            "prefill_chunk": (self.prefill_chunk, 1),
            "prefix_cache_bytes": (self.prefix_cache_bytes, 0),
            "block_size": (self.block_size, 1),
        }
        for name, (value, least) in rules.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise invalid_parameter(name, "EngineConfig", f"an integer >= {least}", value)
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise invalid_parameter(
                "threads", "EngineConfig", "None or an integer >= 1", self.threads
            )

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> EngineConfig:
        """The engine configuration from Shipyard's ``llm_*`` settings."""
        values: dict[str, Any] = {
            "max_running": settings.llm_max_running,
            "max_waiting": settings.llm_max_waiting,
            "max_context": settings.llm_max_context,
            "prefix_cache_bytes": settings.llm_prefix_cache_mb << 20,
        }
        return cls(**(values | overrides))


class EngineFullError(RequestError):
    """The waiting queue is full: the server answers 503 and the client retries later."""

    def __init__(self, waiting: int, limit: int) -> None:
        super().__init__(503, f"{waiting} requests waiting, the limit is {limit}; retry later")


class Generation:
    """One submitted request: stream its :class:`TokenEvent` s with ``async for``, await
    :meth:`result`, block on :meth:`wait` from a thread, or :meth:`cancel` it."""

    def __init__(
        self,
        request_id: str,
        prompt_tokens: int,
        adapter: str | None,
        loop: asyncio.AbstractEventLoop | None,
        wake: Any,
    ) -> None:
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.adapter = adapter
        self._loop = loop
        self._events: asyncio.Queue[TokenEvent] | None = asyncio.Queue() if loop else None
        self._wake = wake
        self._cancelled = False
        self._done = threading.Event()
        self._result: GenerationResult | None = None
        self._lock = threading.Lock()
        self._futures: list[asyncio.Future[GenerationResult]] = []

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    @property
    def done(self) -> bool:
        """Whether the generation has finished (any reason)."""
        return self._done.is_set()

    def cancel(self) -> None:
        """Stop generating (thread-safe): the sequence leaves the batch and frees its KV slot
        at the next step boundary; it finishes with ``cancelled``."""
        self._cancelled = True
        self._wake()

    def __aiter__(self) -> AsyncIterator[TokenEvent]:
        if self._events is None:
            raise RuntimeError(
                "this generation was submitted without an event loop; use wait() or submit "
                "from a coroutine (or pass loop=) to stream its events"
            )
        return self._stream(self._events)

    async def _stream(self, events: asyncio.Queue[TokenEvent]) -> AsyncIterator[TokenEvent]:
        while True:
            event = await events.get()
            yield event
            if event.finish_reason is not None:
                return

    async def result(self) -> GenerationResult:
        """The finished generation (waits for it without blocking the event loop)."""
        with self._lock:
            if self._result is not None:
                return self._result
            future: asyncio.Future[GenerationResult] = asyncio.get_running_loop().create_future()
            self._futures.append(future)
        return await future

    def wait(self, timeout: float | None = None) -> GenerationResult:
        """Block this thread until the generation finishes; ``TimeoutError`` past ``timeout``."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"generation {self.request_id} did not finish in {timeout} s")
        assert self._result is not None
        return self._result

    def _emit(self, event: TokenEvent) -> None:
        if self._loop is not None and self._events is not None:
            # A closed loop raises RuntimeError: nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    def _finish(self, result: GenerationResult) -> None:
        with self._lock:
            self._result = result
            futures, self._futures = self._futures, []
        self._done.set()
        for future in futures:
            with contextlib.suppress(RuntimeError):
                future.get_loop().call_soon_threadsafe(_resolve, future, result)


def _resolve(future: asyncio.Future[GenerationResult], result: GenerationResult) -> None:
    if not future.done():
        future.set_result(result)


@dataclass
class _Sequence:
    """A request's state inside the engine thread."""

    gen: Generation
    prompt: list[int]
    params: SamplingParams
    max_new: int
    adapter: LoraAdapter | None
    adapter_key: str | None
    submitted: float
    decoder: IncrementalDecoder
    stopper: StopMatcher
    generator: torch.Generator | None
    constraint: Any = None
    slot: int = -1
    computed: int = 0
    cached: int = 0
    admitted: float = 0.0
    first_token: float = 0.0
    generated: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    @property
    def prefilled(self) -> bool:
        return self.computed >= len(self.prompt)


@dataclass
class _Counters:
    prefix_lookup_tokens: int = 0
    prefix_hit_tokens: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    steps: int = 0
    cancelled: int = 0


class Engine:
    """Serves generations of one model: continuous batching over a fixed KV pool with
    prefix caching and per-request LoRA adapters. ``start()`` it, ``submit()`` requests,
    ``close()`` it."""

    def __init__(
        self,
        model: LoadedModel,
        config: EngineConfig | None = None,
        adapters: Mapping[str, LoraAdapter] | None = None,
    ) -> None:
        self.model = model
        self.config = config or EngineConfig()
        if self.config.max_context > model.config.max_context:
            raise invalid_parameter(
                "max_context",
                "EngineConfig",
                f"at most the model's {model.config.max_context} positions",
                self.config.max_context,
            )
        self._adapters: dict[str, tuple[LoraAdapter, str]] = {}
        self._adapter_versions = itertools.count()
        for adapter in (adapters or {}).values():
            self.add_adapter(adapter)
        self._cond = threading.Condition()
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        self._counters = _Counters()
        self._ids = itertools.count(1)
        self._pool: KVPool | None = None
        self._prefix: PrefixCache | None = None

    # -- public API ---------------------------------------------------------------------

    def start(self) -> Engine:
        """Reserve the KV pool and start the scheduler thread (idempotent)."""
        from shipyard.llm.kv import KVPool, PrefixCache, kv_bytes_per_token

        if self._thread is not None:
            return self
        c, mc = self.config, self.model.config
        self._pool = KVPool(
            layers=mc.layers,
            slots=c.max_running,
            kv_heads=mc.kv_heads,
            max_context=c.max_context,
            head_dim=mc.head_dim,
        )
        self._prefix = PrefixCache(
            block_size=c.block_size,
            max_bytes=c.prefix_cache_bytes,
            bytes_per_token=kv_bytes_per_token(mc.layers, mc.kv_heads, mc.head_dim),
        )
        self._thread = threading.Thread(target=self._run, name="shipyard-llm-engine", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the scheduler; every unfinished generation ends with ``error``."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._fail(list(self._running), "the engine was closed before this generation finished")
        self._running.clear()
        with self._cond:
            waiting = list(self._waiting)
            self._waiting.clear()
        self._fail(waiting, "the engine was closed before this generation finished")

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_adapter(self, adapter: LoraAdapter) -> None:
        """Serve ``adapter`` by its name (replacing one of the same name); it must have been
        trained on this model's weights."""
        if adapter.base_sha256 != self.model.sha256:
            raise ParameterError(
                f"adapter {adapter.name!r} was trained on the base with SHA-256 "
                f"{adapter.base_sha256[:12]}..., not this model's {self.model.sha256[:12]}...; "
                "load it over its own base"
            )
        c = self.model.config
        for (layer, module), (a, b) in adapter.weights.items():
            if module not in LORA_MODULES or not 0 <= layer < c.layers:
                raise ParameterError(
                    f"adapter {adapter.name!r} targets ({layer}, {module!r}); expected a layer "
                    f"in [0, {c.layers}) and a module in {LORA_MODULES}"
                )
            if a.shape[0] != adapter.rank or b.shape[1] != adapter.rank:
                raise ParameterError(
                    f"adapter {adapter.name!r} ({layer}, {module!r}): A must be [rank, in] and "
                    f"B [out, rank] with rank {adapter.rank}; got {tuple(a.shape)} and "
                    f"{tuple(b.shape)}"
                )
        key = f"{adapter.name}#{next(self._adapter_versions)}"
        self._adapters[adapter.name] = (adapter, key)

    @property
    def adapters(self) -> list[str]:
        """Names of the adapters served, sorted."""
        return sorted(self._adapters)

    def stats(self) -> EngineStats:
        """A snapshot of queue depth, batch, KV pool, prefix cache and token counters."""
        n = self._counters
        pool, prefix = self._pool, self._prefix
        return EngineStats(
            waiting=len(self._waiting),
            running=len(self._running),
            max_running=self.config.max_running,
            max_waiting=self.config.max_waiting,
            kv_slots_used=pool.used if pool else 0,
            kv_bytes=pool.nbytes if pool else 0,
            prefix_cache_bytes=prefix.nbytes if prefix else 0,
            prefix_lookup_tokens=n.prefix_lookup_tokens,
            prefix_hit_tokens=n.prefix_hit_tokens,
            prompt_tokens=n.prompt_tokens,
            generated_tokens=n.generated_tokens,
            steps=n.steps,
            cancelled=n.cancelled,
        )

    def submit(
        self,
        prompt_tokens: Sequence[int],
        params: SamplingParams,
        *,
        adapter: str | None = None,
        request_id: str | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Generation:
        """Queue a generation; raises :class:`EngineFullError` (503) when the queue is full,
        ``RequestError`` 400 for a prompt that does not fit, 404 for an unknown adapter."""
        from shipyard.llm.sampling import IncrementalDecoder, StopMatcher, make_generator

        prompt = [int(t) for t in prompt_tokens]
        window = self.config.max_context
        if not prompt:
            raise RequestError(400, "the prompt is empty; send at least one token")
        if len(prompt) > window - 1:
            raise RequestError(
                400,
                f"the prompt has {len(prompt)} tokens; the context window is {window} tokens "
                f"and must leave room for at least one new token (at most {window - 1})",
            )
        vocab = self.model.config.vocab
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise RequestError(400, f"prompt token ids must be in [0, {vocab}); got {prompt!r:.80}")
        lora, key = self._adapter(adapter)
        constraint = self._constraint(params)
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        gen = Generation(
            request_id or f"gen-{next(self._ids)}", len(prompt), adapter, loop, self._notify
        )
        seq = _Sequence(
            gen=gen,
            prompt=prompt,
            params=params,
            max_new=min(params.max_tokens, window - len(prompt)),
            adapter=lora,
            adapter_key=key,
            submitted=time.perf_counter(),
            decoder=IncrementalDecoder(self.model.tokenizer),
            stopper=StopMatcher(params.stop),
            generator=make_generator(params.seed) if params.temperature > 0 else None,
            constraint=constraint,
        )
        with self._cond:
            if self._closing:
                raise RequestError(503, "the engine is closed; it takes no new requests")
            if len(self._waiting) >= self.config.max_waiting:
                raise EngineFullError(len(self._waiting), self.config.max_waiting)
            self._waiting.append(seq)
            self._cond.notify_all()
        return gen

    # -- helpers of submit --------------------------------------------------------------

    def _adapter(self, name: str | None) -> tuple[LoraAdapter | None, str | None]:
        if name is None:
            return None, None
        found = self._adapters.get(name)
        if found is None:
            loaded = ", ".join(self.adapters) or "none"
            raise RequestError(404, f"no adapter {name!r} is loaded; loaded adapters: {loaded}")
        return found

    def _constraint(self, params: SamplingParams) -> Any:
        if params.json_schema is None:
            return None
        try:
            from shipyard.llm.structured import json_constraint  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise RequestError(
                501, f"structured output is not available in this installation ({exc})"
            ) from exc
        try:
            return json_constraint(params.json_schema, self.model)
        except ParameterError as exc:
            raise RequestError(400, f"json_schema: {exc}") from exc

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- the scheduler thread -----------------------------------------------------------

    def _run(self) -> None:
        import torch

        torch.set_num_threads(self.config.threads or os.cpu_count() or 1)
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._closing or self._waiting or self._running):
                        self._cond.wait()
                    if self._closing:
                        return
                try:
                    self._step()
                except Exception as exc:  # a failed step fails its batch, not the engine
                    log.exception("engine step failed")
                    failed, self._running = self._running, []
                    for seq in failed:
                        self._release(seq)
                    self._fail(failed, f"generation failed: {exc}")

    def _step(self) -> None:
        from shipyard.llm.model import forward

        self._drop_cancelled()
        self._admit()
        if not self._running:
            return
        batch, owners = self._batch()
        assert self._pool is not None
        logits = forward(self.model, batch, self._pool)
        self._counters.steps += 1
        for row, seq in enumerate(owners):
            if seq.prefilled and not seq.generated:
                self._store_prefix(seq)
            ending = self._advance(seq, logits[row])
            if ending is not None:
                # Leave the batch and free the slot before anyone hears of the end.
                self._running.remove(seq)
                self._release(seq)
                self._end(seq, *ending)

    def _drop_cancelled(self) -> None:
        gone = [seq for seq in self._running if seq.gen.cancelled]
        with self._cond:
            waiting = [seq for seq in self._waiting if seq.gen.cancelled]
            for seq in waiting:
                self._waiting.remove(seq)
        for seq in gone + waiting:
            if seq in self._running:
                self._running.remove(seq)
                self._release(seq)
            self._counters.cancelled += 1
            self._end(seq, "cancelled", seq.stopper.flush())

    def _admit(self) -> None:
        assert self._pool is not None and self._prefix is not None
        while len(self._running) < self.config.max_running:
            with self._cond:
                if not self._waiting:
                    return
                seq = self._waiting.popleft()
            seq.slot = self._pool.allocate()
            seq.admitted = time.perf_counter()
            seq.cached = self._prefix.lookup(seq.prompt, seq.adapter_key, self._pool, seq.slot)
            seq.computed = seq.cached
            self._counters.prefix_lookup_tokens += len(seq.prompt)
            self._counters.prefix_hit_tokens += seq.cached
            self._counters.prompt_tokens += len(seq.prompt)
            self._running.append(seq)

    def _batch(self) -> tuple[Any, list[_Sequence]]:
        """This step's rows: a decode token per prefilled sequence (slot order), then prompt
        chunks in admission order within the ``prefill_chunk`` budget."""
        import torch

        from shipyard.llm.model import ForwardBatch

        decoding = sorted((s for s in self._running if s.prefilled), key=lambda s: s.slot)
        tokens = [s.generated[-1] for s in decoding]
        positions = [len(s.prompt) + len(s.generated) - 1 for s in decoding]
        slots = [s.slot for s in decoding]
        owners = list(decoding)
        logit_rows = list(range(len(decoding)))
        row_owner: list[_Sequence] = list(decoding)
        prefills: list[tuple[int, int, int, int]] = []
        budget = self.config.prefill_chunk
        for seq in self._running:
            if seq.prefilled or budget <= 0:
                continue
            start = seq.computed
            count = min(len(seq.prompt) - start, budget)
            budget -= count
            prefills.append((len(tokens), count, seq.slot, start))
            tokens += seq.prompt[start : start + count]
            positions += range(start, start + count)
            slots += [seq.slot] * count
            row_owner += [seq] * count
            seq.computed += count
            if seq.prefilled:
                logit_rows.append(len(tokens) - 1)
                owners.append(seq)
        batch = ForwardBatch(
            tokens=torch.tensor(tokens, dtype=torch.int64),
            positions=torch.tensor(positions, dtype=torch.int64),
            slots=torch.tensor(slots, dtype=torch.int64),
            decode_slots=[s.slot for s in decoding],
            decode_lengths=[p + 1 for p in positions[: len(decoding)]],
            prefills=prefills,
            logit_rows=torch.tensor(logit_rows, dtype=torch.int64),
            lora=_lora_groups(row_owner),
        )
        return batch, owners

    def _advance(
        self, seq: _Sequence, logits: torch.Tensor
    ) -> tuple[FinishReason, str, tuple[int, ...], str | None] | None:
        """Sample ``seq``'s next token and emit its text; return how it ends, if it does."""
        from shipyard.llm.sampling import choose_token

        allowed = seq.constraint.allowed() if seq.constraint is not None else None
        token = choose_token(logits, seq.params, seq.generator, allowed)
        now = time.perf_counter()
        if not seq.generated:
            seq.first_token = now
        seq.generated.append(token)
        self._counters.generated_tokens += 1
        reason: FinishReason | None = None
        if token in self.model.eos_token_ids:
            reason, text = "stop", ""
        else:
            if seq.constraint is not None:
                try:
                    seq.constraint.advance(token)
                except ParameterError as exc:  # fails this sequence, not the batch
                    return "error", "", (token,), f"structured output failed: {exc}"
            text, stopped = seq.stopper.push(seq.decoder.push(token))
            if stopped or (seq.constraint is not None and seq.constraint.finished()):
                reason = "stop"
            elif len(seq.generated) >= seq.max_new:
                reason = "length"
        if reason is None:
            seq.text.append(text)
            seq.gen._emit(TokenEvent(text=text, token_ids=(token,)))
            return None
        if reason == "length":
            text += seq.stopper.flush()
        return reason, text, (token,), None

    def _end(
        self,
        seq: _Sequence,
        reason: FinishReason,
        text: str,
        token_ids: tuple[int, ...] = (),
        error: str | None = None,
    ) -> None:
        now = time.perf_counter()
        seq.text.append(text)
        n = len(seq.generated)
        first = seq.first_token or now
        result = GenerationResult(
            text="".join(seq.text),
            finish_reason=reason,
            prompt_tokens=len(seq.prompt),
            completion_tokens=n,
            cached_tokens=seq.cached,
            queued_s=(seq.admitted or now) - seq.submitted,
            ttft_s=first - seq.submitted,
            tpot_s=(now - first) / (n - 1) if n > 1 else 0.0,
            adapter=seq.gen.adapter,
        )
        seq.gen._emit(TokenEvent(text=text, token_ids=token_ids, finish_reason=reason, error=error))
        seq.gen._finish(result)

    def _fail(self, seqs: Sequence[_Sequence], message: str) -> None:
        for seq in seqs:
            if not seq.gen.done:
                self._end(seq, "error", "", error=message)

    def _release(self, seq: _Sequence) -> None:
        if seq.slot >= 0 and self._pool is not None:
            self._pool.release(seq.slot)
            seq.slot = -1

    def _store_prefix(self, seq: _Sequence) -> None:
        if self._prefix is not None and self._pool is not None and seq.slot >= 0:
            self._prefix.store(seq.prompt, seq.adapter_key, self._pool, seq.slot)


def _lora_groups(row_owner: Sequence[_Sequence]) -> list[tuple[Any, Any]]:
    """Each adapter in the batch with the rows it applies to (``None``: every row)."""
    import torch

    rows: dict[str, list[int]] = {}
    adapters: dict[str, LoraAdapter] = {}
    for row, seq in enumerate(row_owner):
        if seq.adapter is not None and seq.adapter_key is not None:
            rows.setdefault(seq.adapter_key, []).append(row)
            adapters[seq.adapter_key] = seq.adapter
    groups: list[tuple[Any, Any]] = []
    for key, index in rows.items():
        every = len(index) == len(row_owner)
        groups.append((adapters[key], None if every else torch.tensor(index)))
    return groups
