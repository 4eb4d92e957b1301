"""``shipyard models``: list, show, promote, roll back and audit registered models."""

from __future__ import annotations

import click

from shipyard.cli._common import console, open_workspace


def _split_ref(ref: str) -> tuple[str, str]:
    """``fraud@champion`` / ``fraud@3`` / ``fraud`` (the latest version) into (name, reference)."""
    name, _, version = ref.partition("@")
    return name, version or "latest"


@click.group()
def models() -> None:
    """Registered models: versions, aliases, promotion gate, rollback, audit trail."""


@models.command("list")
@click.argument("name", required=False)
@click.pass_context
def list_(ctx: click.Context, name: str | None) -> None:
    """List registered model versions with their aliases and headline metrics."""
    from rich.table import Table

    from shipyard.registry.models import ModelRegistry

    table = Table(title="Registered models")
    for column in ("model", "version", "aliases", "type", "AP", "CP@100", "data set", "created"):
        table.add_column(column)
    for v in ModelRegistry(open_workspace(ctx)).versions(name):
        table.add_row(
            v.name,
            f"v{v.version}",
            ", ".join(v.aliases),
            v.model_type,
            _headline(v.metrics, "average_precision_mean"),
            _headline(v.metrics, "card_precision@100_mean"),
            f"{v.dataset} v{v.dataset_version}",
            f"{v.created_at:%Y-%m-%d %H:%M}",
        )
    console().print(table)


def _headline(metrics: dict[str, float], key: str) -> str:
    """A metric for the list, or '-' where the version has none (CP@100 of a text model)."""
    return f"{metrics[key]:.3f}" if key in metrics else "-"


@models.command()
@click.argument("ref")
@click.pass_context
def show(ctx: click.Context, ref: str) -> None:
    """Show one version (NAME@VERSION or NAME@ALIAS): lineage, metrics, card, files."""
    from shipyard.registry.models import ModelRegistry

    name, version = _split_ref(ref)
    v = ModelRegistry(open_workspace(ctx)).get(name, version)
    out = console()
    aliases = ", ".join(v.aliases) or "-"
    out.print(f"[bold]{v.name} v{v.version}[/] {v.model_type} ({v.framework})  aliases: {aliases}")
    out.print(f"  run            {v.run_id}")
    out.print(f"  parameters     {v.params}")
    ln = v.lineage
    roles = ln.columns
    out.print(f"  data set       {ln.dataset} v{ln.dataset_version} ({ln.dataset_hash[:12]})")
    out.print(f"  features       {ln.views} ({ln.features_hash[:12]})")
    out.print(f"  columns        label {roles.label}, time {roles.time}, entity {roles.entity}")
    if ln.train_window is not None and ln.eval_window is not None:  # text data has no time
        out.print(f"  trained on     {v.train_window['start']} .. {v.train_window['end']}")
        out.print(f"  gate window    {v.eval_window['start']} .. {v.eval_window['end']}")
    if ln.protocol:
        out.print(f"  protocol       {ln.protocol}")
    out.print(f"  inputs         {', '.join(v.input_schema.names)}")
    out.print(f"  native model   {v.native_path} (sha256 {v.native_sha256[:12]})")
    out.print(f"  model card     {v.card_path}  /  {v.card_html}")
    # every metric the version recorded (a fraud model's CP@100, a text model's accuracy)
    for metric in [k[: -len("_mean")] for k in v.metrics if k.endswith("_mean")]:
        mean = v.metrics.get(f"{metric}_mean", float("nan"))
        std = v.metrics.get(f"{metric}_std", float("nan"))
        low = v.metrics.get(f"{metric}_ci_low", float("nan"))
        high = v.metrics.get(f"{metric}_ci_high", float("nan"))
        out.print(f"  {metric:<20} {mean:.3f} ± {std:.3f}  95% CI [{low:.3f}, {high:.3f}]")


@models.command()
@click.argument("ref")
@click.option("--reason", required=True, help="Why (recorded in the audit trail).")
@click.option("--alias", default="champion", show_default=True)
@click.option(
    "--metric",
    default="average_precision",
    show_default=True,
    type=click.Choice(["roc_auc", "average_precision", "card_precision@100"]),
    help="Metric the gate compares on the challenger's out-of-time window.",
)
@click.option("--bootstrap", default=1000, show_default=True, help="Paired bootstrap draws.")
@click.option("--min-improvement", default=0.0, show_default=True, help="Margin the CI must clear.")
@click.option("--no-gate", is_flag=True, help="Skip the metric gate (the schema check stays).")
@click.option("--actor", default=None, help="Who (default: the current user).")
@click.pass_context
def promote(
    ctx: click.Context,
    ref: str,
    reason: str,
    alias: str,
    metric: str,
    bootstrap: int,
    min_improvement: float,
    no_gate: bool,
    actor: str | None,
) -> None:
    """Promote NAME@VERSION to champion if it passes the promotion gate."""
    from shipyard.registry.gate import PromotionGate
    from shipyard.registry.models import ModelRegistry

    name, version = _split_ref(ref)
    registry = ModelRegistry(open_workspace(ctx))
    target = registry.get(name, version)
    gate = None if no_gate else PromotionGate(metric, bootstrap, min_improvement=min_improvement)
    result = registry.promote(
        name, target.version, reason=reason, gate=gate, actor=actor, alias=alias
    )
    out = console()
    out.print(f"[green]{name} v{target.version} is now {alias}.[/]")
    if result is not None:
        out.print(f"  gate: {result.reason}")


@models.command()
@click.argument("name")
@click.option("--reason", required=True, help="Why (recorded in the audit trail).")
@click.option("--alias", default="champion", show_default=True)
@click.option("--actor", default=None, help="Who (default: the current user).")
@click.pass_context
def rollback(ctx: click.Context, name: str, reason: str, alias: str, actor: str | None) -> None:
    """Give the champion alias back to the version that held it before."""
    from shipyard.registry.models import ModelRegistry

    restored = ModelRegistry(open_workspace(ctx)).rollback(
        name, reason=reason, actor=actor, alias=alias
    )
    console().print(f"[green]{name} {alias} rolled back to v{restored.version}.[/]")


@models.command()
@click.argument("name")
@click.pass_context
def history(ctx: click.Context, name: str) -> None:
    """The audit trail: every registration, promotion, refusal and rollback."""
    from rich.table import Table

    from shipyard.registry.models import ModelRegistry

    table = Table(
        "when", "action", "version", "alias", "from", "who", "why", title=f"{name} history"
    )
    for e in ModelRegistry(open_workspace(ctx)).history(name):
        table.add_row(
            f"{e.at:%Y-%m-%d %H:%M:%S}",
            e.action,
            "" if e.version is None else f"v{e.version}",
            e.alias or "",
            "" if e.previous_version is None else f"v{e.previous_version}",
            e.actor,
            e.reason,
        )
    console().print(table)
