"""Structured output: JSON-schema-constrained generations of SmolLM2 always parse and
validate, greedy and sampled; bad schemas are refused saying why; EOS never comes mid-value."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest

from shipyard.errors import ParameterError, RequestError
from shipyard.llm.structured import (
    TokenConstraint,
    json_constraint,
    schema_from_response_format,
    validate_schema,
)
from shipyard.llm.tasks import EXTRACTION_SCHEMA

if TYPE_CHECKING:
    from shipyard.llm.model import LoadedModel

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "mood": {"enum": ["happy", "sad", "calm"]},
        "member": {"type": "boolean"},
        "height_m": {"type": "number"},
    },
    "required": ["name", "age", "mood", "member", "height_m"],
    "additionalProperties": False,
}
CITIES = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 16},
            "big": {"type": "boolean"},
        },
        "required": ["city", "big"],
        "additionalProperties": False,
    },
    "minItems": 1,
    "maxItems": 2,
}
NESTED = {
    "type": "object",
    "properties": {
        "user": {
            "type": "object",
            "properties": {
                "id": {"type": "integer", "minimum": 1, "maximum": 9999},
                "tags": {
                    "type": "array",
                    "items": {"enum": ["admin", "staff", "guest"]},
                    "maxItems": 3,
                },
            },
            "required": ["id", "tags"],
            "additionalProperties": False,
        }
    },
    "required": ["user"],
    "additionalProperties": False,
}
GREEDY, SAMPLED = [(0.0, 0)], [(1.0, 1), (1.0, 2)]
CASES = {
    "person": (PERSON, "Describe Ann, 31 years old, happy, a club member, 1.70 m tall.", SAMPLED),
    "cities": (CITIES, "Name two cities and whether they are big.", SAMPLED),
    "nested": (NESTED, "Give a user with an id and a list of role tags.", SAMPLED),
    # Any object has no bound on its length: a sampled one may outrun max_tokens ("length").
    "json_object": (
        {"type": "json_object"},
        'Answer with a JSON object like {"answer": ...}: what colour is the sky?',
        [],
    ),
}
MAX_TOKENS = 48


@pytest.fixture(scope="module")
def hf(smollm2: LoadedModel) -> Any:
    return smollm2.hf_model()


def generate(
    smollm2: LoadedModel,
    hf: Any,
    constraint: TokenConstraint,
    prompt: str,
    temperature: float,
    seed: int,
) -> tuple[list[int], list[Any]]:
    """Decode under the constraint (a KV-cached loop, as the engine does); the tokens and the
    mask each one was drawn under."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor([smollm2.encode_chat([{"role": "user", "content": prompt}])])
    tokens: list[int] = []
    masks: list[Any] = []
    past = None
    with torch.inference_mode():
        while len(tokens) < MAX_TOKENS and not constraint.finished():
            out = hf(input_ids=ids, cache=past, use_cache=True)
            past = out.cache
            mask = constraint.allowed()
            assert mask is not None and mask.dtype == torch.bool
            logits = out.logits[0, -1].masked_fill(~mask, float("-inf"))
            if temperature == 0:
                token = int(logits.argmax())
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            constraint.advance(token)
            tokens.append(token)
            masks.append(mask)
            ids = torch.tensor([[token]])
    return tokens, masks


@pytest.fixture(scope="module")
def engine(smollm2: LoadedModel) -> Iterator[Any]:
    from shipyard.llm.engine import Engine, EngineConfig

    config = EngineConfig(max_running=4, max_waiting=8, max_context=512, threads=1)
    with Engine(smollm2, config) as running:
        yield running


@pytest.mark.parametrize("case", sorted(CASES))
def test_generations_parse_and_validate(smollm2: LoadedModel, engine: Any, case: str) -> None:
    """Through the engine, batched. Greedy: the value completes and validates. Sampled
    (temperature 1): a value that completes validates; one that does not was cut by
    max_tokens (a long string or number drawn at temperature 1), never by an error."""
    from shipyard.llm.types import SamplingParams

    schema, prompt, sampled = CASES[case]
    target = {"type": "object"} if case == "json_object" else schema
    tokens = smollm2.encode_chat([{"role": "user", "content": prompt}])
    runs = GREEDY + sampled
    gens = [
        engine.submit(
            tokens,
            SamplingParams(
                max_tokens=MAX_TOKENS, temperature=temperature, seed=seed, json_schema=schema
            ),
        )
        for temperature, seed in runs
    ]
    for (temperature, seed), gen in zip(runs, gens, strict=True):
        result = gen.wait()
        assert result.finish_reason in ("stop", "length"), result
        if temperature > 0 and result.finish_reason == "length":
            assert result.completion_tokens == MAX_TOKENS
            continue
        assert result.finish_reason == "stop", f"{case} T={temperature} seed={seed}: {result}"
        jsonschema.validate(json.loads(result.text), target)


def test_eos_never_allowed_mid_value(smollm2: LoadedModel, hf: Any) -> None:
    """A decoding loop over the real model: no mask before the value's end allows EOS."""
    constraint = json_constraint(PERSON, smollm2)
    tokens, masks = generate(smollm2, hf, constraint, CASES["person"][1], 0.0, 0)
    assert constraint.finished()
    eos = set(smollm2.eos_token_ids)
    for mask in masks[:-1]:
        assert not any(bool(mask[e]) for e in eos)
    jsonschema.validate(json.loads(smollm2.decode(tokens)), PERSON)


