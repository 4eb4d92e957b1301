"""``shipyard llm adapters``: train, register and list LoRA adapters of a base model."""

from __future__ import annotations

import click


@click.group()
def adapters() -> None:
    """LoRA adapters of a registered language model."""
