"""The Ray engine on a real local Ray (the session's ``ray_engine``) and a real head node."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pyarrow.parquet as pq
import pytest

from shipyard.config import Settings
from shipyard.data.catalog import Dataset
from shipyard.engines import Engine, LocalEngine, get_engine
from shipyard.engines.ray import RayEngine, parse_address
from shipyard.errors import ConfigError, ParameterError, TrainingError
from shipyard.features.fraud import BASELINE_FEATURES, BASELINE_VIEWS
from shipyard.features.offline import OfflineStore
from shipyard.solutions.fraud import COLUMNS
from shipyard.training.evaluation import evaluate
from shipyard.training.search import search
from shipyard.training.splits import PrequentialSplit
from shipyard.training.trainers import make_config
from shipyard.workspace import Workspace

RAY_BIN = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise KeyError(f"no {x}")
    return x * 10


def _fail_fast_or_sleep(x: int) -> int:
    if x == 0:
        raise KeyError("first")
    time.sleep(600)  # held until cancelled
    return x


def test_results_keep_the_items_order_with_progress(ray_engine: RayEngine) -> None:
    seen: list[tuple[int, int]] = []
    out = ray_engine.map(abs, [-3, 1, -2], progress=lambda d, t: seen.append((d, t)))
    assert out == [3, 1, 2]
    assert sorted(seen) == [(1, 3), (2, 3), (3, 3)]
    assert ray_engine.parallelism == 2


def test_an_empty_list_runs_nothing(ray_engine: RayEngine) -> None:
    assert ray_engine.map(_fail_on_three, []) == []


def test_a_failing_item_raises_its_own_exception_named(ray_engine: RayEngine) -> None:
    with pytest.raises(KeyError, match="no 3") as caught:
        ray_engine.map(
            _fail_on_three, [1, 2, 3, 4], label="fold", describe=lambda i, x: f"fold {i} (x={x})"
        )
    notes = caught.value.__notes__
    assert notes[0] == "(while running fold 2 (x=3) of 4 on the ray engine)"
    assert "worker traceback" in notes[1] and "_fail_on_three" in notes[1]


@pytest.mark.timeout(60)
def test_a_failure_cancels_the_items_still_running(ray_engine: RayEngine) -> None:
    import ray

    with pytest.raises(KeyError, match="first"):
        ray_engine.map(_fail_fast_or_sleep, [1, 0], label="trial")
    # the sleeping task gives its CPU back (the timeout fails the test if it never does)
    while ray.available_resources().get("CPU", 0) < 2:
        time.sleep(0.2)
    assert ray_engine.map(abs, [-1, -2]) == [1, 2]


def test_an_item_that_cannot_be_pickled_is_named(ray_engine: RayEngine) -> None:
    lock = threading.Lock()
    with pytest.raises(ParameterError, match=r"partition 1 of 3 cannot be sent .*lock"):
        ray_engine.map(repr, [1, lock, 3], label="partition")


def test_a_function_that_cannot_be_pickled_is_named(ray_engine: RayEngine) -> None:
    lock = threading.Lock()

    def holds_a_lock(x: int) -> int:
        with lock:
            return x

    with pytest.raises(ParameterError, match="holds_a_lock"):
        ray_engine.map(holds_a_lock, [1])


def test_a_cluster_without_a_module_the_work_needs_is_a_config_error(
    ray_engine: RayEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a module only this process can import stands for a package the cluster lacks
    (tmp_path / "only_on_this_machine.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("only_on_this_machine")
    monkeypatch.setitem(sys.modules, "only_on_this_machine", module)  # dropped afterwards
    with pytest.raises(ConfigError, match="cannot import 'only_on_this_machine'"):
        ray_engine.map(module.double, [1], label="partition")


@pytest.mark.parametrize(
    "address", ["nonsense", "127.0.0.1", "127.0.0.1:port", "127.0.0.1:70000", "http://h:1"]
)
def test_a_malformed_address_names_the_setting(address: str) -> None:
    with pytest.raises(ConfigError, match="ray_address"):
        RayEngine.connect(address)


def test_addresses_are_parsed() -> None:
    assert parse_address("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert parse_address("ray://head:10001") == ("head", 10001)
    assert parse_address("[::1]:6379") == ("::1", 6379)


@pytest.mark.timeout(60)
def test_an_unreachable_address_is_a_config_error_at_connect(tmp_path: Path) -> None:
    address = f"127.0.0.1:{_free_port()}"
    settings = Settings(engine="ray", ray_address=address)
    ws = Workspace.init(tmp_path / "ws", settings)
    try:
        with pytest.raises(ConfigError, match=f"ray_address = '{address}': no Ray cluster"):
            get_engine(ws)
    finally:
        ws.close()


def test_the_connected_driver_is_reused_for_no_address(ray_engine: RayEngine) -> None:
    import ray

    engine = RayEngine.connect()
    assert engine.map(abs, [-5]) == [5]
    # its own address (by IP or name) is the same cluster
    address = ray.get_runtime_context().gcs_address
    assert RayEngine.connect(address).name == "ray"


@pytest.mark.timeout(60)
def test_another_cluster_while_connected_is_refused(ray_engine: RayEngine) -> None:
    with socket.socket() as listener:  # something that answers, but not this driver's cluster
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(ConfigError, match="already connected to the Ray cluster"):
            RayEngine.connect(address)


def _run_driver(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``code`` in a fresh Python (one Ray driver per process); return its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.timeout(180)
def test_a_local_ray_is_its_own_on_the_loopback_with_its_cpu_count() -> None:
    out = _run_driver(
        "import ray\n"
        "from shipyard.engines.ray import RayEngine\n"
        "engine = RayEngine.connect(num_cpus=1)\n"
        "print(ray.get_runtime_context().gcs_address, engine.parallelism, "
        "engine.map(abs, [-1, -2]))\n"
        "ray.shutdown()\n",
        env={"RAY_ADDRESS": "127.0.0.1:1"},  # a local start never joins what this names
    )
    host_port, cpus, results = out.split(maxsplit=2)
    assert host_port.startswith("127.0.0.1:")
    assert (cpus, results.strip()) == ("1", "[1, 2]")


@pytest.fixture
def head_node() -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head node of its own (1 CPU, loopback, token authentication), stopped afterwards:
    exactly this one. Yields its address and the environment a driver needs to join it."""
    # a short folder: Ray's socket paths under it must stay within 107 bytes
    tmp_path = Path(tempfile.mkdtemp(prefix="shipyard-ray-", dir="/tmp"))
    port = _free_port()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {
        **os.environ,
        **auth,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # bind 127.0.0.1, not the LAN address
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    }
    command = [
        str(RAY_BIN), "start", "--head", "--block", f"--port={port}",
        "--node-ip-address=127.0.0.1", "--num-cpus=1", "--include-dashboard=false",
        f"--temp-dir={tmp_path / 'ray'}", "--object-store-memory=100000000",
        "--disable-usage-stats",
    ]  # fmt: skip
    log = (tmp_path / "head.log").open("w")
    head = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "head.log"
                ).read_text()
                time.sleep(0.5)
        yield f"127.0.0.1:{port}", auth
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):  # what is left of this head's group
                os.killpg(head.pid, signal.SIGKILL)
            log.close()
            shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.timeout(240)
