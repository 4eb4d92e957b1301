"""The semantic response cache: paraphrases hit, unrelated prompts and other model versions
miss, the threshold is respected, the least recently used entry is evicted first."""

from __future__ import annotations

import threading

import pytest

from shipyard.errors import ParameterError
from shipyard.llm.semantic import MiniLMEmbedder, SemanticCache, chat_key, is_cacheable
from shipyard.llm.types import SamplingParams

QUESTION = "What is the capital of France?"
PARAPHRASE = "what's the capital city of France"
ANSWER = "The capital of France is Paris."


@pytest.fixture(scope="module")
def embed() -> MiniLMEmbedder:
    """MiniLM loaded once for the module (each cache would otherwise load its own)."""
    return MiniLMEmbedder()


def similarity(embed: MiniLMEmbedder, a: str, b: str) -> float:
    vectors = embed([a, b])
    return float(vectors[0] @ vectors[1])


def test_embeddings_are_unit_vectors(embed: MiniLMEmbedder) -> None:
    vectors = embed([QUESTION, "How do I bake bread?", ""])
    assert vectors.shape == (3, 384)
    assert abs((vectors**2).sum(axis=1) - 1).max() < 1e-5


def test_paraphrase_hits_unrelated_misses(embed: MiniLMEmbedder) -> None:
    cache = SemanticCache(threshold=0.85, embed=embed)
    cache.store(QUESTION, "smollm2:1", ANSWER)
    assert cache.lookup(PARAPHRASE, "smollm2:1") == ANSWER
    assert cache.lookup("How do I bake bread at home?", "smollm2:1") is None
    assert cache.lookup("What is the capital of Germany?", "smollm2:1") is None
    stats = cache.stats()
    assert (stats.lookups, stats.hits, stats.entries) == (3, 1, 1)
    assert stats.hit_rate == pytest.approx(1 / 3)


def test_another_version_never_gets_the_answer(embed: MiniLMEmbedder) -> None:
    cache = SemanticCache(threshold=0.85, embed=embed)
    cache.store(QUESTION, "smollm2:1", ANSWER)
    assert cache.lookup(QUESTION, "smollm2:2") is None
    cache.store(QUESTION, "smollm2:2", "Paris.")
    assert cache.lookup(PARAPHRASE, "smollm2:2") == "Paris."
    assert cache.invalidate("smollm2:1") == 1
    assert cache.lookup(QUESTION, "smollm2:1") is None
    assert cache.lookup(QUESTION, "smollm2:2") == "Paris."
    assert cache.invalidate("smollm2:1") == 0


def test_threshold_is_respected(embed: MiniLMEmbedder) -> None:
    score = similarity(embed, QUESTION, PARAPHRASE)
    assert 0.5 < score < 0.99
    below = SemanticCache(threshold=min(1.0, score + 0.01), embed=embed)
    at = SemanticCache(threshold=score - 0.001, embed=embed)
    for cache in (below, at):
        cache.store(QUESTION, "v", ANSWER)
    assert below.lookup(PARAPHRASE, "v") is None
    assert at.lookup(PARAPHRASE, "v") == ANSWER
    strict = SemanticCache(threshold=1.0, embed=embed)
    strict.store(QUESTION, "v", ANSWER)
    assert strict.lookup(QUESTION, "v") == ANSWER  # the same text always answers
    assert strict.lookup(PARAPHRASE, "v") is None


def test_most_similar_entry_answers(embed: MiniLMEmbedder) -> None:
    cache = SemanticCache(threshold=0.6, embed=embed)
    cache.store("What is the capital of Germany?", "v", "Berlin.")
    cache.store(QUESTION, "v", "Paris.")
    cache.store("How do I bake bread?", "v", "Knead, rise, bake.")
    assert cache.lookup(PARAPHRASE, "v") == "Paris."
    cache.store(QUESTION, "v", "Paris, on the Seine.")  # the same text replaces its answer
    assert len(cache) == 3
    assert cache.lookup(QUESTION, "v") == "Paris, on the Seine."


