"""``serve``: start an endpoint's worker processes on one port, supervised.

The server prepares every version of the endpoint's traffic policy (ONNX conversion, parity
check, backend choice), binds the socket, and runs ``workers`` uvicorn processes (uvloop,
httptools) sharing it under uvicorn's supervisor, which replaces a worker that dies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shipyard.errors import ParameterError

if TYPE_CHECKING:
    from shipyard.serving.backends import BackendReport
    from shipyard.serving.policy import TrafficPolicy
    from shipyard.workspace import Workspace


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` set up: the endpoint's policy and each version's backend."""

    policy: TrafficPolicy
    backends: dict[int, BackendReport]


def parse_target(target: str) -> tuple[str, str]:
    """``fraud@champion`` → (model, reference); ``fraud`` → (model, "champion")."""
    model, _, ref = target.partition("@")
    if not model:
        raise ParameterError(
            f"Expected MODEL[@VERSION|@ALIAS], e.g. fraud@champion. Got {target!r} instead."
        )
    return model, ref or "champion"


def prepare(
    workspace: Workspace, target: str, endpoint: str | None = None, *, reset: bool = False
) -> Prepared:
    """Create the endpoint's policy if it has none (or ``reset``), and prepare its versions."""
    from shipyard.errors import ModelNotFoundError
    from shipyard.registry.models import ModelRegistry
    from shipyard.serving.backends import prepare_backends
    from shipyard.serving.policy import Arm, TrafficPolicy, get_policy, set_policy

    model, ref = parse_target(target)
    name = endpoint or model
    registry = ModelRegistry(workspace)
    version = registry.get(model, ref).version
    try:
        policy: TrafficPolicy | None = get_policy(workspace, name)
    except ModelNotFoundError:
        policy = None
    if policy is None or reset or policy.model != model:
        policy = set_policy(
            workspace,
            TrafficPolicy(name, model, (Arm(version, 1.0),)),
            reason=f"shipyard serve {target}",
        )
    backends = {v: prepare_backends(registry, model, v) for v in sorted(policy.versions)}
    return Prepared(policy, backends)


def exposure_warning(host: str, predict_token: str | None) -> str | None:
    """A warning to print when ``host`` is reachable from other machines and prediction
    routes need no token; ``None`` when serving on loopback or with a token."""
    import ipaddress

    if predict_token is not None:
        return None
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost: assume it is reachable
        loopback = False
    if loopback:
        return None
    return (
        f"serving on {host}, reachable from other machines, and the prediction routes need "
        "no token: anyone who reaches the port can score. Set SHIPYARD_SERVING_PREDICT_TOKEN "
        "(or serving_predict_token in shipyard.toml) to require one."
    )


def model_threads(setting: int | None, workers: int) -> int:
    """A text model's intra-op threads per worker: the setting, else the CPU count shared
    among the workers (at least 1), so that workers and threads do not oversubscribe.

    Example: ``model_threads(None, 2)`` on 2 cores is 1; ``model_threads(4, 2)`` is 4.
    """
    if setting is not None:
        return setting
    return max(1, (os.cpu_count() or 1) // workers)


def _default_workers(workspace: Workspace, policy: TrafficPolicy) -> int:
    """One worker per CPU, or one for language models: their engine uses every core and
    holds the KV pool (a second worker would load a second copy and split the cores)."""
    import logging

    from shipyard.registry.models import ModelRegistry

    registry = ModelRegistry(workspace)
    frameworks = {registry.get(policy.model, v).framework for v in policy.versions}
    if frameworks == {"llm"}:
        logging.getLogger(__name__).info(
            "serving %s with 1 worker: a language model's engine uses every core and holds "
            "the KV pool (--workers overrides)",
            policy.endpoint,
        )
        return 1
    return os.cpu_count() or 1


def serve(
    workspace: Workspace,
    target: str,
    *,
    endpoint: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int | None = None,
    max_batch_size: int = 64,
    max_wait_ms: float = 0.0,
    timeout_ms: float = 1000.0,
    reset: bool = False,
    log_predictions: bool = True,
    reject_out_of_range: bool = False,
    guardrails: bool = True,
    probation_s: float = 3600.0,
) -> None:
    """Serve ``target`` (e.g. ``fraud@champion``) until interrupted.

    ``reject_out_of_range``: answer 422 for values outside the range seen in training
    (default: score them and flag them in the prediction log). ``guardrails``: each worker
    watches the versions on probation for ``probation_s`` seconds and rolls back on a trip
    (:mod:`shipyard.serving.guard`).
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from shipyard.logs import configure_logging
    from shipyard.serving.metricstore import release_folder, server_folder
    from shipyard.serving.runtime import CONFIG_ENV, ServeConfig
    from shipyard.serving.tracing import require as require_tracing

    settings = workspace.settings
    configure_logging(settings)  # the supervisor's records; each worker sets up its own
    require_tracing(settings.serving_tracing)
    prepared = prepare(workspace, target, endpoint, reset=reset)
    # the workers' shared metrics, fresh for this server; left by a killed server until the
    # next one starts
    metrics_dir, metrics_lock = server_folder(
        workspace.artifact_root / "tmp" / "metrics", prepared.policy.endpoint
    )
    count = workers or _default_workers(workspace, prepared.policy)
    config = ServeConfig(
        workspace=str(workspace.root),
        endpoint=prepared.policy.endpoint,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        timeout_ms=timeout_ms,
        admin_token=workspace.settings.serving_admin_token,
        predict_token=workspace.settings.serving_predict_token,
        log_predictions=log_predictions,
        reject_out_of_range=reject_out_of_range,
        reject_stale_features=settings.serving_reject_stale_features,
        refuse_long_text=settings.serving_refuse_long_text,
        model_threads=model_threads(settings.serving_model_threads, count),
        metrics_dir=str(metrics_dir),
        access_log=settings.serving_access_log,
        tracing=settings.serving_tracing,
        trace_sample_ratio=settings.serving_trace_sample_ratio,
        otlp_endpoint=settings.serving_otlp_endpoint,
        log_level=settings.log_level,
        log_format=settings.log_format,
        guardrails=guardrails,
        probation_s=probation_s,
    )
    os.environ[CONFIG_ENV] = config.to_env()
    uv_config = uvicorn.Config(
        "shipyard.serving.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=count,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,  # Shipyard's own access log is a setting (serving_access_log)
        log_config=None,  # records go through shipyard.logs (JSON lines), not uvicorn's setup
        log_level="warning",
        timeout_graceful_shutdown=10,
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )
    try:
        socket = uv_config.bind_socket()
        Multiprocess(uv_config, sockets=[socket]).run()
    finally:
        release_folder(metrics_dir, metrics_lock)
