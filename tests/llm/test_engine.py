"""The generation engine on the real SmolLM2: continuous batching, cancel, the bounded
queue, the window, stop strings, seeds, the prefix cache, LoRA adapters and close()."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from shipyard.errors import ParameterError, RequestError
from shipyard.llm.engine import Engine, EngineConfig, EngineFullError
from shipyard.llm.types import LORA_MODULES, LoraAdapter, SamplingParams

if TYPE_CHECKING:
    from shipyard.llm.model import LoadedModel

GREEDY = SamplingParams(max_tokens=12, temperature=0)
SMALL = EngineConfig(max_running=4, max_waiting=8, max_context=512, threads=1)


def _chat(model: LoadedModel, text: str) -> list[int]:
    return model.encode_chat([{"role": "user", "content": text}])


def _until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def engine(smollm2: LoadedModel) -> Iterator[Engine]:
    with Engine(smollm2, SMALL) as running:
        yield running


def test_config_is_validated_and_maps_settings() -> None:
    with pytest.raises(ParameterError, match="'max_running' parameter of EngineConfig"):
        EngineConfig(max_running=0)
    with pytest.raises(ParameterError, match="threads"):
        EngineConfig(threads=0)

    class Settings:
        llm_max_running, llm_max_waiting, llm_max_context, llm_prefix_cache_mb = 8, 16, 1024, 4

    config = EngineConfig.from_settings(Settings())
    assert (config.max_running, config.max_waiting, config.max_context) == (8, 16, 1024)
    assert config.prefix_cache_bytes == 4 << 20


def test_a_request_joining_running_decodes_gets_its_own_tokens(
    engine: Engine, smollm2: LoadedModel
) -> None:
    late = _chat(smollm2, "What is the capital of France?")
    alone = engine.submit(late, GREEDY).wait()
    others = [
        engine.submit(
            _chat(smollm2, f"Count from {n} to {n + 30}."),
            GREEDY.__class__(max_tokens=40, temperature=0),
        )
        for n in (1, 5, 9)
    ]
    steps = engine.stats().steps
    _until(lambda: engine.stats().steps >= steps + 3, "the first requests to decode")
    joined = engine.submit(late, GREEDY)
    busy = [not o.done for o in others]
    result = joined.wait()
    assert any(busy)  # it joined a batch that was decoding
    assert result.text == alone.text and result.completion_tokens == alone.completion_tokens
    for other in others:
        assert other.wait().finish_reason in ("length", "stop")
    assert engine.stats().kv_slots_used == 0


def test_cancel_frees_the_slot(engine: Engine, smollm2: LoadedModel) -> None:
    before = engine.stats()
    gen = engine.submit(
        _chat(smollm2, "Write a long story."), SamplingParams(max_tokens=400, temperature=0)
    )
    _until(
        lambda: (
            engine.stats().kv_slots_used == 1
            and engine.stats().generated_tokens > before.generated_tokens
        ),
        "decoding",
    )
    gen.cancel()
    result = gen.wait(timeout=120)
    assert result.finish_reason == "cancelled" and result.completion_tokens < 400
    after = engine.stats()
    assert after.kv_slots_used == 0 and after.running == 0
    assert after.cancelled == before.cancelled + 1


def test_queue_full_is_503_and_close_ends_waiters(smollm2: LoadedModel) -> None:
    engine = Engine(smollm2, EngineConfig(max_running=1, max_waiting=2, max_context=128, threads=1))
    waiting = [engine.submit([1, 2, 3], GREEDY) for _ in range(2)]  # not started: they wait
    with pytest.raises(
        EngineFullError, match="2 requests waiting, the limit is 2; retry later"
    ) as full:
        engine.submit([1, 2, 3], GREEDY)
    assert full.value.status == 503
    assert engine.stats().waiting == 2
    engine.close()
    for gen in waiting:
        result = gen.wait(timeout=5)
        assert result.finish_reason == "error"
    with pytest.raises(RequestError, match="closed"):
        engine.submit([1, 2, 3], GREEDY)


def test_close_ends_running_generations(smollm2: LoadedModel) -> None:
    engine = Engine(smollm2, EngineConfig(max_running=2, max_context=256, threads=1)).start()
    gen = engine.submit(
        _chat(smollm2, "Tell me a story."), SamplingParams(max_tokens=200, temperature=0)
    )
    _until(lambda: engine.stats().generated_tokens > 0, "decoding")
    engine.close()
    result = gen.wait(timeout=5)
    assert result.finish_reason == "error" and result.completion_tokens < 200


def test_bad_requests(engine: Engine) -> None:
    with pytest.raises(RequestError, match="empty") as empty:
        engine.submit([], GREEDY)
    assert empty.value.status == 400
    with pytest.raises(RequestError, match="512 tokens; the context window is 512") as long:
        engine.submit([5] * 512, GREEDY)
    assert long.value.status == 400
    with pytest.raises(RequestError, match="no adapter 'nope' is loaded") as unknown:
        engine.submit([5, 6], GREEDY, adapter="nope")
    assert unknown.value.status == 404


def test_max_tokens_is_cut_at_the_window(smollm2: LoadedModel) -> None:
    prompt = smollm2.encode("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,")
    window = len(prompt) + 5
    with Engine(smollm2, EngineConfig(max_running=1, max_context=window, threads=1)) as engine:
        result = engine.submit(prompt, SamplingParams(max_tokens=100, temperature=0)).wait()
        assert result.finish_reason == "length" and result.completion_tokens == 5
        with pytest.raises(RequestError, match=f"at most {window - 1}"):
            engine.submit(prompt + [11] * 5, GREEDY)


def test_stop_strings_end_the_text_and_are_not_emitted(
    engine: Engine, smollm2: LoadedModel
) -> None:
    prompt = _chat(smollm2, "Describe the sea in two sentences.")
    full = engine.submit(prompt, SamplingParams(max_tokens=16, temperature=0)).wait().text
    stop = full[7:12]  # starts inside a word: split across tokens
    assert len(stop.strip()) >= 3
    result = engine.submit(
        prompt, SamplingParams(max_tokens=16, temperature=0, stop=(stop,))
    ).wait()
    assert result.finish_reason == "stop"
    assert result.text == full[: full.index(stop)]


def test_seed_gives_the_same_tokens_whatever_the_batch(
    engine: Engine, smollm2: LoadedModel
) -> None:
    prompt = _chat(smollm2, "Invent a name for a cat.")
    params = SamplingParams(max_tokens=12, temperature=0.9, top_p=0.95, seed=7)
    alone = engine.submit(prompt, params).wait().text
    mates = [
        engine.submit(_chat(smollm2, f"Say {w}."), SamplingParams(max_tokens=12, temperature=1.0))
        for w in ("hi", "yes")
    ]
    together = engine.submit(prompt, params).wait().text
    other_seed = (
        engine.submit(prompt, SamplingParams(max_tokens=12, temperature=0.9, top_p=0.95, seed=8))
        .wait()
        .text
    )
    for mate in mates:
        mate.wait()
    assert together == alone
    assert other_seed != alone


def test_prefix_cache_hits_and_gives_the_same_tokens(smollm2: LoadedModel) -> None:
    system = "You are a careful assistant for a shipping company. " * 6
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Hello!"}]
    prompt = smollm2.encode_chat(messages)
    config = EngineConfig(max_running=2, max_context=256, block_size=16, threads=1)
    with Engine(smollm2, config) as engine:
        cold = engine.submit(prompt, GREEDY).wait()
        warm = engine.submit(prompt, GREEDY).wait()
        stats = engine.stats()
    assert cold.cached_tokens == 0
    assert warm.cached_tokens == (len(prompt) - 1) // 16 * 16 > 0
    assert stats.prefix_lookup_tokens == 2 * len(prompt)
    assert stats.prefix_hit_tokens == warm.cached_tokens and stats.prefix_cache_bytes > 0
    with Engine(
        smollm2, EngineConfig(max_running=2, max_context=256, prefix_cache_bytes=0, threads=1)
    ) as plain:
        uncached = plain.submit(prompt, GREEDY).wait()
        assert plain.stats().prefix_hit_tokens == 0
    assert warm.text == cold.text == uncached.text


def _adapter(model: LoadedModel, name: str, zero_b: bool, seed: int = 0) -> LoraAdapter:
    import torch

    c = model.config
    g = torch.Generator().manual_seed(seed)
    outs = {
        "q": c.q_size,
        "k": c.kv_size,
        "v": c.kv_size,
        "o": c.hidden,
        "gate": c.intermediate,
        "up": c.intermediate,
        "down": c.hidden,
    }
    ins = {"down": c.intermediate}
    rank, weights = 4, {}
    for layer in range(c.layers):
        for module in LORA_MODULES:
            a = torch.randn(rank, ins.get(module, c.hidden), generator=g) * 0.05
            b = (
                torch.zeros(outs[module], rank)
                if zero_b
                else torch.randn(outs[module], rank, generator=g) * 0.05
            )
            weights[(layer, module)] = (a, b)
    return LoraAdapter(name=name, rank=rank, alpha=8.0, base_sha256=model.sha256, weights=weights)


def test_lora_adapters_batched_beside_the_base(smollm2: LoadedModel) -> None:
    prompt = _chat(smollm2, "Give me a word that rhymes with cat.")
    adapters = {
        "zero": _adapter(smollm2, "zero", zero_b=True),
        "noisy": _adapter(smollm2, "noisy", zero_b=False),
    }
    with Engine(smollm2, SMALL, adapters) as engine:
        assert engine.adapters == ["noisy", "zero"]
        base = engine.submit(prompt, GREEDY).wait().text
        assert engine.submit(prompt, GREEDY, adapter="zero").wait().text == base
        noisy_alone = engine.submit(prompt, GREEDY, adapter="noisy").wait().text
        assert noisy_alone != base
        mixed = [engine.submit(prompt, GREEDY, adapter=a) for a in (None, "noisy", None, "zero")]
        texts = [g.wait().text for g in mixed]
        assert texts == [base, noisy_alone, base, base]
        foreign = _adapter(smollm2, "foreign", zero_b=True)
        foreign.base_sha256 = "f" * 64
        with pytest.raises(ParameterError, match="trained on the base"):
            engine.add_adapter(foreign)


def test_streaming_events_add_up_to_the_result(engine: Engine, smollm2: LoadedModel) -> None:
    prompt = _chat(smollm2, "Say something about café crème and ünïcode.")

    async def stream() -> tuple[list[str], str | None, str]:
        gen = engine.submit(prompt, SamplingParams(max_tokens=12, temperature=0))
        texts, last = [], None
        async for event in gen:
            texts.append(event.text)
            last = event.finish_reason
        return texts, last, (await gen.result()).text

    texts, last, result = asyncio.run(stream())
    assert "".join(texts) == result and last in ("length", "stop")
    assert "\ufffd" not in result


def test_json_schema_output_parses(engine: Engine, smollm2: LoadedModel) -> None:
    import json

    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "maxLength": 12}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    prompt = _chat(smollm2, "Reply in JSON with the colour of the sky.")
    result = engine.submit(
        prompt, SamplingParams(max_tokens=40, temperature=0, json_schema=schema)
    ).wait()
    assert result.finish_reason == "stop", result
    assert set(json.loads(result.text)) == {"colour"}
    with pytest.raises(RequestError, match="json_schema") as bad:
        engine.submit(prompt, SamplingParams(max_tokens=4, json_schema={"type": "nonsense"}))
    assert bad.value.status == 400


def test_a_prompt_prefilled_in_chunks_gives_the_same_tokens(
    engine: Engine, smollm2: LoadedModel
) -> None:
    prompt = _chat(smollm2, "Explain in detail why the sky is blue and sunsets are red.")
    whole = engine.submit(prompt, GREEDY).wait()
    chunked_config = EngineConfig(max_running=2, max_context=256, prefill_chunk=16, threads=1)
    with Engine(smollm2, chunked_config) as chunked:
        steps = chunked.stats().steps
        result = chunked.submit(prompt, GREEDY).wait()
        assert chunked.stats().steps - steps >= len(prompt) // 16 + GREEDY.max_tokens - 1
    assert result.text == whole.text and result.finish_reason == whole.finish_reason
