"""Choosing each next token and turning tokens into text safely.

- :func:`choose_token`: temperature (0 = greedy argmax), top-p (nucleus), a per-request
  ``torch.Generator`` (the same seed gives the same tokens whatever else is batched), and an
  optional mask of allowed tokens (structured output).
- :class:`IncrementalDecoder`: text deltas that never contain broken UTF-8 (a character
  split across tokens is held back until its last byte arrives).
- :class:`StopMatcher`: ends a completion at the first stop string, even one split across
  tokens, holding back text that could be the start of a stop string; the stop string itself
  is never emitted.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from shipyard.llm.types import SamplingParams


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (a random seed when ``None``)."""
    import torch

    generator = torch.Generator()
    generator.manual_seed(seed if seed is not None else random.getrandbits(63))
    return generator


def choose_token(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    allowed: torch.Tensor | None = None,
) -> int:
    """The next token from one row of logits under ``params`` (and the ``allowed`` mask)."""
    import torch

    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    if params.temperature == 0 or generator is None:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        cumulative = sorted_probs.cumsum(0)
        # Keep the smallest set whose mass reaches top_p (always at least the top token).
        keep = (cumulative - sorted_probs) < params.top_p
        sorted_probs = sorted_probs * keep
        pick = int(torch.multinomial(sorted_probs, 1, generator=generator))
        return int(order[pick])
    return int(torch.multinomial(probs, 1, generator=generator))


class IncrementalDecoder:
    """Turns a stream of token ids into text deltas, never splitting a UTF-8 character."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the window decoded for context
        self._read = 0  # ids before this were emitted

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=True))

    def push(self, token_id: int) -> str:
        """Add one token; return the new text it completes (possibly empty)."""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""


class StopMatcher:
    """Cuts text at the first of ``stops``, holding back what could begin one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self._longest = max((len(s) for s in self.stops), default=0)
        self.text = ""
        self._emitted = 0

    def push(self, delta: str) -> tuple[str, bool]:
        """Add new text; return the text safe to emit now and whether a stop string ended it."""
        self.text += delta
        if not self.stops:
            return self._emit(len(self.text)), False
        start = max(0, self._emitted - self._longest + 1)
        found = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if found:
            end = min(found)
            out = self._emit(end)
            self.text = self.text[:end]
            return out, True
        hold = 0
        pending = len(self.text) - self._emitted
        for stop in self.stops:
            for k in range(min(len(stop) - 1, pending), hold, -1):
                if self.text.endswith(stop[:k]):
                    hold = k
                    break
        return self._emit(len(self.text) - hold), False

    def flush(self) -> str:
        """Release held-back text (the completion ended without a stop string)."""
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        out = self.text[self._emitted : upto]
        self._emitted = max(self._emitted, upto)
        return out
