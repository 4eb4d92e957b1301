"""``shipyard llm``: register a language model, train and list its LoRA adapters, version and
evaluate prompts (see ``docs/llm.md``).

Each sub-group lives in its own module and is added here: registration and serving helpers
(:mod:`shipyard.cli.llm_models`), adapters (:mod:`shipyard.cli.llm_adapters`), prompts and
evaluations (:mod:`shipyard.cli.llm_prompts`).
"""

from __future__ import annotations

import click

from shipyard.cli.llm_adapters import adapters
from shipyard.cli.llm_models import register
from shipyard.cli.llm_prompts import evaluate, prompts


@click.group()
def llm() -> None:
    """Language models: register, adapters, prompts, evaluation."""


llm.add_command(register)
llm.add_command(adapters)
llm.add_command(prompts)
llm.add_command(evaluate)
