"""``shipyard llm register``: register a GGUF language model as a version of a model."""

from __future__ import annotations

import click


@click.command()
def register() -> None:
    """Register a language model (not yet built)."""
    raise click.ClickException("shipyard llm register is not built yet")
