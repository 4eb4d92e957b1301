"""The A/B of two ranking versions through a real `shipyard serve`: two registered
recommenders on a tiny MovieLens-like split, an experiment sticky on the user, clicks
simulated from the held-out items and posted as labels, the sequential test's decision and
the per-arm CTR checked against a recount from the prediction log."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import ParameterError
from shipyard.experiments.ratio import ratio_stats
from shipyard.experiments.sequential import msprt
from shipyard.monitoring.logstore import query
from shipyard.serving.policy import Arm, Router, TrafficPolicy, set_policy
from shipyard.solutions.recsys.ab import ABResult, click, run_ab
from shipyard.solutions.recsys.data import Split, temporal_split
from shipyard.training.recommend import Recommender
from shipyard.workspace import Workspace
from tests.serving.conftest import ADMIN_TOKEN, Server, free_port
from tests.solutions.recsys.test_metrics import tiny_movies

MODEL, ENDPOINT = "movies-ab", "recs"


@pytest.fixture(scope="module")
def split() -> Split:
    return temporal_split(tiny_movies(n_users=360, seed=3), "all")


@pytest.fixture(scope="module")
def ab(
    split: Split, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ABResult, Split, Workspace]]:
    """v1: a ranking turned upside down (the factor model's user vectors negated: the least
    related items first); v2: the factor model. Served by two workers; the A/B sends two
    requests per user (no session, then one item)."""
    from shipyard.solutions.recsys.served import fit_recommender, register_recommender

    tmp = tmp_path_factory.mktemp("ab")
    ws = Workspace.init(tmp / "ws")
    good = fit_recommender(
        split.fitting("test"), factors=16, iterations=10, index=None, user_ids=split.user_ids
    )
    register_recommender(ws, _reversed(good), name=MODEL, promote=False)
    register_recommender(ws, good, name=MODEL, promote=False)
    set_policy(ws, TrafficPolicy(ENDPOINT, MODEL, arms=(Arm(1, 1),)), reason="launch")
    server = _serve(ws, f"{MODEL}@1", tmp / "serve.log")
    try:
        result = run_ab(
            ws, ENDPOINT, control=1, treatment=2, split=split, url=server.url, steps=2,
            click_model="any", admin_token=ADMIN_TOKEN, look_every=40, plot=tmp / "ab.png",
            seed=7,
        )  # fmt: skip
    finally:
        server.stop()
    yield result, split, ws
    ws.close()


def _serve(ws: Workspace, target: str, log: Path) -> Server:
    """``shipyard serve TARGET --endpoint recs`` with one worker (the suite's time budget;
    two workers route alike: tests/experiments), ready."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    environ["SHIPYARD_SERVING_ADMIN_TOKEN"] = ADMIN_TOKEN
    command = [sys.executable, "-m", "shipyard.cli.main", "-w", str(ws.root), "serve", target]
    options = ["--endpoint", ENDPOINT, "--port", str(port), "--workers", "1", "--no-guardrails"]
    log_file = log.open("wb")
    process = subprocess.Popen(
        [*command, *options],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=environ,
        start_new_session=True,  # its own process group: stopped whole
    )
    server = Server(ws, port, process, log, log_file)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            if server.request("GET", "/v2/health/ready")[0] == 200:
                return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not become ready: {log.read_text()[-3000:]}")


def _reversed(model: Recommender) -> Recommender:
    """The same recommender with every user's ranking reversed."""
    m = len(model)
    return Recommender(
        item_ids=model.items.external(np.arange(m)),
        item_vectors=model.item_vectors,
        user_ids=model.users.external(np.arange(len(model.users))),
        user_vectors=-np.asarray(model.user_vectors),
        seen_indptr=model.seen_indptr,
        seen_indices=model.seen_indices,
        popularity=model.popularity,
        session_weight=model.session_weight,
    )


def _logged(ws: Workspace) -> pd.DataFrame:
    sql = "SELECT request_id, version, arm, routing_key, outputs, outputs_json FROM predictions"
    return pd.DataFrame(query(ws, ENDPOINT, sql))


def test_every_request_is_logged_as_a_list_and_stays_in_its_users_arm(
    ab: tuple[ABResult, Split, Workspace],
) -> None:
    result, split, ws = ab
    log = _logged(ws)
    sent = result.requests
    assert len(log) == len(sent) == 2 * split.test["user"].nunique()
    assert log["outputs"].isna().all() and log["routing_key"].notna().all()
    merged = sent.merge(log, on="request_id", suffixes=("", "_log"))
    assert (merged["version"] == merged["version_log"]).all()
    assert (merged["routing_key"] == merged["user"]).all()
    router = Router(result.experiment.policy())
    assert all(router.choose(u) == v for u, v in merged[["user", "version"]].to_numpy())
    assert merged.groupby("user")["version"].nunique().max() == 1
    assert set(merged["version"]) == {1, 2} and result.misrouted == 0


