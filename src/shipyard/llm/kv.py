"""Where the engine keeps keys and values: a fixed pool of per-sequence slots, and an LRU
cache of prompt-prefix blocks that later requests reuse.

**The pool** (:class:`KVPool`) is ``max_running`` slots of ``max_context`` positions for
every layer, keys and values, float32, reserved once when the engine starts. A running
sequence owns one slot from admission to its end; decode attention reads the first
``length`` positions of each running slot and masks the rest. Why a fixed pool and not
paged blocks: it is simple (a slot is an index, attention reads one strided view), it cannot
fragment, and its bound is known at load (``kv_bytes``). The cost is memory for
``max_context`` positions per slot whether a sequence uses them or not: SmolLM2-135M takes
46,080 bytes per position (30 layers x 3 KV heads x 64 x 2 x 4 bytes), so 32 slots of 2,048
positions reserve 3.0 GB of address space. The pool is allocated uninitialised, so the
operating system commits pages only as positions are written; positions a batch reads past
a slot's length are zeroed the first time (:meth:`KVPool.ensure_finite`), never left as
garbage that a masked softmax weight of 0 would turn into NaN.

**The prefix cache** (:class:`PrefixCache`) stores, after a prompt is prefilled, the keys and
values of its full ``block_size``-token blocks, keyed by a hash chain (as vLLM does): a
block's key hashes the previous block's key, its tokens and the adapter (an adapter changes
keys and values). On admission the engine copies the longest cached block-aligned prefix
into the new slot and prefills only the rest. Bounded by bytes, least recently used first
out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int) -> int:
    """Bytes of keys and values one token position takes across all layers (float32)."""
    return layers * kv_heads * head_dim * 2 * 4


class KVPool:
    """``slots`` x ``max_context`` positions of keys and values for every layer, reserved once.

    ``k[layer]`` and ``v[layer]`` have shape ``[slots, kv_heads, max_context, head_dim]``.
    """

    def __init__(
        self, *, layers: int, slots: int, kv_heads: int, max_context: int, head_dim: int
    ) -> None:
        import torch

        shape = (layers, slots, kv_heads, max_context, head_dim)
        self.k = torch.empty(shape, dtype=torch.float32)
        self.v = torch.empty(shape, dtype=torch.float32)
        self.slots = slots
        self.max_context = max_context
        self.nbytes = 2 * self.k.numel() * self.k.element_size()
        self._free = list(range(slots))
        self._finite = [0] * slots  # positions known to hold finite numbers, per slot

    @property
    def used(self) -> int:
        """Slots held by sequences now."""
        return self.slots - len(self._free)

    def allocate(self) -> int:
        """Take the lowest free slot (keeps running slots contiguous, so reads are views)."""
        if not self._free:
            raise RuntimeError("no free KV slot; the scheduler admits only into free slots")
        self._free.sort()
        return self._free.pop(0)

    def release(self, slot: int) -> None:
        """Give a slot back; its contents stay finite and are overwritten by the next owner."""
        if slot in self._free:
            raise RuntimeError(f"KV slot {slot} released twice")
        self._free.append(slot)

    def ensure_finite(self, slots: Sequence[int], upto: int) -> None:
        """Zero positions ``[0, upto)`` of ``slots`` that were never written."""
        for slot in slots:
            start = self._finite[slot]
            if start < upto:
                self.k[:, slot, :, start:upto].zero_()
                self.v[:, slot, :, start:upto].zero_()
                self._finite[slot] = upto

    def mark_written(self, slot: int, upto: int) -> None:
        """Record that positions ``[0, upto)`` of ``slot`` now hold written values."""
        self._finite[slot] = max(self._finite[slot], upto)


@dataclass
class _Block:
    parent: int | None
    tokens: tuple[int, ...]
    adapter: str | None
    k: torch.Tensor  # [layers, kv_heads, block_size, head_dim]
    v: torch.Tensor


class PrefixCache:
    """Keys and values of prompt blocks, keyed by a hash chain, bounded by ``max_bytes`` (LRU).

    Use :meth:`lookup` at admission (how many leading tokens are cached, copied into a slot)
    and :meth:`store` after a prompt's prefill.
    """

    def __init__(self, *, block_size: int, max_bytes: int, bytes_per_token: int) -> None:
        self.block_size = block_size
        self.max_bytes = max_bytes
        self.block_bytes = block_size * bytes_per_token
        self._blocks: OrderedDict[int, _Block] = OrderedDict()

    @property
    def nbytes(self) -> int:
        """Bytes of keys and values held now."""
        return len(self._blocks) * self.block_bytes

    def _keys(self, tokens: Sequence[int], adapter: str | None, blocks: int) -> list[int]:
        keys: list[int] = []
        parent: int | None = None
        size = self.block_size
        for b in range(blocks):
            key = hash((parent, tuple(tokens[b * size : (b + 1) * size]), adapter))
            keys.append(key)
            parent = key
        return keys

    def _matches(
        self, key: int, parent: int | None, tokens: Sequence[int], adapter: str | None
    ) -> bool:
        block = self._blocks.get(key)
        return (
            block is not None
            and block.parent == parent
            and block.adapter == adapter
            and block.tokens == tuple(tokens)
        )

    def lookup(self, tokens: Sequence[int], adapter: str | None, pool: KVPool, slot: int) -> int:
        """Copy the longest cached block-aligned prefix of ``tokens`` into ``slot``; return its
        length in tokens (always leaving at least the last token to compute)."""
        if self.max_bytes <= 0:
            return 0
        size = self.block_size
        keys = self._keys(tokens, adapter, (len(tokens) - 1) // size)
        hit = 0
        parent: int | None = None
        for b, key in enumerate(keys):
            if not self._matches(key, parent, tokens[b * size : (b + 1) * size], adapter):
                break
            block = self._blocks[key]
            self._blocks.move_to_end(key)
            pool.k[:, slot, :, b * size : (b + 1) * size] = block.k
            pool.v[:, slot, :, b * size : (b + 1) * size] = block.v
            hit = (b + 1) * size
            parent = key
        if hit:
            pool.mark_written(slot, hit)
        return hit

    def store(self, tokens: Sequence[int], adapter: str | None, pool: KVPool, slot: int) -> None:
        """Keep the full blocks of a prefilled prompt in ``slot`` (those not cached already)."""
        if self.max_bytes < self.block_bytes:
            return
        size = self.block_size
        parent: int | None = None
        for b, key in enumerate(self._keys(tokens, adapter, len(tokens) // size)):
            block_tokens = tokens[b * size : (b + 1) * size]
            if key in self._blocks:
                if not self._matches(key, parent, block_tokens, adapter):
                    return  # a hash collision: keep the older block, cache nothing past it
                self._blocks.move_to_end(key)
            else:
                while self._blocks and self.nbytes + self.block_bytes > self.max_bytes:
                    self._blocks.popitem(last=False)
                self._blocks[key] = _Block(
                    parent=parent,
                    tokens=tuple(block_tokens),
                    adapter=adapter,
                    k=pool.k[:, slot, :, b * size : (b + 1) * size].clone(),
                    v=pool.v[:, slot, :, b * size : (b + 1) * size].clone(),
                )
            parent = key

    def clear(self) -> None:
        """Drop every cached block."""
        self._blocks.clear()
