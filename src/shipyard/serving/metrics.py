"""Prometheus metrics of a multi-worker server: every scrape shows the whole server.

Each worker writes its values into its own slot of a shared, memory-mapped store
(:mod:`shipyard.serving.metricstore`); a scrape, whichever worker answers it, reads every
slot and adds them up, in the text exposition format (no client library). A worker that is
killed and replaced continues its slot, so counters never go backwards; the only worker
identity exposed is that slot number (``worker="0"``), never a process id.

Aggregation over workers: counters and histograms are summed over every slot, live or dead;
gauges only over live workers: ``shipyard_queue_depth`` and ``shipyard_loaded_versions`` are
sums (requests waiting in the whole server, workers that have a version loaded), and
``shipyard_policy_revision`` is one series per worker, since a sum of revisions means nothing.

The hot path does no string formatting: a request's cells are looked up once per
(version, arm) and an answered request costs four writes into the map (see
``benchmarks/serving/README.md`` for the measured cost).
"""

from __future__ import annotations

import tempfile
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shipyard.serving.metricstore import Slot, StoreReader

if TYPE_CHECKING:
    from shipyard.llm.types import EngineStats

LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
"""Request latency and model-call buckets, in seconds (upper bounds, inclusive)."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Rows per model call (upper bounds, inclusive)."""
WRITE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)
"""Prediction-log group write buckets, in seconds (upper bounds, inclusive)."""


@dataclass(frozen=True)
class Family:
    """One metric: name, type, help text, label names and, for a histogram, its buckets.

    ``per_worker``: a gauge exposed once per live worker (label ``worker``, the slot number)
    rather than summed; ``hide_zero``: a gauge series whose sum is 0 is left out.
    """

    name: str
    kind: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    per_worker: bool = False
    hide_zero: bool = False

    @property
    def width(self) -> int:
        """Cells per series: one, or a histogram's buckets, its +Inf bucket and its sum."""
        return len(self.buckets) + 2 if self.kind == "histogram" else 1


