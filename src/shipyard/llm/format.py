"""The ``llm`` framework: a registered language model as a native format.

A version's native file is ``llm.json``: the GGUF file's name (a hard link, else a copy, of
the GGUF beside it in the version folder) and its SHA-256, the prompt the version pins
(``{name, version}`` in :mod:`shipyard.llm.prompts`, or none), its default sampling
parameters, its licence, source, context window and chat template. The registry verifies
``llm.json``'s own hash; :meth:`LLMFormat.load` verifies the GGUF's before anything reads it.
MLflow gets a pointer (``mlflow_by_reference``), not a copy of the 98 MB file.

Served through the V2 and MLflow routes like any model: the input is one string column
``prompt`` (sent as the user message of a chat), the output one string column
``completion`` holding a JSON object per row: ``{"text", "finish_reason", "prompt_tokens",
"completion_tokens"}``. The OpenAI-compatible routes (:mod:`shipyard.serving.openai`) use
the same loaded :class:`LLM` and its shared engine.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from shipyard.errors import ParameterError, RequestError, TrainingError
from shipyard.llm.types import SamplingParams
from shipyard.training.trainers import ModelConfig, NativeFormat, TrainedModel, register_format
from shipyard.types import ColumnSpec, Schema

if TYPE_CHECKING:
    from shipyard.config import Settings
    from shipyard.llm.engine import Engine
    from shipyard.llm.model import LoadedModel

FRAMEWORK = "llm"
FILE = "llm.json"
MANIFEST_FORMAT = "shipyard.llm/1"
INPUTS = Schema((ColumnSpec("prompt", "string"),))
"""The served input of the V2 and MLflow routes: the user's message."""
COMPLETION = Schema((ColumnSpec("completion", "string"),))
"""The served output: a JSON object per row (module doc)."""
SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "stop", "seed")
"""The sampling parameters a version may set defaults for (OpenAI's names)."""
DEFAULTS: dict[str, Any] = {"max_tokens": 256, "temperature": 0.0, "top_p": 1.0}
"""The defaults of a version registered without any: greedy, at most 256 new tokens."""
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LLMSpec:
    """What ``llm.json`` holds (module doc)."""

    gguf: str
    """The GGUF file's name, beside ``llm.json``."""
    sha256: str
    max_context: int
    license: str = ""
    source: str = ""
    chat_template: str = ""
    prompt: tuple[str, int] | None = None
    """The pinned prompt (name, version) of :mod:`shipyard.llm.prompts`, or none."""
    defaults: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULTS))

    def __post_init__(self) -> None:
        check_defaults(self.defaults)

    def sampling(self, **overrides: Any) -> SamplingParams:
        """The version's defaults with a request's ``overrides`` (None: the default)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return check_defaults({**self.defaults, **given})

    def to_json(self) -> str:
        """The manifest's text."""
        data = {"format": MANIFEST_FORMAT, **asdict(self)}
        pinned = self.prompt
        data["prompt"] = None if pinned is None else {"name": pinned[0], "version": pinned[1]}
        data["defaults"] = dict(self.defaults)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: Path | str = "llm.json") -> LLMSpec:
        """Read a manifest :meth:`to_json` wrote; IntegrityError if it is not one."""
        from shipyard.errors import IntegrityError

        data = json.loads(text)
        if data.pop("format", None) != MANIFEST_FORMAT:
            raise IntegrityError(f"{where} is not a Shipyard LLM manifest ({MANIFEST_FORMAT})")
        prompt = data.pop("prompt", None)
        pinned = None if prompt is None else (str(prompt["name"]), int(prompt["version"]))
        return cls(**data, prompt=pinned)


