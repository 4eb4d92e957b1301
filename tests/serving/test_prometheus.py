"""A real Prometheus scrapes a 2-worker server under load, one worker killed in the middle;
the rules shipped with the package pass promtool and fire on what they describe.

Needs Debian's ``prometheus`` package (``prometheus`` and ``promtool``; ``.ci/run`` installs
it): without it these tests skip, except with ``CI=true``, where they fail. The test starts
its own Prometheus on a free loopback port with its own storage; a system service, if the
package started one, is neither used nor touched.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from shipyard.serving.metrics import FAMILIES, ServingMetrics, rules_file
from tests.serving.conftest import Server, free_port, start_server
from tests.serving.test_metrics import prometheus_tool, samples, total
from tests.serving.test_reliability import Load, _body

COUNTER_SAMPLE = re.compile(r"^\w+(_total|_bucket|_count|_sum)\{")


@contextmanager
def prometheus(tmp: Path, target_port: int) -> Iterator[str]:
    """A Prometheus scraping 127.0.0.1:``target_port`` every second, with the shipped rules;
    yields its URL and stops it on exit."""
    binary = prometheus_tool("prometheus")
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                },
                "rule_files": [str(rules_file())],
                "scrape_configs": [
                    {
                        "job_name": "shipyard",
                        "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                    }
                ],
            }
        )
    )
    log = (tmp / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(tmp / 'prometheus.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("prometheus did not become ready in 60 s")
            time.sleep(0.2)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def api(url: str, path: str, **params: Any) -> Any:
    """``data`` of a Prometheus HTTP API answer."""
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}/api/v1/{path}?{query}", timeout=10) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]


def instant(url: str, expr: str, at: float) -> float | None:
    """The value of a one-series PromQL expression at time ``at`` (None: no sample)."""
    result = api(url, "query", query=expr, time=f"{at:.3f}")["result"]
    return float(result[0]["value"][1]) if result else None


def wait_for(condition: Any, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:g} s for {what}")
        time.sleep(0.3)


class Scraper:
    """Raw scrapes of /metrics on fresh connections (so both workers answer) in a thread;
    checks that no counter ever goes backwards and no process id is exposed."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.scrapes = 0
        self.problems: list[str] = []
        self.pids: set[int] = set(server.workers())
        self._last: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
            try:
                connection.request("GET", "/metrics")
                text = connection.getresponse().read().decode()
            except (OSError, http.client.HTTPException):
                continue  # the worker that took the connection was just killed
            finally:
                connection.close()
            self._check(text)

    def _check(self, text: str) -> None:
        self.scrapes += 1
        if re.search(r'\bpid="', text) or any(f'"{pid}"' in text for pid in self.pids):
            self.problems.append("a process id is exposed")
        for key, value in samples(text).items():
            if COUNTER_SAMPLE.match(key) and value < self._last.get(key, 0.0):
                self.problems.append(f"{key} went from {self._last[key]} to {value}")
            self._last[key] = value

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_prometheus_totals_match_the_load_across_a_killed_and_replaced_worker(
    serving_workspace: Any, rows: pd.DataFrame, tmp_path: Path
) -> None:
    prometheus_tool("prometheus")
    ws, _ = serving_workspace
    server = start_server(ws, "fraud@champion", tmp_path)
    try:
        with prometheus(tmp_path, server.port) as url, Scraper(server) as scraper:
            requests = "sum(shipyard_requests_total)"
            wait_for(
                lambda: (
                    (
                        instant(
                            url, "max(count_over_time(shipyard_requests_total[1m]))", time.time()
                        )
                        or 0
                    )
                    >= 2
                ),
                "two scrapes before the load",
            )
            started = time.time()
            before = server.workers()
            with Load(server, _body(rows)) as load:
                time.sleep(2.0)
                os.kill(before[0], signal.SIGKILL)
                scraper.pids |= set(before)
                wait_for(
                    lambda: len(server.workers()) == 2 and before[0] not in server.workers(),
                    "the supervisor to replace the killed worker",
                )
                scraper.pids |= set(server.workers())
                replaced = load.count()
                time.sleep(2.0)
                assert load.count() > replaced  # still answering after the replacement
            stopped = time.time()
            wait_for(
                lambda: (
                    (instant(url, "max(timestamp(shipyard_requests_total))", time.time()) or 0)
                    > stopped + 2.5
                ),
                "two scrapes after the load",
            )
            ended = time.time()
            start_value = instant(url, requests, started)
            end_value = instant(url, requests, ended)
            resets = instant(
                url, f"sum(resets(shipyard_requests_total[{ended - started:.0f}s]))", ended
            )
            rules = api(url, "rules")["groups"]
        answered = len(load.answered)
        assert answered > 500 and set(load.statuses) == {200}
        assert start_value is not None and end_value is not None
        counted = end_value - start_value
        # a request the killed worker counted may never have reached its client
        assert abs(counted - answered) <= 0.02 * answered, (counted, answered)
        assert resets == 0  # Prometheus never saw a counter reset, across the kill either
        assert scraper.scrapes >= 20 and scraper.problems == []
        # the replacement took the dead worker's slot: still two worker slots, 0 and 1
        final = server.request("GET", "/metrics")[2].decode()
        assert re.findall(
            r'shipyard_policy_revision\{endpoint="fraud",worker="(\d+)"\}', final
        ) == [
            "0",
            "1",
        ]
        assert total(final, "shipyard_requests_total") >= end_value
        health = {r["name"]: r["health"] for g in rules for r in g["rules"]}
        assert len(health) == 9 and set(health.values()) == {"ok"}, health
    finally:
        server.stop()


