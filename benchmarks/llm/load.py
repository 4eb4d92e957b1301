"""The benchmark's load driver: closed-loop streams of chat requests over SSE, and what they saw.

One :class:`Outcome` per request, filled in as its events arrive (a request cancelled at the
end of a level keeps what it had). A level runs ``streams`` closed loops (each sends its next
request when the previous one finished) for ``seconds``; then no new request starts, the ones
in flight get ``grace`` seconds to finish and are cancelled after that (the client closes
the connection). Read by :func:`summarize`:

- output tokens/s = tokens generated inside the window / its seconds: a finished request's
  ``usage.completion_tokens`` (or its content chunks when the server sends no usage), a
  request straddling the window's end prorated by its chunks before and after, one cancelled
  without usage counted by its chunks;
- TTFT = first chunk with non-empty content minus sending, for every request sent in the
  window; one that got no token before it was cancelled waited at least until then (a
  percentile that such a lower bound reaches is shown as ``≥``);
- TPOT = (last chunk - first chunk) / (completion tokens - 1), finished requests.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Outcome:
    """What one request saw (times from ``time.perf_counter``)."""

    sent: float
    first: float | None = None
    chunks: list[float] = field(default_factory=list)  # arrival of each non-empty content
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    finished: float | None = None
    cancelled: float | None = None
    error: str | None = None
    text: list[str] = field(default_factory=list)


def read_event(outcome: Outcome, data: str) -> None:
    """Record one SSE ``data:`` payload (a ``chat.completion.chunk``) in ``outcome``."""
    if data == "[DONE]":
        return
    event = json.loads(data)
    if event.get("error"):  # an error sent inside the stream
        outcome.error = f"in stream: {json.dumps(event['error'])[:200]}"
        return
    for choice in event.get("choices") or []:
        content = (choice.get("delta") or {}).get("content")
        if content:
            now = time.perf_counter()
            if outcome.first is None:
                outcome.first = now
            outcome.chunks.append(now)
            outcome.text.append(content)
    usage = event.get("usage")
    if usage:
        outcome.completion_tokens = int(usage["completion_tokens"])
        outcome.prompt_tokens = int(usage["prompt_tokens"])
        details = usage.get("prompt_tokens_details") or {}
        if details.get("cached_tokens") is not None:
            outcome.cached_tokens = int(details["cached_tokens"])


async def stream_chat(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> Outcome:
    """Send one streamed chat request; return its outcome (also when cancelled: see ``run``)."""
    outcome = Outcome(sent=time.perf_counter())
    await fill(client, url, body, outcome)
    return outcome


async def fill(client: httpx.AsyncClient, url: str, body: dict[str, Any], outcome: Outcome) -> None:
    """Stream ``body`` to ``url``, recording events in ``outcome`` as they arrive."""
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                outcome.error = f"{response.status_code}: {text[:200]}"
                return
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    read_event(outcome, line[5:].strip())
        outcome.finished = time.perf_counter()
    except asyncio.CancelledError:
        outcome.cancelled = time.perf_counter()
        raise
    except httpx.HTTPError as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"


async def run_level(
    url: str,
    body_of: Callable[[int], dict[str, Any]],
    streams: int,
    seconds: float,
    grace: float,
) -> tuple[list[Outcome], float, float]:
    """Closed-loop ``streams`` for ``seconds`` (+ ``grace``); outcomes, window start and end."""
    outcomes: list[Outcome] = []
    counter = iter(range(10**9))
    limits = httpx.Limits(max_connections=streams + 8, max_keepalive_connections=streams + 8)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:
        start = time.perf_counter()
        end = start + seconds

        async def loop() -> None:
            while time.perf_counter() < end:
                outcome = Outcome(sent=time.perf_counter())
                outcomes.append(outcome)
                await fill(client, url, body_of(next(counter)), outcome)
                if outcome.error is not None:  # e.g. 503 queue full: back off, do not spin
                    await asyncio.sleep(0.2)

        tasks = [asyncio.create_task(loop()) for _ in range(streams)]
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return outcomes, start, end


def tokens_in_window(outcome: Outcome, end: float) -> float:
    """Output tokens of ``outcome`` generated before ``end`` (see the module's doc)."""
    if not outcome.chunks:
        return 0.0
    before = sum(t <= end for t in outcome.chunks)
    if outcome.finished is None:
        return float(before)
    total = outcome.completion_tokens
    if total is None:
        total = len(outcome.chunks)
    return total * before / len(outcome.chunks)


def percentile(values: list[tuple[float, bool]], q: float) -> str:
    """The nearest-rank ``q`` percentile of (value, is lower bound) pairs, in seconds."""
    if not values:
        return "n/a"
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    bound = any(lower for _, lower in ordered[: rank + 1])
    return f"{'≥ ' if bound else ''}{ordered[rank][0]:.2f}"


def median(values: list[float]) -> float | None:
    """The median, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarize(outcomes: list[Outcome], start: float, end: float) -> dict[str, Any]:
    """Tokens/s, TTFT and TPOT percentiles, token counts and errors of one level."""
    tokens = sum(tokens_in_window(o, end) for o in outcomes)
    ttft: list[tuple[float, bool]] = []
    for o in outcomes:
        if o.error is not None:
            continue
        if o.first is not None:
            ttft.append((o.first - o.sent, False))
        else:
            ttft.append(((o.cancelled or end) - o.sent, True))
    done = [o for o in outcomes if o.finished is not None]
    counts = [o.completion_tokens or len(o.chunks) for o in done]
    tpot = [
        (o.chunks[-1] - o.chunks[0]) / (n - 1)
        for o, n in zip(done, counts, strict=True)
        if n > 1 and len(o.chunks) > 1
    ]
    prompts = [o.prompt_tokens for o in done if o.prompt_tokens is not None]
    cached = [o.cached_tokens for o in done if o.cached_tokens is not None]
    tpot_ms = median(tpot)
    return {
        "requests": len(outcomes),
        "finished": len(done),
        "errors": sum(o.error is not None for o in outcomes),
        "tokens_s": tokens / (end - start),
        "ttft_p50_s": percentile(ttft, 50),
        "ttft_p99_s": percentile(ttft, 99),
        "tpot_p50_ms": f"{tpot_ms * 1000:.0f}" if tpot_ms is not None else "n/a",
        "mean_completion": sum(counts) / len(counts) if counts else 0.0,
        "mean_prompt": sum(prompts) / len(prompts) if prompts else None,
        "mean_cached": sum(cached) / len(cached) if cached else None,
        "usage_given": bool(done) and all(o.completion_tokens is not None for o in done),
        "first_error": next((o.error for o in outcomes if o.error), ""),
    }
