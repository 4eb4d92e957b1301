"""The shared metrics store: slots add up, a killed worker's slot is continued, the
exposition passes Prometheus' own checker."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shipyard.serving.metrics import ServingMetrics, exposition
from shipyard.serving.metricstore import CAPACITY, Slot, StoreReader, server_folder

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")


def prometheus_tool(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``; skip without it, except in CI (fail)."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (Debian: apt-get install prometheus; .ci/run does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return path


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` → value for every sample line of an exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match is not None, f"not a sample line: {line!r}"
            out[match[1] + (match[2] or "")] = float(match[3])
    return out


def total(text: str, name: str) -> float:
    """The sum of every series of ``name``."""
    return sum(v for k, v in samples(text).items() if k.split("{")[0] == name)


REQUESTS_V1 = 'shipyard_requests_total{endpoint="fraud",version="1",arm="primary",code="200"}'

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from shipyard.serving.metrics import ServingMetrics

    metrics = ServingMetrics("fraud", Path(sys.argv[1]))
    for _ in range(int(sys.argv[2])):
        metrics.request(1, "primary", 0.001)
    metrics.set_state(7, {1: "native"})
    metrics.set_queue_depth(1, 3)
    print(metrics.slot.index, flush=True)
    sys.stdin.read()  # hold the slot until stdin closes or the process is killed
    """
)


def start_worker(folder: Path, requests: int) -> tuple[subprocess.Popen[str], int]:
    """A process that claims a slot, answers ``requests`` and holds the slot; its slot."""
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(folder), str(requests)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def test_two_workers_slots_add_up_in_every_scrape(tmp_path: Path) -> None:
    first, second = ServingMetrics("fraud", tmp_path), ServingMetrics("fraud", tmp_path)
    try:
        assert (first.slot.index, second.slot.index) == (0, 1)
        for _ in range(3):
            first.request(1, "primary", 0.0007)
        second.request(1, "primary", 0.03)
        second.error(422, "invalid_input", prediction=True)
        first.error(404, "not_found")
        first.set_queue_depth(1, 2)
        second.set_queue_depth(1, 5)
        first.set_state(4, {1: "onnx"})
        second.set_state(5, {1: "onnx", 2: "native"})
        assert first.render() == second.render()  # either worker answers the same
        scraped = samples(first.render())
        assert scraped[REQUESTS_V1] == 4
        assert (
            scraped['shipyard_requests_total{endpoint="fraud",version="",arm="",code="422"}'] == 1
        )
        assert scraped['shipyard_errors_total{endpoint="fraud",code="404",cause="not_found"}'] == 1
        latency = 'shipyard_request_latency_seconds_bucket{endpoint="fraud",version="1",le='
        assert scraped[latency + '"0.001"}'] == 3  # cumulative: 0.0007 <= 0.001
        assert scraped[latency + '"0.05"}'] == 4
        assert scraped[latency + '"+Inf"}'] == 4
        assert scraped['shipyard_request_latency_seconds_count{endpoint="fraud",version="1"}'] == 4
        assert scraped['shipyard_request_latency_seconds_sum{endpoint="fraud",version="1"}'] == (
            pytest.approx(3 * 0.0007 + 0.03)
        )
        assert scraped['shipyard_queue_depth{endpoint="fraud",version="1"}'] == 7  # summed
        assert scraped['shipyard_policy_revision{endpoint="fraud",worker="0"}'] == 4
        assert scraped['shipyard_policy_revision{endpoint="fraud",worker="1"}'] == 5
        loaded = 'shipyard_loaded_versions{endpoint="fraud",version="1",backend="onnx"}'
        assert scraped[loaded] == 2  # both workers loaded it
    finally:
        first.close()
        second.close()


def test_a_killed_workers_slot_is_claimed_again_and_continues(tmp_path: Path) -> None:
    reader = StoreReader(tmp_path)
    first, slot = start_worker(tmp_path, 5)
    try:
        assert slot == 0
        alive = exposition(reader)
        assert samples(alive)[REQUESTS_V1] == 5
        assert 'shipyard_policy_revision{endpoint="fraud",worker="0"} 7' in alive
        first.send_signal(signal.SIGKILL)
        first.communicate()
        dead = samples(exposition(reader))
        assert dead[REQUESTS_V1] == 5  # a dead worker's counts stay
        # and its gauges go: nobody waits in a dead worker's queue
        assert not any(k.startswith(("shipyard_queue_depth", "shipyard_policy")) for k in dead)
        second, slot = start_worker(tmp_path, 2)
        try:
            assert slot == 0  # the replacement takes the dead worker's slot and its values
            assert samples(exposition(reader))[REQUESTS_V1] == 7
            assert len(list(tmp_path.glob("slot-*.bin"))) == 1
        finally:
            second.kill()
            second.communicate()
    finally:
        first.kill()
        first.communicate()  # closes its pipes
        reader.close()


def test_the_exposition_passes_promtool_check_metrics(tmp_path: Path) -> None:
    promtool = prometheus_tool("promtool")
    metrics = ServingMetrics('fraud "eu"', tmp_path)  # a label value that needs escaping
    try:
        metrics.request(1, "primary", 0.002)
        metrics.error(503, "timeout", prediction=True)
        metrics.batch_observer(1, "onnx", lambda: 0)(8, 0.0004)
        metrics.log_write(0.0001, ok=False)
        metrics.set_state(2, {1: "onnx"})
        text = metrics.render()
    finally:
        metrics.close()
    for name in ("shipyard_model_call_seconds", "shipyard_prediction_log_write_seconds"):
        assert f"# TYPE {name} histogram" in text
    assert 'endpoint="fraud \\"eu\\""' in text
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_a_full_slot_drops_new_series_and_keeps_counting_old_ones(tmp_path: Path) -> None:
    slot = Slot.claim(tmp_path)
    try:
        kept = slot.allocate("shipyard_requests_total", 'endpoint="a"', 1)
        assert slot.allocate("shipyard_x", 'endpoint="a"', CAPACITY) == 0  # the sink
        assert slot.allocate("shipyard_requests_total", 'endpoint="a"', 1) == kept
    finally:
        slot.close()


def test_a_new_server_removes_the_folders_of_dead_servers(tmp_path: Path) -> None:
    first, fd = server_folder(tmp_path, "fraud")
    os.close(fd)  # as if that server had been killed
    second, fd = server_folder(tmp_path, "fraud")
    try:
        assert not first.exists() and second.exists()
        third, fd3 = server_folder(tmp_path, "fraud")  # a live server's folder stays
        assert second.exists() and third.exists()
        os.close(fd3)
    finally:
        os.close(fd)
