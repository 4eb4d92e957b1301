"""JSON-schema-constrained decoding: a token mask per step so that the output always parses.

Built on `llguidance <https://github.com/guidance-ai/llguidance>`_ (a Rust Earley parser over
the tokenizer's byte strings). The engine asks, for each sequence whose
:attr:`~shipyard.llm.types.SamplingParams.json_schema` is set::

    constraint = json_constraint(params.json_schema, model)
    while not constraint.finished():
        mask = constraint.allowed()        # bool [vocab_size]; True = the token may come next
        logits[~mask] = -inf
        token = sample(logits)
        constraint.advance(token)

End-of-sequence is in the mask only once the JSON value is complete, and after a value that
nothing may follow (an object's or array's closing bracket) :meth:`TokenConstraint.finished`
is true at once. The output is JSON with ``", "`` and ``": "`` separators and no other
whitespace (a small model left free to add whitespace can spend its whole budget on it).

Compiled pieces are cached: the tokenizer per model (about 1 s for a 49k vocabulary) and a
pristine parser per schema, copied for each request. Supported keywords are llguidance's
(types, ``properties``/``required``/``additionalProperties``, ``items``/``prefixItems``,
``enum``/``const``, ``anyOf``/``oneOf``/``allOf``, ``$ref``/``$defs``, string
``pattern``/``format``/length bounds, numeric bounds); others (``not``, ``if``,
``uniqueItems`` ...) are refused by :func:`validate_schema` rather than silently ignored.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from shipyard.errors import ParameterError

if TYPE_CHECKING:
    import llguidance
    import torch

log = logging.getLogger(__name__)

JSON_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
"""llguidance's JSON options (a schema's own ``x-guidance`` key overrides them)."""
ANY_OBJECT: dict[str, Any] = {"type": "object"}
"""The schema of OpenAI's ``{"type": "json_object"}`` mode: any JSON object."""
_MAX_TOKENIZERS = 4
_MAX_SCHEMAS = 256


class ConstrainedModel(Protocol):
    """What :func:`json_constraint` reads of a loaded model (``LoadedModel`` has it)."""

    @property
    def tokenizer(self) -> Any:
        """A Hugging Face fast tokenizer or a ``tokenizers.Tokenizer``."""
        ...

    @property
    def eos_token_ids(self) -> Sequence[int]:
        """The tokens that end a completion."""
        ...

    @property
    def config(self) -> Any:
        """The model configuration; ``vocab_size`` or ``vocab`` is the logits' width."""
        ...


class TokenConstraint:
    """Which tokens may come next for one sequence; advanced with each token the engine picks.

    Not thread-safe: one per sequence, used by the engine's loop only.
    """

    def __init__(
        self, matcher: llguidance.LLMatcher, vocab_size: int, eos_token_ids: Sequence[int]
    ) -> None:
        self._matcher = matcher
        self.vocab_size = vocab_size
        self.eos_token_ids = frozenset(eos_token_ids)
        self._ended = False

    def allowed(self) -> torch.Tensor | None:
        """A bool tensor ``[vocab_size]``: True where the token may come next."""
        import numpy as np
        import torch

        bits = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        mask = np.unpackbits(bits, bitorder="little", count=self.vocab_size).view(np.bool_)
        return torch.from_numpy(mask)

    def advance(self, token_id: int) -> None:
        """Take the token the engine chose; ParameterError if the mask did not allow it."""
        token_id = int(token_id)
        if token_id in self.eos_token_ids:
            if not self._matcher.is_accepting():
                raise ParameterError(
                    f"End of sequence (token {token_id}) came before the JSON value was complete."
                )
            self._ended = True
            return
        if not self._matcher.consume_token(token_id):
            raise ParameterError(
                f"Token {token_id} is not allowed by the JSON schema at this point: "
                f"{self._matcher.get_error() or 'the value is already complete'}."
            )

    def finished(self) -> bool:
        """True once the JSON value is complete and nothing may follow it but the end."""
        return self._ended or self._matcher.is_stopped()

    def accepting(self) -> bool:
        """True when the output so far is a complete JSON value (it could end here)."""
        return self._ended or self._matcher.is_accepting()


def normalize_schema(schema: Any) -> dict[str, Any]:
    """The schema to constrain to: ``{"type": "json_object"}`` becomes any object.

    ParameterError if ``schema`` is not a JSON object (a dict) that JSON can encode.
    """
    if not isinstance(schema, Mapping):
        raise ParameterError(
            f"json_schema must be a JSON Schema object (a dict); got {type(schema).__name__} "
            f"{schema!r:.60}."
        )
    if dict(schema) == {"type": "json_object"}:
        return dict(ANY_OBJECT)
    try:
        normalized: dict[str, Any] = json.loads(json.dumps(schema, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"json_schema must be plain JSON: {exc}.") from None
    return normalized


def schema_from_response_format(response_format: Any) -> dict[str, Any] | None:
    """The schema an OpenAI ``response_format`` asks for (None for ``{"type": "text"}``).

    Accepts ``{"type": "json_object"}`` and ``{"type": "json_schema", "json_schema":
    {"name": ..., "schema": {...}}}``; ParameterError naming what is wrong otherwise.
    """
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return dict(ANY_OBJECT)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping) or "schema" not in spec:
            raise ParameterError(
                "response_format.json_schema must be an object with a 'schema' key; "
                f"got {spec!r:.80}."
            )
        schema = normalize_schema(spec["schema"])
        validate_schema(schema)
        return schema
    raise ParameterError(
        "response_format.type must be 'text', 'json_object' or 'json_schema'; "
        f"got {response_format!r:.80}."
    )