REQUESTS = Family(
    "shipyard_requests_total",
    "counter",
    "Prediction requests answered, by HTTP status code; version and arm are empty for a "
    "request that failed.",
    ("endpoint", "version", "arm", "code"),
)
ERRORS = Family(
    "shipyard_errors_total",
    "counter",
    "Requests of any route answered with an error status, by code and cause; cause=shadow "
    "counts failed shadow scores (never answered).",
    ("endpoint", "code", "cause"),
)
LATENCY = Family(
    "shipyard_request_latency_seconds",
    "histogram",
    "Seconds from receiving a prediction request to its answer, of answered requests.",
    ("endpoint", "version"),
    LATENCY_BUCKETS,
)
BATCH = Family(
    "shipyard_batch_size_rows",
    "histogram",
    "Rows per model call.",
    ("endpoint", "version"),
    BATCH_BUCKETS,
)
MODEL_CALL = Family(
    "shipyard_model_call_seconds",
    "histogram",
    "Seconds per model call (one batch), by version and backend.",
    ("endpoint", "version", "backend"),
    LATENCY_BUCKETS,
)
LOG_WRITE = Family(
    "shipyard_prediction_log_write_seconds",
    "histogram",
    "Seconds per group write to the prediction log (one write for the records of one turn "
    "of a worker's event loop).",
    ("endpoint",),
    WRITE_BUCKETS,
)
LOG_FAILURES = Family(
    "shipyard_prediction_log_write_failures_total",
    "counter",
    "Group writes to the prediction log that failed; their requests were answered with an error.",
    ("endpoint",),
)
QUEUE = Family(
    "shipyard_queue_depth",
    "gauge",
    "Requests waiting for a model call, summed over live workers (each worker updates its "
    "value after every model call and when it answers a scrape).",
    ("endpoint", "version"),
)
REVISION = Family(
    "shipyard_policy_revision",
    "gauge",
    "Traffic-policy revision each live worker serves (worker is a stable slot number).",
    ("endpoint", "worker"),
    per_worker=True,
)
LOADED = Family(
    "shipyard_loaded_versions",
    "gauge",
    "Live workers that have the model version loaded, by backend.",
    ("endpoint", "version", "backend"),
    hide_zero=True,
)
STALE = Family(
    "shipyard_stale_features_total",
    "counter",
    "Raw-event requests whose delayed feature view was read past the events fed to it "
    "(flagged, or refused with serving_reject_stale_features), by view.",
    ("endpoint", "view"),
)
TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Time-to-first-token and time-per-output-token buckets, in seconds (upper bounds)."""
LLM_TTFT = Family(
    "shipyard_llm_time_to_first_token_seconds",
    "histogram",
    "Seconds from submitting a completion to its first generated token (language models).",
    ("endpoint", "version"),
    TOKEN_BUCKETS,
)
LLM_TPOT = Family(
    "shipyard_llm_time_per_output_token_seconds",
    "histogram",
    "Mean seconds per generated token after the first, per completion.",
    ("endpoint", "version"),
    TOKEN_BUCKETS,
)
LLM_PROMPT_TOKENS = Family(
    "shipyard_llm_prompt_tokens_total",
    "counter",
    "Prompt tokens of answered completions.",
    ("endpoint", "version"),
)
LLM_COMPLETION_TOKENS = Family(
    "shipyard_llm_completion_tokens_total",
    "counter",
    "Generated tokens of answered completions (rate(): output tokens per second).",
    ("endpoint", "version"),
)
LLM_SEMANTIC_HITS = Family(
    "shipyard_llm_semantic_cache_hits_total",
    "counter",
    "Chat requests answered from the semantic response cache (llm_semantic_cache).",
    ("endpoint", "version"),
)
LLM_WAITING = Family(
    "shipyard_llm_waiting_sequences",
    "gauge",
    "Completions waiting for a slot of the version's engine (set at each scrape).",
    ("endpoint", "version"),
)
LLM_RUNNING = Family(
    "shipyard_llm_running_sequences",
    "gauge",
    "Sequences the version's engine is decoding (set at each scrape).",
    ("endpoint", "version"),
)
LLM_KV_SLOTS = Family(
    "shipyard_llm_kv_slots_used",
    "gauge",
    "KV-pool slots held by sequences of the version's engine (set at each scrape).",
    ("endpoint", "version"),
)
LLM_PREFIX_HIT_RATE = Family(
    "shipyard_llm_prefix_cache_hit_rate",
    "gauge",
    "Share of looked-up prompt tokens served from the prefix cache since the engine started, "
    "per live worker.",
    ("endpoint", "version", "worker"),
    per_worker=True,
)
FAMILIES = (
    REQUESTS, ERRORS, LATENCY, BATCH, MODEL_CALL, LOG_WRITE, LOG_FAILURES, QUEUE, REVISION,
    LOADED, STALE, LLM_TTFT, LLM_TPOT, LLM_PROMPT_TOKENS, LLM_COMPLETION_TOKENS,
    LLM_SEMANTIC_HITS, LLM_WAITING, LLM_RUNNING, LLM_KV_SLOTS, LLM_PREFIX_HIT_RATE,
)  # fmt: skip
"""Every metric the server exposes, in exposition order."""
_BY_NAME = {f.name: f for f in FAMILIES}

REQUEST_CAUSES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    413: "too_large",
    422: "invalid_input",
    503: "not_ready",
}
"""The ``cause`` label of a refused request (a :class:`~shipyard.errors.RequestError`)."""


def rules_file() -> Path:
    """The Prometheus recording and alerting rules for Shipyard servers (a YAML file to load
    with ``rule_files``; each alert is explained in docs/observability.md)."""
    return Path(__file__).parent / "prometheus" / "rules.yml"


def request_cause(status: int) -> str:
    """The ``cause`` label for a request refused with ``status``."""
    return REQUEST_CAUSES.get(status, "bad_request" if status < 500 else "server")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(family: Family, values: Iterable[object]) -> str:
    names = [n for n in family.labels if n != "worker"]  # the reader adds the slot number
    return ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True))


class ServingMetrics:
    """One worker's metrics: claims a slot in ``folder`` and renders the whole server's.

    ``folder`` is the server's metrics folder (``ServeConfig.metrics_dir``); without one the
    metrics are this process's alone, in a private temporary folder.
    """

    def __init__(self, endpoint: str, folder: Path | None = None) -> None:
        self.endpoint = endpoint
        self._private = None
        if folder is None:
            self._private = tempfile.TemporaryDirectory(prefix="shipyard-metrics-")
            folder = Path(self._private.name)
        self.slot = Slot.claim(folder)
        self._values = self.slot.values
        self._reader = StoreReader(folder)
        for (name, _), (offset, _width) in self.slot.series.items():
            family = _BY_NAME.get(name)
            if family is not None and family.kind == "gauge":  # a dead worker's last values
                self._values[offset] = 0.0
        self._answered: dict[tuple[int, str], tuple[int, int]] = {}
        self._errors: dict[tuple[int, str, bool], tuple[int, int]] = {}
        self._queues: dict[int, int] = {}
        self._loaded: dict[tuple[int, str], int] = {}
        self._stale: dict[str, int] = {}
        self._llm: dict[int, tuple[int, ...]] = {}
        self._log_write = self._cell(LOG_WRITE)
        self._log_failures = self._cell(LOG_FAILURES)
        self._revision = self._cell(REVISION)
        # failures appear as series before they happen, so rate() and increase() see the
        # first one (a series born at 1 has no earlier sample to grow from)
        for status, cause in ((500, "model"), (500, "prediction_log"), (503, "timeout")):
            self._error_cells(status, cause, True)

    def _cell(self, family: Family, *values: object) -> int:
        return self.slot.allocate(
            family.name, _labels(family, (self.endpoint, *values)), family.width
        )

    # -- the hot path ----------------------------------------------------------------------

    def request(self, version: int, arm: str, seconds: float) -> None:
        """Count one answered prediction request (200) and its latency."""
        cells = self._answered.get((version, arm))
        if cells is None:
            cells = self._answered[(version, arm)] = (
                self._cell(REQUESTS, version, arm, 200),
                self._cell(LATENCY, version),
            )
        counter, latency = cells
        values = self._values
        values[counter] += 1.0
        values[latency + bisect_left(LATENCY_BUCKETS, seconds)] += 1.0
        values[latency + len(LATENCY_BUCKETS) + 1] += seconds

    def error(self, status: int, cause: str, prediction: bool = False) -> None:
        """Count one request answered with error ``status``; ``prediction``: of a prediction
        route (also counted in ``shipyard_requests_total``)."""
        cells = self._errors.get((status, cause, prediction))
        if cells is None:
            cells = self._error_cells(status, cause, prediction)
        errors, requests = cells
        self._values[errors] += 1.0
        if prediction:
            self._values[requests] += 1.0

    def _error_cells(self, status: int, cause: str, prediction: bool) -> tuple[int, int]:
        cells = self._errors[(status, cause, prediction)] = (
            self._cell(ERRORS, status, cause),
            self._cell(REQUESTS, "", "", status) if prediction else 0,
        )
        return cells

    def batch_observer(
        self, version: int, backend: str, queue_depth: Callable[[], int]
    ) -> Callable[[int, float], None]:
        """A batcher's ``on_batch``: records rows, model-call seconds and the queue depth."""
        batch = self._cell(BATCH, version)
        call = self._cell(MODEL_CALL, version, backend)
        queue = self._queue_cell(version)
        values = self._values
        batch_sum = batch + len(BATCH_BUCKETS) + 1
        call_sum = call + len(LATENCY_BUCKETS) + 1

        def observe(rows: int, seconds: float) -> None:
            values[batch + bisect_left(BATCH_BUCKETS, rows)] += 1.0
            values[batch_sum] += rows
            values[call + bisect_left(LATENCY_BUCKETS, seconds)] += 1.0
            values[call_sum] += seconds
            values[queue] = queue_depth()

        return observe

    def log_write(self, seconds: float, ok: bool) -> None:
        """Record one prediction-log group write: its duration, and whether it failed."""
        values = self._values
        values[self._log_write + bisect_left(WRITE_BUCKETS, seconds)] += 1.0
        values[self._log_write + len(WRITE_BUCKETS) + 1] += seconds
        if not ok:
            values[self._log_failures] += 1.0

    def stale(self, view: str) -> None:
        """Count one raw-event request that read delayed feature view ``view`` stale."""
        cell = self._stale.get(view)
        if cell is None:
            cell = self._stale[view] = self._cell(STALE, view)
        self._values[cell] += 1.0

    # -- language models -------------------------------------------------------------------

    def _llm_cells(self, version: int) -> tuple[int, ...]:
        cells = self._llm.get(version)
        if cells is None:
            cells = self._llm[version] = tuple(
                self._cell(family, version)
                for family in (
                    LLM_TTFT, LLM_TPOT, LLM_PROMPT_TOKENS, LLM_COMPLETION_TOKENS,
                    LLM_SEMANTIC_HITS, LLM_WAITING, LLM_RUNNING, LLM_KV_SLOTS,
                    LLM_PREFIX_HIT_RATE,
                )
            )  # fmt: skip
        return cells

    def llm_completion(
        self, version: int, ttft_s: float, tpot_s: float, prompt: int, completion: int
    ) -> None:
        """Record one finished completion: its time to first token, time per output token
        and token counts."""
        ttft, tpot, prompts, completions = self._llm_cells(version)[:4]
        values = self._values
        end = len(TOKEN_BUCKETS) + 1
        values[ttft + bisect_left(TOKEN_BUCKETS, ttft_s)] += 1.0
        values[ttft + end] += ttft_s
        if completion > 1:  # one token has no time per output token
            values[tpot + bisect_left(TOKEN_BUCKETS, tpot_s)] += 1.0
            values[tpot + end] += tpot_s
        values[prompts] += prompt
        values[completions] += completion

    def semantic_hit(self, version: int) -> None:
        """Count one request answered from the semantic response cache."""
        self._values[self._llm_cells(version)[4]] += 1.0

    def set_llm_state(self, version: int, stats: EngineStats) -> None:
        """Publish the engine gauges of ``version`` (queue, running, KV slots, prefix hits)."""
        waiting, running, slots, hit_rate = self._llm_cells(version)[5:]
        values = self._values
        values[waiting] = stats.waiting
        values[running] = stats.running
        values[slots] = stats.kv_slots_used
        values[hit_rate] = stats.prefix_hit_rate

    # -- state gauges ----------------------------------------------------------------------

    def _queue_cell(self, version: int) -> int:
        cell = self._queues.get(version)
        if cell is None:
            cell = self._queues[version] = self._cell(QUEUE, version)
        return cell

    def set_queue_depth(self, version: int, depth: int) -> None:
        """Set this worker's number of requests waiting for ``version``."""
        self._values[self._queue_cell(version)] = depth

    def set_state(self, revision: int, loaded: dict[int, str]) -> None:
        """Publish the policy revision this worker serves and its loaded versions → backend."""
        self._values[self._revision] = revision
        for key, cell in self._loaded.items():
            self._values[cell] = 1.0 if loaded.get(key[0]) == key[1] else 0.0
        for version, backend in loaded.items():
            if (version, backend) not in self._loaded:
                cell = self._loaded[(version, backend)] = self._cell(LOADED, version, backend)
                self._values[cell] = 1.0
            if (version, "primary") not in self._answered:  # at 0 before its first request
                self._answered[(version, "primary")] = (
                    self._cell(REQUESTS, version, "primary", 200),
                    self._cell(LATENCY, version),
                )
        for version in self._queues.keys() - loaded.keys():
            self._values[self._queues[version]] = 0.0

    # -- exposition ------------------------------------------------------------------------

    def render(self) -> str:
        """The exposition text of the whole server: every worker's slot, added up."""
        return exposition(self._reader)

    def close(self) -> None:
        """Release this worker's slot (its values stay for the worker that takes it next)."""
        self._reader.close()
        self.slot.close()
        if self._private is not None:
            self._private.cleanup()


