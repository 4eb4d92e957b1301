"""`shipyard serve` of a recommender: ranked lists through the same server, batcher, traffic
policy and prediction log as every other model, spoken to over HTTP.

One workspace with model ``movies``: v1 and v2 are tiny recommenders (300 items, 200 users,
random factors; see tests/training/test_recommend.py) split 50/50 by a sticky ``user`` key,
served by two workers; session state lives in the workspace's SQLite online store.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.errors import IntegrityError
from shipyard.monitoring.logstore import query
from shipyard.registry.models import ModelRegistry
from shipyard.training.recommend import INPUTS, Recommender, RecommenderConfig
from shipyard.training.trainers import load_native
from shipyard.types import ColumnRoles, Lineage
from shipyard.workspace import Workspace
from tests.serving.conftest import Server, start_server
from tests.training.test_recommend import tiny_recommender

MODEL = "movies"
EMPTY = dict.fromkeys(INPUTS.names, "")


def _register(ws: Workspace) -> None:
    from shipyard.registry.tracking import Tracker
    from shipyard.serving.policy import Arm, TrafficPolicy, set_policy

    registry, tracker = ModelRegistry(ws), Tracker(ws)
    lineage = Lineage("", 0, "", "", {}, "", ColumnRoles("", "", "user"), "random factors")
    sample = pd.DataFrame([{**EMPTY, "user": "u0"}])
    for seed in (0, 1):
        run_id = tracker.client.create_run(tracker.experiment_id("recsys-serving")).info.run_id
        registry.register(
            MODEL,
            RecommenderConfig().model(tiny_recommender(seed)),
            lineage=lineage,
            evaluation=None,
            run_id=run_id,
            sample=sample,
        )
    policy = TrafficPolicy(MODEL, MODEL, (Arm(1, 0.5), Arm(2, 0.5)), sticky_key="user")
    set_policy(ws, policy, reason="test: A/B of two recommenders")


@pytest.fixture(scope="module")
def server(
    serving_workspace: tuple[Workspace, Dataset], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The package's serving workspace (MLflow's tables already made: seconds saved) with
    the ``movies`` endpoint beside the fraud one."""
    ws, _ = serving_workspace
    _register(ws)
    running = start_server(ws, f"{MODEL}@1", tmp_path_factory.mktemp("recommend"))
    yield running
    running.stop()


def _rows(**columns: list[str]) -> list[dict[str, str]]:
    n = len(next(iter(columns.values())))
    return [{**EMPTY, **{k: v[i] for k, v in columns.items()}} for i in range(n)]


def _v2(rows: list[dict[str, str]], request_id: str) -> dict[str, Any]:
    return {
        "id": request_id,
        "parameters": {"user": rows[0]["user"]},  # the sticky key of the A/B split
        "inputs": [
            {
                "name": name,
                "shape": [len(rows)],
                "datatype": "BYTES",
                "data": [r[name] for r in rows],
            }
            for name in INPUTS.names
        ],
    }


def _infer(
    server: Server, rows: list[dict[str, str]], version: int | None = None, request_id: str = "r"
) -> tuple[int, dict[str, str], Any]:
    path = f"/v2/models/{MODEL}" + (f"/versions/{version}" if version else "") + "/infer"
    status, headers, body = server.post_json(path, _v2(rows, request_id))
    if status != 200:
        return status, headers, body
    (output,) = body["outputs"]
    assert output["name"] == "recommendations" and output["datatype"] == "BYTES"
    return status, headers, [json.loads(v) for v in output["data"]]


def _local(server: Server, version: int) -> Recommender:
    """The version as registered, loaded in this process (hash-verified, no session store)."""
    model: Recommender = ModelRegistry(server.workspace).load(MODEL, version).model
    return model


def _items(answer: dict[str, Any]) -> list[str]:
    return [e["item"] for e in answer["items"]]


