"""OpenTelemetry spans of serving requests, exported by setting (off by default).

With ``serving_tracing = "console"`` or ``"otlp"``, each prediction is one ``predict`` span
(request id, endpoint, version, arm, protocol, rows) with one child per stage: ``decode``
(read and decode the body, assign, validate), ``queue`` (waiting in the micro-batcher),
``model`` (the batch's model call: rows and requests in the batch, backend), ``log`` (the
prediction-log write) and ``encode``. Spans leave the worker from a background thread
(OpenTelemetry's batch processor); ``console`` writes one JSON object per span on stdout,
``otlp`` posts them to ``serving_otlp_endpoint`` (OTLP/HTTP, protobuf).

Off, OpenTelemetry is not even imported: the app chooses its untraced prediction path once,
at start. The provider is the worker's own, never the process-global one, so an embedding
application's tracing is left alone. Needs the ``observability`` extra.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

TracingMode = Literal["off", "console", "otlp"]
MODES: tuple[TracingMode, ...] = ("off", "console", "otlp")


@dataclass(frozen=True)
class Tracing:
    """A worker's tracer and the provider that exports its spans."""

    tracer: Tracer
    provider: TracerProvider

    def flush(self) -> None:
        """Export every finished span now."""
        self.provider.force_flush()

    def shutdown(self) -> None:
        """Export what is pending and stop the export thread (the worker is stopping)."""
        self.provider.shutdown()


def start_tracing(
    mode: str,
    endpoint: str,
    *,
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces",
    exporter: SpanExporter | None = None,
) -> Tracing | None:
    """The tracing of one serving worker for ``mode``; ``None`` when off.

    ``exporter`` replaces the one ``mode`` names (tests pass an in-memory exporter).
    """
    if mode not in MODES:
        raise ValueError(f"serving_tracing must be one of {MODES}; got {mode!r}")
    if mode == "off" and exporter is None:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if exporter is None:
        exporter = _exporter(mode, otlp_endpoint)
    resource = Resource.create(
        {
            "service.name": "shipyard",
            "service.instance.id": str(os.getpid()),
            "shipyard.endpoint": endpoint,
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider.get_tracer("shipyard.serving"), provider)


def require(mode: str) -> None:
    """Import what ``mode`` needs now, so a missing extra stops the server before it starts.

    Raises ModuleNotFoundError naming the module (``pip install 'shipyard[observability]'``).
    """
    if mode in ("console", "otlp"):
        import opentelemetry.sdk.trace
    if mode == "otlp":
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401


def _exporter(mode: str, otlp_endpoint: str) -> SpanExporter:
    if mode == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(
            out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=otlp_endpoint)