def test_extraction_schema_greedy(smollm2: LoadedModel, engine: Any) -> None:
    """The fraud extraction task's schema (what its adapter is evaluated on) constrains too."""
    from shipyard.llm.types import SamplingParams

    prompt = "Extract the transaction: customer 42 paid 17.50 at terminal 7 on day 3."
    tokens = smollm2.encode_chat([{"role": "user", "content": prompt}])
    params = SamplingParams(max_tokens=64, temperature=0, json_schema=EXTRACTION_SCHEMA)
    result = engine.submit(tokens, params).wait()
    assert result.finish_reason == "stop", result
    jsonschema.validate(json.loads(result.text), EXTRACTION_SCHEMA)


def test_mask_allows_eos_only_when_complete(smollm2: LoadedModel) -> None:
    """A top-level number may end after a digit, never on an empty or half-written value."""
    constraint = json_constraint({"type": "integer"}, smollm2)
    eos = smollm2.eos_token_ids[0]
    first = constraint.allowed()
    assert first is not None and not bool(first[eos])
    assert bool(first[smollm2.encode("4")[0]]) and not bool(first[smollm2.encode("a")[0]])
    constraint.advance(smollm2.encode("4")[0])
    after = constraint.allowed()
    assert after is not None and bool(after[eos]) and not constraint.finished()
    constraint.advance(eos)
    assert constraint.finished()


def test_closing_bracket_finishes_and_eos_is_refused_early(smollm2: LoadedModel) -> None:
    constraint = json_constraint({"type": "json_object"}, smollm2)
    with pytest.raises(ParameterError, match="before the JSON value was complete"):
        constraint.advance(smollm2.eos_token_ids[0])
    for token in smollm2.encode("{}"):
        assert not constraint.finished()
        constraint.advance(token)
    assert constraint.finished()
    with pytest.raises(ParameterError, match="not allowed by the JSON schema"):
        json_constraint({"type": "boolean"}, smollm2).advance(smollm2.encode("7")[0])


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ([{"type": "string"}], "must be a JSON Schema object.*got list"),
        ({"type": "strnig"}, "Invalid type: strnig"),
        ({"type": "string", "pattern": "(?<=a)b"}, "look-around"),
        ({"not": {"type": "string"}}, r"Unimplemented keys: \[\"not\"\]"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"$ref": "#/$defs/missing"}, "does not exist"),
        ({"type": "number", "minimum": "zero"}, "minimum"),
        ({"type": "string", "default": {1, 2}}, "must be plain JSON"),
    ],
)
def test_invalid_schemas_are_refused(smollm2: LoadedModel, schema: Any, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        validate_schema(schema)
    with pytest.raises(ParameterError, match=message):
        json_constraint(schema, smollm2)


def test_response_formats() -> None:
    assert schema_from_response_format(None) is None
    assert schema_from_response_format({"type": "text"}) is None
    assert schema_from_response_format({"type": "json_object"}) == {"type": "object"}
    wrapped = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    assert schema_from_response_format(wrapped) == PERSON
    with pytest.raises(ParameterError, match="'schema' key"):
        schema_from_response_format({"type": "json_schema", "json_schema": {"name": "x"}})
    with pytest.raises(ParameterError, match=r"response_format\.type"):
        schema_from_response_format({"type": "xml"})
    with pytest.raises(ParameterError, match="type must be a string"):
        schema_from_response_format({"type": "json_schema", "json_schema": {"schema": {"type": 1}}})


def test_through_the_engine(smollm2: LoadedModel) -> None:
    """Structured and free requests batched together: each structured one ends "stop" on a
    value that validates."""
    from shipyard.llm.engine import Engine, EngineConfig
    from shipyard.llm.types import SamplingParams

    prompt = smollm2.encode_chat([{"role": "user", "content": CASES["person"][1]}])
    nested = smollm2.encode_chat([{"role": "user", "content": CASES["nested"][1]}])
    config = EngineConfig(max_running=3, max_waiting=4, max_context=512, threads=1)
    with Engine(smollm2, config) as engine:
        gens = [
            engine.submit(
                prompt, SamplingParams(max_tokens=MAX_TOKENS, temperature=0, json_schema=PERSON)
            ),
            engine.submit(  # every field bounded: it completes within MAX_TOKENS whatever is drawn
                nested,
                SamplingParams(max_tokens=MAX_TOKENS, temperature=1, seed=5, json_schema=NESTED),
            ),
            engine.submit(prompt, SamplingParams(max_tokens=8, temperature=0)),
        ]
        results = [g.wait() for g in gens]
        with pytest.raises(RequestError, match=r"json_schema: .*Invalid type"):
            engine.submit(prompt, SamplingParams(json_schema={"type": "strnig"}))
    for result, schema in zip(results[:2], (PERSON, NESTED), strict=True):
        assert result.finish_reason == "stop", result
        jsonschema.validate(json.loads(result.text), schema)
    assert results[2].completion_tokens <= 8