def check_defaults(defaults: Mapping[str, Any]) -> SamplingParams:
    """The sampling ``defaults`` make (ParameterError naming an unknown or bad one)."""
    unknown = sorted(set(defaults) - set(SAMPLING_FIELDS))
    if unknown:
        raise ParameterError(
            f"defaults: unknown sampling parameter {unknown[0]!r}; expected some of "
            f"{', '.join(SAMPLING_FIELDS)}"
        )
    values = {**DEFAULTS, **defaults}
    stop = values.get("stop") or ()
    values["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
    return SamplingParams(**values)


class LLM:
    """A loaded LLM version: its manifest, its verified GGUF path and, once needed, a loaded
    model and a generation engine (shared with other versions of the same GGUF when serving
    binds one with :meth:`bind`)."""

    def __init__(self, spec: LLMSpec, gguf: Path) -> None:
        self.spec = spec
        self.gguf = gguf
        self.model: LoadedModel | None = None
        self.engine: Engine | None = None
        self._own_engine = False
        self._lock = threading.Lock()
        self.preview_tokens: int | None = None
        """A cap on new tokens for :class:`LLMModel`'s answers (the registry's signature
        sample at registration); None: the version's defaults."""

    @property
    def max_context(self) -> int:
        """The context window, in tokens (prompt and completion together): the model's, or
        the engine's ``max_context`` when that is smaller."""
        if self.engine is None:
            return self.spec.max_context
        return min(self.spec.max_context, self.engine.config.max_context)

    def bind(self, model: LoadedModel, engine: Engine) -> None:
        """Use ``engine`` (started, over ``model``) instead of a private one."""
        self.model, self.engine = model, engine

    def ensure(self) -> tuple[LoadedModel, Engine]:
        """The model and engine, starting a private engine (default settings) on first use
        outside a server (``ModelRegistry.load(...).predict``, MLflow's pyfunc)."""
        if self.engine is None:
            self.start()
        assert self.model is not None and self.engine is not None
        return self.model, self.engine

    def start(self, settings: Settings | None = None, model: LoadedModel | None = None) -> None:
        """Start a private engine with ``settings``' ``llm_*`` values over ``model`` (an
        already loaded model of this very GGUF, same SHA-256) or the GGUF loaded now."""
        with self._lock:
            if self.engine is not None:
                return
            from shipyard.config import Settings
            from shipyard.llm.engine import Engine, EngineConfig
            from shipyard.llm.model import load_model

            if model is not None and model.sha256 != self.spec.sha256:
                raise ParameterError(
                    f"model: expected the model of {self.spec.gguf} (SHA-256 "
                    f"{self.spec.sha256[:12]}...); got one of {model.sha256[:12]}..."
                )
            if model is None:
                model = load_model(self.gguf, sha256=self.spec.sha256)
            engine = Engine(model, EngineConfig.from_settings(settings or Settings()), {})
            engine.start()
            self.model, self.engine, self._own_engine = model, engine, True

    def close(self) -> None:
        """Stop the private engine, if one was started here."""
        if self._own_engine and self.engine is not None:
            self.engine.close()
        self.engine = None

    def prompt_tokens(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """The chat's prompt tokens (the model's chat template)."""
        model, _ = self.ensure()
        return list(model.encode_chat([dict(m) for m in messages]))

    def check_texts(self, texts: Sequence[str]) -> None:
        """RequestError (400) naming the row when a prompt leaves no room to generate."""
        for i, text in enumerate(texts):
            used = len(self.prompt_tokens([{"role": "user", "content": text}]))
            if used >= self.max_context:
                raise RequestError(
                    400,
                    f"input 'prompt' (row {i}) is {used:,} tokens; the context window is "
                    f"{self.max_context:,} tokens (prompt and completion together)",
                )

    def complete(self, texts: Sequence[str], params: SamplingParams) -> list[dict[str, Any]]:
        """Each text as a user message, generated concurrently (blocking): one answer each."""
        model, engine = self.ensure()
        generations = []
        try:
            for text in texts:
                tokens = model.encode_chat([{"role": "user", "content": str(text)}])
                room = self.max_context - len(tokens)
                generations.append(
                    engine.submit(list(tokens), replace(params, max_tokens=_fit(params, room)))
                )
            results = [g.wait(None) for g in generations]
        except BaseException:
            for g in generations:
                g.cancel()
            raise
        return [
            {
                "text": r.text,
                "finish_reason": r.finish_reason,
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
            }
            for r in results
        ]


def _fit(params: SamplingParams, room: int) -> int:
    """``max_tokens`` within the room the context window leaves (at least 1)."""
    return max(1, min(params.max_tokens, room))


def texts_of(batch: Any) -> list[str]:
    """The prompts of a batch: an [n, 1] object array, a 1-D sequence, or a frame."""
    import numpy as np

    if hasattr(batch, "columns"):
        column = "prompt" if "prompt" in batch.columns else batch.columns[0]
        return [str(v) for v in batch[column]]
    array = np.asarray(batch, dtype=object)
    return [str(v) for v in (array[:, 0] if array.ndim == 2 else array).tolist()]


class LLMFormat(NativeFormat):
    """The ``llm`` native format: ``llm.json`` beside its GGUF file (module doc)."""

    file = FILE
    mlflow_by_reference: ClassVar[bool] = True
    """MLflow gets a pointer to ``llm.json`` (which names the GGUF), not a copy."""

    def save(self, estimator: Any, path: Path) -> None:
        """Link (else copy) the GGUF beside ``path``, then write the manifest."""
        import os
        import shutil

        source: Path = estimator.gguf
        spec: LLMSpec = estimator.spec
        target = path.parent / spec.gguf
        if not target.exists():
            try:
                os.link(source, target)
            except OSError:  # another filesystem, or links not allowed: a copy
                shutil.copyfile(source, target)
        path.write_text(spec.to_json())

    def load(self, path: Path) -> LLM:
        """The version's :class:`LLM`, its GGUF verified against the manifest's SHA-256."""
        from shipyard.integrity import verify_sha256

        spec = LLMSpec.from_json(path.read_text(), path)
        gguf = path.parent / spec.gguf
        verify_sha256(gguf, spec.sha256)
        return LLM(spec, gguf)

    def predict(self, model: Any, batch: Any) -> Any:
        """A 1-D object array of answers (dicts), one per prompt, with the version's
        default sampling parameters."""
        import numpy as np

        llm: LLM = model
        answers = llm.complete(texts_of(batch), llm.spec.sampling())
        out = np.empty(len(answers), dtype=object)
        for i, answer in enumerate(answers):
            out[i] = answer
        return out


register_format(FRAMEWORK, LLMFormat())


class LLMConfig(ModelConfig):
    """A registered language model's settings as the registry records them (its pinned
    prompt and default sampling); not trained here and not in ``MODEL_TYPES`` (whose
    checks score tabular rows with probabilities). Register with
    :func:`shipyard.llm.registry.register_llm`."""

    model_type = "llm"
    framework = FRAMEWORK
    defaults: ClassVar[dict[str, Any]] = {
        "base": "",
        "gguf_sha256": "",
        "prompt": "",
        "sampling": dict(DEFAULTS),
        "max_context": 0,
    }

    def fit(self, X: Any, y: Any) -> TrainedModel:
        """Refused: a pretrained LLM is registered, not fitted (``register_llm``)."""
        raise TrainingError(
            "LLMConfig does not fit from a feature frame; register a GGUF with "
            "shipyard.llm.registry.register_llm (LoRA adapters: shipyard.llm.lora)."
        )


class LLMModel(TrainedModel):
    """A language model as a registrable model: ``prompt`` in, JSON ``completion`` out."""

    output_schema: ClassVar[Schema] = COMPLETION

    def predict_proba(self, X: Any) -> Any:
        """Not a classifier: each prompt's completion as JSON text (what ``completion``
        holds), with the version's default sampling."""
        import numpy as np

        llm: LLM = self.estimator
        answers = llm.complete(texts_of(X), llm.spec.sampling(max_tokens=llm.preview_tokens))
        return np.asarray([json.dumps(a) for a in answers], dtype=object)

    def feature_importance(self) -> dict[str, float]:
        """None: a language model has no feature importance here."""
        return {}