def test_v2_and_mlflow_clients_get_ranked_lists(server: Server) -> None:
    status, headers, answers = _infer(server, _rows(user=["u1", "u2"], k=["3", ""]), version=1)
    assert status == 200 and headers["x-model-version"] == "1"
    expected = _local(server, 1).recommend(["u1", "u2"], k=[3, 10])
    assert [_items(a) for a in answers] == [_items(a) for a in expected]
    assert answers[0]["source"] == "personal" and answers[0]["k"] == 3
    status, head, body = server.post_json(
        "/invocations",
        {"dataframe_records": _rows(user=["u1"], k=["3"])},
        {"X-Routing-Key": "u1"},
    )
    mlflow_expected = _local(server, int(head["x-model-version"])).recommend(["u1"], k=3)
    assert status == 200
    assert [_items(a) for a in body["predictions"]] == [_items(a) for a in mlflow_expected]
    metadata = json.loads(server.request("GET", f"/v2/models/{MODEL}")[2])
    assert metadata["outputs"] == [{"name": "recommendations", "datatype": "BYTES", "shape": [-1]}]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("k", "0", "Column 'k' (row 1): expected an integer >= 1 (or empty for 10), got '0'"),
        ("k", "many", "Column 'k' (row 1): expected an integer >= 1 (or empty for 10), got 'many'"),
        ("exclude_seen", "perhaps", "Column 'exclude_seen' (row 1): expected true or false"),
        ("genre", "Western", "(Action, Comedy, Drama, Noir), got 'Western'"),
        ("user", "", "input 'user' (row 1) is empty or only whitespace"),
    ],
)
def test_bad_input_is_refused_naming_the_field_row_and_value(
    server: Server, column: str, value: str, message: str
) -> None:
    rows = _rows(user=["u1", "u2"])
    rows[1][column] = value
    status, _, body = _infer(server, rows)
    assert status == 422
    assert message in body["error"]


def test_unknown_users_and_items_are_answered_not_refused(server: Server) -> None:
    rows = _rows(user=["nobody", "nobody2"], session=["no-such-item", "101, no-such-item 102"])
    status, _, answers = _infer(server, rows, version=2)
    assert status == 200
    assert answers[0]["source"] == "popular" and answers[0]["ignored"] == ["no-such-item"]
    assert answers[1]["source"] == "session" and answers[1]["ignored"] == ["no-such-item"]
    assert len(answers[1]["items"]) == 10 and not {"101", "102"} & set(_items(answers[1]))
    status, _, (capped,) = _infer(server, _rows(user=["u3"], k=["100000"]), version=2)
    assert capped["k"] == 300 and "capped at 300" in capped["reason"]


def test_a_session_changes_the_next_request_in_any_worker_and_version(server: Server) -> None:
    user = "u42"
    _, _, (before,) = _infer(server, _rows(user=[user]), version=1)
    _, _, (during,) = _infer(server, _rows(user=[user], session=["110 111"]), version=1)
    _, _, (after,) = _infer(server, _rows(user=[user]), version=1)  # no session items sent
    expected = _local(server, 1).recommend([user], sessions=["110 111"])[0]
    assert _items(after) != _items(before)
    assert _items(during) == _items(after) == _items(expected)
    # the other version of the model reads the same session state
    _, _, (other,) = _infer(server, _rows(user=[user]), version=2)
    assert _items(other) == _items(_local(server, 2).recommend([user], sessions=["110 111"])[0])
    # two workers: some request lands on the worker that did not store the session
    answers = [_infer(server, _rows(user=[user]), version=1)[2][0] for _ in range(6)]
    assert all(_items(a) == _items(after) for a in answers)


def test_the_sticky_split_serves_each_user_from_one_version(server: Server) -> None:
    users = [f"u{i}" for i in range(100, 140)]
    versions = {}
    for user in users:
        status, headers, (answer,) = _infer(server, _rows(user=[user]))
        assert status == 200
        versions[user] = int(headers["x-model-version"])
        expected = _local(server, versions[user]).recommend([user])[0]
        assert _items(answer) == _items(expected)
    assert set(versions.values()) == {1, 2}
    again = {u: int(_infer(server, _rows(user=[u]))[1]["x-model-version"]) for u in users[:8]}
    assert again == {u: versions[u] for u in users[:8]}


def test_the_prediction_log_holds_the_lists(server: Server) -> None:
    status, _, answers = _infer(server, _rows(user=["u7", "stranger"]), request_id="logged-list")
    assert status == 200
    deadline = time.monotonic() + 20
    while True:
        found = query(
            server.workspace,
            MODEL,
            "SELECT texts, outputs_json FROM predictions WHERE request_id = 'logged-list'",
        )
        if len(found) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (record,) = found.to_dict("records")
    logged = record["outputs_json"]
    logged = json.loads(logged) if isinstance(logged, str) else logged
    assert [_items(a) for a in logged] == [_items(a) for a in answers]
    assert [r[0] for r in record["texts"]] == ["u7", "stranger"]


def test_the_registered_file_is_verified_then_mapped(server: Server, tmp_path: Path) -> None:
    registry = ModelRegistry(server.workspace)
    mv = registry.get(MODEL, 1)
    assert [c.nullable for c in mv.input_schema.columns] == [False, True, True, True, True]
    model = _local(server, 1)
    assert isinstance(model.user_vectors, np.memmap) and isinstance(model.item_vectors, np.memmap)
    copy = tmp_path / mv.native_path.name
    shutil.copyfile(mv.native_path, copy)
    copy.write_bytes(copy.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match="Refusing to load"):
        load_native(mv.framework, copy, mv.native_sha256)