def test_least_recently_used_is_evicted(embed: MiniLMEmbedder) -> None:
    cache = SemanticCache(threshold=0.9, max_entries=2, embed=embed)
    cache.store("What is the capital of France?", "v1", "Paris.")
    cache.store("How do I bake bread?", "v2", "Knead, rise, bake.")
    assert cache.lookup("What is the capital of France?", "v1") == "Paris."  # now most recent
    cache.store("Who wrote Hamlet?", "v1", "Shakespeare.")  # evicts the bread entry
    assert len(cache) == 2
    assert cache.lookup("How do I bake bread?", "v2") is None
    assert cache.lookup("What is the capital of France?", "v1") == "Paris."
    assert cache.lookup("Who wrote Hamlet?", "v1") == "Shakespeare."
    for i in range(5):  # many entries of one version: rows move, answers stay with prompts
        cache.store(f"Question number {i} about topic {i * 7}", "v1", f"answer {i}")
    assert len(cache) == 2
    assert cache.lookup("Question number 4 about topic 28", "v1") == "answer 4"
    assert cache.lookup("Question number 3 about topic 21", "v1") == "answer 3"


def test_concurrent_use(embed: MiniLMEmbedder) -> None:
    cache = SemanticCache(threshold=0.95, max_entries=8, embed=embed)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(6):
                text = f"worker {worker} asks question {i}"
                cache.store(text, "v", f"{worker}:{i}")
                found = cache.lookup(text, "v")
                assert found is None or found.startswith(f"{worker}:")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache) == 8
    assert cache.stats().lookups == 24


def test_long_prompts_answer_only_when_identical(embed: MiniLMEmbedder) -> None:
    """MiniLM reads 256 word pieces: past that, two prompts sharing a long system prompt would
    embed alike whatever their questions, so only the identical prompt answers."""
    system = "You are a careful assistant for a travel agency. " * 40
    cache = SemanticCache(threshold=0.5, embed=embed)
    cache.store(system + QUESTION, "v", ANSWER)
    assert not embed.fits(system + QUESTION) and embed.fits(QUESTION)
    assert cache.lookup(system + "How do I bake bread?", "v") is None
    assert cache.lookup(system + QUESTION, "v") == ANSWER


def test_chat_key_compares_the_question_and_pins_the_rest(embed: MiniLMEmbedder) -> None:
    system = {"role": "system", "content": "You are a travel agent."}
    ask = [system, {"role": "user", "content": QUESTION}]
    text, key = chat_key(ask, "smollm2:1", SamplingParams(max_tokens=32))
    assert text == QUESTION and key.startswith("smollm2:1#")
    cache = SemanticCache(threshold=0.85, embed=embed)
    cache.store(text, key, ANSWER)
    paraphrase = [system, {"role": "user", "content": PARAPHRASE}]
    assert cache.lookup(*chat_key(paraphrase, "smollm2:1", SamplingParams(max_tokens=32))) == ANSWER
    other_system = [{"role": "system", "content": "Answer in French."}, paraphrase[1]]
    assert cache.lookup(*chat_key(other_system, "smollm2:1", SamplingParams(max_tokens=32))) is None
    assert cache.lookup(*chat_key(paraphrase, "smollm2:1", SamplingParams(max_tokens=8))) is None
    germany = [system, {"role": "user", "content": "What is the capital of Germany?"}]
    assert cache.lookup(*chat_key(germany, "smollm2:1", SamplingParams(max_tokens=32))) is None
    assert cache.invalidate("smollm2:1") == 1  # a version's chat keys go with it
    with pytest.raises(ParameterError, match="'messages' parameter"):
        chat_key([system], "smollm2:1")


def test_only_deterministic_requests_are_cacheable() -> None:
    assert is_cacheable(SamplingParams(temperature=0))
    assert not is_cacheable(SamplingParams(temperature=0.7, seed=1))
    assert not is_cacheable(SamplingParams(temperature=0, json_schema={"type": "object"}))
    assert not is_cacheable(SamplingParams(temperature=0, stop=("\n",)))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"threshold": 0}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"max_entries": 0}, "max_entries"),
    ],
)
def test_bad_parameters(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ParameterError, match=f"'{name}' parameter of SemanticCache"):
        SemanticCache(**kwargs)  # type: ignore[arg-type]
