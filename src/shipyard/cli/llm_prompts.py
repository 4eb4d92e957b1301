"""``shipyard llm prompts`` and ``shipyard llm evaluate``: versioned prompt templates and the
evaluation of a prompt or adapter version.

A thin layer over :mod:`shipyard.llm.prompts` and :mod:`shipyard.llm.evaluate` (see
``docs/llm-prompts.md``)::

    shipyard llm prompts create sentiment --file sentiment.yaml --eval-set llm-sentiment-test
    shipyard llm prompts alias sentiment production 2 --reason "clearer instructions"
    shipyard llm prompts show sentiment@production
    shipyard llm evaluate --prompt sentiment@2 --task sentiment --limit 100
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from shipyard.cli._common import console, open_workspace

if TYPE_CHECKING:
    from shipyard.llm.prompts import PromptVersion

TEMPLATE_KEYS = frozenset({"messages", "variables", "eval_set", "description"})


def read_template(path: Path) -> dict[str, Any]:
    """A template file's content: JSON (``.json``) or YAML (anything else), a mapping with
    ``messages`` and optionally ``variables``, ``eval_set``, ``description``."""
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            content = json.loads(text)
        else:
            import yaml  # type: ignore[import-untyped]  # PyYAML comes with MLflow

            content = yaml.safe_load(text)
    except ValueError as exc:  # json.JSONDecodeError and yaml.YAMLError's parse errors
        raise click.BadParameter(f"{path} is not valid JSON or YAML: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError does not subclass ValueError
        raise click.BadParameter(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(content, dict) or "messages" not in content:
        raise click.BadParameter(
            f"{path} must hold a mapping with 'messages' (and optionally 'variables', "
            f"'eval_set', 'description'); got {type(content).__name__}"
        )
    extra = sorted(set(content) - TEMPLATE_KEYS)
    if extra:
        raise click.BadParameter(
            f"{path} has unknown key(s) {extra}; allowed: {sorted(TEMPLATE_KEYS)}"
        )
    return content


@click.group()
def prompts() -> None:
    """Versioned prompt templates with aliases."""


@prompts.command()
@click.argument("name")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The template: JSON or YAML with messages, variables, eval_set, description.",
)
@click.option("--eval-set", default=None, help="The catalog data set it is evaluated on.")
@click.option("--description", default=None, help="What changed (recorded).")
@click.option("--actor", default=None, help="Who (default: the current user).")
@click.pass_context
def create(
    ctx: click.Context,
    name: str,
    path: Path,
    eval_set: str | None,
    description: str | None,
    actor: str | None,
) -> None:
    """Store a new version of prompt NAME from --file (an identical one is reused)."""
    from shipyard.llm.prompts import create_prompt

    content = read_template(path)
    ws = open_workspace(ctx)
    stored = create_prompt(
        ws,
        name,
        content["messages"],
        variables=content.get("variables"),
        eval_set=eval_set if eval_set is not None else content.get("eval_set"),
        description=description if description is not None else content.get("description", ""),
        actor=actor,
    )
    what = "created" if stored.created else "unchanged: identical to"
    console().print(
        f"[green]{what}[/] prompt {stored.name} v{stored.version} ({stored.sha256[:12]})"
    )


@prompts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """Every prompt version, with its aliases and evaluation set."""
    from rich.table import Table

    from shipyard.llm.prompts import list_prompts

    found = list_prompts(open_workspace(ctx))
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in found], indent=2))
        return
    table = Table("prompt", "version", "aliases", "variables", "eval set", "created", "by")
    for p in found:
        table.add_row(
            p.name,
            str(p.version),
            ", ".join(p.aliases),
            ", ".join(p.variables),
            p.eval_set or "",
            f"{p.created_at:%Y-%m-%d %H:%M}",
            p.actor,
        )
    console().print(table)


@prompts.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """One version: REF is NAME, NAME@VERSION or NAME@ALIAS."""
    from shipyard.llm.prompts import get_prompt, parse_ref

    name, version = parse_ref(ref)
    found = get_prompt(open_workspace(ctx), name, version)
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=2))
        return
    click.echo(_describe(found))  # plain text: a template's lines are not re-wrapped


def _describe(p: PromptVersion) -> str:
    lines = [
        f"prompt {p.name} v{p.version}"
        + (f" (aliases: {', '.join(p.aliases)})" if p.aliases else ""),
        f"  sha256 {p.sha256}, by {p.actor} at {p.created_at:%Y-%m-%d %H:%M} UTC",
        f"  eval set: {p.eval_set or 'none'}",
    ]
    if p.description:
        lines.append(f"  description: {p.description}")
    for name, spec in p.variables.items():
        need = "required" if spec["required"] else "optional"
        about = f": {spec['description']}" if spec["description"] else ""
        lines.append(f"  variable {name} ({spec['type']}, {need}){about}")
    lines += [f"  [{m['role']}] {m['content']}" for m in p.messages]
    return "\n".join(lines)


@prompts.command()
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=int)
@click.option("--reason", required=True, help="Why the alias moves (recorded).")
@click.option("--actor", default=None, help="Who (default: the current user).")
@click.pass_context
def alias(
    ctx: click.Context, name: str, alias: str, version: int, reason: str, actor: str | None
) -> None:
    """Point ALIAS of prompt NAME at VERSION."""
    from shipyard.llm.prompts import set_prompt_alias

    moved = set_prompt_alias(open_workspace(ctx), name, alias, version, reason=reason, actor=actor)
    console().print(f"[green]{name}@{alias}[/] -> v{moved.version}")


@click.command()
@click.option("--prompt", "prompt_ref", default=None, help="NAME@VERSION or NAME@ALIAS.")
@click.option("--task", required=True, help="sentiment or extraction: the scorer.")
@click.option("--eval-set", default=None, help="Catalog data set (default: the prompt's).")
@click.option("--model", default="smollm2", show_default=True, help="Registered model.")
@click.option("--version", type=int, default=None, help="Its version (default: latest).")
@click.option("--adapter", default=None, help="A LoRA adapter of the model.")
@click.option("--limit", type=int, default=None, help="Evaluate the first N rows.")
@click.option("--max-tokens", type=int, default=None, help="Default: the task's.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def evaluate(
    ctx: click.Context,
    prompt_ref: str | None,
    task: str,
    eval_set: str | None,
    model: str,
    version: int | None,
    adapter: str | None,
    limit: int | None,
    max_tokens: int | None,
    as_json: bool,
) -> None:
    """Evaluate a prompt or adapter version on an evaluation set, with 95% intervals."""
    from shipyard.llm.evaluate import evaluate as run_evaluation
    from shipyard.llm.prompts import parse_ref

    prompt = parse_ref(prompt_ref) if prompt_ref is not None else None
    ws = open_workspace(ctx)
    result = run_evaluation(
        ws, model=model, version=version, adapter=adapter, prompt=prompt, eval_set=eval_set,
        task=task, limit=limit, max_tokens=max_tokens,
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(result.describe())
