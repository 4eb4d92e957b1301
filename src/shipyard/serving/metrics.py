"""Prometheus metrics of one worker, in the text exposition format (no client library).

Counters and histograms carry ``endpoint``, ``version`` and ``worker`` labels; a scrape
reaches one worker (they share the port), so Prometheus sums over ``worker``.
"""

from __future__ import annotations

import bisect
import os
from collections import defaultdict

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Histogram:
    """Cumulative-bucket histogram."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1


class ServingMetrics:
    """Requests, errors, latency, batch sizes and queue depth per model version."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.worker = str(os.getpid())
        self.requests: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.errors: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.latency: defaultdict[str, Histogram] = defaultdict(lambda: Histogram(LATENCY_BUCKETS))
        self.batch: defaultdict[str, Histogram] = defaultdict(lambda: Histogram(BATCH_BUCKETS))
        self.queue_depth: dict[str, int] = {}

    def request(self, version: int, arm: str, seconds: float) -> None:
        """Count one answered request and its latency."""
        self.requests[(str(version), arm, "200")] += 1
        self.latency[str(version)].observe(seconds)

    def error(self, status: int, reason: str) -> None:
        """Count one refused or failed request."""
        self.errors[(str(status), reason)] += 1

    def render(self) -> str:
        """The exposition text."""
        base = f'endpoint="{self.endpoint}",worker="{self.worker}"'
        lines = [
            "# HELP shipyard_requests_total Answered prediction requests.",
            "# TYPE shipyard_requests_total counter",
        ]
        for (version, arm, code), n in sorted(self.requests.items()):
            lines.append(
                f'shipyard_requests_total{{{base},version="{version}",arm="{arm}",code="{code}"}}'
                f" {n}"
            )
        lines += [
            "# HELP shipyard_errors_total Refused or failed requests.",
            "# TYPE shipyard_errors_total counter",
        ]
        for (code, reason), n in sorted(self.errors.items()):
            lines.append(f'shipyard_errors_total{{{base},code="{code}",reason="{reason}"}} {n}')
        lines += _histogram(
            "shipyard_request_latency_seconds", "Request latency.", self.latency, base
        )
        lines += _histogram("shipyard_batch_size_rows", "Rows per model call.", self.batch, base)
        lines += [
            "# HELP shipyard_queue_depth Requests waiting for a batch.",
            "# TYPE shipyard_queue_depth gauge",
        ]
        for version, depth in sorted(self.queue_depth.items()):
            lines.append(f'shipyard_queue_depth{{{base},version="{version}"}} {depth}')
        return "\n".join(lines) + "\n"


def _histogram(name: str, help_text: str, series: dict[str, Histogram], base: str) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for version, hist in sorted(series.items()):
        labels = f'{base},version="{version}"'
        running = 0
        for bound, count in zip(hist.buckets, hist.counts, strict=False):
            running += count
            lines.append(f'{name}_bucket{{{labels},le="{bound:g}"}} {running}')
        lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {hist.n}')
        lines.append(f"{name}_sum{{{labels}}} {hist.total}")
        lines.append(f"{name}_count{{{labels}}} {hist.n}")
    return lines