def validate_schema(schema: Any) -> None:
    """ParameterError naming what is wrong if ``schema`` cannot constrain decoding.

    Refused: anything but a dict, an unknown ``type``, a dangling ``$ref``, a regular
    expression the parser cannot compile, keywords it does not implement (``not``, ``if``,
    ``uniqueItems`` ...). The server answers 400 with the message.
    """
    _check_grammar(_schema_text(normalize_schema(schema)))


def _schema_text(schema: Mapping[str, Any]) -> str:
    # Not sort_keys: the order of "properties" is the order the output writes them in.
    return json.dumps(schema, separators=(",", ":"))


def _grammar(schema_text: str) -> str:
    import llguidance

    return llguidance.LLMatcher.grammar_from_json_schema(schema_text, defaults=JSON_OPTIONS)  # type: ignore[arg-type]


_valid_schemas: OrderedDict[str, str] = OrderedDict()
_lock = threading.Lock()


def _check_grammar(schema_text: str) -> str:
    """The grammar of a schema, or ParameterError with the parser's reason."""
    with _lock:
        if schema_text in _valid_schemas:
            _valid_schemas.move_to_end(schema_text)
            return _valid_schemas[schema_text]
    import llguidance

    grammar = _grammar(schema_text)
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        reason = "; ".join(m.strip() for m in messages) or "unknown error"
        raise ParameterError(f"json_schema is not supported: {reason}. Got {schema_text:.200}")
    with _lock:
        _valid_schemas[schema_text] = grammar
        while len(_valid_schemas) > _MAX_SCHEMAS:
            _valid_schemas.popitem(last=False)
    return grammar


_tokenizers: OrderedDict[tuple[int, int, tuple[int, ...]], tuple[Any, Any]] = OrderedDict()
_matchers: OrderedDict[tuple[int, str], tuple[Any, Any]] = OrderedDict()


def guidance_tokenizer(
    tokenizer: Any, vocab_size: int, eos_token_ids: Sequence[int]
) -> llguidance.LLTokenizer:
    """llguidance's view of a tokenizer (cached per tokenizer object: ~1 s for 49k tokens).

    ``tokenizer``: a Hugging Face fast tokenizer or a ``tokenizers.Tokenizer``.
    """
    key = (id(tokenizer), int(vocab_size), tuple(int(t) for t in eos_token_ids))
    with _lock:
        if key in _tokenizers and _tokenizers[key][0] is tokenizer:
            _tokenizers.move_to_end(key)
            return _tokenizers[key][1]  # type: ignore[no-any-return]
    import llguidance
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not isinstance(backend, Tokenizer):
        raise ParameterError(
            "Structured output needs a Hugging Face fast tokenizer or a tokenizers.Tokenizer; "
            f"got {type(tokenizer).__name__}."
        )
    plain = Tokenizer.from_str(backend.to_str())  # a copy: padding off without touching it
    plain.no_padding()
    plain.no_truncation()
    built = llguidance.LLTokenizer(
        plain.to_str(), n_vocab=int(vocab_size), eos_token=[int(t) for t in eos_token_ids]
    )
    with _lock:
        # Holding the tokenizer keeps its id from being reused by another object.
        _tokenizers[key] = (tokenizer, built)
        while len(_tokenizers) > _MAX_TOKENIZERS:
            _tokenizers.popitem(last=False)
    return built


def vocab_size_of(model: ConstrainedModel) -> int:
    """The width of the model's logits: ``config.vocab_size`` (transformers) or ``config.vocab``."""
    config = model.config
    size = getattr(config, "vocab_size", None) or getattr(config, "vocab", None)
    if not isinstance(size, int) or size <= 0:
        raise ParameterError(f"model.config has no vocabulary size; got {config!r:.80}.")
    return size


def json_constraint(schema: Mapping[str, Any], model: ConstrainedModel) -> TokenConstraint:
    """A fresh :class:`TokenConstraint` for one sequence that must produce ``schema``'s JSON.

    ParameterError (with the reason) for a schema :func:`validate_schema` refuses.
    """
    import llguidance

    schema_text = _schema_text(normalize_schema(schema))
    grammar = _check_grammar(schema_text)
    vocab_size = vocab_size_of(model)
    eos = [int(t) for t in model.eos_token_ids]
    lltok = guidance_tokenizer(model.tokenizer, vocab_size, eos)
    key = (id(lltok), schema_text)
    with _lock:
        held = _matchers.get(key)
        pristine = held[1] if held is not None and held[0] is lltok else None
        if pristine is not None:
            _matchers.move_to_end(key)
    if pristine is None:
        pristine = llguidance.LLMatcher(lltok, grammar, log_level=0)
        if pristine.is_error():
            raise ParameterError(f"json_schema is not supported: {pristine.get_error()}.")
        with _lock:
            _matchers[key] = (lltok, pristine)
            while len(_matchers) > _MAX_SCHEMAS:
                _matchers.popitem(last=False)
    return TokenConstraint(pristine.deep_copy(), vocab_size, eos)
