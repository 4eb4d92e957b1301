"""Language models on the platform: a generation engine for the same server, LoRA adapters,
a prompt registry and evaluation.

- :mod:`.types`: the records every part shares (sampling parameters, token events, results,
  engine statistics, a LoRA adapter's weights).
- :mod:`.model`: SmolLM2 (or any Llama-architecture GGUF) loaded for the engine.
- :mod:`.engine`: continuous batching over a fixed KV pool with prefix caching.
- :mod:`.structured`: JSON-schema-constrained decoding.
- :mod:`.lora`: LoRA fine-tuning with peft and the adapter file format.
- :mod:`.prompts`, :mod:`.evaluate`: versioned prompt templates and their evaluation.
- :mod:`.semantic`: the semantic response cache (MiniLM embeddings).

Everything here imports PyTorch lazily (the ``llm`` extra); ``docs/llm.md`` is the user guide.
"""
