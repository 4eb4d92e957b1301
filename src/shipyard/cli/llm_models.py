"""``shipyard llm register``: register a GGUF language model as a version of a model.

A thin layer over :func:`shipyard.llm.registry.register_llm` (see ``docs/llm.md``)::

    shipyard llm register                                  # SmolLM2 from its wheel
    shipyard llm register --prompt sentiment@production --max-tokens 8
    shipyard serve smollm2@champion
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from shipyard.cli._common import console, open_workspace


@click.command()
@click.option("--name", default="smollm2", show_default=True, help="The registered model.")
@click.option(
    "--gguf",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A Llama-architecture GGUF file (default: SmolLM2-135M-Instruct from its wheel).",
)
@click.option(
    "--prompt",
    "prompt_ref",
    default=None,
    help="Pin a prompt version: NAME@VERSION or NAME@ALIAS (resolved to its version now).",
)
@click.option("--max-tokens", type=int, default=None, help="Default max_tokens of requests.")
@click.option("--temperature", type=float, default=None, help="Default temperature (0: greedy).")
@click.option("--stop", multiple=True, help="Default stop sequence (repeatable).")
@click.option("--actor", default=None, help="Who (default: the current user).")
@click.option("--reason", default="registered a language model", show_default=True)
@click.pass_context
def register(
    ctx: click.Context,
    name: str,
    gguf: Path | None,
    prompt_ref: str | None,
    max_tokens: int | None,
    temperature: float | None,
    stop: tuple[str, ...],
    actor: str | None,
    reason: str,
) -> None:
    """Register a language model as a new version (challenger) of --name."""
    from shipyard.llm.format import DEFAULTS
    from shipyard.llm.registry import register_llm

    ws = open_workspace(ctx)
    prompt = None
    if prompt_ref is not None:
        from shipyard.llm.prompts import get_prompt, parse_ref

        prompt_name, ref = parse_ref(prompt_ref)
        pinned = get_prompt(ws, prompt_name, ref)
        prompt = (pinned.name, pinned.version)
    defaults: dict[str, Any] = dict(DEFAULTS)
    if max_tokens is not None:
        defaults["max_tokens"] = max_tokens
    if temperature is not None:
        defaults["temperature"] = temperature
    if stop:
        defaults["stop"] = list(stop)
    mv = register_llm(
        ws, name, gguf=gguf, prompt=prompt, defaults=defaults, actor=actor, reason=reason
    )
    pinned_text = f", prompt {prompt[0]}@{prompt[1]}" if prompt else ""
    console().print(
        f"[green]registered[/] {mv.name} v{mv.version} ({mv.params['base']}, "
        f"{mv.native_sha256[:12]}{pinned_text}); serve it with: shipyard serve "
        f"{mv.name}@{mv.version}"
    )
