"""SmolLM2 loaded for the engine: the cache, the tokenizer and chat template, and the forward
pass's parity with transformers' LlamaForCausalLM."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from shipyard.errors import IntegrityError, ParameterError
from shipyard.llm.kv import KVPool
from shipyard.llm.model import ForwardBatch, forward, load_model, smollm2_path

if TYPE_CHECKING:
    import torch

    from shipyard.llm.model import LoadedModel

PROMPT = [{"role": "user", "content": "Name three colours of the rainbow."}]


def _pool(model: LoadedModel, context: int = 256) -> KVPool:
    c = model.config
    return KVPool(
        layers=c.layers, slots=1, kv_heads=c.kv_heads, max_context=context, head_dim=c.head_dim
    )


def _step(model: LoadedModel, pool: KVPool, tokens: list[int], start: int) -> torch.Tensor:
    """Logits of every position of ``tokens`` placed at ``start`` in slot 0."""
    import torch

    n = len(tokens)
    if start and n == 1:
        batch = ForwardBatch(
            tokens=torch.tensor(tokens),
            positions=torch.tensor([start]),
            slots=torch.tensor([0]),
            decode_slots=[0],
            decode_lengths=[start + 1],
            prefills=[],
            logit_rows=torch.tensor([0]),
        )
    else:
        batch = ForwardBatch(
            tokens=torch.tensor(tokens),
            positions=torch.arange(start, start + n),
            slots=torch.zeros(n, dtype=torch.int64),
            decode_slots=[],
            decode_lengths=[],
            prefills=[(0, n, 0, start)],
            logit_rows=torch.arange(n),
        )
    with torch.inference_mode():
        return forward(model, batch, pool)


@pytest.fixture(scope="module")
def hf(smollm2: LoadedModel) -> Any:
    return smollm2.hf_model()


def test_smollm2_config_and_cache(smollm2: LoadedModel) -> None:
    c = smollm2.config
    assert (c.layers, c.hidden, c.heads, c.kv_heads, c.head_dim) == (30, 576, 9, 3, 64)
    assert (c.intermediate, c.vocab, c.max_context, c.tied_embeddings) == (1536, 49152, 8192, True)
    assert c.rope_theta == 100000.0
    assert smollm2.path == smollm2_path()
    assert 2 in smollm2.eos_token_ids
    # A second load reads the cache: it does not convert again (about 20 s) and agrees.
    started = time.perf_counter()
    again = load_model(sha256=smollm2.sha256)
    assert time.perf_counter() - started < 15
    assert again.config == c
    assert bool((again.weights.layers[3].qkv == smollm2.weights.layers[3].qkv).all())


def test_wrong_hash_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="SHA-256"):
        load_model(sha256="0" * 64)
    with pytest.raises(ParameterError, match="GGUF"):
        load_model(tmp_path / "missing.gguf")


def test_chat_template_and_tokens(smollm2: LoadedModel) -> None:
    text = smollm2.render_chat(PROMPT)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith(
        "<|im_start|>user\nName three colours of the rainbow.<|im_end|>\n<|im_start|>assistant\n"
    )
    own = smollm2.render_chat([{"role": "system", "content": "Be brief."}, *PROMPT], False)
    assert own.startswith("<|im_start|>system\nBe brief.<|im_end|>") and "SmolLM" not in own
    ids = smollm2.encode_chat(PROMPT)
    assert ids[0] == 1 and ids[-1] != 2  # <|im_start|> recognised as one special token
    assert smollm2.decode(smollm2.encode("Héllo, wörld — ok")) == "Héllo, wörld — ok"
    with pytest.raises(ParameterError, match="role"):
        smollm2.encode_chat([{"role": "robot", "content": "x"}])


def test_logits_equal_transformers(smollm2: LoadedModel, hf: Any) -> None:
    import torch

    ids = smollm2.encode_chat(PROMPT)
    with torch.inference_mode():
        expected = hf(torch.tensor([ids])).logits[0]
    pool = _pool(smollm2)
    # Prefill in two chunks (the second attends to the first through the pool), then decode.
    split = len(ids) // 2
    got = torch.cat(
        [_step(smollm2, pool, ids[:split], 0), _step(smollm2, pool, ids[split:], split)]
    )
    assert float((got - expected).abs().max()) < 1e-3
    sequence = list(ids)
    for _ in range(4):
        nxt = int(got[-1].argmax())
        sequence.append(nxt)
        got = _step(smollm2, pool, [nxt], len(sequence) - 1)
        with torch.inference_mode():
            want = hf(torch.tensor([sequence])).logits[0, -1:]
        assert float((got - want).abs().max()) < 1e-3


def test_greedy_equals_hf_generate(smollm2: LoadedModel, hf: Any) -> None:
    import torch

    ids = smollm2.encode_chat(PROMPT)
    with torch.inference_mode():
        out = hf.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=24)
    expected = out[0, len(ids) :].tolist()
    pool = _pool(smollm2)
    logits = _step(smollm2, pool, ids, 0)[-1:]
    generated: list[int] = []
    while len(generated) < 24:
        nxt = int(logits[0].argmax())
        generated.append(nxt)
        if nxt in smollm2.eos_token_ids:
            break
        logits = _step(smollm2, pool, [nxt], len(ids) + len(generated) - 1)
    assert generated == expected[: len(generated)]
    assert smollm2.decode(generated).strip()
