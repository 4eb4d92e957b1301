"""OpenAI-compatible routes on the serving app: ``POST /v1/chat/completions``,
``POST /v1/completions`` and ``GET /v1/models``, streamed (SSE) or not.

The same app, policy and prediction log as the V2 and MLflow routes: the request's
``model`` is the endpoint's name (or ``endpoint:adapter`` for a LoRA adapter of the base
version), the traffic policy picks the version (sticky by the routing-key header or the
request's ``user``), shadows generate in the background and are logged with arm
``shadow``. Request fields are OpenAI's (``messages`` / ``prompt``, ``max_tokens`` or
``max_completion_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``, ``stream``,
``stream_options.include_usage``, ``response_format``, ``user``) plus Shipyard's
``variables``: for a version that pins a prompt, its template is rendered from them and put
before the request's messages (the ``openai`` client sends it with ``extra_body``). Every
error is OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

A streamed answer watches the connection: when the client goes away its generation is
cancelled at once (its slot and KV freed) and logged with finish reason ``cancelled``.
One record per completion is committed to the prediction log before the answer's last
byte is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from shipyard.errors import ParameterError, RequestError
from shipyard.serving import admin
from shipyard.serving.llm import completion_record
from shipyard.serving.metrics import request_cause

if TYPE_CHECKING:
    from shipyard.llm.format import LLM
    from shipyard.llm.semantic import SemanticCache
    from shipyard.llm.types import GenerationResult, SamplingParams
    from shipyard.serving.app import ServingApp
    from shipyard.serving.runtime import Deployment, EndpointState

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
JSON = [(b"content-type", b"application/json")]
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
DONE = b"data: [DONE]\n\n"
CACHE_HEADER = b"x-shipyard-cache"
ROLES = frozenset({"system", "user", "assistant", "developer"})
logger = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_FIELD = re.compile(r"at `\$\.?([A-Za-z_\[\]0-9.]*)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")


class OpenAIError(Exception):
    """A refused OpenAI request: its status and OpenAI's error fields."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> bytes:
        """``{"error": {"message", "type", "param", "code"}}``."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        if self.status == 401:
            kind = "authentication_error"
        error = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return _encode({"error": error})


# -- requests ---------------------------------------------------------------------------------


class Part(msgspec.Struct):
    """A part of a message's content (only text parts are read)."""

    type: str
    text: str | None = None


class Message(msgspec.Struct):
    """One chat message."""

    role: str
    content: str | list[Part] | None = None


class StreamOptions(msgspec.Struct):
    """``stream_options``: ``include_usage`` adds a last chunk with the token counts."""

    include_usage: bool = False


class Sampling(msgspec.Struct):
    """The fields the two routes share."""

    model: str
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    n: int | None = None
    variables: dict[str, Any] | None = None