def test_a_driver_connects_to_a_head_node_by_address(
    head_node: tuple[str, dict[str, str]],
) -> None:
    address, auth = head_node
    port = address.rsplit(":", 1)[1]
    out = _run_driver(
        "import ray\n"
        "from shipyard.engines.ray import RayEngine\n"
        f"engine = RayEngine.connect({address!r})\n"
        "print(engine.parallelism, engine.map(abs, [-1, -2, -3]))\n"
        f"print(RayEngine.connect('localhost:{port}').name)\n"  # the same cluster by name
        "try:\n"
        "    RayEngine.connect('127.0.0.1:1')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
        "ray.shutdown()\n",
        env=auth,
    )
    assert out.split("\n")[:3] == ["1 [1, 2, 3]", "ray", "ConfigError"]


@pytest.mark.timeout(120)
def test_a_driver_without_the_cluster_token_gets_a_config_error(
    head_node: tuple[str, dict[str, str]],
) -> None:
    address, _ = head_node
    out = _run_driver(
        "from shipyard.engines.ray import RayEngine\n"
        "try:\n"
        f"    RayEngine.connect({address!r})\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n",
        env={"RAY_AUTH_MODE": "disabled"},
    )
    assert out.startswith(f"ConfigError ray_address = {address!r}")
    assert "RAY_AUTH_MODE=token" in out


# -- the same results on both engines ------------------------------------------------------

FEATURES = list(BASELINE_FEATURES)
SPLIT = PrequentialSplit("2018-05-13", n_folds=3, columns=COLUMNS)
FAMILIES = {
    "lightgbm": {"n_estimators": 40},
    "xgboost": {"n_estimators": 40},
    "random_forest": {"n_estimators": 20, "n_jobs": 1},  # n_jobs > 1: see docs/engines.md
    "logistic_regression": {},
    "decision_tree": {},
}


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_fold_scores_are_bit_identical_on_both_engines(
    ray_engine: RayEngine, small_frame: pd.DataFrame, model_type: str
) -> None:
    config = make_config(model_type, **FAMILIES[model_type])
    local = evaluate(small_frame, FEATURES, config, SPLIT, n_boot=50)
    remote = evaluate(small_frame, FEATURES, config, SPLIT, n_boot=50, engine=ray_engine)
    assert local.summary() == remote.summary()
    for a, b in zip(local.folds, remote.folds, strict=True):
        assert a.metrics == b.metrics
        assert np.array_equal(a.scores, b.scores)