# -- the rules -----------------------------------------------------------------------------


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(rules_file().read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_shipped_rules_pass_promtool_check_rules() -> None:
    promtool = prometheus_tool("promtool")
    done = subprocess.run(
        [promtool, "check", "rules", str(rules_file())], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    alerts = {r["alert"] for r in _rules() if "alert" in r}
    assert alerts == {
        "ShipyardHighErrorRate",
        "ShipyardHighLatencyP99",
        "ShipyardQueueSaturated",
        "ShipyardPredictionLogWriteFailures",
        "ShipyardNoTraffic",
    }


def test_the_rules_use_only_metrics_and_labels_the_server_exposes(tmp_path: Path) -> None:
    metrics = ServingMetrics("fraud", tmp_path)
    try:
        metrics.request(1, "primary", 0.001)
        metrics.batch_observer(1, "onnx", lambda: 0)(1, 0.0001)
        metrics.log_write(0.0001, ok=True)
        metrics.set_state(1, {1: "onnx"})
        exposed = {key.split("{")[0] for key in samples(metrics.render())}
    finally:
        metrics.close()
    labels = {name for family in FAMILIES for name in family.labels} | {"le"}
    recorded = {r["record"] for r in _rules() if "record" in r}
    for rule in _rules():
        expr = rule["expr"]
        for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", re.sub(r'"[^"]*"', "", expr)):
            if name.startswith("shipyard_"):
                assert name in exposed, f"{rule.get('alert') or rule['record']}: {name}"
            elif ":" in name:
                assert name in recorded, f"{name} is not recorded by the rules"
        for group in re.findall(r"by \(([^)]*)\)", expr):
            assert {g.strip() for g in group.split(",")} <= labels, expr


def _description(alert: str) -> str:
    return next(r["annotations"]["description"] for r in _rules() if r.get("alert") == alert)


ALERT_CASES: list[tuple[str, list[tuple[str, str]], str, str]] = [
    # (alert, input series (series, values every minute), when, expected summary)
    (
        "ShipyardHighErrorRate",
        [
            (
                'shipyard_requests_total{endpoint="fraud",version="1",arm="primary",code="200"}',
                "0+100x30",
            ),
            ('shipyard_requests_total{endpoint="fraud",version="",arm="",code="500"}', "0+5x30"),
        ],
        "15m",
        "fraud: 4.762% of predictions fail (5xx)",
    ),
    (
        "ShipyardHighLatencyP99",
        [
            (
                f'shipyard_request_latency_seconds_bucket{{endpoint="fraud",version="1",le="{le}"}}',
                values,
            )
            for le, values in (("0.25", "0+0x30"), ("0.5", "0+60x30"), ("+Inf", "0+60x30"))
        ],
        "20m",
        "fraud: p99 latency 497.5ms",
    ),
    (
        "ShipyardQueueSaturated",
        [('shipyard_queue_depth{endpoint="fraud",version="1"}', "200x30")],
        "15m",
        "fraud: 200 requests waiting for the model on average",
    ),
    (
        "ShipyardPredictionLogWriteFailures",
        [('shipyard_prediction_log_write_failures_total{endpoint="fraud"}', "0x10 1x20")],
        "12m",
        "fraud: the prediction log cannot be written",
    ),
    (
        "ShipyardNoTraffic",
        [
            (
                'shipyard_requests_total{endpoint="fraud",version="1",arm="primary",code="200"}',
                "7x40",
            )
        ],
        "30m",
        "fraud: no prediction requests for 15 minutes",
    ),
]


def test_each_alert_fires_on_what_it_describes_and_not_on_a_healthy_server(
    tmp_path: Path,
) -> None:
    promtool = prometheus_tool("promtool")
    healthy = [
        (
            'shipyard_requests_total{endpoint="fraud",version="1",arm="primary",code="200"}',
            "0+100x40",
        ),
        ('shipyard_requests_total{endpoint="fraud",version="",arm="",code="500"}', "0x40"),
        ('shipyard_queue_depth{endpoint="fraud",version="1"}', "3x40"),
        ('shipyard_prediction_log_write_failures_total{endpoint="fraud"}', "0x40"),
    ] + [
        (f'shipyard_request_latency_seconds_bucket{{endpoint="fraud",version="1",le="{le}"}}', v)
        for le, v in (("0.001", "0+99x40"), ("0.25", "0+100x40"), ("+Inf", "0+100x40"))
    ]
    tests: list[dict[str, Any]] = [
        {
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": [
                {
                    "eval_time": at,
                    "alertname": alert,
                    "exp_alerts": [
                        {
                            "exp_labels": {"endpoint": "fraud", "severity": severity},
                            "exp_annotations": {
                                "summary": summary,
                                "description": _description(alert),
                            },
                        }
                    ],
                }
            ],
        }
        for (alert, series, at, summary), severity in zip(
            ALERT_CASES, ["page", "warn", "warn", "page", "warn"], strict=True
        )
    ]
    tests.append(
        {
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in healthy],
            "alert_rule_test": [
                {"eval_time": "30m", "alertname": alert, "exp_alerts": []}
                for alert, *_ in ALERT_CASES
            ],
        }
    )
    spec = tmp_path / "rules_test.yml"
    spec.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rules_file())], "evaluation_interval": "1m", "tests": tests}
        )
    )
    done = subprocess.run(
        [promtool, "test", "rules", str(spec)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