def exposition(reader: StoreReader) -> str:
    """The exposition text of every slot ``reader`` sees, added up (see the module's doc)."""
    totals: dict[str, dict[str, list[float]]] = {f.name: {} for f in FAMILIES}
    for slot in reader.snapshot():
        for (name, labels), (offset, width) in slot.series.items():
            family = _BY_NAME.get(name)
            if family is None or family.width != width:
                continue
            if family.kind == "gauge":
                if not slot.alive:
                    continue
                if family.per_worker:
                    labels = f'{labels},worker="{slot.index}"'
            cells = list(slot.values[offset : offset + width])
            into = totals[name].get(labels)
            if into is None:
                totals[name][labels] = cells
            else:
                for i, value in enumerate(cells):
                    into[i] += value
    lines: list[str] = []
    for family in FAMILIES:
        lines += _render(family, totals[family.name])
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _render(family: Family, series: dict[str, list[float]]) -> list[str]:
    name = family.name
    lines = [f"# HELP {name} {family.help}", f"# TYPE {name} {family.kind}"]
    for labels, cells in sorted(series.items()):
        if family.kind != "histogram":
            if not (family.hide_zero and cells[0] == 0):
                lines.append(f"{name}{{{labels}}} {_number(cells[0])}")
            continue
        running = 0.0
        for bound, count in zip((*family.buckets, float("inf")), cells, strict=False):
            running += count
            le = "+Inf" if bound == float("inf") else repr(float(bound))
            lines.append(f'{name}_bucket{{{labels},le="{le}"}} {_number(running)}')
        lines.append(f"{name}_sum{{{labels}}} {_number(cells[-1])}")
        lines.append(f"{name}_count{{{labels}}} {_number(running)}")
    return lines
