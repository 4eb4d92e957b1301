"""Preparing a version's serving backends when several workers load it at once."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from shipyard.integrity import locked
from shipyard.registry.models import ModelRegistry
from shipyard.serving.backends import REPORT_FILE, BackendReport, _prepare, prepare_backends
from tests.serving.conftest import serving_workspace  # noqa: F401  (fraud v1, v2 registered)


def test_a_worker_waits_for_another_preparing_the_version_and_reads_its_report(
    serving_workspace: Any,  # noqa: F811
) -> None:
    """Two workers (or replicas on a shared filesystem) loading a new version at once: one
    builds under the lock; the other waits and reads that report instead of building the
    ONNX and lleaves files again over the files the first is checking."""
    ws, _ = serving_workspace
    registry = ModelRegistry(ws)
    version = registry.get("fraud", 2)
    folder = version.native_path.parent
    (folder / REPORT_FILE).unlink(missing_ok=True)
    got: dict[str, BackendReport] = {}

    def other_worker() -> None:
        got["report"] = prepare_backends(registry, "fraud", 2)

    with locked(folder / ".prepare.lock"):  # this "worker" is building
        thread = threading.Thread(target=other_worker)
        thread.start()
        time.sleep(0.5)  # the other worker reaches the lock meanwhile
        assert "report" not in got  # it waits: nothing was written yet
        built = _prepare(registry, version, folder / REPORT_FILE)
    thread.join(timeout=120)
    # the same report, timings included: it was read, not measured by a second build
    assert json.dumps(got["report"].to_dict()) == json.dumps(built.to_dict())  # NaN-safe
