"""``shipyard llm prompts`` and ``shipyard llm evaluate``: versioned prompt templates and the
evaluation of a prompt or adapter version."""

from __future__ import annotations

import click


@click.group()
def prompts() -> None:
    """Versioned prompt templates with aliases."""


@click.command()
def evaluate() -> None:
    """Evaluate a prompt or adapter version (not yet built)."""
    raise click.ClickException("shipyard llm evaluate is not built yet")