class ChatRequest(Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = []


class CompletionRequest(Sampling):
    """``POST /v1/completions``."""

    prompt: str | list[str] | None = None


_CHAT = msgspec.json.Decoder(ChatRequest)
_COMPLETION = msgspec.json.Decoder(CompletionRequest)


def decode_request(body: bytes, chat: bool) -> ChatRequest | CompletionRequest:
    """The request, or OpenAIError (400) naming the field that is wrong."""
    try:
        return _CHAT.decode(body) if chat else _COMPLETION.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        where = _FIELD.search(text) or _MISSING.search(text)
        param = where.group(1).split("[")[0].split(".")[0] if where else None
        raise OpenAIError(400, f"invalid request: {text}", param or None) from None
    except msgspec.DecodeError as exc:
        raise OpenAIError(400, f"the body is not JSON: {exc}") from None


def sampling(request: Sampling, llm: LLM) -> SamplingParams:
    """The request's sampling over the version's defaults; OpenAIError naming the field."""
    from dataclasses import replace

    if request.n not in (None, 1):
        raise OpenAIError(400, f"n must be 1 (one choice per request); got {request.n}", "n")
    given = request.max_completion_tokens
    name = "max_completion_tokens"
    if given is None:
        given, name = request.max_tokens, "max_tokens"
    if given is not None and given <= 0:
        raise OpenAIError(400, f"{name} must be an integer > 0; got {given}", name)
    values: dict[str, Any] = {
        "max_tokens": given,
        "temperature": request.temperature,
        "top_p": request.top_p,
    }
    values |= {"stop": request.stop, "seed": request.seed}
    for key, value in values.items():
        if value is not None:
            try:
                llm.spec.sampling(**{key: value})
            except ParameterError as exc:
                raise OpenAIError(400, str(exc), name if key == "max_tokens" else key) from None
    params = llm.spec.sampling(**values)
    schema = json_schema(request.response_format)
    return params if schema is None else replace(params, json_schema=schema)


def json_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema ``response_format`` asks for (None: free text), checked by
    :mod:`shipyard.llm.structured`; OpenAIError (400, ``response_format``) otherwise."""
    if response_format is None:
        return None
    from shipyard.llm.structured import schema_from_response_format

    try:
        return schema_from_response_format(response_format)
    except ParameterError as exc:
        raise OpenAIError(400, str(exc), "response_format") from None


def content_text(message: Message, index: int) -> str:
    """A message's text (text parts joined); OpenAIError for a role or part not taken."""
    if message.role not in ROLES:
        raise OpenAIError(
            400,
            f"messages[{index}].role must be one of {', '.join(sorted(ROLES))}; got "
            f"{message.role!r}",
            "messages",
        )
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.type != "text" or part.text is None:
            raise OpenAIError(
                400, f"messages[{index}]: only text parts are taken; got {part.type!r}", "messages"
            )
        texts.append(part.text)
    return "".join(texts)


# -- the routes -------------------------------------------------------------------------------


@dataclass
class Completion:
    """One accepted request: where it goes and what to generate."""

    chat: bool
    request: Sampling
    request_id: str
    state: EndpointState
    deployment: Deployment
    llm: LLM
    arm: str
    key: str | None
    adapter: str | None
    tokens: list[int]
    prompt_text: str
    params: SamplingParams
    messages: list[dict[str, str]] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))


