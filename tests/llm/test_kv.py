"""The KV pool's slots and the prefix cache's hash chain, LRU bound and adapter keys
(small tensors, no model)."""

from __future__ import annotations

import pytest

from shipyard.llm.kv import KVPool, PrefixCache, kv_bytes_per_token

LAYERS, HEADS, DIM, BLOCK = 2, 1, 4, 4


def _pool(slots: int = 3, context: int = 32) -> KVPool:
    return KVPool(layers=LAYERS, slots=slots, kv_heads=HEADS, max_context=context, head_dim=DIM)


def _cache(blocks: int) -> PrefixCache:
    per_token = kv_bytes_per_token(LAYERS, HEADS, DIM)
    return PrefixCache(
        block_size=BLOCK, max_bytes=blocks * BLOCK * per_token, bytes_per_token=per_token
    )


def _fill(pool: KVPool, slot: int, tokens: list[int]) -> None:
    """Stand-in keys and values: each position holds its token id."""
    import torch

    values = torch.tensor(tokens, dtype=torch.float32)[None, None, :, None]
    pool.k[:, slot, :, : len(tokens)] = values
    pool.v[:, slot, :, : len(tokens)] = -values
    pool.mark_written(slot, len(tokens))


def test_pool_slots_are_reserved_once_and_reused() -> None:
    pool = _pool()
    assert pool.nbytes == 2 * LAYERS * 3 * HEADS * 32 * DIM * 4
    assert [pool.allocate() for _ in range(3)] == [0, 1, 2] and pool.used == 3
    with pytest.raises(RuntimeError, match="no free KV slot"):
        pool.allocate()
    pool.release(1)
    with pytest.raises(RuntimeError, match="released twice"):
        pool.release(1)
    assert pool.allocate() == 1


def test_unwritten_positions_are_zeroed_before_reading() -> None:
    pool = _pool()
    pool.k.fill_(float("nan"))
    pool.v.fill_(float("nan"))
    _fill(pool, 0, [7, 8])
    pool.ensure_finite([0, 1], 6)
    assert bool(pool.k[:, :2, :, :6].isfinite().all()) and bool(
        pool.v[:, :2, :, :6].isfinite().all()
    )
    assert float(pool.k[0, 0, 0, 1, 0]) == 8.0  # written positions are kept


def test_prefix_cache_reuses_block_aligned_prefixes() -> None:
    pool, cache = _pool(), _cache(blocks=8)
    prompt = list(range(100, 111))  # 11 tokens: two full blocks
    _fill(pool, 0, prompt)
    cache.store(prompt, None, pool, 0)
    assert cache.nbytes == 2 * cache.block_bytes
    hit = cache.lookup(prompt, None, pool, 2)
    assert hit == 8
    assert pool.k[0, 2, 0, :8, 0].tolist() == [float(t) for t in prompt[:8]]
    assert pool.v[1, 2, 0, :8, 0].tolist() == [-float(t) for t in prompt[:8]]
    # A block-aligned prompt keeps its last token to compute: 8 tokens reuse one block.
    assert cache.lookup(prompt[:8], None, pool, 1) == 4
    # A different first block breaks the chain; another adapter never shares keys.
    assert cache.lookup([1, *prompt[1:]], None, pool, 1) == 0
    assert cache.lookup(prompt, "sentiment#0", pool, 1) == 0


def test_prefix_cache_is_bounded_least_recently_used_first() -> None:
    pool, cache = _pool(), _cache(blocks=2)
    first, second = list(range(9)), list(range(50, 59))
    _fill(pool, 0, first)
    cache.store(first, None, pool, 0)
    _fill(pool, 1, second)
    cache.store(second, None, pool, 1)
    assert cache.nbytes <= cache.max_bytes
    assert cache.lookup(second, None, pool, 2) == 8
    assert cache.lookup(first, None, pool, 2) == 0  # evicted: the oldest blocks went first
    cache.clear()
    assert cache.nbytes == 0


def test_a_zero_budget_caches_nothing() -> None:
    pool = _pool()
    cache = PrefixCache(
        block_size=BLOCK, max_bytes=0, bytes_per_token=kv_bytes_per_token(LAYERS, HEADS, DIM)
    )
    _fill(pool, 0, list(range(9)))
    cache.store(list(range(9)), None, pool, 0)
    assert cache.nbytes == 0 and cache.lookup(list(range(9)), None, pool, 1) == 0