def test_clicks_are_the_held_out_items_found_in_the_logged_lists(
    ab: tuple[ABResult, Split, Workspace],
) -> None:
    result, split, ws = ab
    log = _logged(ws).set_index("request_id")
    test = split.held_out("test")
    for row in result.requests.itertuples():
        answer = json.loads(log.loc[row.request_id, "outputs_json"])[0]
        listed = {entry["item"] for entry in answer["items"]}
        dense = int(np.searchsorted(split.user_ids, int(row.user)))
        items = test[test["user"] == dense]["item"].to_numpy()
        remaining = {str(i) for i in split.item_ids[items[row.step :]]}
        assert row.clicked == int(bool(listed & remaining))
        session = {str(i) for i in split.item_ids[items[: row.step]]}
        assert not listed & session  # seen (session) items are excluded


def test_the_decision_is_the_sequential_tests_on_a_recount_from_the_log(
    ab: tuple[ABResult, Split, Workspace],
) -> None:
    result, _, ws = ab
    log = _logged(ws)
    clicks = result.requests.set_index("request_id")["clicked"]
    log = log.assign(clicked=log["request_id"].map(clicks))
    per_user = log.groupby(["version", "routing_key"])["clicked"].agg(["sum", "count"])
    arms: dict[str, Any] = {}
    for arm, version in (("control", 1), ("treatment", 2)):
        part = per_user.loc[version]
        arms[arm] = ratio_stats(
            part["sum"].to_numpy(dtype=float), part["count"].to_numpy(dtype=float)
        )
        stats = result.status.primary.arms[arm]
        assert stats.n == len(part) == result.arms[arm].users
        assert stats.mean == pytest.approx(part["sum"].sum() / part["count"].sum())
        assert result.arms[arm].ctr == pytest.approx(stats.mean)
    expected = msprt(
        arms["control"],
        arms["treatment"],
        alpha=result.experiment.alpha,
        horizon=result.experiment.planned_units,
    )
    test = result.status.primary.test
    assert test is not None and result.status.decision == expected.decision
    assert (test.effect, test.low, test.high) == pytest.approx(
        (expected.effect, expected.low, expected.high)
    )
    # the factor model beats its reversal by a margin the test sees
    assert result.status.decision == "treatment better", result.describe()
    assert result.looks and result.looks[-1].decision == result.status.decision
    first = result.first_decision  # where the sequential test stops: the first deciding look
    assert first is not None and first.decision == "treatment better"
    assert first == next(look for look in result.looks if look.decision.startswith("treatment "))
    text = result.describe()
    assert "CTR" in text and "decision on all the data: treatment better" in text
    assert f"first decision: treatment better at {first.n_control}/{first.n_treatment}" in text
    assert result.plot is not None and result.plot.is_file()
    assert result.plot.with_suffix(".txt").is_file()


def test_the_position_click_model_examines_lower_ranks_less() -> None:
    listed = ["a", "b", "c"]
    assert click(listed, {"a"}, np.array([0.99, 0.0, 0.0]), "position")  # rank 1: always
    assert click(listed, {"b"}, np.array([0.0, 0.6, 0.0]), "position")  # 1/log2(3) = 0.63
    assert not click(listed, {"b"}, np.array([0.0, 0.65, 0.0]), "position")
    assert not click(listed, {"z"}, np.zeros(3), "position")
    assert click(listed, {"c"}, np.ones(3), "any")


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"click_model": "random"}, "'click_model'"),
        ({"url": "localhost:8080"}, "'url'"),
        ({"steps": 0}, "'steps'"),
        ({"users": 1}, "'users'"),
    ],
)
def test_bad_parameters_are_refused_before_anything_starts(
    tmp_path: Path, arguments: dict[str, Any], name: str
) -> None:
    ws = Workspace.init(tmp_path / "ws")
    options: dict[str, Any] = {"url": "http://127.0.0.1:9", **arguments}
    with pytest.raises(ParameterError, match=name):
        run_ab(ws, ENDPOINT, control=1, treatment=2, split=None, **options)  # type: ignore[arg-type]
    assert not (ws.artifact_root / "labels").exists()