class OpenAIRoutes:
    """The ``/v1/`` routes of one :class:`~shipyard.serving.app.ServingApp` (module doc)."""

    def __init__(self, app: ServingApp) -> None:
        self.app = app
        self.runtime = app.runtime
        self.endpoint = app.config.endpoint
        self._prompts: dict[tuple[str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one ``/v1/`` request (errors in OpenAI's shape)."""
        started = time.perf_counter()
        method, path = scope["method"], scope["path"].rstrip("/")
        headers = dict(scope["headers"])
        try:
            admin.authorize(headers, self.app.config.predict_token)
            if method == "GET" and path == "/v1/models":
                await _reply(send, 200, _encode(self.models()), JSON)
                return
            chat = path == "/v1/chat/completions"
            if method != "POST" or not (chat or path == "/v1/completions"):
                raise OpenAIError(404, f"no route {method} {path}", code="not_found")
            body = await self.app._body(receive)
            completion = await self.accept(chat, body, headers)
            await self.complete(completion, receive, send, started)
        except (OpenAIError, RequestError, ParameterError) as exc:
            error = _openai_error(exc)
            self.app.metrics.error(error.status, request_cause(error.status), True)
            await _reply(send, error.status, error.body(), JSON)
        except Exception as exc:  # never crash the worker
            logger.exception("%s %s failed", method, path)
            self.app.metrics.error(500, "model", True)
            error = OpenAIError(500, f"generation failed: {type(exc).__name__}: {exc}")
            await _reply(send, 500, error.body(), JSON)

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``: the endpoint and ``endpoint:adapter`` for each adapter."""
        state = self.runtime.state
        created = int(time.time())
        ids = [self.endpoint]
        if state is not None:
            for deployment in state.deployments.values():
                engine = deployment.llm.engine if deployment.llm is not None else None
                if engine is not None:
                    ids += [f"{self.endpoint}:{a}" for a in sorted(engine.adapters)]
        unique = list(dict.fromkeys(ids))
        data = [
            {"id": i, "object": "model", "created": created, "owned_by": "shipyard"} for i in unique
        ]
        return {"object": "list", "data": data}

    async def accept(self, chat: bool, body: bytes, headers: dict[bytes, bytes]) -> Completion:
        """Decode, route to a version, render and tokenize; OpenAIError naming the field."""
        request = decode_request(body, chat)
        state = self.app._state()
        log = self.runtime.log
        if log is not None and log.error is not None:
            from shipyard.serving.runtime import unlogged_message

            raise OpenAIError(503, unlogged_message(log.error))
        name, _, adapter = request.model.partition(":")
        if name not in (self.endpoint, state.policy.model) or (
            ":" in request.model and not adapter
        ):
            raise OpenAIError(
                404,
                f"model {request.model!r} is not served here; this server serves "
                f"{self.endpoint!r} (and {self.endpoint}:ADAPTER for its adapters)",
                "model",
                "model_not_found",
            )
        parameters = {"routing_key": request.user} if request.user else None
        deployment, arm, key = state.assign(headers, parameters, None)
        llm = deployment.llm
        if llm is None:
            raise OpenAIError(
                400,
                f"{self.endpoint} v{deployment.version.version} is not a language model; use "
                "/v2/models/{name}/infer or /invocations",
                "model",
            )
        given = headers.get(b"x-request-id")
        request_id = given.decode("latin-1") if given else self.runtime.next_id()
        if adapter:
            await self._require_adapter(deployment, llm, adapter)
        params = sampling(request, llm)
        messages: list[dict[str, str]] = []
        if isinstance(request, ChatRequest):
            messages = await self._messages(request, llm)
            tokens = await asyncio.to_thread(llm.prompt_tokens, messages)
            text = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
        else:
            text = self._prompt(request)
            model, _ = llm.ensure()
            tokens = list(await asyncio.to_thread(model.encode, text))
        where = "messages" if chat else "prompt"
        if len(tokens) >= llm.max_context:
            raise OpenAIError(
                400,
                f"{where}: the prompt is {len(tokens):,} tokens; this model's context window is "
                f"{llm.max_context:,} tokens (prompt and completion together)",
                where,
                "context_length_exceeded",
            )
        return Completion(
            chat, request, request_id, state, deployment, llm, arm, key, adapter or None,
            tokens, text, params, messages,
        )  # fmt: skip

    async def _require_adapter(self, deployment: Deployment, llm: LLM, adapter: str) -> None:
        """404 unless the engine holds ``adapter`` (after one re-read of the adapters table)."""
        engine = llm.engine
        if engine is not None and adapter in engine.adapters:
            return
        engines = self.runtime.engines
        if engines is not None:
            await asyncio.to_thread(engines.refresh, deployment.version, llm)
        if engine is None or adapter not in engine.adapters:
            held = sorted(engine.adapters) if engine is not None else []
            raise OpenAIError(
                404,
                f"unknown adapter {adapter!r} of {self.endpoint} v{deployment.version.version}; "
                f"its adapters: {held or 'none'}",
                "model",
                "model_not_found",
            )

    async def _messages(self, request: ChatRequest, llm: LLM) -> list[dict[str, str]]:
        """The pinned prompt rendered from ``variables``, then the request's messages."""
        given = [
            {"role": "system" if m.role == "developer" else m.role, "content": content_text(m, i)}
            for i, m in enumerate(request.messages)
        ]
        pinned = llm.spec.prompt
        if pinned is None:
            if request.variables:
                raise OpenAIError(
                    400,
                    "variables: this version pins no prompt template to render them into",
                    "variables",
                )
            if not given:
                raise OpenAIError(400, "messages: expected at least one message", "messages")
            return given
        prompt: Any = self._prompts.get(pinned)
        if prompt is None:
            from shipyard.llm.prompts import get_prompt

            prompt = await asyncio.to_thread(get_prompt, self.runtime.workspace, *pinned)
            self._prompts[pinned] = prompt
        try:
            rendered: list[dict[str, str]] = prompt.render(request.variables or {})
        except ParameterError as exc:
            raise OpenAIError(400, f"variables: {exc}", "variables") from None
        return rendered + given

    @staticmethod
    def _prompt(request: CompletionRequest) -> str:
        prompt = request.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise OpenAIError(
                    400, f"prompt: expected one prompt per request; got {len(prompt)}", "prompt"
                )
            prompt = prompt[0]
        if not prompt:
            raise OpenAIError(400, "prompt: expected a non-empty string", "prompt")
        return prompt

    # -- generation ---------------------------------------------------------------------------

    async def complete(
        self, completion: Completion, receive: Receive, send: Send, started: float
    ) -> None:
        """Generate (streamed or not), log, count, answer; shadows in the background."""
        cached = await self._semantic_lookup(completion)
        if cached is not None:
            await self._cached(completion, cached, send, started)
            return
        engine = completion.llm.engine
        assert engine is not None
        generation = engine.submit(
            completion.tokens,
            completion.params,
            adapter=completion.adapter,
            request_id=completion.request_id,
            loop=asyncio.get_running_loop(),
        )
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(_watch(receive, generation, gone))
        try:
            if completion.request.stream:
                await self._stream(completion, generation, send, gone, started)
            else:
                result = await generation.result()
                if result.finish_reason == "error":
                    raise OpenAIError(500, "generation failed in the engine")
                await self._record(completion, result, started)
                await _reply(
                    send, 200, _encode(self._answer(completion, result)), self._headers(completion)
                )
        finally:
            watcher.cancel()
        if completion.state.policy.shadows:
            self._shadow(completion)

    async def _stream(
        self,
        completion: Completion,
        generation: Any,
        send: Send,
        gone: asyncio.Event,
        started: float,
    ) -> None:
        """Answer as server-sent events; a failure once the answer started ends the stream
        with an error event (its status line is already sent)."""
        headers = SSE + self._headers(completion)[1:]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            await self._events(completion, generation, send, gone, started)
        except Exception as exc:
            generation.cancel()
            logger.exception("streaming request %s failed", completion.request_id)
            self.app.metrics.error(500, "model", True)
            error = _openai_error(exc) if isinstance(exc, OpenAIError | RequestError) else None
            message = error.message if error else f"generation failed: {type(exc).__name__}"
            await _chunk(send, gone, {"error": {"message": message, "type": "server_error"}})
            await send({"type": "http.response.body", "body": DONE, "more_body": False})

    async def _events(
        self,
        completion: Completion,
        generation: Any,
        send: Send,
        gone: asyncio.Event,
        started: float,
    ) -> None:
        if completion.chat:
            await _chunk(send, gone, self._delta(completion, {"role": "assistant", "content": ""}))
        async for event in generation:
            if gone.is_set():
                break
            if event.text:
                if completion.chat:
                    piece = self._delta(completion, {"content": event.text})
                else:
                    piece = self._text_chunk(completion, event.text, None)
                await _chunk(send, gone, piece)
        result = await generation.result()
        await self._record(completion, result, started)
        if gone.is_set():
            return
        reason = _finish(result)
        if completion.chat:
            last = self._delta(completion, {}, reason)
        else:
            last = self._text_chunk(completion, "", reason)
        await _chunk(send, gone, last)
        options = completion.request.stream_options
        if options is not None and options.include_usage:
            usage = self._base(
                completion, "chat.completion.chunk" if completion.chat else "text_completion"
            )
            usage["choices"] = []
            usage["usage"] = _usage(result)
            await _chunk(send, gone, usage)
        await send({"type": "http.response.body", "body": DONE, "more_body": False})

    async def _record(
        self, completion: Completion, result: GenerationResult, started: float
    ) -> None:
        """Log the completion (before its answer's end), count it, feed the semantic cache."""
        latency = time.perf_counter() - started
        log = self.runtime.log
        version = completion.deployment.version.version
        if log is not None:
            from shipyard.serving.predlog import PredictionLogClosedError
            from shipyard.serving.runtime import unlogged_message

            record = self._log_record(completion, result, completion.arm, version, latency)
            try:
                await log.commit(record)
            except (OSError, PredictionLogClosedError) as exc:
                raise OpenAIError(503, unlogged_message(str(exc))) from exc
        metrics = self.app.metrics
        if result.finish_reason in ("stop", "length"):
            metrics.request(version, completion.arm, latency)
            metrics.llm_completion(
                version,
                result.ttft_s,
                result.tpot_s,
                result.prompt_tokens,
                result.completion_tokens,
            )
            if self.runtime.guard is not None:
                from shipyard.serving.runtime import NO_SCORES

                self.runtime.guard.observe(version, NO_SCORES, latency)
            await self._semantic_store(completion, result)

    def _log_record(
        self,
        completion: Completion,
        result: GenerationResult,
        arm: str,
        version: int,
        latency: float,
    ) -> dict[str, Any]:
        return completion_record(
            request_id=completion.request_id,
            endpoint=self.endpoint,
            model=self.runtime.model,
            version=version,
            arm=arm,
            routing_key=completion.key,
            prompt=completion.prompt_text,
            result=result,
            latency_s=latency,
        )

    # -- shadows ------------------------------------------------------------------------------

    def _shadow(self, completion: Completion) -> None:
        deployments = completion.state.deployments
        answered = completion.deployment.version.version
        for version in completion.state.policy.shadows:
            shadow = deployments.get(version)
            if version != answered and shadow is not None and shadow.llm is not None:
                self.runtime.spawn(self._shadow_one(completion, shadow))

    async def _shadow_one(self, completion: Completion, shadow: Deployment) -> None:
        """Generate the same request with a shadow version; log it (arm ``shadow``)."""
        llm = shadow.llm
        assert llm is not None
        started = time.perf_counter()
        version = shadow.version.version
        try:
            messages = completion.messages
            if completion.chat and llm.spec.prompt != completion.llm.spec.prompt:
                messages = await self._messages(completion.request, llm)  # type: ignore[arg-type]
            if completion.chat:
                tokens = await asyncio.to_thread(llm.prompt_tokens, messages)
            else:
                model, _ = llm.ensure()
                tokens = list(await asyncio.to_thread(model.encode, completion.prompt_text))
            engine = llm.engine
            assert engine is not None
            generation = engine.submit(
                tokens, sampling(completion.request, llm), adapter=completion.adapter,
                request_id=f"{completion.request_id}-shadow-{version}",
                loop=asyncio.get_running_loop(),
            )  # fmt: skip
            result = await generation.result()
        except Exception as exc:
            self.app.metrics.error(500, "shadow")
            logger.warning(
                "shadow v%d failed on request %s: %s", version, completion.request_id, exc
            )
            return
        if self.runtime.log is not None:
            latency = time.perf_counter() - started
            self.runtime.log.append(
                self._log_record(completion, result, "shadow", version, latency)
            )

    # -- the semantic cache -------------------------------------------------------------------

    def _cacheable(self, completion: Completion) -> bool:
        """Greedy, unstructured chat requests without an adapter, with the setting on."""
        if not (self.runtime.workspace.settings.llm_semantic_cache and completion.chat):
            return False
        from shipyard.llm.semantic import is_cacheable

        return completion.adapter is None and is_cacheable(completion.params)

    async def _semantic_lookup(self, completion: Completion) -> str | None:
        if not self._cacheable(completion):
            return None
        cache = self._semantic_cache()
        if cache is None:
            return None
        text, key = _semantic_key(completion)
        found: str | None = await asyncio.to_thread(cache.lookup, text, key)
        return found

    async def _semantic_store(self, completion: Completion, result: GenerationResult) -> None:
        if result.finish_reason != "stop" or not self._cacheable(completion):
            return
        cache = self._semantic_cache()
        if cache is not None:
            text, key = _semantic_key(completion)
            await asyncio.to_thread(cache.store, text, key, result.text)

    def _semantic_cache(self) -> SemanticCache | None:
        engines = self.runtime.engines
        return engines.semantic if engines is not None else None

    async def _cached(self, completion: Completion, text: str, send: Send, started: float) -> None:
        """Answer from the semantic cache (logged and counted; ``x-shipyard-cache``)."""
        from shipyard.llm.types import GenerationResult

        result = GenerationResult(
            text, "stop", len(completion.tokens), 0, len(completion.tokens), 0.0, 0.0, 0.0
        )
        version = completion.deployment.version.version
        self.app.metrics.semantic_hit(version)
        await self._record(completion, result, started)
        headers = [*self._headers(completion), (CACHE_HEADER, b"semantic")]
        if not completion.request.stream:
            await _reply(send, 200, _encode(self._answer(completion, result)), headers)
            return
        sse = SSE + headers[1:]
        await send({"type": "http.response.start", "status": 200, "headers": sse})
        gone = asyncio.Event()
        await _chunk(send, gone, self._delta(completion, {"role": "assistant", "content": text}))
        await _chunk(send, gone, self._delta(completion, {}, "stop"))
        await send({"type": "http.response.body", "body": DONE, "more_body": False})

    # -- answers ------------------------------------------------------------------------------

    def _headers(self, completion: Completion) -> list[tuple[bytes, bytes]]:
        return [
            *JSON,
            (b"x-request-id", completion.request_id.encode()),
            (b"x-model-version", str(completion.deployment.version.version).encode()),
        ]

    def _base(self, completion: Completion, kind: str) -> dict[str, Any]:
        prefix = "chatcmpl" if completion.chat else "cmpl"
        return {
            "id": f"{prefix}-{completion.request_id}",
            "object": kind,
            "created": completion.created,
            "model": completion.request.model,
            "system_fingerprint": f"{self.endpoint}-v{completion.deployment.version.version}",
        }

    def _answer(self, completion: Completion, result: GenerationResult) -> dict[str, Any]:
        reason = _finish(result)
        if completion.chat:
            answer = self._base(completion, "chat.completion")
            message = {"role": "assistant", "content": result.text}
            choice = {"index": 0, "message": message, "finish_reason": reason, "logprobs": None}
        else:
            answer = self._base(completion, "text_completion")
            choice = {"index": 0, "text": result.text, "finish_reason": reason, "logprobs": None}
        answer["choices"] = [choice]
        answer["usage"] = _usage(result)
        return answer

    def _delta(
        self, completion: Completion, delta: dict[str, str], reason: str | None = None
    ) -> dict[str, Any]:
        chunk = self._base(completion, "chat.completion.chunk")
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]
        return chunk

    def _text_chunk(self, completion: Completion, text: str, reason: str | None) -> dict[str, Any]:
        chunk = self._base(completion, "text_completion")
        chunk["choices"] = [{"index": 0, "text": text, "finish_reason": reason, "logprobs": None}]
        return chunk


def _version_key(completion: Completion) -> str:
    """The semantic cache's key: answers never cross versions, nor requests allowed another
    number of new tokens (``model@version/max_tokens``)."""
    mv = completion.deployment.version
    return f"{mv.name}@{mv.version}/{completion.params.max_tokens}"


def _semantic_key(completion: Completion) -> tuple[str, str]:
    """What the semantic cache compares (the last user message, by meaning) and the key that
    must match exactly (version, budget, and a digest of the rest of the chat: the system
    prompt, a pinned template's messages, earlier turns). Embedding the whole rendered chat
    would let the template dominate: "capital of France?" and "... of Germany?" reach cosine
    0.95 inside it, 0.66 as bare questions."""
    from shipyard.llm.semantic import chat_key

    return chat_key(completion.messages, _version_key(completion), completion.params)


def _finish(result: GenerationResult) -> str:
    """OpenAI's finish reason (``stop`` or ``length``)."""
    return "length" if result.finish_reason == "length" else "stop"


def _usage(result: GenerationResult) -> dict[str, Any]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": result.cached_tokens},
    }


async def _watch(receive: Receive, generation: Any, gone: asyncio.Event) -> None:
    """Cancel ``generation`` as soon as the client disconnects."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            generation.cancel()
            return


async def _chunk(send: Send, gone: asyncio.Event, data: Mapping[str, Any]) -> None:
    """One SSE event (nothing once the client is gone)."""
    if gone.is_set():
        return
    with contextlib.suppress(OSError):
        await send(
            {
                "type": "http.response.body",
                "body": b"data: " + _encode(data) + b"\n\n",
                "more_body": True,
            }
        )


async def _reply(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _openai_error(exc: Exception) -> OpenAIError:
    """An error in OpenAI's terms (a RequestError keeps its status and message)."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, ParameterError):  # the engine refused the schema or the sampling
        param = "response_format" if "schema" in str(exc).lower() else None
        return OpenAIError(400, str(exc), param)
    assert isinstance(exc, RequestError)
    code = {404: "model_not_found", 503: "unavailable", 413: "too_large"}.get(exc.status)
    return OpenAIError(exc.status, exc.message, None, code)