def _small_lightgbm(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "n_estimators": 30,
        "num_leaves": trial.suggest_int("num_leaves", 4, 31),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
    }


@pytest.mark.parametrize("batch", [1, 3])
def test_search_trials_are_identical_on_both_engines(
    ray_engine: RayEngine, small_frame: pd.DataFrame, batch: int
) -> None:
    def run(engine: Engine) -> str:
        result = search(
            small_frame, FEATURES, "lightgbm", SPLIT, n_trials=5, space=_small_lightgbm,
            engine=engine, batch=batch, seed=3,
        )  # fmt: skip
        return json.dumps(result.trials, sort_keys=True)

    local = run(LocalEngine())
    assert run(ray_engine) == local
    assert [t["number"] for t in json.loads(local)] == [0, 1, 2, 3, 4]


def test_a_raising_fold_names_itself_on_ray(
    ray_engine: RayEngine, small_frame: pd.DataFrame
) -> None:
    frame = small_frame.assign(TX_FRAUD=0)
    with pytest.raises(TrainingError, match="no positive") as caught:
        evaluate(frame, FEATURES, make_config("decision_tree"), SPLIT, engine=ray_engine)
    assert any(
        note.startswith("(while running fold ") and "of 3 on the ray engine)" in note
        for note in caught.value.__notes__
    )


def test_a_raising_trial_names_itself_on_ray(
    ray_engine: RayEngine, small_frame: pd.DataFrame
) -> None:
    def bad_space(trial: optuna.Trial) -> dict[str, Any]:
        return {"max_depth": trial.suggest_int("max_depth", 2, 4), "colour": "red"}

    with pytest.raises(ParameterError, match="no parameter 'colour'") as caught:
        search(
            small_frame, FEATURES, "decision_tree", SPLIT, n_trials=2, space=bad_space,
            engine=ray_engine, batch=2,
        )  # fmt: skip
    note = r"\(while running trial [01] \(max_depth=\d, colour='red'\) of 2 on the ray engine\)"
    assert re.fullmatch(note, caught.value.__notes__[0])


def test_materialization_is_identical_on_both_engines(
    ray_engine: RayEngine, small_workspace: tuple[Workspace, Dataset]
) -> None:
    ws, _ = small_workspace
    store = OfflineStore(ws)
    for view in BASELINE_VIEWS:
        single = store.materialize([view], force=True)[0]
        expected = pq.read_table(single.path)
        for engine, per_task in ((LocalEngine(), 5), (ray_engine, 5), (ray_engine, None)):
            chunked = store.materialize(
                [view], force=True, engine=engine, partitions_per_task=per_task
            )[0]
            assert pq.read_table(chunked.path).equals(expected), (view.name, engine.name)
            assert (chunked.path, chunked.n_rows) == (single.path, single.n_rows)
            assert store.materialization(view).sha256 == chunked.sha256


def test_the_fraud_suite_on_the_ray_setting_matches_the_local_one(
    ray_engine: RayEngine, tmp_path: Path
) -> None:
    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
    from shipyard.solutions.fraud import Protocol, train_suite
    from tests.conftest import SMALL

    on_ray = Workspace.init(tmp_path / "ws", Settings(engine="ray"))
    on_local = Workspace(on_ray.root, Settings(engine="local"))
    try:
        dataset = simulate_fraud_dataset(on_ray, FraudSimulator(**SMALL))  # type: ignore[arg-type]
        OfflineStore(on_ray).materialize(BASELINE_VIEWS)  # in partition chunks, on Ray
        protocol = Protocol(start_date_training="2018-04-29", n_folds=2)
        kwargs: dict[str, Any] = {
            "model_types": ["decision_tree", "lightgbm"],
            "model_params": {"lightgbm": {"n_estimators": 30}},
            "protocol": protocol,
            "n_boot": 20,
            "register": False,
        }
        remote = train_suite(on_ray, dataset, **kwargs)
        local = train_suite(on_local, dataset, **kwargs)
        for a, b in zip(local.models, remote.models, strict=True):
            assert a.validation.summary() == b.validation.summary()
            assert a.test.summary() == b.test.summary()
        assert remote.best == local.best
    finally:
        on_local.close()
        on_ray.close()
