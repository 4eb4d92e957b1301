"""``shipyard serve``: serve registered model versions over HTTP."""

from __future__ import annotations

import click

from shipyard.cli._common import console, open_workspace


@click.command()
@click.argument("target")
@click.option("--endpoint", default=None, help="Endpoint name (default: the model's name).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Worker processes (default: one per core; one for a language model).",
)
@click.option("--max-batch-size", default=64, show_default=True, help="Rows per model call.")
@click.option(
    "--max-wait-ms",
    default=0.0,
    show_default=True,
    help="How long a batch may wait to fill; 0 = take what is queued when the model is free.",
)
@click.option("--timeout-ms", default=1000.0, show_default=True, help="A request's longest wait.")
@click.option(
    "--reset", is_flag=True, help="Replace the endpoint's traffic policy with TARGET alone."
)
@click.option("--no-log", is_flag=True, help="Do not write the prediction log.")
@click.option(
    "--reject-out-of-range",
    is_flag=True,
    help="Answer 422 for values outside the range seen in training (default: score them and "
    "flag them in the prediction log's out_of_range column).",
)
@click.option(
    "--no-guardrails",
    is_flag=True,
    help="Do not watch versions on probation (default: each worker judges the endpoint's "
    "guardrails, or the default set, and rolls back on a trip; see docs/guardrails.md).",
)
@click.option(
    "--probation",
    "probation_s",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    help="Seconds after a policy revision brings a version in during which its guardrails "
    "are watched.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    target: str,
    endpoint: str | None,
    host: str,
    port: int,
    workers: int | None,
    max_batch_size: int,
    max_wait_ms: float,
    timeout_ms: float,
    reset: bool,
    no_log: bool,
    reject_out_of_range: bool,
    no_guardrails: bool,
    probation_s: float,
) -> None:
    """Serve TARGET (MODEL@ALIAS or MODEL@VERSION, e.g. fraud@champion) on HOST:PORT.

    KServe V2 at /v2/models/NAME/infer, MLflow scoring at /invocations, /metrics,
    /openapi.json. An endpoint that already has a traffic policy keeps it (see
    `shipyard endpoint status`); --reset starts over with TARGET alone. Admin routes
    (/admin/...) answer only with SHIPYARD_SERVING_ADMIN_TOKEN set; `shipyard endpoint`
    needs no token.
    """
    from shipyard.serving.server import exposure_warning, prepare
    from shipyard.serving.server import serve as run

    ws = open_workspace(ctx)
    out = console()
    warning = exposure_warning(host, ws.settings.serving_predict_token)
    if warning:
        out.print(f"[bold yellow]Warning:[/] {warning}")
    prepared = prepare(ws, target, endpoint, reset=reset)
    out.print(
        f"[bold]Endpoint {prepared.policy.endpoint}[/]: {prepared.policy.describe()} "
        f"(policy revision {prepared.policy.revision})"
    )
    for version, report in prepared.backends.items():
        out.print(f"  v{version}: backend [green]{report.chosen}[/] — {report.describe()}")
        if report.note:
            out.print(f"    not used: {report.note}")
    out.print(
        f"Listening on http://{host}:{port} with {workers or 'the default number of'} worker(s); "
        "Ctrl-C stops."
    )
    if ws.settings.serving_admin_token is None:
        out.print(
            "Admin routes are off (no SHIPYARD_SERVING_ADMIN_TOKEN); `shipyard endpoint` "
            "changes traffic through the database."
        )
    run(
        ws,
        target,
        endpoint=endpoint,
        host=host,
        port=port,
        workers=workers,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        timeout_ms=timeout_ms,
        log_predictions=not no_log,
        reject_out_of_range=reject_out_of_range,
        guardrails=not no_guardrails,
        probation_s=probation_s,
    )
