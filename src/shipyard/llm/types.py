"""The records the LLM parts share: what a request asks, what the engine streams back, what
it reports, and a LoRA adapter's weights.

No PyTorch at import: tensors appear only in annotations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from shipyard.errors import ParameterError

if TYPE_CHECKING:
    import torch

FinishReason = Literal["stop", "length", "cancelled", "error"]
"""Why a generation ended: an end-of-sequence token or stop sequence (``stop``), ``max_tokens``
or the context window (``length``), the client went away (``cancelled``), or it failed."""

LORA_MODULES = ("q", "k", "v", "o", "gate", "up", "down")
"""The projections of a Llama layer a LoRA adapter may target (attention q/k/v/o, MLP
gate/up/down), as :class:`LoraAdapter` names them."""


@dataclass(frozen=True)
class SamplingParams:
    """How to generate one completion (the OpenAI API's fields of the same names).

    ``temperature`` 0 is greedy decoding; ``seed`` makes sampling reproducible per request
    (the same seed, prompt and parameters give the same tokens, whatever else is batched);
    ``stop`` strings end the completion and are not part of it; ``json_schema`` constrains
    the output to JSON that validates against it (:mod:`shipyard.llm.structured`).
    """

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    json_schema: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens <= 0:
            raise ParameterError(f"max_tokens must be an integer > 0; got {self.max_tokens!r}")
        if not (isinstance(self.temperature, int | float) and 0 <= self.temperature <= 2):
            raise ParameterError(
                f"temperature must be a number in [0, 2]; got {self.temperature!r}"
            )
        if not (isinstance(self.top_p, int | float) and 0 < self.top_p <= 1):
            raise ParameterError(f"top_p must be a number in (0, 1]; got {self.top_p!r}")
        if math.isnan(float(self.temperature)) or math.isnan(float(self.top_p)):
            raise ParameterError("temperature and top_p must be numbers, not NaN")
        if len(self.stop) > 4 or not all(isinstance(s, str) and s for s in self.stop):
            raise ParameterError(
                f"stop must be at most 4 non-empty strings; got {list(self.stop)!r}"
            )
        if self.seed is not None and not isinstance(self.seed, int):
            raise ParameterError(f"seed must be an integer; got {self.seed!r}")


@dataclass(frozen=True)
class TokenEvent:
    """What one decoding step gave one sequence: its new text (possibly empty while a
    multi-byte character or a possible stop sequence is held back), the token ids, and,
    on the last event, why it finished."""

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    error: str | None = None


@dataclass(frozen=True)
class GenerationResult:
    """A finished generation: its text, why it stopped, token counts and timings."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    """Prompt tokens whose keys and values came from the prefix cache (not computed)."""
    queued_s: float
    """From submission to admission into the running batch."""
    ttft_s: float
    """Time to first token: from submission to the first generated token."""
    tpot_s: float
    """Mean time per output token after the first (0 for a one-token completion)."""
    adapter: str | None = None


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine (what ``/metrics`` and the dashboard show)."""

    waiting: int
    running: int
    max_running: int
    max_waiting: int
    kv_slots_used: int
    kv_bytes: int
    """Bytes of the fixed KV pool (allocated once)."""
    prefix_cache_bytes: int
    prefix_lookup_tokens: int
    """Prompt tokens looked up in the prefix cache since start."""
    prefix_hit_tokens: int
    """Of those, tokens whose keys and values were reused."""
    prompt_tokens: int
    generated_tokens: int
    steps: int
    cancelled: int

    @property
    def prefix_hit_rate(self) -> float:
        """Share of looked-up prompt tokens served from the prefix cache (0 before any)."""
        looked = self.prefix_lookup_tokens
        return self.prefix_hit_tokens / looked if looked else 0.0


@dataclass
class LoraAdapter:
    """A LoRA adapter's weights over a base model, in the engine's terms.

    ``weights[(layer, module)] = (A, B)`` with ``A`` of shape ``[rank, in]`` and ``B`` of
    shape ``[out, rank]`` (float32), ``module`` one of :data:`LORA_MODULES`; the update to
    that projection's output is ``x @ A.T @ B.T * alpha / rank``. ``base_sha256`` is the
    SHA-256 of the GGUF file it was trained on: the engine refuses it over another base.
    """

    name: str
    rank: int
    alpha: float
    base_sha256: str
    weights: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = field(repr=False)
    task: str = ""
    """What it was trained for (``sentiment``, ``extraction`` ...), for cards and listings."""

    @property
    def scale(self) -> float:
        """``alpha / rank``: the factor of the low-rank update."""
        return self.alpha / self.rank
