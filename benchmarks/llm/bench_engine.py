"""Micro-benchmark of the generation engine in process (no server): what continuous batching
and the prefix cache give on this machine.

Closed-loop streams (each stream submits its next request when the previous one finishes)
of 62-token chat requests (benchmarks/llm/prompts.py), ``max_tokens`` 128, greedy, at 1, 4
and 16 concurrent streams, ``--rounds`` requests per stream; then time to first token of a
~1,000-token shared system prompt, cold (a fresh handbook edition) and warm (the same
edition, another question). Prints one table. Run from the repository root::

    .venv/bin/python benchmarks/llm/bench_engine.py [--threads N] [--rounds R] [--streams 1,4,16]

Goals (issue 17): >= 200 output tokens/s in aggregate at 16 streams with p50 TTFT <= 0.5 s,
and warm-prefix TTFT >= 10x faster than cold. The machine is shared: run it a few times.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.llm.prompts import PREFIX_QUESTIONS, load_message, system_prompt
from shipyard.llm.engine import Engine, EngineConfig
from shipyard.llm.model import LoadedModel, load_model
from shipyard.llm.types import GenerationResult, SamplingParams

GREEDY_128 = SamplingParams(max_tokens=128, temperature=0)


async def _streams(
    engine: Engine, model: LoadedModel, streams: int, rounds: int, first: int
) -> tuple[list[GenerationResult], float]:
    async def stream(s: int) -> list[GenerationResult]:
        results = []
        for r in range(rounds):
            n = first + s * rounds + r
            prompt = model.encode_chat([{"role": "user", "content": load_message(n)}])
            results.append(await engine.submit(prompt, GREEDY_128).result())
        return results

    started = time.perf_counter()
    per_stream = await asyncio.gather(*(stream(s) for s in range(streams)))
    return [r for results in per_stream for r in results], time.perf_counter() - started


def _load_level(engine: Engine, model: LoadedModel, streams: int, rounds: int, first: int) -> str:
    results, seconds = asyncio.run(_streams(engine, model, streams, rounds, first))
    tokens = sum(r.completion_tokens for r in results)
    ttft = sorted(r.ttft_s for r in results)
    tpot = statistics.median(r.tpot_s for r in results)
    prompt = statistics.mean(r.prompt_tokens for r in results)
    p99 = ttft[min(len(ttft) - 1, round(0.99 * (len(ttft) - 1)))]
    return (
        f"{streams:>7} {len(results):>8} {tokens / seconds:>10.1f} "
        f"{statistics.median(ttft):>9.3f} {p99:>9.3f} {tpot * 1000:>9.1f} {prompt:>8.1f}"
    )


def _prefix_ttft(engine: Engine, model: LoadedModel, edition: int) -> tuple[float, float, int]:
    """TTFT of a fresh 1,000-token system prompt (cold), then the median of the same system
    prompt with other questions (warm), and the warm requests' cached tokens."""
    one = SamplingParams(max_tokens=1, temperature=0)

    def ask(question: str) -> GenerationResult:
        messages = [
            {"role": "system", "content": system_prompt(edition)},
            {"role": "user", "content": question},
        ]
        return engine.submit(model.encode_chat(messages), one).wait()

    cold = ask(PREFIX_QUESTIONS[0])
    warm = [ask(q) for q in PREFIX_QUESTIONS[1:4]]
    return cold.ttft_s, statistics.median(r.ttft_s for r in warm), warm[0].cached_tokens


def main() -> None:
    """Run the levels and the prefix case; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="PyTorch threads (CPU count)")
    parser.add_argument("--rounds", type=int, default=2, help="requests per stream")
    parser.add_argument("--streams", default="1,4,16", help="concurrency levels")
    args = parser.parse_args()
    levels = [int(s) for s in args.streams.split(",")]
    model = load_model()
    config = EngineConfig(max_running=max(levels), max_context=2048, threads=args.threads)
    print(f"SmolLM2-135M, threads {args.threads or os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    with Engine(model, config) as engine:
        engine.submit(model.encode("warm up"), SamplingParams(max_tokens=4, temperature=0)).wait()
        print("streams requests  tokens/s  p50 TTFT  p99 TTFT  TPOT ms  prompt")
        first = 0
        for streams in levels:
            print(_load_level(engine, model, streams, args.rounds, first), flush=True)
            first += streams * args.rounds
        colds, warms = [], []
        for edition in range(3):
            cold, warm, cached = _prefix_ttft(engine, model, 1000 + edition)
            colds.append(cold)
            warms.append(warm)
        cold, warm = statistics.median(colds), statistics.median(warms)
        print(
            f"prefix 1,000 tokens: cold TTFT {cold:.3f} s, warm {warm:.3f} s "
            f"({cold / warm:.1f}x; {cached} cached tokens per warm request)"
        )
        stats = engine.stats()
        print(
            f"engine: {stats.steps} steps, prefix hit rate {stats.prefix_hit_rate:.0%}, "
            f"KV pool {stats.kv_bytes / 2**30:.2f} GiB reserved, "
            f"prefix cache {stats.prefix_cache_bytes / 2**20:.0f} MiB"
        )


if __name__ == "__main__":
    main()
